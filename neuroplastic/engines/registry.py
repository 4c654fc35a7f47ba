"""The engines a protocol may choose (``[engine] name``), found by name and imported only when used.

Choosing the numpy engine never imports Brian2. Every entry is a module whose ``ENGINE`` is an
:class:`~neuroplastic.engines.base.Engine`; engines never import each other.
"""
from __future__ import annotations

import importlib

__all__ = ["ENGINES", "RULE_KEYS", "SETTINGS", "get_engine"]

#: ``[engine] name`` -> module holding its ``ENGINE``.
ENGINES = {
    "numpy": "neuroplastic.engines.numpy.engine",
    "brian": "neuroplastic.engines.brian.engine",
}

#: The protocol keys each engine reads beyond the common ones, as ``table.key -> declaration`` (type
#: ``kind``, ``default``, allowed ``choices`` or bounds, ``doc``). Declared here, not in the engines'
#: modules, so that the protocol schema is built without importing an engine (or Brian2). A key
#: that only the other variant of the same engine reads (``dt_ms`` on a rate network) is accepted.
SETTINGS: dict[str, dict[str, dict]] = {
    "numpy": {
        "engine.dtype": dict(kind="str", default="float32", choices=("float32", "float64"),
                             doc="Floating-point type of the numpy engine."),
        "engine.array": dict(kind="str", default="numpy", choices=("numpy", "torch", "cupy"),
                             doc="Array library the rate engine computes with: the same code on numpy, torch or "
                             "CuPy arrays (the array API). torch and CuPy are optional; numpy is the reference."),
        "engine.device": dict(kind="str", default="cpu", choices=("cpu", "cuda"),
                              doc="Where the rate engine's arrays live: 'cpu', or 'cuda' (a GPU; array = 'torch' "
                              "or 'cupy'). The Brian2 engine reads this key with its own values."),
        "train.batch_size": dict(kind="int", default=64, low=2, doc="Images per update; >= 2, as a saccade "
                                 "(or a negative) goes to another image of the batch."),
    },
    "brian": {
        "engine.device": dict(kind="str", default="cpp", choices=("runtime", "cpp", "cuda"), doc="Brian2 device: "
                              "'runtime' (numpy code generation, no compiler), 'cpp' (compiled once with "
                              "cpp_standalone, then re-run) or 'cuda' (brian2cuda, nvcc)."),
        "engine.cuda_arch": dict(kind="float", default=9.0, low=5.0,
                                 doc="CUDA compute capability the 'cuda' device compiles for."),
        "engine.dt_ms": dict(kind="float", default=0.1, low=0, low_open=True,
                             doc="Simulation time step of the spiking variant, in ms."),
        "engine.chunk_glimpses": dict(kind="int", default=0, low=0, doc="Glimpses per run of the compiled "
                                      "network: a longer stream (an epoch, the probe) runs in successive chunks, "
                                      "each continuing from the state the previous one ended in, so that memory "
                                      "does not grow with the stream. 0: a whole stream in one run."),
        "stimulus.glimpse_ms": dict(kind="float", default=50.0, low=0, low_open=True, high=10_000.0,
                                    doc="Duration of one glimpse in simulated time, in ms."),
        "stimulus.saccade_prob": dict(kind="float", default=0.5, low=0, high=1, doc="Probability that a step of "
                                      "the saccade stream is a saccade (y = -1) rather than a fixation (y = +1)."),
        "model.synapses": dict(kind="path", default="clapp_synapses", doc="Synapse model file: a path (relative "
                               "to the protocol file) or the name of a file in models/."),
        "evaluate.presentations": dict(kind="int", default=1, low=1, high=1000, doc="Spiking variant: the probe "
                                       "reads every glimpse's spike-count rates averaged over this many "
                                       "presentations, each with fresh spike noise."),
        "evaluate.fidelity": dict(kind="bool", default=True, doc="Spiking variant: after training, measure how "
                                  "faithfully the spiking updates follow the rate rule at the trained weights "
                                  "(one more epoch's stream, weights frozen; the run's summary 'fidelity')."),
    },
}

#: The keys of a rule (``neuroplastic.rules.RULES[name].keys``) each engine honours; ``None``: all.
#: The Brian2 network learns one pair per glimpse in dense layers, so the rules' negatives, conv
#: settings and hinge settings are not its keys.
RULE_KEYS: dict[str, frozenset | None] = {
    "numpy": None,
    "brian": frozenset({"stimulus.saccade_prob", "model.pred_init_scale", "stimulus.onoff"}),
}


def get_engine(name: str):
    """The :class:`~neuroplastic.engines.base.Engine` called ``name`` (a name the protocol schema allows)."""
    return importlib.import_module(ENGINES[name]).ENGINE
