"""What a protocol's ``name`` may be: it names run and sweep directories, so it must be a plain file name.

A name with a separator (``../../escaped``, ``/tmp/x``), a leading dot, a NUL or 300 characters
would put a run directory outside ``--out``, hide it, or be refused by the file system after the
work is done; it is refused when the protocol is read instead.

>>> name_problem("clapp_digits"), name_problem("../x") is not None
(None, True)
"""
from __future__ import annotations

import re

__all__ = ["MAX_NAME", "name_problem"]

#: Longest name: with the ``-<hash>`` (or ``-sweep-<hash>``) suffix, well inside the usual 255-byte limit.
MAX_NAME = 100

_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a directory, or ``None`` when it can."""
    if len(name) > MAX_NAME:
        return f"is {len(name)} characters long; at most {MAX_NAME} are allowed"
    if not _SAFE.fullmatch(name):
        return ("must be a plain file name: letters, digits and . _ + - (not starting with . _ + or -), "
                "no path separators or spaces")
    return None
