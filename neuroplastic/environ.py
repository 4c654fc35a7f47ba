"""Environment variables set for a block of code: what a child process (a compiled binary, a worker) inherits."""
from __future__ import annotations

import os
from contextlib import contextmanager

__all__ = ["environment"]


@contextmanager
def environment(values: dict[str, str]):
    """Set ``values`` in ``os.environ`` inside the ``with`` block; restore (or remove) them after it."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
