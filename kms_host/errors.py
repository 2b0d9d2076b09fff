"""The daemon's exception root and the errors that stop it (architecture 4.4).

``protocol.errors.ProtocolError`` covers bad input from the wire; these cover the daemon's
own surroundings: a configuration it cannot start with, storage it cannot use, a worker
process that failed. They are reported to the operator rather than to a client, so they carry
what the operator needs to fix the problem (the dotted config key; the underlying SQLite error
as ``__cause__``).
"""

from __future__ import annotations

__all__ = [
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_USAGE",
    "HRESULT_ACCESS_DENIED",
    "HRESULT_DISK_FULL",
    "HRESULT_FILE_CORRUPT",
    "HRESULT_GEN_FAILURE",
    "HRESULT_WRITE_PROTECT",
    "ConfigError",
    "KmsHostError",
    "StorageError",
    "WorkerError",
]

# The process exit statuses, shared by the console script and a ``serve --workers`` worker,
# so that the supervisor reads a worker's exit the way an operator reads the command's.
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class KmsHostError(Exception):
    """Root of every error the daemon raises on purpose."""


class ConfigError(KmsHostError):
    """The configuration cannot be used; ``key`` names the dotted setting at fault.

    ``str()`` is the message alone, so that callers can put the key where they like
    (``f"{exc.key}: {exc}"``). ``key`` is empty when the problem is the file as a whole
    (unreadable, not TOML).
    """

    def __init__(self, message: str, key: str) -> None:
        super().__init__(message)
        self.message = message
        self.key = key

    def summary(self) -> str:
        """The one line an operator reads: "config error at KEY: message" (no KEY: none)."""
        return f"config error at {self.key}: {self}" if self.key else f"config error: {self}"


# What a client is answered when its request cannot be recorded. A genuine host is a Windows
# service: it reports a failure of its own store as HRESULT_FROM_WIN32 of the Win32 error, as
# it answers bad data with HRESULT_FROM_WIN32(ERROR_INVALID_DATA) = 0x8007000D (spec 3.4.3).
# That is a KMS-level answer (a normal response with a NULL pointer and the HRESULT), not an
# RPC fault: the call arrived and was understood; the host could not carry it out. So the
# client sees the cause (slmgr: "There is not enough space on the disk") and retries at its
# activation interval, as after any failed activation.
HRESULT_DISK_FULL = 0x80070070
"""ERROR_DISK_FULL (112): the data dir's file system is full (SQLITE_FULL, ENOSPC)."""
HRESULT_WRITE_PROTECT = 0x80070013
"""ERROR_WRITE_PROTECT (19): the data dir's file system is read-only (EROFS)."""
HRESULT_ACCESS_DENIED = 0x80070005
"""ERROR_ACCESS_DENIED (5): this user may not write the data dir or the table (EACCES)."""
HRESULT_FILE_CORRUPT = 0x80070570
"""ERROR_FILE_CORRUPT (1392): the client table's file is damaged or not a client table."""
HRESULT_GEN_FAILURE = 0x8007001F
"""ERROR_GEN_FAILURE (31): any other failure (an I/O error, a lock held too long, a bug)."""


class StorageError(KmsHostError):
    """The client table could not be read or written (the ``sqlite3`` error is the cause).

    ``hresult`` is what a client whose request could not be recorded is answered; the backend
    chooses it from the cause (one of the ``HRESULT_*`` above).
    """

    def __init__(self, message: str, *, hresult: int = HRESULT_GEN_FAILURE) -> None:
        super().__init__(message)
        self.hresult = hresult


class DataDirError(KmsHostError):
    """A file kms-host keeps in its data dir (the host identity) is unreadable or not its own.

    A failure at run time (exit 1), not a configuration error: nothing in the config is
    wrong, the fix is in the data dir, and the message names the file and what to do.
    """


class ListenError(KmsHostError):
    """A listen address could not be bound (in use, not this machine's, not permitted).

    The socket's message names the address as a Python tuple; this names it as the operator
    wrote it (``127.0.0.1:1688``) with the OS's reason, and keeps ``errno``.
    """

    def __init__(self, address: str, errno: int | None, reason: str) -> None:
        super().__init__(f"cannot listen on {address}: {reason}")
        self.errno = errno


class WorkerError(KmsHostError):
    """A worker of ``serve --workers`` failed: it exited on its own or never listened.

    The supervisor has logged which one and how (``worker_exited``) and stopped the others;
    the message sums it up for the exit.
    """
