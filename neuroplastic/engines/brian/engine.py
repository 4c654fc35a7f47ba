"""Train a protocol with the Brian2 engine: the CLAPP network of models/ simulated glimpse by glimpse.

Each epoch is one simulation of a saccade stream over the training images
(``len(train) * n_glimpses`` glimpses; at each step the eye fixates or, with
probability ``[stimulus] saccade_prob``, saccades to another image). Learning
happens inside the simulation, once per glimpse, at the saccade event. Between
epochs the weights are read back, checkpointed, and fed to the next run as
``run_args`` — with the ``cpp`` device the network is compiled once and every
later epoch (and every other seed or learning rate of the same structure) reuses
the binary.

Initial weights and random streams come from the same seeds as the numpy engine's,
so the two engines start from the same network.

**Long streams** (``[engine] chunk_glimpses``): a stream longer than a chunk runs in successive runs of
the same network, each continuing from the state the previous one ended in (``net.carry()``), so memory
does not grow with the stream; what is kept of each chunk is its per-glimpse scores (and the probe's
rate readouts); the saved recordings are those of the last epoch's first chunk.

**Spiking variant** (``[engine] variant = "spiking"``, models/<file>.toml ``[spiking]``): the
network runs ``len(all images) * n_glimpses`` glimpses of ``[stimulus] glimpse_ms``, simulated with
time step ``[engine] dt_ms``, so that ONE build serves the training epochs and the probe: a final
run with ``eta = 0`` and ``y = 0`` over every image's glimpses in order, whose per-glimpse spike
counts (spike-count rates of each layer) are the probe's features. An epoch's training stream is the
rate variant's own (``len(train) * n_glimpses`` glimpses of the training images, drawn with the same
generator), padded with blank glimpses of ``y = 0``, on which nothing learns. The random baseline
is the same probe run with the initial weights; the probe averages ``[evaluate] presentations`` runs.
Every simulation draws its own spike noise (:func:`noise_seed`) from the one binary. After training,
``[evaluate] fidelity`` compares the spiking updates with the rate rule's at the trained weights
(:mod:`.fidelity`), and both weight sets are also probed read out as rates (``probe_rates``).
"""
from __future__ import annotations

import logging
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np

from ...errors import DeviceError, ModelError, ProtocolError
from ...models import load_model
from ...progress import phase
from ...rules import RULES, stack_rates
from ...rules.retinotopic import init_layout_params
from ...stimuli import saccade_stream
from ..base import Engine, EpochResult, Model, require, require_defaults
from ..prepare import layer_layouts, seed_sequence
from .device import Simulator, gpu_available, seed_from_environment
from .fidelity import FROZEN_ETA, compare_updates, gates, jitter_ceiling, rate_updates
from .network import build, describe_build_error
from .spiking import build as build_spiking, steps_per_glimpse

__all__ = ["ENGINE", "BrianEngine", "RECORDED_NEURONS"]

log = logging.getLogger(__name__)

#: Neurons per layer whose somatic and dendritic traces are recorded.
RECORDED_NEURONS = 4
#: Spikes (spiking variant) and pixels of the first this many glimpses of the last epoch are saved.
SAVED_SPIKE_GLIMPSES = 200
#: ... of the first this many neurons of each layer (the spike raster records only these).
SAVED_SPIKE_NEURONS = 16


def loss_and_modulation(u: np.ndarray, y: np.ndarray, u_retro: np.ndarray | None = None) -> tuple[float, float]:
    """Mean hinge loss and fraction of modulated glimpses (gamma != 0) over the glimpses that learn (y != 0).

    With CLAPP's retrodiction score ``u_retro`` the loss is the sum of both pathways' (as the numpy
    engine reports it); the fraction counts the prediction pathway's gate. Scores per location
    ``(n_glimpses, locations)`` (a retinotopic layer): the loss sums the locations' (as the rule
    does), the fraction counts locations.
    """
    learn = y != 0
    yl = np.reshape(y[learn], (-1,) + (1,) * (np.ndim(u) - 1))
    margin = 1 - yl * u[learn]
    loss = float(np.sum(np.maximum(margin, 0))) / max(int(learn.sum()), 1)
    if u_retro is not None:
        loss += float(np.sum(np.maximum(1 - yl * u_retro[learn], 0))) / max(int(learn.sum()), 1)
    return loss, float(np.mean(margin > 0))


class _Session:
    """What a Brian2 run of a protocol needs: data, initial network, model files and the simulator."""

    def __init__(self, protocol, prepared, rng):
        import brian2 as b2

        self.train_idx = prepared.train_idx
        self.patches = prepared.stimulus.patches.astype("float64")
        self.n_positions = self.patches.shape[1]
        self.rule = RULES[protocol.rule.name]
        self.layouts = layer_layouts(protocol, prepared.stimulus)
        self.sizes = [self.patches.shape[-1], *(lay.n for lay in self.layouts)]
        self.params = init_layout_params(self.layouts, self.rule.retro, rng, dtype="float64",
                                         init_scale=protocol.model.init_scale,
                                         pred_init_scale=protocol.model.pred_init_scale)
        self.neuron = load_model(protocol.model_path, kind="neuron")
        self.synapses = load_model(protocol.synapses_path, kind="synapses")
        self.spiking = protocol.engine.variant == "spiking"
        # The training stream is the same for both variants: len(train) * n_glimpses glimpses drawn
        # from the training images with the run's generator. A spiking build also serves the probe
        # (every image's glimpses in order), so it is ``length`` long and an epoch's stream is padded
        # with blank glimpses of y = 0, on which the modulation, and so every weight change, is zero.
        self.train_length = len(self.train_idx) * self.n_positions
        self.length = len(self.patches) * self.n_positions if self.spiking else self.train_length
        # Glimpses per run of the network: a longer stream runs in successive chunks, each continuing
        # from the state the previous one ended in (simulate), so memory does not grow with its length.
        self.chunk = protocol.engine.chunk_glimpses or self.length
        self.glimpse = protocol.stimulus.glimpse_ms * b2.ms
        self.protocol = protocol
        key = {"neuron": self.neuron.path.read_text(), "synapses": self.synapses.path.read_text(),
               "sizes": self.sizes, "retro": self.rule.retro, "length": self.chunk,
               "glimpse_ms": protocol.stimulus.glimpse_ms, "record": RECORDED_NEURONS,
               "variant": protocol.engine.variant}
        if protocol.model.connectivity != "dense":
            key.update(connectivity=protocol.model.connectivity, kernel=protocol.model.kernel,
                       stride=protocol.model.stride, patch=protocol.stimulus.patch)
        if self.spiking:
            key.update(dt_ms=protocol.engine.dt_ms, spike_neurons=SAVED_SPIKE_NEURONS)
        self.sim = Simulator(protocol.engine.device, key, cuda_arch=protocol.engine.cuda_arch, name=protocol.name)

    def make(self, x, y, params, eta):
        import brian2 as b2

        p = self.protocol
        if self.spiking:
            # The spike noise: every run passes its own seed (noise_seed), so one binary serves every seed.
            b2.seed(0)
            seed_from_environment()
            return build_spiking(self.neuron, self.synapses, self.sizes, self.rule.retro, x, y, params, eta,
                                 self.glimpse, dt=p.engine.dt_ms * b2.ms, record_spikes=SAVED_SPIKE_NEURONS,
                                 spike_glimpses=SAVED_SPIKE_GLIMPSES, layouts=self.layouts)
        return build(self.neuron, self.synapses, self.sizes, self.rule.retro, x, y, params, eta, self.glimpse,
                     record=RECORDED_NEURONS, layouts=self.layouts)

    def _translate(self, call, *args):
        try:
            return call(self.make, *args)
        except (DeviceError, ModelError):
            raise
        except Exception as err:     # Brian2 reports model mistakes with many exception types
            if not _raised_by_brian(err):
                raise                # our bug, a missing module, a full disk: not the model file's fault
            raise describe_build_error(err, [self.neuron, self.synapses], self.protocol.engine.variant) from err

    def simulate(self, x, y, params, eta, noise: tuple[int, int] | None = None, read=None) -> dict:
        """Run the stream ``x``, ``y`` from weights ``params``; return the weights after it.

        The stream runs in chunks of :attr:`chunk` glimpses, each a run of the same network that starts
        where the previous one ended (``net.carry()``); the last chunk is padded with blank glimpses of
        y = 0, on which nothing learns. ``x`` is anything sliceable (a lazily cut stream).
        ``read(net, start, n)`` sees each chunk's network (glimpses ``start`` to ``start + n`` of the
        stream) before its results are released. ``noise = (purpose, index)`` picks the spike noise
        (:func:`noise_seed`), one seed per chunk.
        """
        n_chunks = -(-len(y) // self.chunk)
        carry = None
        with phase(f"{len(y):,} glimpses in {n_chunks} runs of {self.chunk:,}", total=n_chunks, unit="run",
                   logger=log) if n_chunks > 1 else nullcontext(lambda n=1: None) as advance:
            for c in range(n_chunks):
                start, stop = c * self.chunk, min(len(y), (c + 1) * self.chunk)
                xc, yc = _padded(np.asarray(x[start:stop], dtype=float), np.asarray(y[start:stop]), self.chunk)
                seed = None if noise is None or not self.spiking else noise_seed(self.protocol, *noise, chunk=c)
                net = self._translate(self.sim.run, xc, yc, params, eta, seed, carry)
                params = net.weights()
                if c + 1 < n_chunks:
                    carry = net.carry()
                if read is not None:
                    read(net, start, stop - start)
                self.sim.release(net)
                advance()
        return params

    def build(self):
        """Generate and compile the standalone project without running it; return its directory."""
        x = np.zeros((self.chunk, self.sizes[0]))
        return self._translate(self.sim.build, x, np.zeros(self.chunk), self.params, self.protocol.rule.lr)


#: What a spiking run's noise seed is for (:func:`noise_seed`).
TRAINING, PROBE, FIDELITY = 0, 1, 2


def noise_seed(protocol, purpose: int, index: int, chunk: int = 0) -> int:
    """The spike-noise seed of one simulation: fresh for every epoch, probe presentation, fidelity run and chunk.

    Drawn from the protocol's seed (stream 3 of :func:`~neuroplastic.engines.prepare.seed_sequence`'s
    numbering), so a run is reproducible and a resumed epoch sees the noise it would have seen.
    """
    entropy = [protocol.seed, 3, purpose, index] + ([chunk] if chunk else [])
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def _raised_by_brian(err: BaseException) -> bool:
    """Whether ``err`` was raised inside Brian2 (or a compiler it ran): then the model files are the suspects."""
    import brian2

    if isinstance(err, (ImportError, MemoryError)):
        return False
    root = str(Path(brian2.__file__).parent)
    tb = err.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.startswith(root):
            return True
        tb = tb.tb_next
    return False


#: What :func:`check_model_files` found for the model files (paths, contents, and what the network takes from
#: the protocol): ``None`` if they passed, else the message (``validate`` then ``run`` build them once).
_CHECKED: dict = {}


def check_model_files(protocol) -> None:
    """Check the protocol's neuron and synapse files fully, as the network will use them, or raise ModelError.

    Every key, table and Brian2 string of the variant is checked (:meth:`~neuroplastic.models.ModelFile.
    check_brian`); then the network is built with one neuron per group in runtime mode and prepared for a
    run of no time, with the namespace the engine uses, so that unknown names and units that do not agree
    show here, before any run directory exists. Nothing is compiled; it takes a fraction of a second.
    """
    variant = protocol.engine.variant
    neuron = load_model(protocol.model_path, kind="neuron")
    synapses = load_model(protocol.synapses_path, kind="synapses")
    neuron.check_brian(variant)
    synapses.check_brian(variant)
    retro = RULES[protocol.rule.name].retro
    n_layers = min(len(protocol.model.layers), 2)
    key = (str(neuron.path), neuron.path.read_bytes(), str(synapses.path), synapses.path.read_bytes(), variant,
           retro, n_layers, protocol.stimulus.glimpse_ms, protocol.engine.dt_ms if variant == "spiking" else None)
    if key not in _CHECKED:
        try:
            _build_one_neuron_network(neuron, synapses, variant, retro, n_layers, protocol.stimulus.glimpse_ms,
                                      protocol.engine.dt_ms)
            _CHECKED[key] = None
        except ModelError as err:
            _CHECKED[key] = str(err)
    if _CHECKED[key] is not None:
        raise ModelError(_CHECKED[key])


def _build_one_neuron_network(neuron, synapses, variant: str, retro: bool, n_layers: int, glimpse_ms: float,
                              dt_ms: float) -> None:
    """Build the network of the model files with one neuron per group (runtime device) and prepare a run of 0 s."""
    import gc
    import traceback

    import brian2 as b2
    from brian2.devices.device import reset_device

    sizes = [1] * (n_layers + 1)
    params = {f"{l}/{k}": np.zeros((1, 1)) for l in range(1, n_layers + 1) for k in ("W", "W_pred", "W_retro")}
    x, y = np.zeros((2, 1)), np.zeros(2)
    target, dt = b2.prefs.codegen.target, b2.defaultclock.dt
    error = None
    # Brian2's warnings (e.g. about the objects a failed build leaves) are the real build's to give.
    with _brian_silent():
        b2.set_device("runtime")
        b2.prefs.codegen.target = "numpy"           # code as Python strings: nothing is compiled
        try:
            if variant == "spiking":
                net = build_spiking(neuron, synapses, sizes, retro, x, y, params, 0.0, glimpse_ms * b2.ms,
                                    dt=dt_ms * b2.ms, record_spikes=SAVED_SPIKE_NEURONS)
            else:
                net = build(neuron, synapses, sizes, retro, x, y, params, 0.0, glimpse_ms * b2.ms,
                            record=RECORDED_NEURONS)
            net.network.run(0 * b2.second, namespace=net.namespace)
        except Exception as err:     # Brian2 reports model mistakes with many exception types
            if not isinstance(err, ModelError) and not _raised_by_brian(err):
                raise
            error = err if isinstance(err, ModelError) else describe_build_error(err, [neuron, synapses], variant)
            traceback.clear_frames(err.__traceback__)      # let the half-built objects go
            err.__traceback__ = error.__traceback__ = None
        finally:
            net = None
            reset_device()
            b2.prefs.codegen.target = target
            b2.defaultclock.dt = dt
            gc.collect()             # frees the objects' names for the network the run builds
    if error is not None:
        raise error


@contextmanager
def _brian_silent():
    """Drop Brian2's log messages while inside (its ``catch_logs`` leaves a handler behind)."""
    handlers = list(logging.getLogger("brian2").handlers)

    def drop(record):
        return False

    for handler in handlers:
        handler.addFilter(drop)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(drop)


class BrianEngine(Engine):
    """The two-compartment network of the model files, rate or spiking, in Brian2."""

    name = "brian"

    def check(self, protocol, running: bool = True) -> None:
        """Reject protocol settings this engine cannot run, before any run directory exists.

        ``running=False`` checks for a build only (a CUDA project compiles without a GPU).
        """
        if RULES[protocol.rule.name].family != "clapp":
            raise ProtocolError(protocol.source, "rule.name", f"= {protocol.rule.name!r}: the Brian2 engine simulates "
                                f"the CLAPP rules ({', '.join(n for n, r in RULES.items() if r.family == 'clapp')}); "
                                "the hinge rules run on [engine] name = \"numpy\"")
        require_defaults(protocol, ["model.arch", "evaluate.source", "evaluate.split"],
                         "the Brian2 engine simulates dense layers on glimpses of the training data (conv encoders "
                         "and separate probe data run on [engine] name = \"numpy\")")
        require_defaults(protocol, ["data.colour"], "the Brian2 engine simulates grey glimpses (colour: numpy engine)")
        if protocol.engine.variant == "spiking":
            try:
                steps_per_glimpse(protocol.stimulus.glimpse_ms, protocol.engine.dt_ms)
            except ValueError as err:
                raise ProtocolError(protocol.source, "stimulus.glimpse_ms", f"= {protocol.stimulus.glimpse_ms}: {err}")
        if running and protocol.engine.device == "cuda" and not gpu_available():
            raise DeviceError("no GPU found (nvidia-smi -L lists none): the 'cuda' device can only compile here. "
                              "Use --build-only to generate and compile the CUDA project, or --device cpp.")
        require(protocol, "rule.optimizer", ("sgd",), "the Brian2 engine learns online at each saccade event, "
                "i.e. plain SGD")
        check_model_files(protocol)

    def init(self, protocol, prepared, rng) -> Model:
        session = _Session(protocol, prepared, rng)
        return Model(session.params, len(session.sizes) - 1, net=session, steps=1, unit="epoch",
                     summary={"device": protocol.engine.device})

    def epoch(self, model, epoch, rng, tick) -> EpochResult:
        s, p = model.net, model.net.protocol
        stream = saccade_stream(s.train_idx, s.n_positions, s.train_length, p.stimulus.saccade_prob, rng)
        scores, arrays = _Scores(), {}

        def read(bnet, start, n):
            scores.read(bnet, n)
            if start == 0 and epoch == p.train.epochs:      # recordings of the last epoch's first chunk
                x = np.asarray(_StreamGlimpses(stream, s.patches)[:SAVED_SPIKE_GLIMPSES])
                if s.spiking:
                    arrays.update(brian_monitors=_spiking_monitor_arrays(bnet, stream, x, n),
                                  brian_spikes=bnet.spikes(max_glimpses=SAVED_SPIKE_GLIMPSES))
                else:
                    arrays.update(brian_monitors=_monitor_arrays(bnet, stream, x, n))

        model.params.update(s.simulate(_StreamGlimpses(stream, s.patches), stream.y, model.params, p.rule.lr,
                                       noise=(TRAINING, epoch), read=read))
        u, u_retro = scores.joined()
        if arrays:                                       # the whole epoch's scores and gates
            arrays["brian_monitors"].update(_gates(u, u_retro, stream.y))
        means = {}
        for l in range(len(u)):
            means[(l + 1, "loss")], means[(l + 1, "modulated")] = loss_and_modulation(
                u[l], stream.y, None if u_retro is None else u_retro[l])
        tick()
        return EpochResult(means, arrays)

    def features(self, model, params, probe) -> list:
        s = model.net
        if s.spiking:
            # The probe reads the spiking network itself: every image's glimpses in order, no learning.
            return _spiking_features(s, params, s.protocol.evaluate.presentations)
        # The rate neuron's output is rho(W x): the probe reads it with the rules' forward pass of the
        # same weights (tests/test_brian_rate.py checks that Brian2 and numpy agree glimpse by glimpse).
        return stack_rates(params, s.patches)

    def readouts(self, model, initial, probe) -> dict:
        """Spiking variant: the trained and the initial weights read out as rates (the rate neuron's rho(W x))."""
        s = model.net
        if not s.spiking:
            return {}
        return {"rates": (stack_rates(model.params, s.patches), stack_rates(initial, s.patches))}

    def diagnostics(self, model) -> dict:
        """Spiking variant: fidelity to the rate rule at the trained weights (:mod:`.fidelity`), if asked."""
        s, p = model.net, model.net.protocol
        if not s.spiking or not p.evaluate.fidelity:
            return {}
        with phase("fidelity: a frozen-weight spiking epoch against the rate rule", logger=log):
            return {"fidelity": _fidelity(s, model.params)}

    def build(self, protocol, prepared):
        """Generate and compile the protocol's network (cpp or cuda device) without running it; return its directory.

        ``prepared`` is :func:`~neuroplastic.engines.prepare.prepare` with ``running=False`` (which checked the
        protocol for a build that need not run here).
        """
        if protocol.engine.device == "runtime":
            raise ProtocolError(protocol.source, "engine.device", "= 'runtime': nothing to build; --build-only "
                                "needs a standalone device, 'cpp' or 'cuda'")
        return _Session(protocol, prepared, np.random.default_rng(seed_sequence(protocol, 0))).build()


#: The Brian2 engine, as the registry finds it.
ENGINE = BrianEngine()


def _spiking_features(s: _Session, params, presentations: int) -> list[np.ndarray]:
    """Per-glimpse rates (n_images, n_glimpses, n) of every layer, averaged over ``presentations`` runs."""
    with phase(f"spiking presentations of {s.patches.shape[0]} images", total=presentations, unit="run",
               logger=log) as advance:
        for mean in presented_rates(s, params, presentations):
            advance()
    return mean


def presented_rates(s: _Session, params, presentations: int):
    """Yield every layer's per-glimpse spike-count rates (n_images, n_glimpses, n) averaged over the first
    k presentations, for k = 1 to ``presentations``.

    Each presentation is a run with eta = 0 and y = 0 over every image's glimpses in order, with spike noise
    of its own (:func:`noise_seed`; the k-th presentation's is the same in every call).
    """
    n_images, n_positions = s.patches.shape[:2]
    x = s.patches.reshape(n_images * n_positions, -1)
    total = [np.zeros((len(x), n)) for n in s.sizes[1:]]

    def read(bnet, start, n):
        for t, r in zip(total, bnet.rates()):
            t[start:start + n] += r[:n]

    for k in range(presentations):
        s.simulate(x, np.zeros(len(x)), params, 0.0, noise=(PROBE, k), read=read)
        yield [(t / (k + 1)).reshape(n_images, n_positions, -1) for t in total]


def _fidelity(s: _Session, params) -> dict:
    """Frozen-weight fidelity of the spiking updates to the rate rule on one epoch's stream, and its ceiling.

    The stream is drawn like a training epoch's, from a generator of its own (the run's are untouched).
    """
    rng = np.random.default_rng(np.random.SeedSequence([s.protocol.seed, 4]))
    stream = saccade_stream(s.train_idx, s.n_positions, s.train_length, s.protocol.stimulus.saccade_prob, rng)
    x, y = stream.glimpses(s.patches), stream.y
    rate = rate_updates(params, x, y, s.layouts)
    scores = _Scores()
    after = s.simulate(x, y, params, FROZEN_ETA, noise=(FIDELITY, 0), read=lambda bnet, start, n: scores.read(bnet, n))
    spiking = ({k: (after[k] - params[k]) / FROZEN_ETA for k in rate[0]}, *scores.joined())
    return {"frozen": compare_updates(rate, spiking, y, s.layouts),
            "ceiling": jitter_ceiling(params, x, y, rng, rate, s.layouts),
            "glimpses": int(np.count_nonzero(y))}


def _padded(x: np.ndarray, y: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """The stream ``(x, y)`` followed by blank glimpses with y = 0 (no modulation, so no learning) up to ``length``."""
    pad = length - len(y)
    return np.concatenate([x, np.zeros((pad, x.shape[1]))]), np.concatenate([y, np.zeros(pad)])


class _StreamGlimpses:
    """A saccade stream's inputs, cut from the glimpse grid chunk by chunk (never the whole stream at once)."""

    def __init__(self, stream, patches):
        self.stream, self.patches = stream, patches

    def __len__(self) -> int:
        return len(self.stream.y)

    def __getitem__(self, part: slice) -> np.ndarray:
        return self.patches[self.stream.image[part], self.stream.position[part]]


def _run_scores(bnet) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """Per layer the score u (and CLAPP's u_retro, else None) at every glimpse of one run, either variant."""
    if "counts" in bnet.monitors:                    # spiking
        return bnet.scores(), bnet.retro_scores()

    def per_glimpse(values):         # (locations, n_glimpses) -> (n_glimpses,), or (n_glimpses, locations)
        values = np.asarray(values)
        return values[0] if len(values) == 1 else values.T

    mons = bnet.monitors["modulation"]
    retro = [per_glimpse(m.u_retro[:]) for m in mons] if "u_retro" in mons[0].record_variables else None
    return [per_glimpse(m.u[:]) for m in mons], retro


class _Scores:
    """The scores of a stream's chunks, joined (a stream's per-glimpse scores are all a run keeps of it)."""

    def __init__(self):
        self.u, self.u_retro = [], []

    def read(self, bnet, n: int) -> None:
        u, u_retro = _run_scores(bnet)
        self.u.append([v[:n] for v in u])
        self.u_retro.append(None if u_retro is None else [v[:n] for v in u_retro])

    def joined(self) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
        u = [np.concatenate(parts) for parts in zip(*self.u)]
        if self.u_retro[0] is None:
            return u, None
        return u, [np.concatenate(parts) for parts in zip(*self.u_retro)]


def _gates(u, u_retro, y) -> dict[str, np.ndarray]:
    """The scores and gates M = y Theta(1 - y u) of every layer (CLAPP: also the retrodiction pathway's)."""
    out = {}
    for l, v in enumerate(u):
        out[f"layer{l + 1}/u"], out[f"layer{l + 1}/M"] = v, gates(v, y)
    for l, v in enumerate(u_retro or []):
        out[f"layer{l + 1}/u_retro"], out[f"layer{l + 1}/M_retro"] = v, gates(v, y)
    return out


def _stream_arrays(stream, x) -> dict[str, np.ndarray]:
    """The last epoch's eye path (image, position, y per glimpse) and its first glimpses' pixels."""
    return {"image": stream.image, "position": stream.position, "y": stream.y, "x": x[:SAVED_SPIKE_GLIMPSES]}


def _spiking_monitor_arrays(bnet, stream, x, n: int) -> dict[str, np.ndarray]:
    """The recordings of a spiking network's first run (``n`` glimpses) of the last epoch: rate readouts, traces."""
    out = _stream_arrays(stream, x)
    for l, z in enumerate(bnet.rates()):
        out[f"layer{l + 1}/z"] = z[:n]
    for l, m in enumerate(bnet.monitors["traces"]):
        out[f"layer{l + 1}/t_s"] = np.asarray(m.t_[:])
        out[f"layer{l + 1}/v"] = np.asarray(m.v[:])
        out[f"layer{l + 1}/d"] = np.asarray(m.d[:])
    return out


def _monitor_arrays(bnet, stream, x, n: int) -> dict[str, np.ndarray]:
    """The recordings of a rate network's first run (``n`` glimpses) of the last epoch: traces of a few neurons."""
    out = _stream_arrays(stream, x)
    for l, m in enumerate(bnet.monitors.get("traces", [])):
        out[f"layer{l + 1}/t_s"] = np.asarray(m.t_[:])[:n]
        for var in ("a", "z", "d"):
            out[f"layer{l + 1}/{var}"] = np.asarray(getattr(m, var)[:])[:, :n]
    return out

