"""One log line when the client table starts failing, one when it works again.

A full disk or a read-only data dir fails every request until an operator acts, and under
load that is thousands of requests a second. Each still has its ``activation`` event (the
genuine host's event 12290 is one per request, kms-host-behaviour 2.6), at warning level and
carrying the HRESULT; the cause, with the file and the OS error, is logged once per episode as
``storage_failed`` (error), and its end as ``storage_recovered`` (info) with how long it lasted
and how many requests it failed. Nothing here retries or reopens: the next request simply
tries again, and the first that commits ends the episode.
"""

from __future__ import annotations

import time
from typing import Any

from kms_host.errors import StorageError

__all__ = ["StorageHealth"]


class StorageHealth:
    """The state of the client table as the requests met it: failing since when, how often."""

    def __init__(self, log: Any) -> None:
        self._log = log
        self._since: float | None = None  # time.monotonic() of the episode's first failure
        self._failures = 0

    def failed(self, exc: StorageError) -> None:
        """A request could not be recorded: log the cause if it starts an episode."""
        self._failures += 1
        if self._since is None:
            self._since = time.monotonic()
            self._log.error("storage_failed", detail=str(exc), hresult=f"0x{exc.hresult:08X}")

    def ok(self) -> None:
        """A request was recorded: log the end of the episode if one was running."""
        if self._since is None:
            return
        self._log.info(
            "storage_recovered",
            failed_requests=self._failures,
            fault_s=round(time.monotonic() - self._since, 3),
        )
        self._since = None
        self._failures = 0
