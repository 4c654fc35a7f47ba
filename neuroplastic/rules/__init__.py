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
    """

    name: str
    retro: bool
    pairing: str
    doc: str


RULES = {
    "clapp_s": Rule("clapp_s", retro=False, pairing="contrastive",
                    doc="CLAPP-s: W_pred^T retrodiction, positive + k negatives per step (= gradient descent)."),
    "clapp": Rule("clapp", retro=True, pairing="stochastic",
                  doc="CLAPP: learned W_retro, one fixation or one saccade per step."),
}
