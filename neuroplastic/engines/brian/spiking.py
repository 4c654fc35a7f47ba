"""Build a spiking CLAPP network in Brian2 from the model files' ``[spiking]`` tables.

Same layout and interface as :mod:`neuroplastic.engines.brian.network` (the rate builder)::

    input         Bernoulli spikes at rate_in * x, x = stimulus(t, i) (one TimedArray row per glimpse)
    layer{l}      (l = 1, 2, ...) the stochastic-hazard soma + dendrite of models/<file>.toml [spiking.layer]
    modulator{l}  one neuron per location: u = sum_j z_j d_j, M = y Theta(1 - y u)
                  (CLAPP also u_retro = sum_i zprev_i r_i, M_retro = y Theta(1 - y u_retro))
    ff{l}         W       previous group's spikes -> layer{l}   (current + eligibility per spike)
    pred{l}       W_pred  layer{l} -> layer{l}   (context spikes -> dendrite, delayed by one glimpse; learning)
    retro{l}      W_retro layer{l} -> layer{l}   (CLAPP only)
    score{l}      layer{l} -> modulator{l}
    recorded{l}   the layer's spikes during the first glimpses (the raster) and the run's last glimpse (the
                  context the next run replays, ``carry``): an EventMonitor of the event ``recorded``

A retinotopic layer is wired as in the rate builder (:func:`network.connect_plastic`,
:func:`network.connect_scores`). Layer ``l + 1`` receives layer ``l``'s spikes; its estimate of its
input rate is layer ``l``'s rate.
A glimpse lasts ``steps_per_glimpse`` time steps of ``dt``; every group emits the custom event
``saccade`` on the last step of each glimpse (the layers never spike on that step, so the spike
count read there is final), and the layers the event ``settled`` when the glimpse's settle window
(``settle_steps`` steps) ends: from then on spikes count and the dendrite's mean ``dbar`` accumulates.
A layer's event ``replay`` delivers, through pred{l}'s undelayed ``replay`` pathway, the context spikes
of the previous run's last glimpse when a run continues a stream (:meth:`BrianSpikingClapp.carry`).
Everything runs on Brian's one defaultclock (traces are sampled on the event ``sample``): a second
clock would make the generated code differ from process to process, and so recompile it. And a stream is
one ``run()``: every run call of a standalone project generates and compiles its own copy of every code
object, so the spike recordings limit themselves in time by the condition of their event (``recorded``:
the step's spike, in the raster's glimpses or the run's last glimpse) instead of being switched between runs.

**Schedule of the last time step of a glimpse** (all layers at once; explicit orders in the
``synapses`` slot, Brian would otherwise break ties by name):

====================  =====================================================================
order -20             score{l}: u += z dbar                ([spiking.modulation] score)
order -10             pred{l}/retro{l} score: r = W_pred^T z or W_retro z
order  -5             score{l} (CLAPP): u_retro += zprev r   ([spiking.retrodiction_modulation] score)
order   0             ff{l}, pred{l} on_spike: current, eligibility and dendrite of this step's spikes
order   5             broadcast{l} (retinotopic layers): each location's u (u_retro) to its neurons
order  10             every plastic synapse learns (reads dbar, r, M(u), M_retro(u_retro), el, z, zprev)
after_resets          layer latches (zprev = z, count = 0, dbar = 0), modulator u (u_retro) = 0; then ``settled``
                      if the settle window is empty
====================  =====================================================================

Per time step the cost is the neurons' update, one ``rand()`` per neuron and one synaptic event per
spike and target, as in a plain network; the O(n_pre n_post) learning work happens once per glimpse.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import numpy as np

from ...errors import ModelError
from ...models import ModelFile
from ...rules.retinotopic import dense_layouts
from .network import (SACCADE, BrianClapp, by_location, check_summed_units, check_synapse_equations,
                      connect_plastic, connect_scores, link_modulator)

log = logging.getLogger(__name__)

__all__ = ["BrianSpikingClapp", "REPLAY", "SETTLED", "build", "constants", "settle_steps", "steps_per_glimpse",
           "warn_if_saturated"]

#: The custom event at which a glimpse's settle window ends (the model file's ``on_settled`` runs).
SETTLED = "settled"
#: The custom event that delivers, in a run's first glimpse, the context spikes of the previous chunk's last one.
REPLAY = "replay"
#: The custom event on which the traces of a layer's first neuron are sampled (about 30 times per glimpse).
SAMPLE = "sample"
#: The custom event of a layer's spikes that are recorded: ``last_spike_step == timestep(t, dt)`` (the reset
#: wrote it on this step's spike) during the raster's first glimpses (first neurons only) or the run's last glimpse.
RECORDED = "recorded"


@dataclass
class BrianSpikingClapp(BrianClapp):
    """The Brian2 objects of a spiking CLAPP network: :class:`network.BrianClapp` plus spike read-outs.

    ``monitors`` holds "recorded" (the raster's and the context's spikes, an EventMonitor per layer: read
    them with :meth:`spikes`), "counts" (per-glimpse spike counts), "modulation" (u, and CLAPP's u_retro,
    at each glimpse end) and "traces".
    """

    steps: int              # time steps per glimpse
    glimpse_s: float
    rate_out_hz: float
    counted_s: float        # the time steps of a glimpse whose spikes count (after the settle window, not the last)
    raster_glimpses: int = 0    # the spike raster covers the first this many glimpses ...
    raster_neurons: int = 0     # ... and the first this many neurons of each layer (0: no raster)

    replays: list | None = None           # per layer, the TimedArray of the previous chunk's last-glimpse spikes

    def run(self) -> None:
        """Simulate the stream in one run (the recordings limit themselves in time, see ``recorded``)."""
        import brian2 as b2

        self.network.run(self.n_glimpses * self.glimpse_s * b2.second, namespace=self.namespace)

    def _recorded(self, l: int, first_glimpse: int, stop_glimpse: float, n_neurons: int):
        """Layer ``l``'s recorded spikes in glimpses ``[first_glimpse, stop_glimpse)`` of its first ``n_neurons``:
        their time steps and neuron indices."""
        mon = self.monitors["recorded"][l]
        step = np.rint(np.asarray(mon.t_[:]) / (self.glimpse_s / self.steps)).astype(np.int64)
        i = np.asarray(mon.i[:]).astype(np.int32)
        keep = (step >= first_glimpse * self.steps) & (step < stop_glimpse * self.steps) & (i < n_neurons)
        return step[keep], i[keep]

    def carry(self) -> dict[str, np.ndarray]:
        """:meth:`BrianClapp.carry`, plus the spikes still on their way to the dendrites.

        W_pred's context spikes arrive one glimpse late, so the last glimpse's spikes of a chunk belong
        to the next chunk's first glimpse: ``"replay<l>"`` is their raster (time steps x neurons), which
        the next run's ``replay`` event delivers through the same synapses at the same time steps.
        """
        out = super().carry()
        n_steps = self.n_glimpses * self.steps
        for l, layer in enumerate(self.layers):
            step, i = self._recorded(l, self.n_glimpses - 1, np.inf, layer.N)
            raster = np.zeros((self.steps + 1, layer.N))         # the extra row: nothing after the first glimpse
            raster[step - (n_steps - self.steps), i] = 1.0
            out[f"replay{l + 1}"] = raster
            # Never a time step of the next run: its recordings start from no spike.
            out[f"{layer.name}.last_spike_step"] = np.full(layer.N, -1.0)
        return out

    def run_args(self, x, y, params, eta, carry=None) -> dict:
        carry = dict(carry or {})
        replays = {ta: carry.pop(ta.name) for ta in self.replays or [] if ta.name in carry}
        return {**super().run_args(x, y, params, eta, carry), **replays}

    def rates(self) -> list[np.ndarray]:
        """Per-glimpse spike-count rates, count / (rate_out * counted time), of every layer: (n_glimpses, n).

        What the spikes say (the probe's features), computed from the recorded counts ``nz``; spikes count
        after the glimpse's settle window, on every step but its last. The score and the plasticity read
        the model file's own readout ``z`` (the shipped model: the soma's mean potential, rectified).
        """
        return [np.asarray(mon.nz[:]).reshape(self.n_glimpses, layer.N) / (self.rate_out_hz * self.counted_s)
                for mon, layer in zip(self.monitors["counts"], self.layers)]

    def scores(self) -> list[np.ndarray]:
        """The score u of every layer at each glimpse end (M = y Theta(1 - y u) with the stream's labels y):
        (n_glimpses,) per layer, (n_glimpses, locations) for a retinotopic one."""
        return [self._per_glimpse(m, "u") for m in self.monitors["modulation"]]

    def retro_scores(self) -> list[np.ndarray] | None:
        """CLAPP: the retrodiction score u_retro of every layer at each glimpse end (gate M_retro); else None."""
        mons = self.monitors["modulation"]
        if not mons or "u_retro" not in mons[0].record_variables:
            return None
        return [self._per_glimpse(m, "u_retro") for m in mons]

    def _per_glimpse(self, mon, var: str) -> np.ndarray:
        """A modulator monitor's values at the glimpse ends, placed by glimpse and location (the event fires on
        a glimpse's last step, so ``t / glimpse`` rounds down to its glimpse)."""
        values = np.asarray(getattr(mon, var)[:])
        if mon.source.N == 1:
            return values
        out = np.zeros((self.n_glimpses, mon.source.N))
        out[np.floor(np.asarray(mon.t_[:]) / self.glimpse_s + 1e-9).astype(int), np.asarray(mon.i[:])] = values
        return out

    def spikes(self, max_glimpses: int | None = None) -> dict[str, np.ndarray]:
        """Spike times (s) and indices of every layer (optionally only those of the first glimpses)."""
        out = {}
        glimpses = self.raster_glimpses if max_glimpses is None else min(max_glimpses, self.raster_glimpses)
        for l in range(len(self.layers) if self.raster_neurons else 0):
            step, i = self._recorded(l, 0, glimpses, self.raster_neurons)
            out[f"layer{l + 1}/t_s"], out[f"layer{l + 1}/i"] = step * (self.glimpse_s / self.steps), i
        return out


_QUANTITY = re.compile(r"^\s*([-+0-9.eE]+)\s*([A-Za-z]*)\s*$")


def constants(neuron: ModelFile) -> dict:
    """``[spiking.constants]`` as Brian2 quantities (``"500 Hz"`` -> 500 * Hz)."""
    import brian2.units as units

    out = {}
    for name, text in neuron.variant("spiking").get("constants", {}).items():
        m = _QUANTITY.match(str(text))
        unit = getattr(units, m.group(2), None) if m and m.group(2) else 1
        if m is None or unit is None:
            raise ModelError(f"{neuron.where(f'spiking.constants.{name}')}: [spiking.constants] {name} = {text!r}: "
                             "write a number and a Brian2 unit, e.g. \"5 ms\"")
        out[name] = float(m.group(1)) * unit
    return out


def settle_steps(settle: float, k: int, neuron: ModelFile) -> int:
    """The settle window in time steps: ``settle`` (a fraction of the glimpse) times ``k`` steps, rounded down.

    At least two steps must remain (spikes count on all but the glimpse's last step).
    """
    s = int(np.floor(settle * k + 1e-9))
    if not 0 <= s <= k - 2:
        raise ModelError(f"{neuron.where('spiking.constants.settle')}: [spiking.constants] settle = {settle:g} leaves "
                         f"{k - s} of the glimpse's {k} time steps; allowed: 0 <= settle < {(k - 1) / k:.3g}")
    return s


def warn_if_saturated(consts: dict, dt, neuron: ModelFile) -> float:
    """Warn when an input's spike draw per step, ``rate_in * x * dt``, can exceed 1; return ``rate_in * dt``.

    A Bernoulli draw fires at most once a step, so above ``x = 1 / (rate_in dt)`` the input codes that
    value instead of ``x``: the spiking network then sees other inputs than the rate network.
    """
    rate_in = consts.get("rate_in")
    p = float(rate_in * dt) if rate_in is not None else 0.0
    if p > 1:
        log.warning("%s: [spiking.constants] rate_in = %s at [engine] dt_ms = %g: an input spikes with "
                    "probability rate_in * x * dt = %.3g x per step, which saturates above x = %.3g; use "
                    "dt_ms <= %g (or a lower rate_in) for inputs that code x faithfully",
                    neuron.where("spiking.constants.rate_in"), rate_in, float(dt / 1e-3), p, 1 / p,
                    float(1 / rate_in / 1e-3))
    return p


def steps_per_glimpse(glimpse_ms: float, dt_ms: float) -> int:
    k = int(round(glimpse_ms / dt_ms))
    if k < 2 or abs(k * dt_ms - glimpse_ms) > 1e-9 * max(glimpse_ms, 1.0):
        raise ValueError(f"glimpse_ms = {glimpse_ms} must be a multiple (>= 2) of dt_ms = {dt_ms}")
    return k


def build(neuron: ModelFile, synapses: ModelFile, sizes: list[int], retro: bool, x: np.ndarray,
          y: np.ndarray, params: dict, eta: float, glimpse, *, dt, record_spikes: bool | int = True,
          monitors: bool = True, spike_glimpses: int | None = None, layouts=None):
    """Create the spiking network (in the active device) for a glimpse stream ``x`` (length, n_in).

    Arguments as :func:`network.build`; ``dt`` is the simulation time step. ``monitors=False`` leaves
    out every monitor but the context's (for timing); ``record_spikes=False`` the spike raster, an integer
    ``k`` records the spikes of the first ``k`` neurons of each layer only, and ``spike_glimpses`` during
    the first glimpses only (all spikes of a long run take much memory). ``layouts``: each layer's wiring
    (:mod:`neuroplastic.rules.retinotopic`; default dense).
    """
    import brian2 as b2

    spk = neuron.variant("spiking")
    syn = synapses.variant("spiking")
    inp_eqs = neuron.check_equations("spiking.input.equations")
    layer_eqs = neuron.check_equations("spiking.layer.equations")
    mod_layer_eqs, mod_eqs = check_synapse_equations(synapses, "spiking", retro)

    k = steps_per_glimpse(float(glimpse / b2.ms), float(dt / b2.ms))
    consts = constants(neuron)
    settle = settle_steps(float(consts.get("settle", 0.0)), k, neuron)
    warn_if_saturated(consts, dt, neuron)
    # glimpse = k * dt was checked; Brian's "time grids not aligned" warning would be a float-rounding
    # false positive (its lookup rounds t / glimpse with a safety margin far below dt).
    b2.BrianLogger.suppress_hierarchy("brian2.input.timedarray")
    stimulus = b2.TimedArray(np.asarray(x, dtype=float), dt=glimpse, name="stimulus")
    labels = b2.TimedArray(np.asarray(y, dtype=float), dt=glimpse, name="y_label")
    ns = {"stimulus": stimulus, "y_label": labels, "glimpse": glimpse, "steps_per_glimpse": k,
          "settle_steps": settle, "window": (k - settle) * dt, **consts}
    # Brian's defaultclock, as in the rate builder: brian2cuda's pathway templates refer to it by name.
    clock = b2.defaultclock
    clock.dt = dt
    event = f"(timestep(t, dt) + 1) % {k} == 0"
    # The settle window ends after the step on which this fires (after the glimpse-end latch if they coincide).
    settled = f"(timestep(t, dt) + 1) % {k} == {settle % k}"
    # The spikes recorded (the event RECORDED): the raster's, of its first neurons in its first glimpses, and
    # every spike of the run's last glimpse (the context the next run of the stream replays).
    n_glimpses = len(x)
    raster_neurons = (max(sizes[1:]) if record_spikes is True else int(record_spikes)) if monitors else 0
    raster_glimpses = n_glimpses if spike_glimpses is None else min(int(spike_glimpses), n_glimpses)
    raster_glimpses = raster_glimpses if raster_neurons else 0
    recorded = (f"last_spike_step == timestep(t, dt) and ((timestep(t, dt) < {raster_glimpses * k} and "
                f"i < {raster_neurons}) or timestep(t, dt) >= {(n_glimpses - 1) * k})")

    def group(n, eqs, name, threshold=None, reset=None, latch=None, on_settled=None, on_step=None, replay=None):
        events = {SACCADE: event}          # a fresh dict per group (brian2's NeuronGroup keeps the dict it is given)
        if on_settled is not None:
            events[SETTLED] = settled
        namespace = ns
        if replay is not None:             # a layer: it replays context spikes and its traces are sampled
            events.update({REPLAY: "replay_context(t, i) > 0.5",
                           SAMPLE: f"i == 0 and timestep(t, dt) % {max(1, k // 30)} == 0",
                           RECORDED: recorded})
            namespace = {**ns, "replay_context": replay}
            eqs += "\nlast_spike_step : 1      # the time step of the neuron's last spike (the reset writes it)"
            reset = (reset or "") + "\nlast_spike_step = timestep(t, dt)"
        g = b2.NeuronGroup(n, eqs, threshold=threshold, reset=reset, events=events, clock=clock, name=name,
                           namespace=namespace, method="exact")
        if replay is not None:
            g.last_spike_step = -1
            g.set_event_schedule(RECORDED, when="after_resets", order=10)     # after this step's reset
        if latch and latch.strip():
            g.run_on_event(SACCADE, latch, when="after_resets", order=0)
        if on_settled and on_settled.strip():
            g.run_on_event(SETTLED, on_settled, when="after_resets", order=1)
        if on_step and on_step.strip():
            g.run_regularly(on_step, clock=clock, when="groups", order=1, name=f"{name}_on_step")
        return g

    layouts = layouts or dense_layouts(sizes)
    inp = group(sizes[0], inp_eqs, "input", threshold=spk["input"]["threshold"])
    objects, layers, modulators, plastic, wiring = [inp], [], [], {}, {}
    counts, recordings, modmons, traces, replays = [], [], [], [], []
    pre_group = inp
    for l, (n, layout) in enumerate(zip(sizes[1:], layouts)):
        # The context spikes of the previous chunk's last glimpse (all zero unless a run continues a stream).
        replays.append(b2.TimedArray(np.zeros((k + 1, n)), dt=dt, name=f"replay{l + 1}"))
        layer = group(n, by_location(layer_eqs + "\n" + mod_layer_eqs, layout), f"layer{l + 1}",
                      threshold=spk["layer"]["threshold"], reset=spk["layer"]["reset"],
                      latch=spk["layer"].get("on_glimpse_end", ""), on_settled=spk["layer"].get("on_settled"), on_step=spk["layer"].get("on_step"),
                      replay=replays[-1])
        mod_latch = syn["modulation"].get("modulator_on_glimpse_end", "")
        if retro:
            mod_latch += "\n" + syn["retrodiction_modulation"].get("modulator_on_glimpse_end", "")
        mod = group(layout.locations, mod_eqs, f"modulator{l + 1}", latch=mod_latch)
        link_modulator(layer, mod, layout, retro)
        layer.eta = eta

        def synapse(key, source, target, model, pathways, name, delay=None):
            check_summed_units(model, source, target, synapses)
            code = {p: c for p, (c, _, _) in pathways.items()}
            on_event = {p: e for p, (_, e, _) in pathways.items()}
            s = b2.Synapses(source, target, model, on_pre=code, on_event=on_event, clock=clock, name=name,
                            namespace=ns, delay=delay)
            plastic[key], wiring[key] = s, connect_plastic(s, key, layout, params)
            for p, (_, _, order) in pathways.items():
                getattr(s, p).order = order
            return s

        ff = synapse(f"{l + 1}/W", pre_group, layer, syn["feedforward"]["model"],
                     {"spike": (syn["feedforward"]["on_spike"], "spike", 0),
                      "learn": (syn["feedforward"]["on_glimpse_end"], SACCADE, 10)}, f"ff{l + 1}")
        # The context's spikes reach the dendrite one glimpse later (a homogeneous delay of one glimpse).
        pred_paths = {"context": (syn["prediction"]["on_spike"], "spike", 0),
                      "replay": (syn["prediction"]["on_spike"], REPLAY, 0),
                      "learn": (syn["prediction"]["on_glimpse_end"], SACCADE, 10)}
        if not retro:
            pred_paths["score"] = (syn["retrodiction_transpose"]["prediction_score"], SACCADE, -10)
        pred = synapse(f"{l + 1}/W_pred", layer, layer, syn["prediction"]["model"], pred_paths, f"pred{l + 1}",
                       delay={"context": glimpse})
        # CLAPP's retrodiction score needs the complete r (order -10), the layer's u does not.
        score_paths = {"score": (syn["modulation"]["score"], -20)}
        if retro:
            score_paths["score_retro"] = (syn["retrodiction_modulation"]["score"], -5)
        score = b2.Synapses(layer, mod, on_pre={p: c for p, (c, _) in score_paths.items()},
                            on_event={p: SACCADE for p in score_paths}, clock=clock, name=f"score{l + 1}",
                            namespace=ns)
        # a retinotopic layer's scores reach its neurons after the last score pathway (-5), before learning (10)
        broadcast = connect_scores(score, layer, mod, layout, retro, order=5, clock=clock, namespace=ns)
        for p, (_, order) in score_paths.items():
            getattr(score, p).order = order
        new = [layer, mod, ff, pred, score] + ([broadcast] if broadcast is not None else [])
        if retro:
            new.append(synapse(f"{l + 1}/W_retro", layer, layer, syn["retrodiction"]["model"],
                               {"score": (syn["retrodiction"]["score"], SACCADE, -10),
                                "learn": (syn["retrodiction"]["on_glimpse_end"], SACCADE, 10)}, f"retro{l + 1}"))
        # The raster's spikes and every spike of the run's last glimpse, the context the next chunk replays
        # (carry()); brian2cuda cannot monitor a subgroup's custom events, so the event selects the neurons.
        recordings.append(b2.EventMonitor(layer, RECORDED, name=f"recorded{l + 1}"))
        new.append(recordings[-1])
        if monitors:
            # Recorded at the glimpse end after the synapses, before the latches reset the count.
            counts.append(b2.EventMonitor(layer, SACCADE, variables=["nz"], when="after_synapses",
                                          name=f"counts{l + 1}"))
            # Only the scores (u, CLAPP's u_retro): brian2cuda 1.0a7 cannot record a TimedArray subexpression (y)
            # in an EventMonitor.
            modmons.append(b2.EventMonitor(mod, SACCADE, variables=["u"] + (["u_retro"] if retro else []),
                                           when="after_synapses", name=f"modulation{l + 1}"))
            # Soma and dendrite of the layer's first neuron, sampled about 30 times per glimpse.
            # (An event on the network's one clock, not a StateMonitor with a dt of its own: Brian2 writes the
            # start of every clock in an order that changes from process to process, which would change the
            # generated code and recompile it; the event is the first neuron's only: brian2cuda cannot monitor
            # a subgroup's custom events.)
            traces.append(b2.EventMonitor(layer, SAMPLE, variables=["v", "d"], name=f"traces{l + 1}"))
            new += [counts[-1], modmons[-1], traces[-1]]
        objects += new
        layers.append(layer)
        modulators.append(mod)
        pre_group = layer

    network = b2.Network(*objects)
    return BrianSpikingClapp(network, ns, stimulus, labels, layers, modulators, plastic, layers,
                             {"recorded": recordings, "counts": counts, "modulation": modmons, "traces": traces},
                             wiring, len(x) * glimpse, k, float(glimpse / b2.second), float(ns["rate_out"] / b2.Hz),
                             float((k - settle - 1) * dt / b2.second), raster_glimpses, raster_neurons, replays)
