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


class StorageError(KmsHostError):
    """The client table could not be read or written (the ``sqlite3`` error is the cause)."""


class DataDirError(KmsHostError):
    """A file kms-host keeps in its data dir (the host identity) is unreadable or not its own.

    A failure at run time (exit 1), not a configuration error: nothing in the config is
    wrong, the fix is in the data dir, and the message names the file and what to do.
    """


class WorkerError(KmsHostError):
    """A worker of ``serve --workers`` failed: it exited on its own or never listened.

    The supervisor has logged which one and how (``worker_exited``) and stopped the others;
    the message sums it up for the exit.
    """
