"""Events the RPC state machines hand to their callers (h11 style, architecture 4.3).

:class:`~protocol.rpc.connection.RpcServerConnection` emits :data:`ServerEvent`;
:class:`~protocol.rpc.client.RpcClientConnection` emits :data:`ClientEvent`. Both report
problems as :class:`ProtocolViolation` (already answered on the wire, or the machine
decided to close) and announce a close with :class:`ConnectionClosing`.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.errors import RpcError
from protocol.rpc.constants import PType, TransferSyntax

__all__ = [
    "AcceptedContext",
    "AlterContextRespReceived",
    "BindAckReceived",
    "BindCompleted",
    "BindNakReceived",
    "CallReceived",
    "ClientEvent",
    "ConnectionClosing",
    "Event",
    "FaultReceived",
    "ProtocolViolation",
    "ResponseReceived",
    "ServerEvent",
]


@dataclass(frozen=True, slots=True)
class AcceptedContext:
    """A presentation context both sides may now use for requests (spec 2.5, 3.2)."""

    context_id: int
    syntax: TransferSyntax


@dataclass(frozen=True, slots=True)
class BindCompleted:
    """Server: a bind or alter_context was answered with a bind_ack / alter_context_resp.

    ``accepted`` lists the contexts accepted by *this* PDU, ``ndr_syntaxes`` their
    syntaxes in order, ``btfn`` the negotiated feature bitmask (bind only; spec 2.6).
    """

    call_id: int
    ptype: PType
    accepted: tuple[AcceptedContext, ...]
    ndr_syntaxes: tuple[TransferSyntax, ...]
    btfn: int | None


@dataclass(frozen=True, slots=True)
class CallReceived:
    """Server: a complete RequestActivation call; ``kms_message`` is NDR-unwrapped.

    Answer it with ``send_kms_response``, ``send_kms_error`` or ``send_fault``.
    """

    call_id: int
    context_id: int
    opnum: int
    syntax: TransferSyntax
    kms_message: bytes


@dataclass(frozen=True, slots=True)
class ProtocolViolation:
    """The peer broke the protocol; the machine already queued a fault or decided to close.

    ``error.action`` says which (:class:`~protocol.errors.WireAction`); log it.
    """

    error: RpcError


@dataclass(frozen=True, slots=True)
class ConnectionClosing:
    """The machine will process no more input; flush ``data_to_send()`` and close."""

    reason: str


@dataclass(frozen=True, slots=True)
class BindAckReceived:
    """Client: the server answered the bind (spec 2.3)."""

    call_id: int
    accepted: tuple[AcceptedContext, ...]
    btfn: int | None


@dataclass(frozen=True, slots=True)
class AlterContextRespReceived:
    """Client: the server answered the alter_context (spec 2.3, 2.5)."""

    call_id: int
    accepted: tuple[AcceptedContext, ...]


@dataclass(frozen=True, slots=True)
class BindNakReceived:
    """Client: the server refused the association (spec 2.8); the connection closes."""

    call_id: int
    reason: int


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """Client: the answer to a request; ``kms_message`` is None for an HRESULT failure."""

    call_id: int
    hresult: int
    kms_message: bytes | None


@dataclass(frozen=True, slots=True)
class FaultReceived:
    """Client: the server refused a call with an RPC fault (spec 3.5)."""

    call_id: int
    status: int


ServerEvent = BindCompleted | CallReceived | ProtocolViolation | ConnectionClosing
ClientEvent = (
    BindAckReceived
    | AlterContextRespReceived
    | BindNakReceived
    | ResponseReceived
    | FaultReceived
    | ProtocolViolation
    | ConnectionClosing
)
Event = ServerEvent | ClientEvent
