"""The server side of one KMS RPC connection, as a sans-I/O state machine (h11 style).

Theory of operation. :meth:`RpcServerConnection.receive_data` takes whatever the socket
produced; :class:`~protocol.rpc.framing.FrameBuffer` cuts it into PDUs; each PDU is
parsed by :mod:`protocol.rpc.codec` and answered here. Replies the RPC layer can give by
itself (bind_ack, alter_context_resp, bind_nak, faults) are queued at once; an
activation call surfaces as :class:`~protocol.rpc.events.CallReceived` and the caller
answers it with :meth:`~RpcServerConnection.send_kms_response`,
:meth:`~RpcServerConnection.send_kms_error` or :meth:`~RpcServerConnection.send_fault`.
Bytes to write are collected for :meth:`~RpcServerConnection.data_to_send`.

Errors are caught in one place, per PDU, and handled by their
:class:`~protocol.errors.WireAction` (architecture 4.4): a fault is queued when the
action says so, a :class:`~protocol.rpc.events.ProtocolViolation` is emitted, and for
any action but ``FAULT`` the machine closes: it emits
:class:`~protocol.rpc.events.ConnectionClosing` and ignores all later input.

Choices the spec leaves open, and what this machine does:

* Context negotiation: :mod:`protocol.rpc.negotiation` (spec 2.5). Requests are served
  only on contexts that were accepted (not vlmcsd's bug, spec 10.9); before any bind
  every context is unknown, so a request gets fault ``nca_s_unk_if``.
* A bind of a version other than 5.0/5.1 gets bind_nak reason 4 (protocol version not
  supported, versions {5.0}); a bind with ``auth_length != 0`` gets bind_nak reason 8
  (authentication type not recognized), since KMS never authenticates (spec 2.8). No
  association exists after a bind_nak, so the machine then closes.
* A request with ``auth_length != 0`` gets fault ``nca_s_proto_error`` and the
  association is kept: the PDU is framed correctly and no security context exists.
* alter_context before any bind, or with ``auth_length != 0``, and PDU types a client
  never sends (connectionless types, server-to-client types, auth3, shutdown) close the
  connection without a reply, as both emulators do (spec 1.3). co_cancel and orphaned
  are ignored.
* A request without PFC_LAST_FRAG is reassembled by call_id
  (:class:`~protocol.rpc.framing.Reassembler`, spec 1.5), up to ``max_reassembly_bytes``.
* Replies echo the bind's ``rpc_vers_minor`` (spec 1.2).
* ``receive_data(b"")`` means the peer closed its side (h11's convention).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NoReturn

from protocol.errors import (
    NCA_S_OP_RNG_ERROR,
    NCA_S_PROTO_ERROR,
    NCA_S_UNK_IF,
    FramingError,
    MalformedPdu,
    RpcError,
    RpcFault,
    WireAction,
)
from protocol.rpc.codec import build_pdu, parse_pdu
from protocol.rpc.constants import PFC, PType, TransferSyntax
from protocol.rpc.events import (
    BindCompleted,
    CallReceived,
    ConnectionClosing,
    ProtocolViolation,
    ServerEvent,
)
from protocol.rpc.framing import FrameBuffer, Reassembler
from protocol.rpc.ndr import unwrap_request_stub, wrap_error_stub, wrap_response_stub
from protocol.rpc.negotiation import Negotiation, negotiate
from protocol.rpc.pdus import (
    FIRST_AND_LAST,
    AlterContext,
    AlterContextResp,
    Bind,
    BindAck,
    BindNak,
    BindNakReason,
    Fault,
    Pdu,
    Request,
    Response,
)

__all__ = ["FAULT_ALLOC_HINT", "RpcServerConnection", "ServerSettings"]

_SUPPORTED_VERSIONS = frozenset({(5, 0), (5, 1)})
_CLIENT_PDUS = frozenset({PType.BIND, PType.ALTER_CONTEXT, PType.REQUEST})
_IGNORED_PDUS = frozenset({PType.CO_CANCEL, PType.ORPHANED})
FAULT_ALLOC_HINT = 32  # vlmcsd's value: the fault PDU's own length (spec 3.5)
_KMS_OPNUM = 0  # RequestActivation, the interface's only operation (spec 3.1)


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """Per-connection policy, supplied by the daemon (spec 2.3, 2.5, 2.7; architecture 4.8)."""

    port: int  # secondary address in bind_ack: the local port of the accepted socket
    assoc_group_id: int  # non-zero; vlmcsd style: random at start, +1 per connection
    ndr64: bool = True
    btfn: bool = True
    max_pdu_bytes: int = 4096  # framer cap on frag_length
    max_reassembly_bytes: int = 65536  # cap on the stub bytes of pending fragmented calls

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 0xFFFF:
            raise ValueError(f"port {self.port} is not a TCP port")
        if not 0 < self.assoc_group_id <= 0xFFFFFFFF:
            raise ValueError("assoc_group_id must be a non-zero u32")


class RpcServerConnection:
    """One TCP connection's RPC association, server side."""

    def __init__(self, settings: ServerSettings) -> None:
        self._settings = settings
        self._frames = FrameBuffer(settings.max_pdu_bytes)
        self._out = bytearray()
        self._contexts: dict[int, TransferSyntax] = {}
        self._assoc_group_id: int | None = None  # set by the first bind_ack
        self._minor = 0
        self._fragments = Reassembler(settings.max_reassembly_bytes)
        self._closed = False

    @property
    def closed(self) -> bool:
        """True once the machine decided the connection must close (flush output first)."""
        return self._closed

    @property
    def receiving(self) -> bool:
        """True while a PDU, or a fragmented call, has begun to arrive and is not yet whole.

        The daemon times such a partial message (``server.exchange_timeout_s``): a peer that
        trickles bytes resets any idle timer but never completes a message.
        """
        return self._frames.buffered > 0 or self._fragments.pending

    def receive_data(self, data: bytes) -> list[ServerEvent]:
        """Feed received bytes (``b""`` at end of stream); never raises for bad input."""
        events: list[ServerEvent] = []
        if self._closed:
            return events
        if not data:
            detail = (
                f" inside a PDU ({self._frames.buffered} bytes)" if self._frames.buffered else ""
            )
            self._close(events, "peer closed the connection" + detail)
            return events
        try:
            for frame in self._frames.receive(data):
                self._handle_frame(frame, events)
                if self._closed:
                    break
        except FramingError as exc:
            self._report(exc, events)
        return events

    def data_to_send(self) -> bytes:
        """Return and forget the bytes queued for the peer."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def send_kms_response(self, call: CallReceived, kms_message: bytes) -> None:
        """Answer ``call`` with a KMS response and HRESULT 0 (spec 3.4.1, 3.4.2)."""
        self._respond(call, wrap_response_stub(kms_message, call.syntax))

    def send_kms_error(self, call: CallReceived, hresult: int) -> None:
        """Answer ``call`` with a NULL output and a failing HRESULT (spec 3.4.3)."""
        self._respond(call, wrap_error_stub(hresult, call.syntax))

    def send_fault(self, call: CallReceived, status: int) -> None:
        """Refuse ``call`` with an RPC fault PDU (spec 3.5)."""
        self._queue_fault(call.call_id, call.context_id, status)

    # --- input ------------------------------------------------------------------------

    def _handle_frame(self, frame: bytes, events: list[ServerEvent]) -> None:
        try:
            self._handle_pdu(frame, events)
        except RpcError as exc:
            self._report(exc, events)

    def _handle_pdu(self, frame: bytes, events: list[ServerEvent]) -> None:
        ptype = frame[2]  # spec 1.2; the framer passes only frames of 16 bytes or more
        if ptype in _IGNORED_PDUS:
            return
        if ptype not in _CLIENT_PDUS:
            raise RpcError(f"PDU type {ptype:#04x} is not accepted from a client")
        pdu = parse_pdu(frame)
        if isinstance(pdu, Request):
            self._on_request(pdu, events)
        elif isinstance(pdu, Bind):
            self._on_bind(pdu, events)
        else:
            assert isinstance(pdu, AlterContext)
            self._on_alter_context(pdu, events)

    def _report(self, error: RpcError, events: list[ServerEvent]) -> None:
        match error:
            case RpcFault():
                self._fragments.forget(error.call_id)
                self._queue_fault(error.call_id, error.context_id, error.status)
            case MalformedPdu():
                self._queue_fault(error.call_id, 0, error.status)
        events.append(ProtocolViolation(error))
        if error.action is not WireAction.FAULT:
            self._close(events, str(error))

    def _close(self, events: list[ServerEvent], reason: str) -> None:
        self._closed = True
        events.append(ConnectionClosing(reason))

    # --- presentation context negotiation (spec 2) --------------------------------------

    def _on_bind(self, bind: Bind, events: list[ServerEvent]) -> None:
        if (bind.rpc_vers, bind.rpc_vers_minor) not in _SUPPORTED_VERSIONS:
            self._refuse_bind(
                bind,
                BindNakReason.PROTOCOL_VERSION_NOT_SUPPORTED,
                f"bind with RPC version {bind.rpc_vers}.{bind.rpc_vers_minor}",
            )
        if bind.auth_length:
            self._refuse_bind(
                bind,
                BindNakReason.AUTHENTICATION_TYPE_NOT_RECOGNIZED,
                "bind requests authentication, which KMS does not use",
            )
        negotiation = negotiate(bind.contexts, ndr64=self._settings.ndr64, btfn=self._settings.btfn)
        self._minor = bind.rpc_vers_minor
        # Echo a group the client names; otherwise the connection's own (spec 2.7).
        self._assoc_group_id = bind.assoc_group_id or self._settings.assoc_group_id
        self._send(
            BindAck(
                call_id=bind.call_id,
                pfc_flags=FIRST_AND_LAST | (bind.pfc_flags & PFC.CONC_MPX),  # spec 2.9
                rpc_vers_minor=self._minor,
                max_xmit_frag=bind.max_xmit_frag,
                max_recv_frag=bind.max_recv_frag,
                assoc_group_id=self._assoc_group_id,
                secondary_address=str(self._settings.port),
                results=negotiation.results,
            )
        )
        self._complete(bind, negotiation, events)

    def _on_alter_context(self, alter: AlterContext, events: list[ServerEvent]) -> None:
        if self._assoc_group_id is None:
            raise RpcError("alter_context before bind")
        if alter.auth_length:
            raise RpcError("alter_context requests authentication, which KMS does not use")
        negotiation = negotiate(alter.contexts, ndr64=self._settings.ndr64, btfn=False)
        self._send(
            AlterContextResp(
                call_id=alter.call_id,
                rpc_vers_minor=self._minor,
                max_xmit_frag=alter.max_xmit_frag,
                max_recv_frag=alter.max_recv_frag,
                assoc_group_id=self._assoc_group_id,
                secondary_address="",  # length 0, as Microsoft sends (spec 2.3)
                results=negotiation.results,
            )
        )
        self._complete(alter, negotiation, events)

    def _complete(
        self, pdu: Bind | AlterContext, negotiation: Negotiation, events: list[ServerEvent]
    ) -> None:
        for context in negotiation.accepted:
            self._contexts[context.context_id] = context.syntax
        events.append(
            BindCompleted(
                call_id=pdu.call_id,
                ptype=pdu.ptype,
                accepted=negotiation.accepted,
                ndr_syntaxes=tuple(context.syntax for context in negotiation.accepted),
                btfn=negotiation.btfn,
            )
        )

    def _refuse_bind(self, bind: Bind, reason: BindNakReason, message: str) -> NoReturn:
        self._send(BindNak(call_id=bind.call_id, reject_reason=reason))
        raise RpcError(f"{message}: sent bind_nak ({reason.name.lower()})")

    # --- calls (spec 3) -----------------------------------------------------------------

    def _on_request(self, request: Request, events: list[ServerEvent]) -> None:
        call_id, context_id = request.call_id, request.context_id
        if request.auth_length:
            raise RpcFault(
                "request with an auth_verifier on an unauthenticated association",
                status=NCA_S_PROTO_ERROR,
                call_id=call_id,
                context_id=context_id,
            )
        syntax = self._contexts.get(context_id)
        if syntax is None:
            raise RpcFault(
                f"request on context {context_id}, which was not accepted",
                status=NCA_S_UNK_IF,
                call_id=call_id,
                context_id=context_id,
            )
        if request.opnum != _KMS_OPNUM:
            raise RpcFault(
                f"opnum {request.opnum} does not exist",
                status=NCA_S_OP_RNG_ERROR,
                call_id=call_id,
                context_id=context_id,
            )
        stub = self._fragments.add(request)
        if stub is None:
            return
        kms_message = unwrap_request_stub(stub, syntax, call_id=call_id, context_id=context_id)
        events.append(CallReceived(call_id, context_id, request.opnum, syntax, kms_message))

    # --- output -------------------------------------------------------------------------

    def _send(self, pdu: Pdu) -> None:
        self._out += build_pdu(pdu)

    def _respond(self, call: CallReceived, stub: bytes) -> None:
        self._send(
            Response(
                call_id=call.call_id,
                rpc_vers_minor=self._minor,
                alloc_hint=len(stub),
                context_id=call.context_id,
                stub=stub,
            )
        )

    def _queue_fault(self, call_id: int, context_id: int, status: int) -> None:
        self._send(
            Fault(
                call_id=call_id,
                pfc_flags=FIRST_AND_LAST | PFC.DID_NOT_EXECUTE,
                rpc_vers_minor=self._minor,
                alloc_hint=FAULT_ALLOC_HINT,
                context_id=context_id,
                status=status,
            )
        )
