"""The plasticity math, as plain functions on arrays: the single source of truth both engines use.

:data:`RULES` names every rule a protocol may choose (``[rule] name``).
"""
from dataclasses import dataclass

from .clapp import ClappGrads, LayerForward, clapp_pairs, clapp_sequences, forward, relu, relu_prime

__all__ = ["RULES", "Rule", "ClappGrads", "LayerForward", "clapp_pairs", "clapp_sequences", "forward", "relu", "relu_prime"]


@dataclass(frozen=True)
class Rule:
    """What distinguishes the rules of one family, as the engines need it.

    ``retro``: a separate retrodiction matrix ``W_retro`` (CLAPP) instead of
    ``W_pred^T`` (CLAPP-s). ``pairing``: ``"contrastive"`` evaluates a positive
    and ``[rule] negatives`` negative pairs at every step (CLAPP-s);
    ``"stochastic"`` makes each step *either* a fixation or a saccade, with
    probability ``[stimulus] saccade_prob`` (CLAPP).

    ``family``: ``"clapp"`` (glimpse sequences, the rules above) or ``"views"``
    (two augmented views of whole images, the contrastive hinge rules of Tang et
    al. 2022, trained by :mod:`neuroplastic.tang`). For ``"views"``, ``process``
    says which layers learn at a step (``"e2e"`` all, ``"gll"`` one after the
    other, ``"rll"`` one at random, ``"dtp"`` all from propagated targets) and
    ``feedback`` how the error reaches a layer (``"bp"``, ``"fa"``, ``"rf"``, ``"urf"``).
    """

    name: str
    retro: bool
    pairing: str
    doc: str
    family: str = "clapp"
    process: str = ""
    feedback: str = ""


#: Every rule a protocol may name (``[rule] name``), by name.
RULES = {
    "clapp_s": Rule("clapp_s", retro=False, pairing="contrastive",
                    doc="CLAPP-s: W_pred^T retrodiction, positive + k negatives per step (= gradient descent)."),
    "clapp": Rule("clapp", retro=True, pairing="stochastic",
                  doc="CLAPP: learned W_retro, one fixation or one saccade per step."),
}


def _hinge(process: str, feedback: str, doc: str) -> Rule:
    name = f"hinge_{process}" + (f"_{feedback}" if process in ("e2e", "gll") else "")
    return Rule(name, retro=False, pairing="views", doc=doc, family="views", process=process, feedback=feedback)


# Tang, Yang & Amit (2022): the L1 contrastive hinge loss of two views (rules/hinge.py), reaching the layers
# in the ways the paper compares. One name per method, so that a protocol, a run directory and a results
# table say which method ran, and no key means nothing for some rules.
RULES.update((r.name, r) for r in (
    _hinge("e2e", "bp", "Hinge loss on one head on top, end-to-end backpropagation."),
    _hinge("e2e", "fa", "Hinge loss on one head on top, feedback alignment (fixed random feedback matrices)."),
    _hinge("gll", "bp", "Greedy layer-wise: each layer in turn learns from its own head by BP, then is frozen."),
    _hinge("gll", "rf", "Greedy layer-wise, error from the head through a fixed random matrix (RF)."),
    _hinge("gll", "urf", "Greedy layer-wise, error through a random matrix updated like the head (URF)."),
    _hinge("rll", "bp", "Random layer-wise: one random layer learns from its own head (BP) per batch."),
    _hinge("dtp", "", "Difference target propagation from the top head, learned inverses on noisy inputs."),
))

# After RULES: conv_clapp needs the conv primitives of neuroplastic.rate.conv (im2col, max-pool), and importing
# that package imports rate.network, which needs RULES from this module.
from .conv_clapp import ConvClappGrads, conv_clapp_layer, conv_forward, grid_scores  # noqa: E402

__all__ += ["ConvClappGrads", "conv_clapp_layer", "conv_forward", "grid_scores"]
