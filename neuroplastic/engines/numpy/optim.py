"""Optimisers that apply gradients from ``rules/`` in place: SGD and Adam (as in torch.optim).

Their state is a dict of arrays so that a checkpoint stores it and a resumed run
continues bit-identically. Parameters, gradients and state are arrays of one namespace and
device (numpy, torch, CuPy): the state is made from the gradients, :meth:`state_dict` returns
arrays of that namespace, and :meth:`load_state_dict` takes them so (moving a checkpoint's
numpy arrays to the device, and back, is the engine's business).
"""
from __future__ import annotations

from array_api_compat import array_namespace

__all__ = ["SGD", "Adam", "GroupedOptimizer", "make_optimizer"]


class SGD:
    """``p -= lr * g``: with batch size 1 this is the online rule of the papers."""

    def __init__(self, lr: float):
        self.lr = lr

    def step(self, params: dict, grads: dict) -> None:
        for k, g in grads.items():
            params[k] -= self.lr * g

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class Adam:
    """Adam (Kingma & Ba 2015) with bias correction, matching ``torch.optim.Adam`` defaults."""

    def __init__(self, lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.lr, self.betas, self.eps = lr, betas, eps
        self.t = 0
        self.m: dict = {}
        self.v: dict = {}

    def step(self, params: dict, grads: dict) -> None:
        self.t += 1
        b1, b2 = self.betas
        c1, c2 = 1 - b1 ** self.t, 1 - b2 ** self.t
        for k, g in grads.items():
            xp = array_namespace(g)
            if k not in self.m:
                self.m[k], self.v[k] = xp.zeros_like(g), xp.zeros_like(g)
            m, v = self.m[k], self.v[k]
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            params[k] -= self.lr * (m / c1) / (xp.sqrt(v / c2) + self.eps)

    def state_dict(self) -> dict:
        state = {"t": self.t}
        state.update({f"m/{k}": v for k, v in self.m.items()})
        state.update({f"v/{k}": v for k, v in self.v.items()})
        return state

    def load_state_dict(self, state: dict) -> None:
        self.t = int(state["t"])
        self.m = {k[2:]: v for k, v in state.items() if k.startswith("m/")}
        self.v = {k[2:]: v for k, v in state.items() if k.startswith("v/")}


def make_optimizer(name: str, lr: float):
    """Return the optimiser named by ``[rule] optimizer``."""
    if name == "adam":
        return Adam(lr)
    if name == "sgd":
        return SGD(lr)
    raise ValueError(f"unknown optimizer {name!r}; known: 'adam', 'sgd'")


class GroupedOptimizer:
    """One optimiser per group of parameters (a layer with its head, all the inverses, ...).

    Each group keeps its own Adam step count, as the authors keep one torch
    optimiser per layer: a layer that starts learning late (GLL) starts Adam's
    bias correction afresh. ``make(group)`` returns a new optimiser for a group.
    """

    def __init__(self, make):
        self.make = make
        self.groups: dict = {}

    def _group(self, name: str):
        if name not in self.groups:
            self.groups[name] = self.make(name)
        return self.groups[name]

    def step(self, group: str, params: dict, grads: dict) -> None:
        self._group(group).step(params, grads)

    def state_dict(self) -> dict:
        return {f"{g}/{k}": v for g, opt in self.groups.items() for k, v in opt.state_dict().items()}

    def load_state_dict(self, state: dict) -> None:
        parts: dict = {}
        for key, value in state.items():
            if "/" in key:                            # "t" is the (unused) step count of save_training_state
                group, rest = key.split("/", 1)
                parts.setdefault(group, {})[rest] = value
        self.groups = {}
        for group, sub in parts.items():
            self._group(group).load_state_dict(sub)
