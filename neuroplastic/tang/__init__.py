"""Self-supervised learning from two views with the contrastive L1 hinge loss (Tang, Yang & Amit 2022).

Dense encoders (:mod:`.network`) and convolutional ones (:mod:`.conv`), the
ways the error reaches their layers -- end-to-end BP or feedback alignment,
greedy or random layer-wise learning through per-layer heads (BP, RF, URF),
difference target propagation (dense only) (:mod:`.methods`) -- and the numpy engine's training loop for them
(:mod:`.engine`). The loss itself is :func:`neuroplastic.rules.hinge.hinge_views`.
All backward passes are written out in numpy; nothing here uses autograd.
"""
from .conv import ConvViewEncoder
from .methods import DTPResult, HingeSettings, dtp_grads, dtp_targets, e2e_grads, inverse_grads, layer_grads
from .network import ACTIVATIONS, ViewEncoder, forward

__all__ = ["ACTIVATIONS", "ConvViewEncoder", "DTPResult", "HingeSettings", "ViewEncoder", "dtp_grads", "dtp_targets",
           "e2e_grads", "forward", "inverse_grads", "layer_grads"]
