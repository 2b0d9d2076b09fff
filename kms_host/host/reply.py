"""The contract between a session and the service that answers its calls.

It lives apart from both so that neither imports the other: the session (transport) knows
only that a handler turns a call into a :class:`KmsReply`; the service (application) knows
nothing of connections.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from protocol.rpc import CallReceived

__all__ = ["CallHandler", "KmsReply"]


@dataclass(frozen=True, slots=True)
class KmsReply:
    """What the service wants sent for one call.

    Exactly one of: a sealed KMS response (``message``), a KMS HRESULT in a normal response
    (``hresult`` with ``message`` None, spec 3.4.3), or an RPC fault (``fault_status``).
    ``close`` drops the connection without answering at all.
    """

    message: bytes | None = None
    hresult: int = 0
    fault_status: int | None = None
    close: bool = False


CallHandler = Callable[[CallReceived, str], Awaitable[KmsReply]]
