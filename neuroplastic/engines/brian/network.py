"""Build a CLAPP network in Brian2 from the model files: two-compartment layers, plastic synapses, modulators.

Layout, per layer ``l = 1, 2, ...`` (all names lower case, so they are safe as ``run_args`` keys)::

    input         x = stimulus(t, i)             the glimpse stream, a TimedArray (one row per glimpse)
    layer{l}      the neuron of models/<file>.toml [rate]  + the rule's [modulation] layer lines
                  + the retrodiction's gate ([retrodiction_modulation] layer lines for CLAPP,
                  [retrodiction_transpose] layer = M for CLAPP-s)
    modulator{l}  one neuron per location: u = sum_j z_j d_j, M = y Theta(1 - y u)
                  (CLAPP also u_retro = sum_i zprev_i r_i, M_retro = y Theta(1 - y u_retro))
    ff{l}         W       previous group -> layer{l}
    pred{l}       W_pred  layer{l} -> layer{l}   (context zprev -> dendrite d)
    retro{l}      W_retro layer{l} -> layer{l}   (CLAPP only; CLAPP-s sums W_pred^T z through pred{l})
    score{l}      layer{l} -> modulator{l}       (u, and CLAPP's u_retro: summed variables)
    broadcast{l}  modulator{l} -> layer{l}       (retinotopic layers: each location's u, u_retro to its neurons)

A dense layer has one location, every pathway connects all to all and ``u`` is linked to the one
modulator; a retinotopic layer (:mod:`neuroplastic.rules.retinotopic`) connects ff{l} by the
receptive fields, pred{l}, retro{l} and score{l} within each location, and its neurons get their
location's score through broadcast{l} (:func:`connect_scores`).

**The saccade event.** Every group emits the custom event ``saccade`` on the last
time step of each glimpse (a condition on the time step, so it is the same in
every group and needs no communication). Each plastic pathway runs its
``on_glimpse_end`` code on its presynaptic group's event — Brian triggers a
pathway by the *presynaptic* group's events — and reads the layer's modulation
factor as ``M_post``, computed inside the simulation from the network's own score.
The retrodiction term of W and (CLAPP) W_retro read the retrodiction pathway's
gate ``M_retro_post``, broadcast the same way from its own score ``u_retro``.

**Schedule of one glimpse** (a rate model takes one time step per glimpse):

1. ``groups`` slot: the summed variables, in a forced order layer by layer:
   soma ``a`` (order -300 + 30 l), then dendrite ``d`` and retrodiction ``r``
   (+10), then the scores ``u`` and ``u_retro`` (+20). Brian would otherwise break
   ties by name.
2. ``synapses`` slot: at the saccade event (retinotopic layers: first, at order
   -1, broadcast{l} copies each location's scores to its neurons) every plastic
   synapse applies its update; all of them read only the values stored in step 1,
   so no update sees another's result.
3. ``resets`` slot: the glimpse-end latches (``zprev = z``, ...) store the
   context for the next glimpse.

No ``network_operation`` is used (it is skipped in standalone mode).
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import numpy as np

from ...errors import ModelError
from ...models import ModelFile
from ...rules.retinotopic import Layout, dense_layouts

__all__ = ["INPUT_EQUATIONS", "BrianClapp", "build"]

#: The input group: the glimpse stream, and what it was one glimpse back.
INPUT_EQUATIONS = """
x = stimulus(t, i) : 1      # the current glimpse (rate in [0, 1])
xprev : 1                   # the previous glimpse (latched at the end of each glimpse)
"""
INPUT_ON_GLIMPSE_END = "xprev = x"
SACCADE = "saccade"
#: The first line of a retinotopic layer's broadcast code (Brian2's order-dependence warning names it).
BROADCAST = "u_post = u_pre"


@dataclass
class BrianClapp:
    """The Brian2 objects of a CLAPP network and the maps between weight matrices and synapse arrays."""

    network: object
    namespace: dict
    stimulus: object
    labels: object
    layers: list
    modulators: list
    synapses: dict          # "1/W" -> Synapses (plastic ones), like the numpy engine's parameter keys
    eta_group: list
    monitors: dict
    wiring: dict            # "1/W" -> ((n_post, n_pre), post, pre): the matrix's shape and the synapses' indices
    duration: object

    @property
    def n_glimpses(self) -> int:
        """Glimpses of one run (a chunk of a stream; the build's stream length)."""
        return len(self.stimulus.values)

    def run(self) -> None:
        """Simulate the whole stream (in standalone mode: generate the code of the run)."""
        self.network.run(self.duration, namespace=self.namespace)

    def carry(self) -> dict[str, np.ndarray]:
        """The state the next chunk of the stream starts from: ``"object.variable" -> values`` (read after a run).

        Every variable a neuron group or synapse set stores and may change (potentials, traces, latches,
        weights, eligibilities), so that a stream run in successive chunks equals one run of the whole
        stream. Passed back as :meth:`run_args` ``carry``.
        """
        out = {}
        for obj in self.network.objects:
            if obj.__class__.__name__ not in ("NeuronGroup", "Synapses"):
                continue
            for name in _stored_variables(obj):
                out[f"{obj.name}.{name}"] = np.array(getattr(obj, name)[:])
        return out

    def weights(self) -> dict[str, np.ndarray]:
        """Read every plastic matrix back as ``matrix[post, pre]`` (works after a standalone run)."""
        out = {}
        for key, syn in self.synapses.items():
            m = np.zeros(self.wiring[key][0])
            m[np.asarray(syn.j[:]), np.asarray(syn.i[:])] = np.asarray(syn.w[:])
            out[key] = m
        return out

    def run_args(self, x: np.ndarray, y: np.ndarray, params: dict, eta: float, carry: dict | None = None) -> dict:
        """``device.run`` arguments that replace stimulus, labels, weights and learning rate without recompiling.

        ``carry`` (:meth:`carry` of the previous chunk) sets the state the run starts from; the
        weights of ``params`` win over carried ones.
        """
        values = {}
        for name, value in (carry or {}).items():
            obj, var = name.split(".")
            values[name] = (getattr(self.network[obj], var), value)
        for key, syn in self.synapses.items():
            _, post, pre = self.wiring[key]
            values[f"{syn.name}.w"] = (syn.w, np.asarray(params[key], dtype=float)[post, pre])
        for group in self.eta_group:
            values[f"{group.name}.eta"] = (group.eta, float(eta))
        args = {self.stimulus: np.asarray(x, dtype=float), self.labels: np.asarray(y, dtype=float)}
        args.update(dict(values.values()))
        return args


def _stored_variables(obj) -> list[str]:
    """Names of the per-neuron (per-synapse) arrays ``obj`` owns and its code may write."""
    from brian2.core.variables import ArrayVariable, DynamicArrayVariable

    return sorted(name for name, var in obj.variables.items()
                  if isinstance(var, (ArrayVariable, DynamicArrayVariable)) and var.owner.name == obj.name
                  and not name.startswith("_") and not var.read_only and not var.constant and not var.scalar
                  and name not in ("t", "dt", "t_in_timesteps", "N", "i", "j", "lastupdate", "delay"))


def check_synapse_equations(synapses: ModelFile, variant: str, retro: bool) -> tuple[str, str]:
    """Check every synapse equation of ``variant`` the network uses, before Brian sees any.

    Returns the modulation equations added to each layer (its scores and gates: ``M`` and, for the
    retrodiction term, ``M_retro``) and those of the modulator neuron.
    """
    layer_eqs = synapses.check_equations(f"{variant}.modulation.layer")
    mod_eqs = synapses.check_equations(f"{variant}.modulation.modulator")
    if retro:       # CLAPP: the retrodiction pathway's own score and gate
        layer_eqs += "\n" + synapses.check_equations(f"{variant}.retrodiction_modulation.layer")
        mod_eqs += "\n" + synapses.check_equations(f"{variant}.retrodiction_modulation.modulator")
    else:           # CLAPP-s: M_retro = M
        layer_eqs += "\n" + synapses.check_equations(f"{variant}.retrodiction_transpose.layer")
    for part in ("feedforward", "prediction") + (("retrodiction",) if retro else ()):
        synapses.check_equations(f"{variant}.{part}.model")
    return layer_eqs, mod_eqs


def connect_plastic(syn, key: str, layout: Layout, params: dict) -> tuple:
    """Create the synapses of matrix ``key`` (``"1/W"``, ``"1/W_pred"``, ...) as ``layout`` wires it, with the
    weights of ``params``; return its :attr:`BrianClapp.wiring` entry. Pre-major order, as ``run_args`` sets them."""
    post, pre = layout.connections(key.split("/")[1])
    syn.connect(i=pre, j=post)
    syn.w = np.asarray(params[key], dtype=float)[post, pre]
    return (layout.n, syn.source.N), post, pre


def link_modulator(layer, mod, layout: Layout, retro: bool) -> None:
    """A dense layer reads its modulator's score: ``u`` (``u_retro``) linked (the model file's ``(linked)``).

    Called before any synapse of the layer is created (a synapse resolves the layer's variables when
    it is made). A retinotopic layer's neurons get their location's score from :func:`connect_scores`.
    """
    import brian2 as b2

    if layout.locations == 1:
        layer.u = b2.linked_var(mod, "u")      # no index: a size-1 source stays visible to the synapses
        if retro:
            layer.u_retro = b2.linked_var(mod, "u_retro")


def connect_scores(score, layer, mod, layout: Layout, retro: bool, *, order: int, clock, namespace: dict):
    """Connect each neuron to its location's modulator (``score``); with several locations, return the broadcast back.

    Brian2 cannot read a subexpression of an index-linked variable (the layer's ``M``) through a
    synapse, so with several locations :func:`by_location` makes ``u`` a plain variable, and the
    returned ``broadcast{l}`` synapses (modulator -> its location's neurons) copy the complete score
    into it at the saccade event, at ``order`` in the synapses slot (after the score, before learning).
    One location: ``None`` (``u`` is linked, :func:`link_modulator`).
    """
    import brian2 as b2

    if layout.locations == 1:
        score.connect()
        return None
    score.connect(i=np.arange(layout.n), j=layout.location)
    _quiet_broadcast_warning()
    copy = BROADCAST + ("\nu_retro_post = u_retro_pre" if retro else "")
    broadcast = b2.Synapses(mod, layer, on_pre={"broadcast": copy}, on_event={"broadcast": SACCADE}, clock=clock,
                            name=f"broadcast{layer.name[len('layer'):]}", namespace=namespace)
    broadcast.connect(i=layout.location, j=np.arange(layout.n))
    broadcast.broadcast.order = order
    return broadcast


def _quiet_broadcast_warning() -> None:
    """Drop Brian2's warning that the broadcast's ``u_post = u_pre`` may depend on the order of execution.

    Brian2 warns for any write to a postsynaptic variable it cannot prove unique; the broadcast has exactly
    one synapse per neuron, so no order exists. Only messages that name this line are dropped.
    """
    logger = logging.getLogger("brian2.codegen.generators.base")
    if not any(isinstance(f, _BroadcastFilter) for f in logger.filters):
        logger.addFilter(_BroadcastFilter())


class _BroadcastFilter(logging.Filter):
    def filter(self, record) -> bool:
        return f"'{BROADCAST}'" not in record.getMessage()


def by_location(equations: str, layout: Layout) -> str:
    """A layer's equations for ``layout``: with several locations, the scores ``u`` and ``u_retro`` become plain
    variables (set by :func:`connect_scores`' broadcast) instead of ``(linked)`` ones."""
    if layout.locations == 1:
        return equations
    return re.sub(r"^(\s*u(?:_retro)?\s*:\s*1\s*)\(linked\)", r"\1", equations, flags=re.M)


def build(neuron: ModelFile, synapses: ModelFile, sizes: list[int], retro: bool, x: np.ndarray,
          y: np.ndarray, params: dict, eta: float, glimpse, *, record: int = 0,
          layouts: list[Layout] | None = None):
    """Create the Brian2 network (in the active device) for a glimpse stream ``x`` (length, n_in).

    ``retro`` selects CLAPP's W_retro pathway; ``params`` uses the numpy engine's keys
    (``"1/W"``, ``"1/W_pred"``, ``"1/W_retro"`` for layer 1); ``record`` neurons of each layer get
    a StateMonitor of ``a``, ``z``, ``d`` once per glimpse (0: none). The modulators' monitors record
    ``u``, ``y`` (and CLAPP's ``u_retro``) at every glimpse, for every location. ``layouts``: each
    layer's wiring (:mod:`neuroplastic.rules.retinotopic`; default dense).
    """
    import brian2 as b2

    rate = neuron.variant("rate")
    syn = synapses.variant("rate")
    neuron_eqs = neuron.check_equations("rate.equations")
    layer_eqs, mod_eqs = check_synapse_equations(synapses, "rate", retro)

    stimulus = b2.TimedArray(np.asarray(x, dtype=float), dt=glimpse, name="stimulus")
    labels = b2.TimedArray(np.asarray(y, dtype=float), dt=glimpse, name="y_label")
    ns = {"stimulus": stimulus, "y_label": labels}
    # Everything runs on Brian's defaultclock: brian2cuda's synaptic-pathway templates refer to it by
    # name, so a network on its own Clock fails to compile for CUDA.
    clock = b2.defaultclock
    clock.dt = glimpse
    events = {SACCADE: "True"}          # one step per glimpse: every step ends a glimpse

    def group(n, eqs, name, latch=None):
        g = b2.NeuronGroup(n, eqs, events=events, clock=clock, name=name, namespace=ns)
        if latch and latch.strip():
            g.run_on_event(SACCADE, latch, when="resets")
        return g

    layouts = layouts or dense_layouts(sizes)
    inp = group(sizes[0], INPUT_EQUATIONS, "input", INPUT_ON_GLIMPSE_END)
    objects, layers, modulators, plastic, wiring = [inp], [], [], {}, {}
    pre_group = inp
    for l, (n, layout) in enumerate(zip(sizes[1:], layouts)):
        layer = group(n, by_location(neuron_eqs + "\n" + layer_eqs, layout), f"layer{l + 1}",
                      rate.get("on_glimpse_end", ""))
        mod = group(layout.locations, mod_eqs, f"modulator{l + 1}")
        link_modulator(layer, mod, layout, retro)
        layer.eta = eta
        base = -300 + 30 * l

        def synapse(key, source, target, model, code, name):
            check_summed_units(model, source, target, synapses)
            s = b2.Synapses(source, target, model, on_pre={"learn": code}, on_event={"learn": SACCADE},
                            clock=clock, name=name, namespace=ns)
            plastic[key], wiring[key] = s, connect_plastic(s, key, layout, params)
            return s

        ff = synapse(f"{l + 1}/W", pre_group, layer, syn["feedforward"]["model"],
                     syn["feedforward"]["on_glimpse_end"], f"ff{l + 1}")
        pred_model = syn["prediction"]["model"]
        if not retro:
            pred_model += "\n" + syn["retrodiction_transpose"]["prediction_model"]
        pred = synapse(f"{l + 1}/W_pred", layer, layer, pred_model, syn["prediction"]["on_glimpse_end"], f"pred{l + 1}")
        score_model = syn["modulation"]["score"]
        if retro:
            score_model += "\n" + syn["retrodiction_modulation"]["score"]
        check_summed_units(score_model, layer, mod, synapses)
        score = b2.Synapses(layer, mod, score_model, clock=clock, name=f"score{l + 1}", namespace=ns)
        broadcast = connect_scores(score, layer, mod, layout, retro, order=-1, clock=clock, namespace=ns)
        ff.summed_updaters["a_post"].order = base
        pred.summed_updaters["d_post"].order = base + 10
        new = [layer, mod, ff, pred, score] + ([broadcast] if broadcast is not None else [])
        if retro:
            back = synapse(f"{l + 1}/W_retro", layer, layer, syn["retrodiction"]["model"],
                           syn["retrodiction"]["on_glimpse_end"], f"retro{l + 1}")
            back.summed_updaters["r_post"].order = base + 10
            score.summed_updaters["u_retro_post"].order = base + 20
            new.append(back)
        else:
            pred.summed_updaters["r_pre"].order = base + 10
        score.summed_updaters["u_post"].order = base + 20
        objects += new
        layers.append(layer)
        modulators.append(mod)
        pre_group = layer

    scores = ["u", "y"] + (["u_retro"] if retro else [])
    monitors = {"modulation": [b2.StateMonitor(m, scores, record=True, when="before_synapses", name=f"modulation{l + 1}")
                               for l, m in enumerate(modulators)]}
    if record:
        monitors["traces"] = [b2.StateMonitor(g, ["a", "z", "d"], record=np.arange(min(record, g.N)),
                                              when="before_synapses", name=f"traces{l + 1}")
                              for l, g in enumerate(layers)]
    for mons in monitors.values():
        objects += mons
    network = b2.Network(*objects)
    return BrianClapp(network, ns, stimulus, labels, layers, modulators, plastic, layers, monitors, wiring,
                      len(x) * glimpse)


def check_summed_units(model: str, source, target, synapses: ModelFile) -> None:
    """A summed variable must have the unit of the neuron variable it sums into; say which line does not."""
    from brian2 import Equations
    from brian2.units.fundamentalunits import get_unit_for_display

    for eq in Equations(model).values():
        if "summed" not in eq.flags:
            continue
        name, group = (eq.varname[:-5], target) if eq.varname.endswith("_post") else (eq.varname[:-4], source)
        if name in group.variables and group.variables[name].dim != eq.dim:
            where = next((synapses.where(d, k) for d, k, line in synapses.equation_lines()
                          if line.startswith(eq.varname) and "summed" in line), str(synapses.path))
            raise ModelError(f"{where}: '{eq.varname}' has unit {get_unit_for_display(eq.dim)!r}, but it sums "
                             f"into '{name}' of '{group.name}', which has unit "
                             f"{get_unit_for_display(group.variables[name].dim)!r}")


#: Which model-file table each Brian object comes from (object names are built in :func:`build`).
_OBJECT_TABLES = {"ff": ("feedforward",), "pred": ("prediction", "retrodiction_transpose"),
                  "retro": ("retrodiction",), "score": ("modulation", "retrodiction_modulation"),
                  "modulator": ("modulation", "retrodiction_modulation"), "layer": ("",)}


def describe_build_error(err: Exception, files: list[ModelFile], variant: str = "rate") -> ModelError:
    """Turn a Brian2 error raised while building or running into a ModelError naming a model-file line.

    Brian wraps the cause (e.g. "The identifier 'b' could not be resolved") in an error about the
    object ('pred1', ...). The innermost message is shown; the line named is the one, in the
    object's table where known, that shares the most identifiers with the messages.
    """
    import re

    chain, seen = [], err
    while seen is not None and seen not in chain:
        chain.append(seen)
        seen = getattr(seen, "original_error", None) or seen.__cause__ or seen.__context__
    text = " ".join(str(e) for e in chain)
    cause = _short(str(chain[-1])) or type(chain[-1]).__name__
    words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", " ".join(re.findall(r"'([^']*)'", text))))
    objects = re.findall(r"object named '([a-z_]+)\d*'", text)
    table = _OBJECT_TABLES.get(objects[0]) if objects else None
    table = None if table is None else tuple(f"{variant}.{t}" for t in table)
    best, best_score = None, 0
    for f in files:
        for dotted, k, line in f.equation_lines():
            if not dotted.startswith(f"{variant}."):
                continue
            if table and not dotted.startswith(table if f.kind == "synapses" else f"{variant}."):
                continue
            score = len(words & set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", line)))
            if score > best_score:
                best, best_score = f.where(dotted, k), score
    if best is None:
        best = ", ".join(str(f.path) for f in files)
    return ModelError(f"{best}: Brian2 cannot build the network: {cause}")


def _short(text: str) -> str:
    lines = [l.strip() for l in text.strip().split("\n") if l.strip()]
    return " ".join(lines[:3])[:500]
