"""What every engine needs before training, prepared before a run directory exists.

The data, its stimulus (glimpse sequences, patch grids or none for the two-view rules), the
train/test split of the probe and, if the probe has its own data, that too. Nothing here knows
an engine's insides: the chosen engine only checks the protocol first.
"""
from __future__ import annotations

import logging
from typing import NamedTuple

import numpy as np

from .. import data as datasets
from ..errors import ProtocolError, SettingError
from ..evaluate import check_folds, check_split, stratified_split
from ..evaluate.probe import validation_split
from ..data.augment import check_views
from ..models import load_model
from ..progress import phase
from ..rules import RULES, SETTINGS, SHIFT_KEYS
from ..rules.architectures import odd_pooled_map, parse_architecture, smallest_input
from ..rules.retinotopic import Layout, stack_layouts
from ..stimuli import PatchGrids, glimpse_sequences
from .budget import check_budget
from .registry import get_engine

__all__ = ["Prepared", "check", "layer_layouts", "make_stimulus", "prepare", "seed_sequence"]

log = logging.getLogger(__name__)


def seed_sequence(protocol, stream: int) -> np.random.SeedSequence:
    """Independent random stream ``stream`` of a protocol's seed: 0 weights, 1 training, 2 probe split and folds."""
    return np.random.SeedSequence([protocol.seed, stream])


class Prepared(NamedTuple):
    """What every engine needs before training: the data, its stimulus, the split, and the probe's data.

    ``stimulus`` is a :class:`~neuroplastic.stimuli.GlimpseGrid` (dense glimpse sequences), a
    :class:`~neuroplastic.stimuli.PatchGrids` (conv CLAPP, cut batch by batch) or ``None`` (hinge
    rules, which see whole images). ``probe`` is ``None`` when the probe is trained and tested on
    held-out parts of the training data (``train_idx``/``test_idx``); otherwise the probe has its own
    data (``[evaluate] source/split``), and the encoder trains on every sample of ``dataset``.
    """

    dataset: object
    stimulus: object
    train_idx: np.ndarray
    test_idx: np.ndarray
    probe: "Prepared | None" = None

    def probe_set(self) -> "Prepared":
        """The data the probe is trained and tested on (``self`` unless the probe has its own)."""
        return self.probe if self.probe is not None else self


def check(protocol, running: bool = True) -> None:
    """The checks that need no data: the engine accepts the settings, and the model files are usable."""
    get_engine(protocol.engine.name).check(protocol, running=running)
    if protocol.data.colour != "grey" and protocol.model.arch != "dense" and protocol.stimulus.kind != "views":
        raise ProtocolError(str(protocol.source), "data.colour", f"= {protocol.data.colour!r}: convolutional CLAPP "
                            f"([model] arch = {protocol.model.arch!r}) cuts its patch grids from grey images, as in "
                            "the paper; allowed with it: 'grey' (colour images go to [model] arch = 'dense', whose "
                            "glimpses flatten patch x patch x 3, or to the hinge rules)")
    load_model(protocol.model_path, kind="neuron").variant(protocol.engine.variant)   # checks the model file
    _check_probe_augment(protocol)


def _check_probe_augment(protocol) -> None:
    """``[evaluate] probe_augment`` needs crop windows to draw (views or conv CLAPP, ``crop`` > 0) and one split."""
    ev, st = protocol.evaluate, protocol.stimulus
    if ev.probe != "adam" or not ev.probe_augment:
        return
    images = protocol.engine.name == "numpy" and (st.kind == "views" or protocol.model.arch != "dense")
    problem = ("draws random crop windows of images: read with the hinge rules ([stimulus] kind = 'views') and "
               "conv CLAPP ([model] arch other than 'dense') on the numpy engine" if not images else
               "draws random [stimulus] crop windows, and crop = 0 keeps whole images; set crop > 0"
               if not st.crop else
               f"trains on the split's fresh views; with [evaluate] folds = {ev.folds} use folds = 0"
               if ev.folds else None)
    if problem:
        raise ProtocolError(str(protocol.source), "evaluate.probe_augment", f"= true {problem}")


def prepare(protocol, running: bool = True) -> Prepared:
    """Load the data, make its stimulus and split train/test: what every engine needs before training.

    The command line calls this before it creates the run directory, so input errors that only
    show with the data (e.g. a patch larger than the images) raise :class:`ProtocolError` and
    leave nothing behind; pass the result to the engine's ``train`` as ``prepared``.
    ``running=False`` prepares a build that will not run here (e.g. CUDA without a GPU).
    """
    check(protocol, running=running)
    d, ev = protocol.data, protocol.evaluate
    own_probe = bool(ev.source or ev.split)
    try:
        with phase(f"loading the data ({_named(d.source, d.split, d.path)})", logger=log):
            ds = datasets.load(d.source, d.path, d.split, d.label, d.max_samples, seed=protocol.seed, colour=d.colour)
        # The memory estimate needs only shapes: check it before the stimulus (or anything large) is made,
        # once the shapes are known to fit the encoder.
        _check_input(protocol, ds)
        check_budget(protocol, Prepared(ds, None, np.arange(len(ds)), np.arange(0)))
        with phase(f"preparing the stimulus ({len(ds)} samples, {protocol.stimulus.kind})", logger=log):
            stimulus = make_stimulus(protocol, ds)
        if not own_probe:
            _check_labelled(protocol, ds, "data.split", d.split)
            return _check_folds(protocol, Prepared(ds, stimulus, *_split(protocol, ds.labels)))
        source, path = ev.source or d.source, ev.path or d.path
        label = d.label if not ev.source else ""
        with phase(f"loading the probe's data ({_named(source, ev.split, path)})", logger=log):
            fit = datasets.load(source, path, ev.split, label, seed=protocol.seed, colour=d.colour)
        if tuple(fit.samples.shape[1:]) != tuple(ds.samples.shape[1:]):
            raise ProtocolError(str(protocol.source), "evaluate.source",
                                f"= {source!r}: its samples have shape {tuple(fit.samples.shape[1:])}, the training "
                                f"data's {tuple(ds.samples.shape[1:])}; the probe needs the same kind of sample")
        _check_labelled(protocol, fit, "evaluate.split", ev.split)
        check_budget(protocol, Prepared(ds, None, np.arange(len(ds)), np.arange(0),
                                        Prepared(fit, None, np.arange(len(fit)), np.arange(0))))
        if ev.test_split:
            with phase(f"loading the probe's test data ({_named(source, ev.test_split, path)})", logger=log):
                test = datasets.load(source, path, ev.test_split, label, seed=protocol.seed, colour=d.colour)
            both = datasets.Dataset(fit.name, np.concatenate([np.asarray(fit.samples), np.asarray(test.samples)]),
                                    np.concatenate([fit.labels, test.labels]), fit.classes, fit.domain, fit.rate)
            probe = Prepared(both, make_stimulus(protocol, both), np.arange(len(fit)),
                             np.arange(len(fit), len(both)))
        else:
            probe = Prepared(fit, make_stimulus(protocol, fit), *_split(protocol, fit.labels))
    except SettingError as err:          # a setting that does not fit the data (e.g. a patch too large)
        table, _, key = err.key.rpartition(".")
        message = str(err)
        if message.startswith(f"[{table}] {key} = "):                # the error names the key itself
            message = message.removeprefix(f"[{table}] {key} ")
        raise ProtocolError(str(protocol.source), err.key, message) from None
    return _check_folds(protocol, Prepared(ds, stimulus, np.arange(len(ds)), np.arange(0), probe))


def make_stimulus(protocol, dataset):
    """A data set's stimulus under ``[stimulus]`` and ``[model] arch`` (see :class:`Prepared`)."""
    _check_input(protocol, dataset)
    st, arch = protocol.stimulus, protocol.model.arch
    if st.kind == "views":
        return None
    if arch == "dense":
        grid = glimpse_sequences(dataset, st)
        spiking = protocol.engine.name == "brian" and protocol.engine.variant == "spiking"
        if spiking and isinstance(grid.patches, np.ndarray) and (low := float(grid.patches.min())) < 0:
            raise SettingError("stimulus.onoff", f"[stimulus] onoff = false: the spiking input codes each glimpse "
                               f"value as a spike rate, and the glimpses of {dataset.name} go down to {low:.3g}: "
                               "their negative part would be lost; set onoff = true (ON [x]+ and OFF [-x]+ inputs)")
        return grid
    if getattr(st, "onoff", False):
        raise SettingError("stimulus.onoff", f"[stimulus] onoff = true: ON/OFF inputs split dense glimpses; "
                           f"convolutional CLAPP ([model] arch = {arch!r}) reads its patch grids as they are")
    grids = PatchGrids(dataset.samples, st.patch, st.stride, st.crop, dtype=protocol.engine.dtype, flip=st.flip,
                       mean=st.mean, std=st.std)
    rows, offsets = grids.grid_shape[0], protocol.rule.offsets
    if max(offsets) >= rows:
        raise ProtocolError(protocol.source, "rule.offsets", f"= {offsets}: the patch grid has {rows} rows, so a "
                            f"patch can predict at most {rows - 1} rows below it")
    return grids


def layer_layouts(protocol, stimulus) -> list[Layout]:
    """Each layer's connections under ``[model] connectivity`` for the glimpses of ``stimulus`` (a GlimpseGrid).

    Retinotopic layers read a glimpse as a ``patch x patch`` sheet of pixels (of 1 or 3 channels), so
    they need image patches, without ON/OFF splitting (which puts the OFF copies after the ON ones).
    """
    m = protocol.model
    _check_retinotopic(protocol, images=np.shape(stimulus.positions)[1] == 2)
    return stack_layouts(stimulus.patches.shape[-1], m.layers, m.connectivity, patch=protocol.stimulus.patch,
                         kernel=m.kernel, stride=m.stride)


def _check_retinotopic(protocol, images: bool) -> None:
    """Retinotopic layers need glimpses that are image patches, not split into ON/OFF copies."""
    onoff = getattr(protocol.stimulus, "onoff", False)
    if protocol.model.connectivity == "retinotopic" and (onoff or not images):
        what = "ON/OFF copies of each pixel" if onoff else "windows of a sound or a clip"
        raise ProtocolError(protocol.source, "model.connectivity", f"= 'retinotopic': its neurons see blocks of a "
                            f"patch's pixels, and these glimpses are {what}; allowed here: 'dense'")


def _check_input(protocol, dataset) -> None:
    """Refuse an input the encoder cannot read: views larger than the images, maps that its max-pools (or its
    heads' 2 x 2 average) would shrink below 1 x 1."""
    st, arch = protocol.stimulus, protocol.model.arch
    _check_retinotopic(protocol, images=dataset.domain == "image")
    view_side = dataset.samples.shape[1]
    if st.kind == "views":
        h, w = dataset.samples.shape[1:3]                                   # (h, w) of grey or colour images
        if st.crop > min(h, w):
            raise ProtocolError(protocol.source, "stimulus.crop", f"= {st.crop}: larger than the images ({h} x {w})")
        if st.augment == "shift":
            check_views((st.crop, st.crop) if st.crop else (h, w), st.crop_pad, st.blur)
        else:                                    # the authors' pipelines have their own, fixed parameters
            for key in SHIFT_KEYS:
                if (value := getattr(st, key.split(".")[1])) != SETTINGS[key]["default"]:
                    raise ProtocolError(protocol.source, key, f"= {value!r} sets the 'shift' views, and [stimulus] "
                                        f"augment = {st.augment!r} draws its views with the authors' own "
                                        "parameters; remove the key, or set augment = 'shift'")
        view_side = st.crop or h
    if arch != "dense":
        side, key, value = ((view_side, "model.arch", arch) if st.kind == "views"
                            else (st.patch, "stimulus.patch", st.patch))
        if side < (need := smallest_input(arch)):
            raise ProtocolError(protocol.source, key, f"= {value!r}: the {arch!r} encoder halves its maps at each max-pool, so it needs inputs of at "
                                f"least {need} x {need} pixels; its input here is {side} x {side}")
        if st.kind == "views" and protocol.rule.head_input == "pool2":
            for l, spec in enumerate(parse_architecture(arch), start=1):
                side = side // 2 if spec.pool else side
                if side < 2:
                    raise ProtocolError(protocol.source, "rule.head_input", f"= 'pool2': each head averages 2 x 2 "
                                        f"windows of its layer's map, and layer {l}'s map is {side} x {side} "
                                        f"(views of {view_side} x {view_side}); use larger views, or another "
                                        "head_input: 'mean' or 'flatten'")
        if (st.kind == "views" and RULES[protocol.rule.name].process == "dtp"
                and (odd := odd_pooled_map(arch, (view_side, view_side), first=2)) is not None):
            l, (side, _) = odd
            key, value = ("stimulus.crop", st.crop) if st.crop else ("model.arch", arch)
            raise ProtocolError(protocol.source, key, f"= {value!r}: DTP's inverse of layer {l} (a transposed "
                                f"convolution of stride 2) undoes its max-pool only on maps of even side, and views "
                                f"of {view_side} x {view_side} give it {side} x {side}; use views whose side each "
                                "max-pool halves evenly")


def _check_labelled(protocol, ds, key: str, split: str) -> None:
    if len(np.unique(ds.labels[ds.labels >= 0])) < 2:
        hint = "; or probe on a labelled split with [evaluate] split" if key == "data.split" else ""
        raise ProtocolError(str(protocol.source), key, f"= {ds.name} {split or 'default'!r}: fewer than "
                            "two labelled classes, so the linear probe has nothing to decode; use a labelled "
                            f"split (see `neuroplastic list`){hint}")


def _check_folds(protocol, prepared: Prepared) -> Prepared:
    """``prepared``, once its probe data has at least ``[evaluate] folds`` samples of every class."""
    probe = prepared.probe_set()
    check_folds(protocol.source, protocol.evaluate.folds, probe.dataset.labels, probe.train_idx, probe.test_idx)
    if protocol.evaluate.validation and not protocol.evaluate.folds:   # refused before training, not after it
        try:
            validation_split(probe.dataset.labels[probe.train_idx], protocol.evaluate.validation, seed=0)
        except ValueError as err:
            raise ProtocolError(protocol.source, "evaluate.validation",
                                str(err).removeprefix("[evaluate] validation ")) from None
    return prepared


def _split(protocol, labels) -> tuple[np.ndarray, np.ndarray]:
    train, test = stratified_split(labels, protocol.data.test_fraction, seed=seed_sequence(protocol, 2))
    check_split(protocol.source, protocol.data.test_fraction, labels, train, test)
    return train, test


def _named(source: str, split: str, path) -> str:
    """A data set as a status line names it: source, split (when chosen) and where it is read from."""
    return " ".join([source, *([split] if split else []), *([f"from {path}"] if str(path) else [])])
