"""
Use neuroplastic from Python
============================

Everything ``neuroplastic run`` does is one call away in a notebook or a script:
:func:`neuroplastic.load_protocol <neuroplastic.api.load_protocol>` loads a protocol with overrides,
:func:`neuroplastic.run <neuroplastic.api.run>` trains and probes it and returns a
:class:`~neuroplastic.api.Result` with the weights, the probe's features, the metrics and the
summary. :func:`neuroplastic.train_clapp <neuroplastic.api.train_clapp>` trains the same rule on
arrays of your own.

The protocol is the quickstart, ``clapp_digits`` (CLAPP-s on scikit-learn's digits, numpy engine),
shrunk to a few hundred digits and a few epochs so that this page runs in seconds.
"""

# %%
# Load a protocol
# ---------------
# A shipped protocol is loaded by name (``neuroplastic list`` shows them), a file by its path.
# Overrides are keyword arguments ``table__key=value``: ``train__epochs=10`` is the command line's
# ``--set train.epochs=10``. A key that does not exist is refused, naming the key and what is
# allowed, as ``--set`` does.
import matplotlib.pyplot as plt
import numpy as np

import neuroplastic
from neuroplastic.errors import ProtocolError

protocol = neuroplastic.load_protocol("clapp_digits", train__epochs=10, model__layers=[32, 32])
print(protocol.name, protocol.rule.name, protocol.model.layers, protocol.train.epochs)
try:
    neuroplastic.load_protocol("clapp_digits", rule__lrate=1e-3)
except ProtocolError as err:
    print(err)

# %%
# Run it in memory
# ----------------
# Without ``out``, the run happens in a temporary directory that is read into the result and
# removed: nothing is left on disk. Running the cell again trains again from the same seed and
# gives the same numbers.
result = neuroplastic.run(protocol)
again = neuroplastic.run(protocol)
print(result)
print("layer  trained  random")
for layer, accuracy in result.probe.items():
    print(f"{layer:>5}  {accuracy:7.3f}  {result.probe_random[layer]:6.3f}")
print("same probe:", result.probe == again.probe,
      "| same weights:", all(np.array_equal(result.weights[k], again.weights[k]) for k in result.weights))

# %%
# Weights, features and metrics
# -----------------------------
# ``weights`` and ``initial_weights`` are keyed like the engine's parameters (``"1/W"`` is layer 1's
# feed-forward matrix, one row per unit, here over 4 x 4 glimpses). ``features`` holds, per layer,
# the glimpse-averaged features the linear probe read, with their ``labels``; ``history`` gives a
# metric per epoch and layer.
W, W0 = result.weights["1/W"], result.initial_weights["1/W"]
patch = protocol.stimulus.patch
fig, axes = plt.subplots(2, 8, figsize=(8, 2.4))
for unit, (top, bottom) in enumerate(axes.T):
    top.imshow(W0[unit].reshape(patch, patch), cmap="RdBu_r")
    bottom.imshow(W[unit].reshape(patch, patch), cmap="RdBu_r")
for ax in axes.flat:
    ax.set_axis_off()
axes[0, 0].set_title("initial", loc="left", fontsize=9)
axes[1, 0].set_title("trained", loc="left", fontsize=9)
fig.suptitle("layer 1: the input weights of 8 units")

fig, (ax, bx) = plt.subplots(1, 2, figsize=(9, 3.4), constrained_layout=True)
for layer, loss in result.history("loss").items():
    ax.plot(np.arange(1, len(loss) + 1), loss, "o-", label=f"layer {layer}")
ax.set(xlabel="epoch", ylabel="hinge loss", title="layer-local loss")
ax.legend()
features, labels = result.features[2], result.labels
class_means = np.stack([features[labels == c].mean(axis=0) for c in np.unique(labels)])
bx.imshow(class_means, aspect="auto", cmap="viridis")
bx.set(xlabel="unit", ylabel="digit", title="layer 2: mean feature per digit")
print({layer: f.shape for layer, f in result.features.items()}, labels.shape)

# %%
# Keep a run on disk
# ------------------
# With ``out`` the run directory is the one ``neuroplastic run --out`` makes. Running a finished run
# again loads it (``reused``) instead of training it twice; ``neuroplastic.load_run`` reads any run
# directory, e.g. one the command line made.
import tempfile

out = tempfile.mkdtemp(prefix="neuroplastic-tutorial-")
kept = neuroplastic.run(protocol, out)
loaded = neuroplastic.run(protocol, out)
print(kept.directory.name, "| trained now:", not kept.reused, "| loaded the second time:", loaded.reused)
print("same as in memory:", kept.probe == result.probe, neuroplastic.load_run(kept.directory).probe == kept.probe)

# %%
# CLAPP-s on your own arrays
# --------------------------
# :func:`neuroplastic.train_clapp <neuroplastic.api.train_clapp>` takes glimpse sequences
# ``(n, T, n_in)``. Here each sequence is a noisy view, glimpse after glimpse, of one of 8 random
# prototypes: what stays the same from one glimpse to the next is the prototype, and that is what a
# layer learns to predict. Its features
# come to carry more of the prototype's identity than the random-weight layer it started from
# (``epochs=0``, the same seed).
rng = np.random.default_rng(0)
prototypes = rng.standard_normal((8, 32))
classes = rng.integers(8, size=400)
x = (prototypes[classes][:, None, :] + 1.5 * rng.standard_normal((400, 6, 32))).astype("float32")
fit = neuroplastic.train_clapp(x, layers=[32], epochs=30, batch_size=32, lr=1e-3)
start = neuroplastic.train_clapp(x, layers=[32], epochs=0)


def prototype_share(z):
    """The fraction of the sequence-averaged features' variance explained by the prototype."""
    z = z.mean(axis=1)
    means = np.stack([z[classes == c].mean(axis=0) for c in range(8)])
    return float(((means[classes] - z.mean(axis=0)) ** 2).sum() / ((z - z.mean(axis=0)) ** 2).sum())


trained_share, random_share = prototype_share(fit.features(x)[0]), prototype_share(start.features(x)[0])
print(f"variance explained by the prototype: trained {trained_share:.2f}, random weights {random_share:.2f}")
fig, ax = plt.subplots(figsize=(5, 3.2), constrained_layout=True)
ax.plot(np.arange(1, len(fit.loss) + 1), fit.loss[:, 0], "o-", markersize=3)
ax.set(xlabel="epoch", ylabel="hinge loss", title="CLAPP-s on random prototypes")
plt.show()

# %%
# ``fit.net`` is the numpy engine's :class:`~neuroplastic.engines.numpy.clapp_stack.ClappStack`,
# and the rule itself is :func:`neuroplastic.rules.clapp_sequences`, a plain function of arrays: the
# same code every engine and protocol run uses.
