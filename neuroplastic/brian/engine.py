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

**Spiking variant** (``[engine] variant = "spiking"``, models/<file>.toml ``[spiking]``): the
stream has ``len(all images) * n_glimpses`` glimpses of ``[stimulus] glimpse_ms``, simulated with
time step ``[engine] dt_ms``, so that ONE build serves the training epochs (the eye visits only the
training images) and the probe: a final run with ``eta = 0`` and ``y = 0`` over every image's
glimpses in order, whose per-glimpse spike counts (rate readout z of each layer) are the probe's
features. The random baseline is the same probe run with the initial weights.
"""
from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from ..engines import (prepare, probe_encoder, raise_diverged, require_defaults, resume_training_state,
                       save_training_state, seed_sequence)
from ..models import ModelError, load_model
from ..protocol import ProtocolError
from ..rate.network import ClappStack
from ..rules import RULES
from ..stimuli import saccade_stream
from .device import DeviceError, Simulator, gpu_available
from .network import build, describe_build_error
from .spiking import build as build_spiking, steps_per_glimpse

__all__ = ["build_only", "check", "train", "RECORDED_NEURONS"]

#: Neurons per layer whose somatic and dendritic traces are recorded.
RECORDED_NEURONS = 4
#: Spikes (spiking variant) and pixels of the first this many glimpses of the last epoch are saved.
SAVED_SPIKE_GLIMPSES = 200
#: ... of the first this many neurons of each layer (the SpikeMonitors record only these).
SAVED_SPIKE_NEURONS = 16


def check(protocol, running: bool = True) -> None:
    """Reject protocol settings this engine cannot run, before any run directory exists.

    ``running=False`` checks for a build only (a CUDA project compiles without a GPU).
    """
    if RULES[protocol.rule.name].family != "clapp":
        raise ProtocolError(protocol.source, "rule.name", f"= {protocol.rule.name!r}: the Brian2 engine simulates "
                            f"the CLAPP rules ({', '.join(n for n, r in RULES.items() if r.family == 'clapp')}); "
                            "the hinge rules run on [engine] name = \"numpy\"")
    require_defaults(protocol, ["model.arch", "stimulus.crop", "evaluate.source", "evaluate.split"],
                     "the Brian2 engine simulates dense layers on glimpses of the training data (conv encoders "
                     "and separate probe data run on [engine] name = \"numpy\")")
    if protocol.engine.variant == "spiking":
        try:
            steps_per_glimpse(protocol.stimulus.glimpse_ms, protocol.engine.dt_ms)
        except ValueError as err:
            raise ProtocolError(protocol.source, "stimulus.glimpse_ms", f"= {protocol.stimulus.glimpse_ms}: {err}")
    if running and protocol.engine.device == "cuda" and not gpu_available():
        raise DeviceError("no GPU found (nvidia-smi -L lists none): the 'cuda' device can only compile here. "
                          "Use --build-only to generate and compile the CUDA project, or --device cpp.")
    if protocol.rule.optimizer != "sgd":
        raise ProtocolError(protocol.source, "rule.optimizer",
                            f"= {protocol.rule.optimizer!r}: the Brian2 engine learns online at each saccade "
                            "event, i.e. plain SGD; set [rule] optimizer = \"sgd\"")


def loss_and_modulation(u: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Mean hinge loss and fraction of modulated glimpses (gamma != 0) over the glimpses that learn (y != 0)."""
    learn = y != 0
    margin = 1 - y[learn] * u[learn]
    return float(np.mean(np.maximum(margin, 0))), float(np.mean(margin > 0))


class _Session:
    """What a Brian2 run of a protocol needs: data, initial network, model files and the simulator."""

    def __init__(self, protocol, prepared):
        import brian2 as b2

        self.ds, self.train_idx, self.test_idx = prepared.dataset, prepared.train_idx, prepared.test_idx
        self.patches = prepared.stimulus.patches.astype("float64")
        self.n_positions = self.patches.shape[1]
        self.sizes = [self.patches.shape[-1], *protocol.model.layers]
        self.rule = RULES[protocol.rule.name]
        self.net = ClappStack.init(self.sizes, self.rule, np.random.default_rng(seed_sequence(protocol, 0)),
                                   dtype="float64", init_scale=protocol.model.init_scale,
                                   pred_init_scale=protocol.model.pred_init_scale)
        self.initial = {k: v.copy() for k, v in self.net.params.items()}
        self.neuron = load_model(protocol.model_path, kind="neuron")
        self.synapses = load_model(protocol.synapses_path, kind="synapses")
        self.spiking = protocol.engine.variant == "spiking"
        self.length = (len(self.patches) if self.spiking else len(self.train_idx)) * self.n_positions
        self.glimpse = protocol.stimulus.glimpse_ms * b2.ms
        self.protocol = protocol
        key = {"neuron": self.neuron.path.read_text(), "synapses": self.synapses.path.read_text(),
               "sizes": self.sizes, "retro": self.rule.retro, "length": self.length,
               "glimpse_ms": protocol.stimulus.glimpse_ms, "record": RECORDED_NEURONS,
               "variant": protocol.engine.variant}
        if self.spiking:
            key.update(dt_ms=protocol.engine.dt_ms, seed=protocol.seed, spike_neurons=SAVED_SPIKE_NEURONS)
        self.sim = Simulator(protocol.engine.device, key, cuda_arch=protocol.engine.cuda_arch)

    def make(self, x, y, params, eta):
        import brian2 as b2

        p = self.protocol
        if self.spiking:
            b2.seed(p.seed)         # the spike noise: fixed per protocol seed (compiled into cpp)
            return build_spiking(self.neuron, self.synapses, self.sizes, self.rule.retro, x, y, params, eta,
                                 self.glimpse, dt=p.engine.dt_ms * b2.ms, record_spikes=SAVED_SPIKE_NEURONS)
        return build(self.neuron, self.synapses, self.sizes, self.rule.retro, x, y, params, eta, self.glimpse,
                     record=RECORDED_NEURONS)

    def _translate(self, call, *args):
        try:
            return call(self.make, *args)
        except (DeviceError, ModelError):
            raise
        except Exception as err:     # Brian2 reports model mistakes with many exception types
            raise describe_build_error(err, [self.neuron, self.synapses], self.protocol.engine.variant) from err

    def simulate(self, x, y, params, eta):
        return self._translate(self.sim.run, x, y, params, eta)

    def build(self):
        """Generate and compile the standalone project without running it; return its directory."""
        x = np.zeros((self.length, self.sizes[0]))
        return self._translate(self.sim.build, x, np.zeros(self.length), self.net.params, self.protocol.rule.lr)


def build_only(protocol, prepared=None):
    """Generate and compile the protocol's network (cpp or cuda device) without running it; return its directory."""
    check(protocol, running=False)
    if protocol.engine.device == "runtime":
        raise ProtocolError(protocol.source, "engine.device", "= 'runtime': nothing to build; --build-only "
                            "needs a standalone device, 'cpp' or 'cuda'")
    return _Session(protocol, prepared if prepared is not None else prepare(protocol, running=False)).build()


def train(protocol, run, progress: bool = True, prepared=None) -> dict:
    """Train, checkpoint, probe and write everything into ``run``; return the summary."""
    check(protocol)
    session = _Session(protocol, prepared if prepared is not None else prepare(protocol))
    ds, train_idx, test_idx = session.ds, session.train_idx, session.test_idx
    patches, n_positions, sizes, rule = session.patches, session.n_positions, session.sizes, session.rule
    net, initial, spiking, length = session.net, session.initial, session.spiking, session.length
    sim, simulate = session.sim, session.simulate
    rng = np.random.default_rng(seed_sequence(protocol, 1))
    start, rows = resume_training_state(run, net.params, rng)

    tr = protocol.train
    bar = tqdm(range(start + 1, tr.epochs + 1), total=tr.epochs, initial=start, disable=not progress,
               desc=f"{protocol.name} ({protocol.engine.device})", unit="epoch", leave=False)
    for epoch in bar:
        stream = saccade_stream(train_idx, n_positions, length, protocol.stimulus.saccade_prob, rng)
        x = stream.glimpses(patches)
        bnet = simulate(x, stream.y, net.params, protocol.rule.lr)
        net.params.update(bnet.weights())
        if spiking:
            modulation = [(u, stream.y) for u in bnet.scores()]
            if epoch == tr.epochs:
                run.save_arrays("brian_monitors", _spiking_monitor_arrays(bnet, stream, x))
                run.save_arrays("brian_spikes", bnet.spikes(max_glimpses=SAVED_SPIKE_GLIMPSES))
        else:
            modulation = [(np.asarray(m.u[0]), np.asarray(m.y[0])) for m in bnet.monitors["modulation"]]
            if epoch == tr.epochs:
                run.save_arrays("brian_monitors", _monitor_arrays(bnet, stream, x))
        sim.release(bnet)
        stats = [loss_and_modulation(u, y) for u, y in modulation]
        for l, (loss, modulated) in enumerate(stats):
            rows.append(dict(epoch=epoch, stage="train", layer=l + 1, name="loss", value=loss))
            rows.append(dict(epoch=epoch, stage="train", layer=l + 1, name="modulated", value=modulated))
        losses = [s[0] for s in stats]
        if not (np.all(np.isfinite(losses)) and all(np.all(np.isfinite(v)) for v in net.params.values())):
            raise_diverged(protocol, run, epoch, losses, net.params)
        if epoch % tr.checkpoint_every == 0 or epoch == tr.epochs:
            save_training_state(run, epoch, net.params, rng, rows)
    bar.close()

    if spiking:
        # The probe reads the spiking network itself: every image's glimpses in order, no learning.
        features = _spiking_features(simulate, sim, patches, net.params)
        random_features = _spiking_features(simulate, sim, patches, initial) if protocol.evaluate.baseline \
            else features
    else:
        # The rate neuron's output is rho(W x): the probe reads it with the numpy forward pass of the
        # same weights (tests/test_brian_rate.py checks that Brian2 and numpy agree glimpse by glimpse).
        features = net.features(patches)
        random_features = ClappStack(sizes, rule, initial).features(patches)
    probe_rows, summary = probe_encoder(protocol, features, random_features, ds.labels, train_idx, test_idx,
                                        run=run)
    rows += probe_rows
    run.write_metrics(rows)
    summary["device"] = protocol.engine.device
    return summary


def _spiking_features(simulate, sim, patches, params) -> list[np.ndarray]:
    """Per-glimpse rates (n_images, n_glimpses, n) of every layer, from a run with eta = 0 and y = 0."""
    n_images, n_positions = patches.shape[:2]
    x = patches.reshape(n_images * n_positions, -1)
    bnet = simulate(x, np.zeros(len(x)), params, 0.0)
    out = [r.reshape(n_images, n_positions, -1) for r in bnet.rates()]
    sim.release(bnet)
    return out


def _stream_arrays(stream, x) -> dict[str, np.ndarray]:
    """The last epoch's eye path (image, position, y per glimpse) and its first glimpses' pixels."""
    return {"image": stream.image, "position": stream.position, "y": stream.y, "x": x[:SAVED_SPIKE_GLIMPSES]}


def _spiking_monitor_arrays(bnet, stream, x) -> dict[str, np.ndarray]:
    """The last epoch's recordings of a spiking network: modulation and rate readout per glimpse."""
    out = _stream_arrays(stream, x)
    for l, u in enumerate(bnet.scores()):
        out[f"layer{l + 1}/u"] = u
        out[f"layer{l + 1}/M"] = stream.y * (1 - stream.y * u > 0)
    for l, z in enumerate(bnet.rates()):
        out[f"layer{l + 1}/z"] = z
    for l, m in enumerate(bnet.monitors["traces"]):
        out[f"layer{l + 1}/t_s"] = np.asarray(m.t_[:])
        out[f"layer{l + 1}/v"] = np.asarray(m.v[0])
        out[f"layer{l + 1}/d"] = np.asarray(m.d[0])
    return out


def _monitor_arrays(bnet, stream, x) -> dict[str, np.ndarray]:
    """The last epoch's recordings: modulation per glimpse and traces of a few neurons per layer."""
    out = _stream_arrays(stream, x)
    for l, m in enumerate(bnet.monitors["modulation"]):
        u, y = np.asarray(m.u[0]), np.asarray(m.y[0])
        out[f"layer{l + 1}/u"] = u
        out[f"layer{l + 1}/M"] = y * (1 - y * u > 0)
    for l, m in enumerate(bnet.monitors.get("traces", [])):
        out[f"layer{l + 1}/t_s"] = np.asarray(m.t_[:])
        for var in ("a", "z", "d"):
            out[f"layer{l + 1}/{var}"] = np.asarray(getattr(m, var)[:])
    return out
