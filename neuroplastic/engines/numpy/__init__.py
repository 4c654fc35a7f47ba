"""The numpy engine: the rate reference, explicit updates from :mod:`neuroplastic.rules`, no autograd.

Dense and convolutional CLAPP stacks (:mod:`~neuroplastic.engines.numpy.clapp_stack`, :mod:`~neuroplastic.engines.numpy.conv_stack`), the two-view hinge
encoders of :mod:`neuroplastic.rules`, optimisers (:mod:`~neuroplastic.engines.numpy.optim`) and the online reference of the
Brian2 engine (:mod:`~neuroplastic.engines.numpy.stream`). The engine itself is :mod:`~neuroplastic.engines.numpy.engine`.
"""
from .clapp_stack import BatchStats, ClappStack
from .conv_stack import ConvClappStack
from .optim import SGD, Adam, GroupedOptimizer, make_optimizer

__all__ = ["Adam", "BatchStats", "ClappStack", "ConvClappStack", "GroupedOptimizer", "SGD", "make_optimizer"]
