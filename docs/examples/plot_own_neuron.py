"""
Write your own two-compartment neuron
=====================================

The Brian2 engine builds every network from model files: the neuron's equations are in
``models/two_compartment.toml``, the plastic synapses in ``models/clapp_synapses.toml``, and no
equation is hidden in Python. To try another neuron, write another model file and point
``[model] file`` at it. Every table and key a model file may have is in the
:ref:`model-reference`.

Here the spiking soma gets **spike-frequency adaptation**: every spike adds to an adaptation
current ``wa`` that pulls the membrane potential down and decays with the time constant ``tau_a``.
We check the file, simulate the new soma on its own in Brian2, then train a CLAPP-s network made
of it.
"""

# %%
# Write the model file
# --------------------
# Start from the shipped neuron and change three places of its ``[spiking]`` variant: two
# constants, the soma's equations and the reset. Printing the difference shows exactly what the
# new neuron is.
import difflib
import tempfile
from pathlib import Path

from neuroplastic.protocol import MODELS_DIR

shipped = (MODELS_DIR / "two_compartment.toml").read_text()
edits = [
    ('tau_m = "10 ms"         # membrane time constant (unit DC gain: <v> = W x in steady state)',
     'tau_m = "10 ms"         # membrane time constant (unit DC gain: <v> = W x in steady state)\n'
     'tau_a = "100 ms"        # adaptation time constant\n'
     'beta = "0.0025"         # adaptation added by each spike'),
    ("dv/dt = (Is - v) / tau_m : 1    # somatic potential, <v> = W x for constant input rates",
     "dv/dt = (Is - v - wa) / tau_m : 1   # somatic potential, pulled down by the adaptation\n"
     "dwa/dt = -wa / tau_a : 1            # adaptation current, + beta at every spike"),
    ('reset = "nz += counting"', "reset = '''\nnz += counting\nwa += beta\n'''"),
]
text = shipped
for old, new in edits:
    assert old in text, old
    text = text.replace(old, new)
text = text.replace('description = "Two-compartment neuron:', 'description = "Adaptive two-compartment neuron:')

workdir = Path(tempfile.mkdtemp(prefix="neuroplastic-tutorial-"))
model_file = workdir / "adaptive_neuron.toml"
model_file.write_text(text)
print("".join(difflib.unified_diff(shipped.splitlines(True), text.splitlines(True),
                                   "models/two_compartment.toml", "adaptive_neuron.toml", n=0)))

# %%
# Check it
# --------
# :func:`neuroplastic.models.load_model` reads the file and checks its kind;
# :meth:`~neuroplastic.models.ModelFile.check_equations` parses every equation line with Brian2.
# A mistake is reported with the file and line, before anything is built:
from neuroplastic.models import ModelError, load_model

neuron = load_model(model_file, kind="neuron")
print(neuron.check_equations("spiking.layer.equations"))

broken = workdir / "broken_neuron.toml"
broken.write_text(text.replace("dwa/dt = -wa / tau_a : 1", "dwa/dt = -wa / tau_a"))   # no unit
try:
    load_model(broken).check_equations("spiking.layer.equations")
except ModelError as err:
    print(str(err).replace(str(workdir) + "/", ""))

# %%
# Simulate the soma in Brian2
# ---------------------------
# The model file is plain Brian2: its equations, threshold, reset and constants make a
# :class:`~brian2.groups.neurongroup.NeuronGroup` directly. Hold the synaptic current ``Is`` of
# three neurons at a constant drive (what ``W x`` would be for a constant glimpse) and compare the
# shipped soma with the adaptive one.
import brian2 as b2
import matplotlib.pyplot as plt
import numpy as np

from neuroplastic.engines.brian.spiking import constants


def simulate(model, drives, duration=300 * b2.ms):
    spiking = model.variant("spiking")
    b2.start_scope()
    b2.prefs.codegen.target = "numpy"          # no compiler needed (what the "runtime" device uses)
    b2.defaultclock.dt = 0.1 * b2.ms
    namespace = {**constants(model), "glimpse": duration, "steps_per_glimpse": 10**9, "window": duration}
    soma = b2.NeuronGroup(len(drives), model.check_equations("spiking.layer.equations") + "\ndrive : 1",
                          threshold=spiking["layer"]["threshold"], reset=spiking["layer"]["reset"],
                          namespace=namespace, method="exact")
    soma.drive = drives
    soma.run_regularly("Is = drive", when="start")
    trace = b2.StateMonitor(soma, "v", record=True)
    spikes = b2.SpikeMonitor(soma)
    b2.Network(soma, trace, spikes).run(duration, namespace={})
    return trace.t / b2.ms, np.asarray(trace.v), spikes.spike_trains()


b2.seed(1)
drives = [0.5, 1.0, 2.0]
models = {"shipped": load_model(MODELS_DIR / "two_compartment.toml"), "adaptive": neuron}
fig, axes = plt.subplots(1, 3, figsize=(12, 3.4), constrained_layout=True)
for (name, model), style in zip(models.items(), ["-", "--"]):
    t, v, trains = simulate(model, drives)
    axes[0].plot(t, v[2], style, label=name)
    for k, drive in enumerate(drives):
        spike_times = np.asarray(trains[k] / b2.ms)
        counts, edges = np.histogram(spike_times, bins=np.arange(0, 301, 25))
        axes[1].plot(edges[:-1] + 12.5, counts / 0.025, style, color=f"C{k}",
                     label=f"{name}, drive {drive}" if name == "adaptive" or k == 0 else None)
    axes[2].plot(drives, [len(trains[k]) / 0.3 for k in range(len(drives))], "o" + style, label=name)
axes[0].set(xlabel="time (ms)", ylabel="v", title="membrane potential (drive 2.0)")
axes[1].set(xlabel="time (ms)", ylabel="rate (Hz)", title="firing rate in 25 ms bins")
axes[2].set(xlabel="drive W x", ylabel="mean rate (Hz)", title="rate vs drive")
axes[0].legend()
axes[2].legend()
axes[1].legend(fontsize="x-small")
plt.show()

# %%
# Train a network of it
# ---------------------
# Point ``[model] file`` at the new file. The rest of ``protocols/clapp_digits_spiking.toml`` is
# unchanged (the CLAPP-s synapses of ``models/clapp_synapses.toml``), shrunk here to a tiny run on
# Brian2's ``runtime`` device, which needs no compiler (``cpp``, the default, compiles the network
# once and pays off for longer runs).
from neuroplastic.protocol import PROTOCOLS_DIR, load
from neuroplastic.runner import run_protocol

tiny = ["data.max_samples=40", "train.epochs=1", "model.layers=[8, 8]", "stimulus.glimpse_ms=20.0",
        "engine.dt_ms=0.25", 'engine.device="runtime"', "evaluate.folds=0"]
protocol = load(PROTOCOLS_DIR / "clapp_digits_spiking.toml", tiny + [f'model.file="{model_file}"'])
outcome = run_protocol(protocol, workdir / "runs", progress=False)
print(f"run directory: {outcome.directory.name}")
print("probe accuracy per layer (40 digits: too few to mean much):", outcome.summary["probe"])

# %%
# The run directory keeps what the Brian2 network recorded: here the membrane potential and
# dendrite of the first neuron of layer 1 during the last epoch, and the spikes of its neurons.
# Each glimpse lasts 20 ms; learning happens at the end of each one.
monitors = np.load(outcome.directory / "brian_monitors.npz")
spikes = np.load(outcome.directory / "brian_spikes.npz")
fig, (ax, bx) = plt.subplots(2, 1, figsize=(9, 4.6), sharex=True, constrained_layout=True)
t_ms = monitors["layer1/t_s"] * 1000
shown = t_ms < 200
ax.plot(t_ms[shown], monitors["layer1/v"][shown], label="soma v")
ax.plot(t_ms[shown], monitors["layer1/d"][shown], label="dendrite d")
ax.set(ylabel="layer 1, neuron 0", title="the adaptive neuron in the trained network")
ax.legend(loc="upper right")
spike_ms = spikes["layer1/t_s"] * 1000
keep = spike_ms < 200
bx.plot(spike_ms[keep], spikes["layer1/i"][keep], "|", color="k")
for edge in np.arange(0, 201, protocol.stimulus.glimpse_ms):
    ax.axvline(edge, color="grey", lw=0.5)
    bx.axvline(edge, color="grey", lw=0.5)
bx.set(xlabel="time (ms)", ylabel="neuron", title="layer 1 spikes")
plt.show()
