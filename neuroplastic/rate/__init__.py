"""The numpy reference engine: dense CLAPP stacks trained on glimpse sequences."""
from .network import BatchStats, ClappStack
from .optim import SGD, Adam, make_optimizer

__all__ = ["ClappStack", "BatchStats", "SGD", "Adam", "make_optimizer", "ConvClappStack"]


def __getattr__(name):
    # ConvClappStack is loaded on first use: its module imports rules.conv_clapp, which imports rate.conv
    # (importing it here would close an import cycle when neuroplastic.rules is imported first).
    if name == "ConvClappStack":
        from .conv_network import ConvClappStack
        return ConvClappStack
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
