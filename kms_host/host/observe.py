"""What the running host reports to whoever watches it (metrics and the dashboard).

The service, sessions and listener call one :class:`HostObserver`; the Prometheus
exporter and the dashboard's activation feed are implementations, :class:`Observers` hands
each happening to several, and :class:`NullObserver` is the default, so the hot path
never tests for "is anybody listening". Outcomes are typed, not log lines: log levels and
renderers must not change what the metrics count.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

__all__ = ["ActivationOutcome", "HostObserver", "NullObserver", "Observers"]


@dataclass(frozen=True, slots=True)
class ActivationOutcome:
    """One answered RequestActivation call."""

    protocol: str | None
    """"4.0" / "5.0" / "6.0", or the claimed version of a malformed message (None if unreadable)."""
    app: str | None
    """Counting pool (application key), None when the message could not be opened."""
    host_key_group: str | None
    hresult: int
    result: str
    """"activated", "refused", "malformed", "storage_failed", "probe", or a scenario rule's
    "dropped" (closed without an answer) or "faulted" (answered with an RPC fault)."""
    latency_s: float
    count: int | None
    """The count answered, for activations."""
    event: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    """The fields of the call's ``activation`` log event, as logged (the dashboard's feed)."""


class HostObserver(Protocol):
    """Receives the host's countable happenings; implementations must not block."""

    def activation(self, outcome: ActivationOutcome) -> None:
        """A call was answered (or failed at the KMS level)."""

    def counts(self, counts: dict[str, int]) -> None:
        """The current count of every application, after a change."""

    def connection_opened(self) -> None:
        """A connection was accepted and is being served."""

    def connection_closed(self) -> None:
        """A served connection ended."""

    def connection_refused(self, reason: str = "max_connections") -> None:
        """A connection was closed at accept; ``reason`` is a fixed snake_case word
        ("max_connections", "not_allowed", "proxy_header_invalid")."""

    def peer_limited(self, limit: str) -> None:
        """A peer went over a per-peer limit (``limit`` names it: a bounded set)."""

    def connection_timed_out(self, timeout: str) -> None:
        """A connection was closed by a timeout: "idle" or "exchange"."""

    def protocol_violation(self, error: str) -> None:
        """A peer broke the RPC protocol (``error`` is the error class name)."""


class NullObserver:
    """Watches nothing."""

    def activation(self, outcome: ActivationOutcome) -> None:
        """Ignore the outcome."""

    def counts(self, counts: dict[str, int]) -> None:
        """Ignore the counts."""

    def connection_opened(self) -> None:
        """Ignore the connection."""

    def connection_closed(self) -> None:
        """Ignore the connection."""

    def connection_refused(self, reason: str = "max_connections") -> None:
        """Ignore the refusal."""

    def peer_limited(self, limit: str) -> None:
        """Ignore the refusal."""

    def connection_timed_out(self, timeout: str) -> None:
        """Ignore the timeout."""

    def protocol_violation(self, error: str) -> None:
        """Ignore the violation."""


class Observers:
    """Hands every happening to each of several observers, in order."""

    def __init__(self, *observers: HostObserver) -> None:
        self._observers = observers

    def activation(self, outcome: ActivationOutcome) -> None:
        """Pass the outcome on."""
        for observer in self._observers:
            observer.activation(outcome)

    def counts(self, counts: dict[str, int]) -> None:
        """Pass the counts on."""
        for observer in self._observers:
            observer.counts(counts)

    def connection_opened(self) -> None:
        """Pass the connection on."""
        for observer in self._observers:
            observer.connection_opened()

    def connection_closed(self) -> None:
        """Pass the connection on."""
        for observer in self._observers:
            observer.connection_closed()

    def connection_refused(self, reason: str = "max_connections") -> None:
        """Pass the refusal on."""
        for observer in self._observers:
            observer.connection_refused(reason)

    def peer_limited(self, limit: str) -> None:
        """Pass the refusal on."""
        for observer in self._observers:
            observer.peer_limited(limit)

    def connection_timed_out(self, timeout: str) -> None:
        """Pass the timeout on."""
        for observer in self._observers:
            observer.connection_timed_out(timeout)

    def protocol_violation(self, error: str) -> None:
        """Pass the violation on."""
        for observer in self._observers:
            observer.protocol_violation(error)
