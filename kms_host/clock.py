"""The daemon's one source of time.

Everything in kms_host that needs "now" (clock-skew checks, last-seen times, the 30-day
counting window) asks a :class:`Clock`, never ``datetime.now`` directly, so that tests can
move time and a lab can run the host with a shifted clock (architecture 4.1: time is a
parameter, never read inside the logic).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

__all__ = ["Clock"]


class Clock:
    """Wall-clock UTC time plus an adjustable offset."""

    def __init__(self, offset: timedelta = timedelta(0)) -> None:
        self._offset = offset

    @property
    def offset(self) -> timedelta:
        """How far this clock runs ahead of the machine's (negative: behind)."""
        return self._offset

    def now(self) -> datetime:
        """The current time, aware UTC."""
        return datetime.now(UTC) + self._offset

    def advance(self, delta: timedelta) -> None:
        """Move this clock forward by ``delta`` (tests and lab scenarios)."""
        self._offset += delta
