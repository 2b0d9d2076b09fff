"""SQLite's and the file system's failures as one :class:`StorageError` each: cause and answer.

Split from :mod:`kms_host.storage.sqlite`, which converts every failure here and nowhere else.
SQLite's own messages do not name the OS error behind them ("database or disk is full",
"disk I/O error", "unable to open database file"), so the data dir's file system is looked at
when a failure happens: a read-only mount, no free block, a directory this user may not
write, and last a file created and removed there, which tells what the others cannot. The
message then names the file, SQLite's error and that OS error; the HRESULT is what a client
whose request could not be recorded is answered (:mod:`kms_host.errors`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import tempfile
from pathlib import Path

from kms_host.errors import (
    HRESULT_ACCESS_DENIED,
    HRESULT_DISK_FULL,
    HRESULT_FILE_CORRUPT,
    HRESULT_GEN_FAILURE,
    HRESULT_WRITE_PROTECT,
    StorageError,
)

__all__ = ["MOVE_ASIDE", "storage_error"]

MOVE_ASIDE = "move it aside to start with an empty client table, or restore it from a backup"
"""What to do about a file that is not a client table: the host never repairs or replaces one."""

_CORRUPT = frozenset({"SQLITE_CORRUPT", "SQLITE_NOTADB"})
_HRESULT_OF_ERRNO = {
    errno.ENOSPC: HRESULT_DISK_FULL,
    errno.EDQUOT: HRESULT_DISK_FULL,
    errno.EROFS: HRESULT_WRITE_PROTECT,
    errno.EACCES: HRESULT_ACCESS_DENIED,
    errno.EPERM: HRESULT_ACCESS_DENIED,
}


def _os_error(path: Path) -> tuple[int, str] | None:
    """The errno a write in ``path``'s directory would meet now, and its text; None: none."""
    directory = path.parent
    try:
        fs = os.statvfs(directory)
    except OSError as exc:
        return exc.errno or errno.EIO, str(exc)
    if fs.f_flag & os.ST_RDONLY:
        return errno.EROFS, f"{os.strerror(errno.EROFS).lower()}: {directory}"
    # Root may use the blocks reserved for it (ext4's 5%); others only f_bavail.
    free = fs.f_bfree if os.geteuid() == 0 else fs.f_bavail
    if free == 0:
        return errno.ENOSPC, f"{os.strerror(errno.ENOSPC).lower()}: {directory}"
    for where in (directory, path):
        if where.exists() and not os.access(where, os.W_OK):
            return errno.EACCES, f"permission denied: {where} is not writable by uid {os.getuid()}"
    return _probe(directory)


def _probe(directory: Path) -> tuple[int, str] | None:
    """Create and remove a file in ``directory``: the one test that tells every read-only.

    ext4 turned read-only by an error (``errors=remount-ro``) shows in neither statvfs nor
    access(2); a create is refused with EROFS all the same.
    """
    try:
        handle, name = tempfile.mkstemp(prefix=".kms-host-probe-", dir=directory)
    except OSError as exc:
        return exc.errno or errno.EIO, f"{(exc.strerror or str(exc)).lower()}: {directory}"
    os.close(handle)
    with contextlib.suppress(OSError):
        os.unlink(name)
    return None


def storage_error(path: Path, exc: sqlite3.Error | OSError) -> StorageError:
    """``exc``, met on the client table at ``path``, as the StorageError to raise."""
    name = getattr(exc, "sqlite_errorname", "")
    if name in _CORRUPT:
        return StorageError(f"{path}: {exc}: {MOVE_ASIDE}", hresult=HRESULT_FILE_CORRUPT)
    if isinstance(exc, OSError):
        cause = None if exc.errno is None else (exc.errno, "")
    else:
        cause = _os_error(path)
    hresult = HRESULT_GEN_FAILURE
    if name == "SQLITE_FULL":
        hresult = HRESULT_DISK_FULL
    elif cause is not None and cause[0] in _HRESULT_OF_ERRNO:
        hresult = _HRESULT_OF_ERRNO[cause[0]]
    elif name.startswith("SQLITE_READONLY"):
        hresult = HRESULT_WRITE_PROTECT
    if cause is None or not cause[1]:
        return StorageError(f"{path}: {exc}", hresult=hresult)
    return StorageError(f"{path}: {exc} ({cause[1]})", hresult=hresult)
