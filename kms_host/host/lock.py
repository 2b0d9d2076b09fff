"""One daemon per data dir: an OS lock on ``kms-host.lock``, held open for the daemon's life.

Two daemons on one data dir would each answer with counts the other does not see cached, and
the one that stops first would remove the other's ``runtime.json``. So the daemon (or, with
``serve --workers``, the supervisor, on behalf of its workers) takes an exclusive
``fcntl.flock`` before it writes anything there and writes its pid into the file for the
message a second daemon shows. The kernel drops the lock when the holder dies, even by
SIGKILL, so a stale file never blocks a start: the next daemon simply takes the lock and
rewrites the pid. The file is left in place on stop; removing it would let a third daemon
lock a new file while a second still holds the old one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from kms_host.errors import KmsHostError

__all__ = ["LOCK_FILE", "DataDirBusy", "hold_data_dir"]

LOCK_FILE = "kms-host.lock"


class DataDirBusy(KmsHostError):
    """Another daemon holds the data dir; the message names it (pid) and the lock file."""


@contextlib.contextmanager
def hold_data_dir(data_dir: Path) -> Iterator[None]:
    """Hold ``data_dir``'s lock for the context's duration, or raise the reason it cannot."""
    path = data_dir / LOCK_FILE
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except PermissionError as exc:
        raise KmsHostError(
            f"cannot create {path}: permission denied (the data dir must be writable"
            f" by uid {os.getuid()})"
        ) from exc
    except OSError as exc:
        raise KmsHostError(f"cannot create {path}: {exc.strerror}") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise KmsHostError(f"cannot lock {path}: {exc.strerror}") from exc
            raise DataDirBusy(
                f"{data_dir} is in use by another kms-host (pid {_holder(fd)}, lock {path})"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _holder(fd: int) -> str:
    """The pid the holder wrote, as text; "unknown" if it has not written it yet."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return "unknown"
    return text if text.isdigit() else "unknown"
