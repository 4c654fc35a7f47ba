"""A stack of convolutional CLAPP layers: the deep encoder of the paper's vision experiments.

Every conv layer is its own CLAPP learner (science page of the docs, CLAPP): a 3x3 convolution,
ReLU and, if the architecture says ``"M"`` after it, a 2x2 max-pool; its loss
(:func:`neuroplastic.rules.conv_clapp.conv_clapp_layer`) compares the encodings of
patches ``k`` rows apart, and its input is the previous layer's output, treated
as data. Parameters live in one flat dict like :class:`ClappStack`'s:
``"{l}/W"`` (C, 3, 3, C_in), ``"{l}/W_pred"`` (K, C, C), for CLAPP
``"{l}/W_retro"`` (K, C, C) and, if the layers have a bias (``[model] bias``), ``"{l}/b"`` (C,).
"""
from __future__ import annotations

import numpy as np
from array_api_compat import array_namespace
from array_api_compat import device as array_device

from ...rules import RULES, Rule
from ...rules.architectures import ARCHITECTURES, parse_architecture
from ...rules.conv_clapp import conv_clapp_layer, conv_forward
from .backend import host_floats
from .clapp_stack import BatchStats

__all__ = ["ConvClappStack"]

def _clapp_rule(rule) -> Rule:
    """The entry of RULES for ``rule``, which must be of the CLAPP family (glimpse pairs, a W_pred per layer)."""
    if isinstance(rule, str):
        if rule not in RULES:
            raise ValueError(f"unknown rule {rule!r}; known: {', '.join(map(repr, RULES))}")
        rule = RULES[rule]
    if getattr(rule, "family", "clapp") != "clapp" or rule.pairing not in ("contrastive", "stochastic"):
        known = [name for name, r in RULES.items() if getattr(r, "family", "clapp") == "clapp"]
        raise ValueError(f"rule {rule.name!r} is not a CLAPP rule; a ConvClappStack learns with one of "
                         f"{', '.join(map(repr, known))}")
    return rule


class ConvClappStack:
    """Convolutional two-compartment rate layers trained with CLAPP or CLAPP-s on patch grids.

    Parameters
    ----------
    arch : list or str
        Channel counts and ``"M"`` (see :func:`parse_architecture`), or a name in :data:`ARCHITECTURES`.
    in_channels : int
        Channels of the images (1 for grey).
    rule : Rule or str
        Entry of :data:`neuroplastic.rules.RULES`.
    params : dict
        ``"{l}/W"``, ``"{l}/W_pred"`` (and ``"{l}/W_retro"`` for CLAPP) per layer ``l = 1, 2, ...``;
        a layer with ``"{l}/b"`` adds that bias to its drive and learns it.
    offsets : sequence of int
        Row offsets ``k`` each layer predicts (one ``W_pred`` each); the paper uses 2, 3, 4, 5, 6.
    score : {"location", "patch"}
        Score every location of a layer's output map, or its spatial mean (the authors' code).
    stride, padding : int
        Of every 3x3 convolution (VGG: 1 and 1).
    sampling : {"rolled", "authors"}
        How :meth:`pair_sets` draws the negatives: rolled pair sets (the same position of
        another image) or the authors' sampling.
    """

    def __init__(self, arch, in_channels: int, rule: Rule | str, params: dict, *, offsets=(1,),
                 score: str = "location", stride: int = 1, padding: int = 1, sampling: str = "rolled"):
        self.layers = parse_architecture(arch)
        self.arch = list(ARCHITECTURES[arch] if isinstance(arch, str) else arch)
        self.in_channels = int(in_channels)
        self.rule = _clapp_rule(rule)
        self.params = params
        self.offsets = tuple(int(k) for k in offsets)
        if not self.offsets or min(self.offsets) < 1:
            raise ValueError(f"offsets = {offsets!r}: row offsets are integers >= 1")
        if score not in ("location", "patch"):
            raise ValueError(f"unknown score {score!r}; known: 'location', 'patch'")
        self.score, self.stride, self.padding = score, int(stride), int(padding)
        if sampling not in ("rolled", "authors"):
            raise ValueError(f"unknown sampling {sampling!r}; known: 'rolled', 'authors'")
        self.sampling = sampling

    @classmethod
    def init(cls, arch, in_channels, rule, rng: np.random.Generator, *, offsets=(1,), dtype="float32",
             init_scale=1.0, pred_init_scale=0.1, init: str = "he", bias: bool = False, **kwargs) -> "ConvClappStack":
        """Random weights, layer by layer in the order kernel, bias, W_pred, W_retro.

        ``init = "he"``: He-normal kernels (fan-in 9 C_in) scaled by ``init_scale``, small random
        prediction (and retrodiction) weights N(0, pred_init_scale^2 / C), biases (``bias``) zero.
        ``init = "torch"``: PyTorch's defaults, as the authors' layers start (their ``nn.Conv2d``, the
        ``W_pred`` a 1x1 one): kernel and bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)), ``W_pred`` and
        ``W_retro`` U(-1/sqrt(C), 1/sqrt(C)); the scales are not used, so only their defaults are allowed.
        """
        rule = _clapp_rule(rule)
        if init not in ("he", "torch"):
            raise ValueError(f"unknown init {init!r}; known: 'he', 'torch'")
        if init == "torch" and (init_scale != 1.0 or pred_init_scale != 0.1):
            raise ValueError(f"init = 'torch' draws PyTorch's default ranges: init_scale = {init_scale} and "
                             f"pred_init_scale = {pred_init_scale} must keep their defaults (1.0, 0.1)")
        K = len(offsets)
        params, c_in = {}, in_channels

        def pred(C):                      # one W_pred (or W_retro) per offset
            if init == "torch":
                return rng.uniform(-1.0 / np.sqrt(C), 1.0 / np.sqrt(C), (K, C, C)).astype(dtype)
            return (rng.standard_normal((K, C, C)) * pred_init_scale / np.sqrt(C)).astype(dtype)

        for l, spec in enumerate(parse_architecture(arch)):
            C, fan_in = spec.channels, 9 * c_in
            if init == "torch":
                bound = 1.0 / np.sqrt(fan_in)
                params[f"{l + 1}/W"] = rng.uniform(-bound, bound, (C, 3, 3, c_in)).astype(dtype)
            else:
                W = rng.standard_normal((C, 3, 3, c_in)) * init_scale * np.sqrt(2.0 / fan_in)
                params[f"{l + 1}/W"] = W.astype(dtype)
            if bias:
                params[f"{l + 1}/b"] = (rng.uniform(-bound, bound, C) if init == "torch" else np.zeros(C)).astype(dtype)
            params[f"{l + 1}/W_pred"] = pred(C)
            if rule.retro:
                # CLAPP's W_retro: an independent draw of the same distribution, as the authors start it
                # (a transposed copy would stay the transpose: the weight-transport problem never arises).
                params[f"{l + 1}/W_retro"] = pred(C)
            c_in = C
        return cls(arch, in_channels, rule, params, offsets=offsets, **kwargs)

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    def _layer_kwargs(self, l: int) -> dict:
        return dict(stride=self.stride, padding=self.padding, pool=self.layers[l].pool)

    @staticmethod
    def _maps(x):
        """Grey patches (..., P, P) get a channel axis: every layer sees maps (..., h, w, C)."""
        return x[..., None] if x.ndim == 5 else x

    def features(self, x, *, chunk: int = 64) -> list:
        """Per-patch features of every layer for the probe: each map averaged over space.

        ``x`` (n, G_r, G_c, P, P[, C]) -> list of arrays (n, G_r G_c, C_l), computed
        ``chunk`` images at a time so that the deep maps of a large set never all
        sit in memory.
        """
        xp = array_namespace(x)
        x = self._maps(x)
        n = x.shape[0]
        out = [[] for _ in self.layers]
        for i in range(0, n, chunk):
            h = x[i:i + chunk]
            for l in range(self.n_layers):
                h = conv_forward(self.params[f"{l + 1}/W"], h, b=self.params.get(f"{l + 1}/b"), **self._layer_kwargs(l))
                out[l].append(xp.reshape(xp.mean(h, axis=(-3, -2)), (h.shape[0], -1, h.shape[-1])))
        return [xp.concat(o, axis=0) for o in out]

    def pair_sets(self, B: int, Gr: int, Gc: int, rng: np.random.Generator, negatives: int, saccade_prob: float):
        """Draw the pairs each layer learns from in one batch: ``(pairs, weights)`` for :meth:`train_batch`.

        ``sampling = "rolled"``: ``pairs`` is the list of shifts and ``weights`` (K, S, B, G_r, G_c)
        (:func:`~neuroplastic.rules.conv_clapp.grid_scores`), shared by all layers.
        CLAPP-s: the positive set (shift 0) and ``negatives`` saccade sets, each to
        the same position of another image (a random non-zero shift, one per set).
        The positives of an offset weigh as much as all its negatives together
        (positive 1/n, each negative 1/(negatives n), n = pairs of the offset), as in
        the authors' code; the offsets are averaged.
        CLAPP: every pair is a saccade with probability ``saccade_prob``, otherwise a
        fixation (weight 1/n each).

        ``sampling = "authors"``: ``pairs`` is ``neg_index`` (L, K, n, B, G_r, G_c) and ``weights``
        (L, K, 1 + n, B, G_r, G_c) (:func:`~neuroplastic.rules.conv_clapp.sampled_scores`), drawn
        per layer as each of the authors' layers draws its own (:meth:`_authors_pairs`). CLAPP's
        retrodiction (the authors' mirror loss) draws its own pairs too: a pathway axis follows the
        layer's, (L, 2, K, ...), the prediction's pairs first.
        """
        if B < 2:
            raise ValueError("[train] batch_size must be >= 2: a saccade goes to another image of the batch")
        K = len(self.offsets)
        if max(self.offsets) >= Gr:
            raise ValueError(f"offsets {self.offsets} need a grid of more than {max(self.offsets)} rows, got {Gr}")
        valid = np.zeros((K, 1, 1, Gr, Gc))
        for kappa, k in enumerate(self.offsets):
            valid[kappa, ..., :Gr - k, :] = 1.0 / (K * B * (Gr - k) * Gc)
        if self.rule.pairing == "contrastive" and negatives < 1:
            raise ValueError(f"[rule] negatives = {negatives}: CLAPP-s needs at least one negative set")
        if self.sampling == "authors":
            return self._authors_pairs(B, Gr, Gc, rng, negatives, saccade_prob, valid)
        if self.rule.pairing == "contrastive":
            shifts = [0] + [int(s) for s in rng.integers(1, B, size=negatives)]
            per_set = np.array([1.0] + [1.0 / negatives] * negatives)[None, :, None, None, None]
            weights = np.broadcast_to(valid * per_set, (K, len(shifts), B, Gr, Gc)).copy()
        else:
            saccade = rng.random((K, B, Gr, Gc)) < saccade_prob
            shifts = [0, int(rng.integers(1, B))]
            weights = np.stack([~saccade, saccade], axis=1) * valid
        return shifts, weights

    def _authors_pairs(self, B, Gr, Gc, rng, negatives, saccade_prob, valid):
        """The authors' sampling (their ``ContrastiveLoss``), layer by layer, then offset by offset.

        CLAPP-s (their default): for offset ``k`` every context patch gets ``negatives`` independent
        uniform draws among all ``R G_c B`` predicted entries (rows ``k ..``, any column, any image,
        its own included), drawn as ``rng.integers(R G_c B, size=(R, G_c, B, n))`` in their flat
        order (row, column, image): draw ``v`` is row ``k + v // (G_c B)``, column ``(v // B) % G_c``,
        image ``v % B``. Weights as for the rolled sets: the positive 1/n, each negative 1/(negatives n).
        CLAPP (their ``--sample_negs_locally_same_everywhere --either_pos_or_neg_update``): first one
        coin per image, ``rng.random(B) < saccade_prob`` (a negative update; the authors' p = 1/2), the
        same for every offset and location; then per offset one image ``rng.integers(B, size=B)`` per
        image (its own included), the negative at every position being that image's patch there. An
        image's pairs are its positives (weight 1/n each) or its negatives, as its coin says. CLAPP's mirror
        pathway then draws its own coins and images the same way (their ``loss_mirror``, called after
        ``loss``).
        """
        K, L = len(self.offsets), self.n_layers
        contrastive = self.rule.pairing == "contrastive"
        n = negatives if contrastive else 1
        paths = 2 if self.rule.retro else 1
        index = np.zeros((L, paths, K, n, B, Gr, Gc), dtype=np.int64)
        weights = np.zeros((L, paths, K, 1 + n, B, Gr, Gc))
        rows, cols = np.arange(Gr)[:, None], np.arange(Gc)[None, :]
        for l, path in np.ndindex(L, paths):
            w, i = weights[l, path], index[l, path]
            if contrastive:
                w[:, 0] = valid[:, 0]
                w[:, 1:] = valid / n
            else:
                saccade = rng.random(B) < saccade_prob
                w[:, 0] = valid[:, 0] * ~saccade[None, :, None, None]
                w[:, 1] = valid[:, 0] * saccade[None, :, None, None]
            for kappa, k in enumerate(self.offsets):
                R = Gr - k
                if contrastive:
                    v = rng.integers(R * Gc * B, size=(R, Gc, B, n))
                    row, col, img = k + v // (Gc * B), (v // B) % Gc, v % B
                    i[kappa, :, :, :R] = np.transpose((img * Gr + row) * Gc + col, (3, 2, 0, 1))
                else:
                    img = rng.integers(B, size=B)
                    i[kappa, 0, :, :R] = (img[:, None, None] * Gr + k + rows[:R]) * Gc + cols
        return (index, weights) if self.rule.retro else (index[:, 0], weights[:, 0])

    def train_batch(self, x, optimizer, shifts, weights) -> BatchStats:
        """One update of every layer from patch grids ``x (B, G_r, G_c, P, P[, C])``.

        Each layer's gradient comes from its own loss with the weights as they were
        before this batch; its output (computed once, in the same pass) is the next
        layer's input. ``shifts, weights`` are what :meth:`pair_sets` returned (with the
        authors' sampling, ``shifts`` is the per-layer ``neg_index``). ``x`` and the parameters are
        arrays of one namespace and device (numpy, torch, CuPy); the numpy draws are moved there once.
        """
        W = self.params["1/W"]
        xp, dev = array_namespace(x, W), array_device(W)
        x = self._maps(x)
        weights = xp.asarray(weights, dtype=x.dtype, device=dev)
        grads, losses, modulated = {}, [], []
        sampled = self.sampling == "authors"
        if sampled:
            shifts = xp.asarray(shifts, device=dev)
        for l in range(self.n_layers):
            p = f"{l + 1}/"
            if not sampled:
                pairs = dict(shifts=shifts, weights=weights)
            elif self.rule.retro:                     # CLAPP: the prediction's pairs, then the mirror's own
                pairs = dict(shifts=None, weights=weights[l, 0], neg_index=shifts[l, 0],
                             retro_pairs=(shifts[l, 1], weights[l, 1]))
            else:
                pairs = dict(shifts=None, weights=weights[l], neg_index=shifts[l])
            g = conv_clapp_layer(self.params[p + "W"], self.params[p + "W_pred"], x, self.offsets,
                                 W_retro=self.params.get(p + "W_retro"), b=self.params.get(p + "b"), score=self.score,
                                 **pairs, **self._layer_kwargs(l))
            grads[p + "W"], grads[p + "W_pred"] = g.W, g.W_pred
            if g.W_retro is not None:
                grads[p + "W_retro"] = g.W_retro
            if g.b is not None:
                grads[p + "b"] = g.b
            losses.append(g.loss)
            modulated.append(self._modulated(g.gamma, pairs["weights"]))
            x = g.z                                   # input of the next layer, before this update
        optimizer.step(self.params, grads)
        stats = host_floats([*losses, *modulated])   # one device-to-host transfer per batch
        return BatchStats(stats[:self.n_layers], stats[self.n_layers:])

    def _modulated(self, gammas, weights):
        """Fraction of (pair, location) entries with weight > 0 whose modulation factor is non-zero (a 0-d array
        of the back end: read once per batch by :func:`host_floats`)."""
        xp = array_namespace(weights)
        n_active = n_mod = 0.0
        Gr = weights.shape[3]
        for kappa, (k, gamma) in enumerate(zip(self.offsets, gammas)):
            active = (weights[kappa][:, :, :Gr - k, :] > 0)[..., None]          # (S, B, R, G_c, 1)
            n_active = n_active + xp.sum(xp.astype(active, gamma.dtype)) * gamma.shape[-1]
            n_mod = n_mod + xp.sum(xp.astype(active & (gamma != 0), gamma.dtype))
        return n_mod / n_active
