"""What the running host reports to whoever watches it (metrics today).

The service, sessions and listener call one :class:`HostObserver`; the Prometheus
exporter is one implementation and :class:`NullObserver` the default, so the hot path
never tests for "is anybody listening". Outcomes are typed, not log lines: log levels and
renderers must not change what the metrics count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["ActivationOutcome", "HostObserver", "NullObserver"]


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

    def connection_refused(self) -> None:
        """A connection was refused (over ``server.max_connections``)."""

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

    def connection_refused(self) -> None:
        """Ignore the refusal."""

    def protocol_violation(self, error: str) -> None:
        """Ignore the violation."""
