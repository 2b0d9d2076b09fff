"""What a host counts and the CurrentClientCount it answers (spec 7.2), from values alone.

Per application, the distinct CMIDs seen in the window including the requester, capped at
twice the largest threshold seen; ``prefill = "threshold"`` adds synthetic non-expiring clients
so that the first real client already sees its threshold. The store computes the
:class:`AppTally`; this module only reads it, so the rule is tested without a database.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from kms_host.config import CountingConfig, CountingMode, Prefill

__all__ = ["PROBE_CMID", "AppTally", "reported_count"]

PROBE_CMID = uuid.UUID("00000000-0000-4000-8000-000000001688")
"""The client machine ID ``kms-host probe`` sends: answered normally, never counted, never
stored, logged at debug level only (a health check every 30 s must not fill the table)."""


@dataclass(frozen=True, slots=True)
class AppTally:
    """The counting state of one application within a window."""

    live_clients: int
    """Distinct counted CMIDs whose last counted activation is at or after ``since``."""
    max_required_count: int
    """Largest RequiredClientCount among those activations (0 if none): the count's cap is
    twice this on a genuine host."""


def reported_count(tally: AppTally, *, required: int, counting: CountingConfig) -> int:
    """The CurrentClientCount to answer (spec 7.2; the ``[counting]`` settings).

    ``tally`` already includes the requester. ``required`` is the request's
    RequiredClientCount (0 when asking for the host's current count, as ``status`` does).
    """
    if counting.mode is CountingMode.FIXED:
        return counting.fixed_count
    largest = max(tally.max_required_count, required)
    if counting.mode is CountingMode.SATURATED:
        return max(2 * largest, 1)
    if tally.live_clients == 0 and required == 0:
        return 0
    prefill = largest - 1 if counting.prefill is Prefill.THRESHOLD and largest > 0 else 0
    return min(tally.live_clients + prefill, max(2 * largest, 1))
