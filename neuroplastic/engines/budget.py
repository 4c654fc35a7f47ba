"""How much memory (and simulated time) a protocol needs, estimated from shapes before anything is allocated.

:func:`estimate` adds up, from the protocol and the shapes of its data only (nothing is allocated
to measure), what a run holds at its peak: the data and its stimulus (glimpse sequences, the patch
grids of a batch, the Brian2 engine's glimpse stream), the parameters with their gradients, the
optimiser's moments (Adam keeps two per parameter) and the copy of the initial weights the random
baseline is probed with, the activations and temporaries of one batch, and the features the probe
reads. For the Brian2 engine it also counts the simulated time steps. A rate run on a GPU (``[engine]
array`` torch or CuPy with ``device = "cuda"``) holds one batch's work and the weights it trains there,
and the rest (data, glimpses, initial weights, the probe's features) in host memory: the estimate says
which part is where, and each memory is bounded by its own size.

:func:`check_budget` compares the estimate with the memory of this machine (or with
``[train] max_memory``) and refuses a protocol that does not fit with a
:class:`~neuroplastic.errors.ProtocolError` naming the key that drives the estimate, before any run
directory exists. The estimate is rough but errs on the large side: it is meant to stop a setting
that cannot possibly run (a layer of a billion neurons, a billion negatives), not to predict a
peak to the megabyte.

Examples
--------
>>> from neuroplastic.engines.budget import format_bytes
>>> format_bytes(128 * 10**9), format_bytes(3 * 2**20)
('119 GiB', '3 MiB')
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
from dataclasses import dataclass, field

import numpy as np

from ..errors import ProtocolError
from ..rules import RULES
from ..rules.hinge_conv import head_width

log = logging.getLogger(__name__)

__all__ = ["BASELINE_BYTES", "MAX_SIMULATED_STEPS", "Estimate", "Part", "available_memory", "check_budget",
           "estimate", "format_bytes", "gpu_memory", "machine_memory"]

#: What a run holds beyond its arrays: the interpreter, numpy, scikit-learn, matplotlib (measured: ~0.2 GiB).
BASELINE_BYTES = 256 * 2**20
#: The most time steps a Brian2 run may simulate in all (epochs and probe runs): at a few 10^5 steps
#: per second, 10^10 steps are days of simulation.
MAX_SIMULATED_STEPS = 10**10
#: The im2col buffers of a convolution (see ``neuroplastic.rules.conv.BLOCK_BYTES``): two at a time.
_IM2COL_BYTES = 2 * 32 * 2**20
#: Bytes a Brian2 synapse costs beyond its weight: indices, the model's variables (eligibility
#: traces), delays and the arrays its connection is made from (a generous round figure).
_BRIAN_SYNAPSE_BYTES = 128
#: Spike rate (Hz) assumed for the spike monitors when the model file does not say ``rate_out``.
_DEFAULT_RATE_HZ = 500.0


@dataclass(frozen=True)
class Part:
    """One item of an estimate: ``what`` it is, its ``bytes``, the protocol ``keys`` that size it and a ``detail``."""

    what: str
    bytes: int
    keys: tuple[str, ...]
    detail: str = ""
    #: held in the GPU's memory (the rate engine on ``[engine] device = "cuda"``), not the host's
    device: bool = False


@dataclass(frozen=True)
class Estimate:
    """The memory a run of a protocol needs at its peak, by part, and (Brian2) the time steps it simulates."""

    parts: list[Part] = field(default_factory=list)
    #: Time steps the Brian2 engine simulates in all (training epochs and probe runs); 0 for numpy.
    steps: int = 0
    #: How ``steps`` is made up, in words.
    steps_detail: str = ""

    @property
    def total(self) -> int:
        """Bytes of the host's parts together (the run's estimated peak in host memory)."""
        return sum(p.bytes for p in self.parts if not p.device)

    @property
    def device_total(self) -> int:
        """Bytes of the parts held on the GPU (0 unless the rate engine computes on ``device = "cuda"``)."""
        return sum(p.bytes for p in self.parts if p.device)

    def largest(self) -> Part:
        """The part that needs the most memory."""
        return max(self.parts, key=lambda p: p.bytes)

    def describe(self) -> str:
        """One line per part, largest first; parts on the GPU say so."""
        return "\n".join(f"{format_bytes(p.bytes):>10}  {p.what}" + (" [GPU]" if p.device else "")
                         + (f" ({p.detail})" if p.detail else "")
                         for p in sorted(self.parts, key=lambda p: -p.bytes))


def format_bytes(n: float) -> str:
    """``n`` bytes in binary units, three significant digits (``'119 GiB'``)."""
    units = ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB")
    if n < 1024:
        return f"{int(n)} bytes"
    value, unit = float(n), "bytes"
    for unit in units:
        value /= 1024
        if value < 1024:
            break
    return f"{value:.3g} {unit}"


_CGROUPS = (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),                      # v2
            ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"))


def _memory(free: bool) -> int | None:
    """Bytes of memory: the machine's (``MemTotal``, or a smaller cgroup limit) or, ``free``, what is free
    now (``MemAvailable``, or the cgroup limit less its usage); ``os.sysconf`` where /proc is missing."""
    found = []
    try:
        with open("/proc/meminfo") as f:
            key = "MemAvailable:" if free else "MemTotal:"
            found += [int(line.split()[1]) * 1024 for line in f if line.startswith(key)]
    except (OSError, ValueError, IndexError):
        pass
    for limit, usage in _CGROUPS:
        try:
            with open(limit) as f:
                text = f.read().strip()
            if text != "max" and int(text) < 2**60:
                with open(usage) as f:
                    found.append(int(text) - (int(f.read().strip()) if free else 0))
            break
        except (OSError, ValueError):
            continue
    if not found:
        try:
            found.append(os.sysconf("SC_AVPHYS_PAGES" if free else "SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            pass
    return max(0, min(found)) if found else None


def machine_memory() -> int | None:
    """Bytes of memory of this machine (or of the cgroup this process runs in); ``None`` if unknown."""
    return _memory(free=False)


def available_memory() -> int | None:
    """Bytes of memory free now for this process; ``None`` if unknown."""
    return _memory(free=True)


# -- shapes ---------------------------------------------------------------------------------------------


def _itemsize(samples) -> int:
    dtype = getattr(samples, "dtype", None)
    try:
        return int(np.dtype(dtype).itemsize) if dtype is not None else 8
    except TypeError:
        return 8


def _data_bytes(ds) -> int:
    """The samples a data set holds in memory (a lazily read file holds none)."""
    if not isinstance(ds.samples, np.ndarray) or isinstance(ds.samples, np.memmap):
        return 0
    return int(ds.samples.size) * _itemsize(ds.samples)


def _n_range(length: int, patch: int, stride: int) -> int:
    return len(range(0, max(length - patch + 1, 0), stride))


def _glimpse_shape(ds, stimulus) -> tuple[int, int]:
    """Glimpses per sample ``T`` and inputs per glimpse of a data set's dense glimpse sequences."""
    shape = tuple(int(s) for s in ds.samples.shape[1:])
    p, s = stimulus.patch, stimulus.stride
    channels = 2 if getattr(stimulus, "onoff", False) else 1             # ON and OFF inputs
    if ds.domain == "image":
        h, w = shape[:2]
        return (_n_range(h, p, s) * _n_range(w, p, s),
                channels * p * p * int(np.prod(shape[2:], dtype=np.int64)))   # x colours
    return _n_range(shape[0], p, s), channels * p * int(np.prod(shape[1:], dtype=np.int64))


def _dense_sizes(protocol, n_in: int) -> list[int]:
    """Input and neurons of each layer; a retinotopic layer has ``layers[l]`` neurons at each of its locations
    (its matrices are stored dense, so the estimate is that of a dense layer of that many neurons)."""
    from ..rules.retinotopic import stack_sizes

    m = protocol.model
    try:
        return stack_sizes(n_in, m.layers, m.connectivity, patch=protocol.stimulus.patch, kernel=m.kernel,
                           stride=m.stride)
    except ValueError:          # glimpses that are no patch: refused with its message when the layers are built
        return [int(n_in), *(int(n) for n in m.layers)]


def _show(value) -> str:
    return str(value).replace(" ", "") if isinstance(value, list) else repr(value)


# -- the estimate -----------------------------------------------------------------------------------------


def estimate(protocol, prepared) -> Estimate:
    """The memory a run of ``protocol`` needs at its peak, from shapes only.

    ``prepared`` is a :class:`~neuroplastic.engines.prepare.Prepared`; only the shapes of its data, the
    number of its training samples and its probe's data are read, never its stimulus, so a ``Prepared``
    whose stimulus is not made yet (``None``) gives the same estimate.
    """
    rule = RULES[protocol.rule.name]
    if protocol.engine.name == "brian":
        return _brian(protocol, prepared, rule)
    if rule.family == "views":
        est = _views(protocol, prepared, rule)
    elif protocol.model.arch == "dense":
        est = _dense_clapp(protocol, prepared, rule)
    else:
        est = _conv_clapp(protocol, prepared, rule)
    return _on_gpu(est) if _gpu(protocol) else est


def _gpu(protocol) -> bool:
    """Whether the rate engine computes on a GPU (``[engine] array`` torch or CuPy, ``device = "cuda"``)."""
    return protocol.engine.name == "numpy" and protocol.engine.device == "cuda"


#: What a rate run on a GPU holds there: one batch's work. The data, its glimpses, the initial weights, the
#: checkpoints and the probe's features stay in host memory (batches go to the device as they are cut).
_ON_GPU = ("activations of one batch", "pair sets of one batch", "hinge-loss temporaries of one batch")


def _on_gpu(est: Estimate) -> Estimate:
    """``est`` with one batch's work (:data:`_ON_GPU`) held on the GPU."""
    return dataclasses.replace(est, parts=[dataclasses.replace(p, device=True) if p.what in _ON_GPU else p
                                           for p in est.parts])


def _param_factor(protocol) -> int:
    """Copies of the parameters a numpy run holds: the weights, the initial weights (random-baseline
    probe), the gradients of a step and, with Adam, its two moments."""
    return 3 + (2 if protocol.rule.optimizer == "adam" else 0)


def _weights_part(protocol, shapes: dict[int, list[tuple[str, tuple[int, ...]]]], itemsize: int,
                  keys: tuple[str, ...], factor: int | None = None, init_itemsize: int = 8) -> list[Part]:
    """Parameters by layer -> parts: every copy held, plus the float64 draw of the largest matrix; one part, or
    on a GPU two: the training copies there (weights, gradients, moments) and the initial weights on the host."""
    factor = _param_factor(protocol) if factor is None else factor
    count = sum(math.prod(shape) for layer in shapes.values() for _, shape in layer)
    largest = max((math.prod(shape) for layer in shapes.values() for _, shape in layer), default=0)
    shown = []
    for l, layer in list(shapes.items())[:2]:
        shown.append(f"layer {l}: " + " + ".join(f"{' x '.join(map(str, shape))} {name}" for name, shape in layer))
    more = f", ... {len(shapes)} layers" if len(shapes) > 2 else ""
    opt = " and Adam's 2 moments" if protocol.rule.optimizer == "adam" and protocol.engine.name == "numpy" else ""
    held = "weights, initial weights" + (f", gradients{opt}" if protocol.engine.name == "numpy" else "")
    detail = f"{count:,} parameters of {itemsize} bytes held {factor} times ({held}); {'; '.join(shown)}{more}"
    if _gpu(protocol):                    # the weights the run trains are on the GPU, the initial weights on the host
        held = held.replace("weights, initial weights", "weights")
        return [Part("parameters", count * itemsize * (factor - 1), keys,
                     f"{count:,} parameters of {itemsize} bytes held {factor - 1} times ({held}); "
                     f"{'; '.join(shown)}{more}", device=True),
                Part("initial weights", count * itemsize + largest * init_itemsize, keys,
                     "kept on the host for the random encoder's probe")]
    return [Part("parameters", count * itemsize * factor + largest * init_itemsize, keys, detail)]


def _dense_params(sizes: list[int], retro: bool) -> dict:
    return {l + 1: [("W", (n, n_in)), ("W_pred", (n, n))] + ([("W_retro", (n, n))] if retro else [])
            for l, (n_in, n) in enumerate(zip(sizes[:-1], sizes[1:]))}


def _common_parts(protocol, prepared) -> list[Part]:
    parts = [Part("interpreter and libraries", BASELINE_BYTES, ())]
    sets = [prepared.dataset] + ([prepared.probe.dataset] if prepared.probe is not None else [])
    data = sum(_data_bytes(ds) for ds in sets)
    parts.append(Part("data", data, ("data.max_samples",), f"{sum(len(ds) for ds in sets):,} samples"))
    return parts


def _n_train(prepared) -> int:
    return len(prepared.train_idx) if prepared.train_idx is not None else len(prepared.dataset)


def _dense_clapp(protocol, prepared, rule) -> Estimate:
    it = np.dtype(protocol.engine.dtype).itemsize
    ds, probe = prepared.dataset, prepared.probe_set()
    T, n_in = _glimpse_shape(ds, protocol.stimulus)
    sizes = _dense_sizes(protocol, n_in)
    parts = _common_parts(protocol, prepared)
    # Glimpse sequences: cut in the samples' type (a list of slices, then stacked), then cast to the engine's.
    stim_sets = [ds] + ([probe.dataset] if probe.dataset is not ds else [])
    stim = sum(len(d) * T * n_in * (2 * _itemsize(d.samples) + it) for d in stim_sets)
    parts.append(Part("glimpse sequences", stim, ("stimulus.patch", "stimulus.stride"),
                      f"{sum(len(d) for d in stim_sets):,} samples x {T} glimpses x {n_in} inputs"))
    parts += _weights_part(protocol, _dense_params(sizes, rule.retro), it, ("model.layers",))
    B, widest = min(protocol.train.batch_size, max(_n_train(prepared), 2)), max(sizes[1:])
    S = 1 + protocol.rule.negatives if rule.pairing == "contrastive" else 2
    # One batch: the input, ~10 maps (B, T, n) of the widest layer (drive, rate, context, prediction,
    # error, a rolled copy, products), and the pair sets: weights (float64 and cast), scores and gammas.
    act = B * T * (n_in + 10 * widest) * it
    parts.append(Part("activations of one batch", act, ("model.layers", "train.batch_size"),
                      f"{B} sequences x {T} glimpses x {widest} units"))
    pairs = S * B * max(T - 1, 1) * (8 + 5 * it) + 32 * S
    parts.append(Part("pair sets of one batch", pairs, ("rule.negatives", "train.batch_size"),
                      f"{S:,} pair sets x {B} sequences x {max(T - 1, 1)} pairs"))
    parts.append(_probe_features(protocol, len(probe.dataset), T, sizes[1:], it))
    return Estimate(parts)


def _probe_features(protocol, n: int, T: int, widths: list[int], it: int) -> Part:
    """The features the probe reads: every layer of trained and (baseline) random weights, and the pooled copies."""
    copies = 2 if protocol.evaluate.baseline else 1
    held = n * T * sum(widths) * it * copies + n * T * max(widths) * it          # + one layer's drive
    pooled = n * (T if protocol.evaluate.pooling == "concat" else 1) * sum(widths) * (8 + 4) * copies
    return Part("probe features", held + pooled, ("model.layers", "data.max_samples"),
                f"{n:,} samples x {T} glimpses x {sum(widths)} units")


def _conv_layers(arch: str, side: int, c_in: int = 1) -> list[tuple[int, int, int, int, bool]]:
    """``(side_in, c_in, side_out_before_pool, channels, pool)`` of every 3x3 conv layer (stride 1, padding 1)."""
    from ..rules.architectures import parse_architecture

    out = []
    for spec in parse_architecture(arch):
        out.append((side, c_in, side, spec.channels, spec.pool))
        side, c_in = (side // 2 if spec.pool else side), spec.channels
    return out


def _conv_clapp(protocol, prepared, rule) -> Estimate:
    it = np.dtype(protocol.engine.dtype).itemsize
    st, r = protocol.stimulus, protocol.rule
    ds, probe = prepared.dataset, prepared.probe_set()
    h, w = (int(s) for s in ds.samples.shape[1:3])
    side_h, side_w = (st.crop or h), (st.crop or w)
    Gr, Gc, P = _n_range(side_h, st.patch, st.stride), _n_range(side_w, st.patch, st.stride), st.patch
    layers = _conv_layers(protocol.model.arch, P)
    K = len(r.offsets)
    parts = _common_parts(protocol, prepared)
    shapes = {l + 1: [("W", (C, 3, 3, c_in)), ("W_pred", (K, C, C))] + ([("W_retro", (K, C, C))] if rule.retro else [])
              for l, (_, c_in, _, C, _) in enumerate(layers)}
    parts += _weights_part(protocol, shapes, it, ("model.arch", "rule.offsets"))
    B = min(protocol.train.batch_size, max(_n_train(prepared), 2))
    S = 1 + r.negatives if rule.pairing == "contrastive" else 2
    m = min(S, B)                       # distinct shifts: sets of one shift are scored once
    N = B * Gr * Gc
    grids = N * P * P * (8 + 2 * it)    # the batch's images cut into patch grids (and cast)
    peak = kept = 0
    for side_in, c_in, side, C, pool in layers:
        side_out = side // 2 if pool else side
        n_l = side_out * side_out if r.score == "location" else 1
        x, z0, q = N * side_in ** 2 * c_in, N * side ** 2 * C, N * side_out ** 2 * C
        U = Gr * Gc * n_l * B * B                   # B x B scores of every location (and their gradient)
        scored = m * B * Gr * Gc * n_l              # scores, margins and gammas of the distinct sets
        peak = max(peak, (x + z0 + 4 * q + 2 * U + 3 * scored) * it + _IM2COL_BYTES)
        kept = max(kept, 2 * K * S * B * Gr * Gc * n_l * it)    # gammas and scores of every set and offset
    parts.append(Part("activations of one batch", grids + peak, ("model.arch", "train.batch_size", "stimulus.patch"),
                      f"{B} images x {Gr} x {Gc} patches of {P} x {P}"))
    pairs = K * S * Gr * Gc * (8 + B * (8 + it)) + 32 * S + kept
    parts.append(Part("pair sets of one batch", pairs, ("rule.negatives", "train.batch_size", "rule.offsets"),
                      f"{K} offsets x {S:,} pair sets x {B} images x {Gr} x {Gc} patches"))
    # The probe: 256 images' patch grids at a time, 64 through the layers, the features of every layer.
    chunk = min(len(probe.dataset), 64)
    first = max((side ** 2 * C for _, _, side, C, _ in layers), default=0)
    widths = [C for *_, C, _ in layers]
    T = 1 if protocol.evaluate.pooling == "mean" else Gr * Gc
    feats = _probe_features(protocol, len(probe.dataset), T, widths, it)
    run = (min(len(probe.dataset), 256) * Gr * Gc * P * P * (8 + it) + chunk * Gr * Gc * first * 3 * it
           + _IM2COL_BYTES)
    parts.append(Part(feats.what, feats.bytes + run, feats.keys, feats.detail))
    return Estimate(parts)


def _views(protocol, prepared, rule) -> Estimate:
    it = np.dtype(protocol.engine.dtype).itemsize
    r, m = protocol.rule, protocol.rule.head
    ds, probe = prepared.dataset, prepared.probe_set()
    image = tuple(int(s) for s in ds.samples.shape[1:])
    crop = protocol.stimulus.crop                          # views are crop x crop windows of the images
    shape = (crop, crop, *image[2:]) if crop else image
    n_in = int(np.prod(shape, dtype=np.int64))
    parts = _common_parts(protocol, prepared)
    if isinstance(ds.samples, np.ndarray):
        parts.append(Part("images in the engine's type", len(ds) * int(np.prod(image, dtype=np.int64)) * it,
                          ("data.max_samples",)))
    B = min(protocol.train.batch_size, max(_n_train(prepared), 2))
    k = min(r.negatives, B - 1)
    layerwise = rule.process in ("gll", "rll")                # a head on every layer (DTP: on the top only)
    random_feedback = rule.feedback in ("fa", "rf", "urf")
    head = ["H", "B_H"] if random_feedback else ["H"]
    if protocol.model.arch == "dense":
        sizes = _dense_sizes(protocol, n_in)
        shapes = {}
        for l, (a, n) in enumerate(zip(sizes[:-1], sizes[1:])):
            shapes[l + 1] = [("W", (n, a))] + ([("B", (n, a))] if rule.feedback == "fa" and l else []) \
                + ([("V", (a, n)), ("c", (a,))] if rule.process == "dtp" and l else []) \
                + ([(name, (m, n)) for name in head] if layerwise or l == len(sizes) - 2 else [])
        widths = sizes[1:]
        # Both views: the augmented images, and per layer its input, drive, rate, error and (DTP) noise.
        act = 2 * B * (4 * n_in + 6 * sum(widths)) * it
        act_keys: tuple[str, ...] = ("model.layers", "train.batch_size")
        act_detail = f"2 views x {B} images, layers {_show(protocol.model.layers)}"
    else:
        layers = _conv_layers(protocol.model.arch, shape[0], shape[2] if len(shape) == 3 else 1)   # colour channels
        shapes = {}
        for l, (_, c_in, side, C, pool) in enumerate(layers):
            out = side // 2 if pool else side              # what a head reads: the mean, the map or its 2 x 2 average
            fan_in = head_width(r.head_input, (out, out), C)
            shapes[l + 1] = [("W", (C, 3, 3, c_in))] + ([("B", (C, 3, 3, c_in))] if rule.feedback == "fa" and l else []) \
                + ([("V", (C, 3, 3, c_in)), ("c", (c_in,))] if rule.process == "dtp" and l else []) \
                + ([(name, (m, fan_in)) for name in head] if layerwise or l == len(layers) - 1 else [])
        widths = [C for *_, C, _ in layers]
        # Both views through every layer, each layer's input, drive, rate, pooled map and error kept
        # (end-to-end methods send the error back through all of them).
        maps = sum(side ** 2 * C for _, _, side, C, _ in layers)
        # DTP also keeps each layer's target, and its inverses' noisy inputs, drives and reconstructions.
        act = 2 * B * (4 * n_in + (9 if rule.process == "dtp" else 5) * maps) * it + _IM2COL_BYTES
        act_keys = ("model.arch", "train.batch_size")
        act_detail = f"2 views x {B} images of {' x '.join(map(str, shape))}"
    encoder = "model.layers" if protocol.model.arch == "dense" else "model.arch"
    keys = ("rule.head", encoder) if _head_dominates(shapes) else (encoder, "rule.head")
    parts += _weights_part(protocol, shapes, it, keys)
    parts.append(Part("activations of one batch", act, act_keys, act_detail))
    # The hinge loss: (B, k + 1, head) differences, their signs, gradients and gathers.
    parts.append(Part("hinge-loss temporaries of one batch", 6 * B * (k + 1) * m * it, ("rule.head", "rule.negatives",
                                                                            "train.batch_size"),
                      f"{B} images x {k + 1} pairs x head {m}"))
    n = len(probe.dataset)
    feats = _probe_features(protocol, n, 1, widths, it)
    parts.append(Part(feats.what, feats.bytes + n * int(np.prod(probe.dataset.samples.shape[1:], dtype=np.int64)) * it,
                      feats.keys, feats.detail))
    return Estimate(parts)


def _head_dominates(shapes: dict) -> bool:
    heads = sum(math.prod(s) for layer in shapes.values() for name, s in layer if name in ("H", "B_H"))
    rest = sum(math.prod(s) for layer in shapes.values() for name, s in layer if name not in ("H", "B_H"))
    return heads > rest


def _rate_out_hz(protocol) -> float:
    """The spiking model's ``rate_out`` (Hz per unit of somatic potential), or a generous default."""
    try:
        from ..models import load_model

        text = str(load_model(protocol.model_path, kind="neuron").variant("spiking")
                   .get("constants", {}).get("rate_out", ""))
        m = re.match(r"^\s*([-+0-9.eE]+)\s*(k?Hz)\s*$", text)
        if m:
            return float(m.group(1)) * (1000.0 if m.group(2) == "kHz" else 1.0)
    except Exception:           # the model file was checked before; an odd constant keeps the default
        pass
    return _DEFAULT_RATE_HZ


def _brian(protocol, prepared, rule) -> Estimate:
    ds = prepared.dataset
    T, n_in = _glimpse_shape(ds, protocol.stimulus)
    sizes = _dense_sizes(protocol, n_in)
    widths = sizes[1:]
    spiking = protocol.engine.variant == "spiking"
    n_all, n_train = len(ds), _n_train(prepared)
    length = (n_all if spiking else n_train) * T           # glimpses of one stream
    run = protocol.engine.chunk_glimpses or length         # ... of one run of the network (a chunk)
    parts = _common_parts(protocol, prepared)
    parts.append(Part("glimpse sequences", n_all * T * n_in * (2 * _itemsize(ds.samples) + 8),
                      ("stimulus.patch", "stimulus.stride"), f"{n_all:,} samples x {T} glimpses x {n_in} inputs"))
    shapes = _dense_params(sizes, rule.retro)
    # float64 weights and their initial copy, and every weight a Brian2 synapse.
    (weights,) = _weights_part(protocol, shapes, 8, ("model.layers",), factor=2)
    n_syn = sum(math.prod(s) for layer in shapes.values() for _, s in layer)
    parts.append(Part(weights.what, weights.bytes + n_syn * _BRIAN_SYNAPSE_BYTES, weights.keys,
                      weights.detail.replace("(weights, initial weights)", "(weights, initial weights) and as "
                                             f"{n_syn:,} Brian2 synapses")))
    stream = 3 * run * n_in * 8                              # a run's stream, its TimedArray and the device's copy
    L = len(widths)
    if spiking:
        k = max(int(round(protocol.stimulus.glimpse_ms / protocol.engine.dt_ms)), 1)
        seconds = length * protocol.stimulus.glimpse_ms / 1000.0
        from .brian.engine import SAVED_SPIKE_GLIMPSES, SAVED_SPIKE_NEURONS

        recorded_s = min(seconds, SAVED_SPIKE_GLIMPSES * protocol.stimulus.glimpse_ms / 1000.0)  # spikes recorded
        monitors = (run * sum(widths) * 20 + run * L * 20 + run * L * 2 * min(30, k) * 16
                    + int(min(SAVED_SPIKE_NEURONS, max(widths)) * L * _rate_out_hz(protocol) * recorded_s * 12))
        probes = protocol.evaluate.presentations * (2 if protocol.evaluate.baseline else 1)
        runs = protocol.train.epochs + probes + (1 if protocol.evaluate.fidelity else 0)
        steps = runs * length * k
        steps_detail = (f"{runs} runs ({protocol.train.epochs} epochs, the probe and fidelity) x {length:,} "
                        f"glimpses x {k:,} steps of {protocol.engine.dt_ms:g} ms per "
                        f"{protocol.stimulus.glimpse_ms:g} ms glimpse")
        keys: tuple[str, ...] = ("stimulus.glimpse_ms", "data.max_samples")
    else:
        monitors = run * L * (3 * 8 + 12 * 8)
        steps = protocol.train.epochs * length
        steps_detail = f"{protocol.train.epochs} epochs x {length:,} glimpses, one step each"
        keys = ("data.max_samples", "stimulus.patch")
    parts.append(Part("glimpse stream and monitors of one run", stream + monitors, keys + ("engine.chunk_glimpses",),
                      f"{run:,} glimpses of {n_in} inputs"))
    parts.append(_probe_features(protocol, n_all, T, widths, 8))
    return Estimate(parts, steps=steps, steps_detail=steps_detail)


# -- the check --------------------------------------------------------------------------------------------


_ADVICE = {
    "model.layers": "use fewer or narrower layers",
    "model.arch": "choose a smaller architecture ('small') or smaller patches",
    "rule.head": "use a smaller head",
    "rule.negatives": "use fewer negatives",
    "rule.offsets": "use fewer offsets",
    "train.batch_size": "use a smaller batch",
    "stimulus.patch": "use a smaller patch or a larger stride",
    "stimulus.stride": "use a larger stride",
    "stimulus.glimpse_ms": "use shorter glimpses",
    "data.max_samples": "use fewer samples",
    "engine.chunk_glimpses": "run the stream in smaller chunks",
}


def _value(protocol, dotted: str):
    table, key = dotted.split(".")
    return getattr(getattr(protocol, table), key)


def _given(protocol, dotted: str) -> bool:
    """Whether the protocol (file or overrides) sets ``dotted`` itself."""
    table, key = dotted.split(".")
    given = protocol.given or {}
    return isinstance(given.get(table), dict) and key in given[table]


def _blame(protocol, part: Part) -> str:
    """The key a refusal names: the first of the part's keys the protocol sets, else its first key."""
    for dotted in part.keys:
        if _given(protocol, dotted):
            return dotted
    return part.keys[0] if part.keys else "train.max_memory"


def check_budget(protocol, prepared) -> Estimate:
    """Refuse ``protocol`` if its :func:`estimate` does not fit in memory (or, Brian2, simulates absurdly long).

    The bound is ``[train] max_memory`` GiB if set, else the memory of this machine (a warning is
    logged when the estimate exceeds what is free now; a ``--build-only`` build holds the network in
    memory too); it bounds the host's parts. A rate run on a GPU also has its GPU parts bounded by the
    GPU's memory, where torch or CuPy can read it. The
    :class:`~neuroplastic.errors.ProtocolError` names the key that drives the largest part of the
    estimate, what that part needs, the bound and what to change. Returns the estimate.
    """
    est = estimate(protocol, prepared)
    if est.steps > MAX_SIMULATED_STEPS:
        key = "stimulus.glimpse_ms" if protocol.engine.variant == "spiking" else "train.epochs"
        raise ProtocolError(protocol.source, key, f"= {_show(_value(protocol, key))}: the Brian2 engine would simulate "
                            f"{est.steps:.3g} time steps ({est.steps_detail}), more than the {MAX_SIMULATED_STEPS:.0e} "
                            "it allows; use shorter glimpses, a larger [engine] dt_ms, fewer [train] epochs or "
                            "fewer samples ([data] max_samples)")
    if est.device_total and (gpu := gpu_memory(protocol)) is not None and est.device_total > gpu:
        _refuse(protocol, [p for p in est.parts if p.device], gpu, f"the {format_bytes(gpu)} of the GPU", False)
    limit = protocol.train.max_memory
    if limit > 0:
        bound, where = int(limit * 2**30), f"the {format_bytes(limit * 2**30)} of [train] max_memory"
    else:
        # The machine's memory, not what is free this instant: a bound that moves with other processes
        # would refuse a run one minute and accept it the next. Over what is free now, it only warns.
        bound = machine_memory()
        if bound is None:
            return est
        where = f"the {format_bytes(bound)} of memory of this machine"
    if est.total <= bound:
        free = available_memory()
        if limit <= 0 and free is not None and est.total > free:
            log.warning("%s needs about %s, more than the %s free now; it may be slow or run out of memory",
                        protocol.name, format_bytes(est.total), format_bytes(free))
        return est
    _refuse(protocol, [p for p in est.parts if not p.device], bound, where, limit > 0)


def _refuse(protocol, parts: list[Part], bound: int, where: str, raise_limit: bool):
    """Raise the :class:`ProtocolError` of ``parts`` (one memory's) exceeding ``bound``, naming the key to change."""
    total = sum(p.bytes for p in parts)
    part = max((p for p in parts if p.keys), key=lambda p: p.bytes)
    key = _blame(protocol, part)
    others = [k for k in part.keys if k != key]
    advice = _ADVICE.get(key, "lower it")
    if key == "model.arch" and protocol.model.arch == "small":
        advice = "use smaller patches or a smaller batch"
    advice += (f" (or change {', '.join(_where(k) for k in others)})" if others else "")
    if raise_limit:
        advice += ", or raise [train] max_memory"
    detail = f" ({part.detail})" if part.detail else ""
    need = (f"the {part.what} alone need {format_bytes(part.bytes)}{detail}" if part.bytes > bound else
            f"the run needs about {format_bytes(total)} in all, the {part.what} "
            f"{format_bytes(part.bytes)}{detail}")
    raise ProtocolError(protocol.source, key, f"= {_show(_value(protocol, key))}: {need}, more than {where}; {advice}")


def gpu_memory(protocol) -> int | None:
    """Bytes of memory of the GPU a rate run on ``device = "cuda"`` computes on, as its array library reports
    them; None where it cannot say (the library or the GPU missing: the run is refused for that elsewhere)."""
    if not _gpu(protocol):
        return None
    try:
        if protocol.engine.array == "torch":
            import torch
            return int(torch.cuda.mem_get_info()[1]) if torch.cuda.is_available() else None
        if protocol.engine.array == "cupy":
            import cupy
            return int(cupy.cuda.runtime.memGetInfo()[1])
    except Exception:                     # no driver, no device: nothing to bound here
        return None
    return None


def _where(dotted: str) -> str:
    table, key = dotted.split(".")
    return f"[{table}] {key}"
