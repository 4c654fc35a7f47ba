"""One process at a time in a directory: an exclusive ``flock`` on a lock file that records its holder.

A run directory (``.lock``) and a sweep directory (``sweep.lock``) are each held by the process
running them. The kernel releases the lock when that process ends, however it ends (``kill -9``
included), so no stale lock is ever left to clean up; the lock file itself stays, and only says
who held it last. ``flock`` is advisory and local to a machine: a results store shared over NFS
between machines is not protected. Where ``fcntl`` does not exist (Windows) nothing is locked.

>>> import os, tempfile
>>> directory = tempfile.mkdtemp()
>>> mine, other = (DirectoryLock(directory, ".lock", ["neuroplastic", "run"]) for _ in range(2))
>>> mine.acquire() is None, other.holder().startswith(f"process {os.getpid()} on ")
(True, True)
>>> other.acquire().endswith("(neuroplastic run)")     # refused, naming the holder
True
>>> mine.release(); other.holder() is None
True
"""
from __future__ import annotations

import errno
import json
import os
import socket
import time
from pathlib import Path

try:
    import fcntl
except ImportError:                       # Windows
    fcntl = None

__all__ = ["DirectoryLock"]


class DirectoryLock:
    """The exclusive lock of ``directory`` (the file ``directory/name``), taken without waiting."""

    def __init__(self, directory: str | Path, name: str, command: list[str]):
        self.path = Path(directory) / name
        self.command = [str(c) for c in command]
        self._fd: int | None = None

    def acquire(self) -> str | None:
        """Take the lock and record this process as its holder: ``None``; or who holds it (see :meth:`holder`)."""
        if fcntl is None:
            return None
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            return self._recorded() or "another process"
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
                                 "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}).encode())
        self._fd = fd
        return None

    def holder(self) -> str | None:
        """Who holds the lock now (``"process 123 on host since ... (command)"``), or ``None``.

        Looks without taking it (nothing is written): for refusing early with a clear message.
        """
        if fcntl is None or self._fd is not None:
            return None
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
        finally:
            os.close(fd)
        return self._recorded() or "another process"

    def release(self) -> None:
        """Give the lock up (closing the descriptor releases the ``flock``)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def _recorded(self) -> str | None:
        try:
            holder = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return None
        if not isinstance(holder, dict) or "pid" not in holder:
            return None
        return (f"process {holder['pid']} on {holder.get('host', '?')} since {holder.get('since', '?')} "
                f"({' '.join(map(str, holder.get('command', [])))})")
