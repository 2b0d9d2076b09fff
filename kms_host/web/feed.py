"""The dashboard's recent activations: a bounded ring fed by the host's observer hook.

Why in memory rather than a table: the durable record of a client is its row (committed
before the answer); the feed is what a person watching the host wants to see scroll by,
including refusals and malformed requests that have no row. Keeping it costs a dict per
answered call and no storage write. It is this process's: with ``serve --workers N`` each
worker sees only its own calls, so the supervisor, which serves the dashboard, has none
(:attr:`ActivationFeed.available` is False there and the API says so).

Entries carry the ``activation`` log event's own field names (``peer``, ``machine_name``,
``product``, ``result``, ``hresult``, ``count``, ...) plus ``timestamp`` (when it was
answered, as the log line's) and ``hresult_name`` (the Microsoft name of the HRESULT).
"""

from __future__ import annotations

import collections
import itertools
from datetime import UTC, datetime
from typing import Any

from kms_host.client.judgement import hresult_name
from kms_host.host.observe import ActivationOutcome, NullObserver

__all__ = ["FEED_FIELDS", "FEED_SIZE", "ActivationFeed"]

FEED_SIZE = 200
"""Activations kept, newest last; the oldest drop out."""

FEED_FIELDS = (
    "peer",
    "machine_name",
    "cmid",
    "app",
    "product",
    "sku_name",
    "protocol",
    "result",
    "hresult",
    "fault_status",
    "reason",
    "count",
    "required_client_count",
    "license_status",
    "latency_ms",
)
"""The event fields the feed keeps (the rest, e.g. ``notes``, stay in the log)."""


class ActivationFeed(NullObserver):
    """An observer that remembers the last :data:`FEED_SIZE` answered calls."""

    def __init__(self, *, available: bool = True, size: int = FEED_SIZE) -> None:
        self.available = available
        self._entries: collections.deque[dict[str, Any]] = collections.deque(maxlen=size)
        self._serial = itertools.count(1)

    def activation(self, outcome: ActivationOutcome) -> None:
        """Keep the call's event fields; runs on the event loop, in microseconds."""
        event = outcome.event
        entry: dict[str, Any] = {
            "id": next(self._serial),
            "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            **{name: event.get(name) for name in FEED_FIELDS},
        }
        entry["hresult_name"] = hresult_name(outcome.hresult) if event.get("hresult") else None
        self._entries.append(entry)

    def recent(self, *, after: int = 0, limit: int = FEED_SIZE) -> list[dict[str, Any]]:
        """Entries with an ``id`` above ``after``, newest first, at most ``limit``."""
        newer = [entry for entry in reversed(self._entries) if entry["id"] > after]
        return newer[:limit]
