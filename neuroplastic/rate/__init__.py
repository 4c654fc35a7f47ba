"""The numpy reference engine: dense CLAPP stacks trained on glimpse sequences."""
from .network import BatchStats, ClappStack
from .optim import SGD, Adam, make_optimizer

__all__ = ["ClappStack", "BatchStats", "SGD", "Adam", "make_optimizer"]
