"""The client side of a KMS RPC connection, sans-I/O, for our test client and tester.

It behaves like the Windows / vlmcs client the spec describes (spec 0.3, 2.5):

* :meth:`RpcClientConnection.bind` proposes NDR32 as context 0, then NDR64 and the BTFN
  pseudo syntax (bitmask 0x03) on the next ids when enabled, with flags
  FIRST|LAST|CONC_MPX (0x13) and fragment sizes 5840.
* If the bind_ack rejects NDR32 but accepts NDR64, an alter_context proposing NDR32 as
  context 0 is queued at once, as Windows does against Windows 8+ hosts.
* The bind, the alter_context and the first request share the first call_id; each later
  request takes the next one (vlmcs, spec 0.3).
* The first request goes over NDR32 and later ones over NDR64 when both were accepted
  (spec 2.5, last paragraph).

Replies are checked strictly, in the spirit of vlmcs: call_id, flags (CONC_MPX mirrored
in bind_ack, absent from responses; no fragmented replies), one result per proposed
element with legal result codes and syntaxes (spec 2.4), and the response stub layout
(:func:`~protocol.rpc.ndr.unwrap_response_stub`). Any failure is reported as a
:class:`~protocol.rpc.events.ProtocolViolation` and the machine closes.
"""

from __future__ import annotations

from typing import TypeVar

from protocol.errors import FramingError, RpcError
from protocol.rpc.codec import build_pdu, parse_pdu
from protocol.rpc.constants import BTFN_SUPPORTED, PFC, ContextResult, TransferSyntax
from protocol.rpc.events import (
    AcceptedContext,
    AlterContextRespReceived,
    BindAckReceived,
    BindNakReceived,
    ClientEvent,
    ConnectionClosing,
    FaultReceived,
    ProtocolViolation,
    ResponseReceived,
)
from protocol.rpc.framing import FrameBuffer
from protocol.rpc.ndr import unwrap_response_stub, wrap_request_stub
from protocol.rpc.negotiation import KMS_INTERFACE_ID, NULL_SYNTAX, SYNTAX_IDS, btfn_syntax
from protocol.rpc.pdus import (
    FIRST_AND_LAST,
    AlterContext,
    AlterContextResp,
    Bind,
    BindAck,
    BindNak,
    ContextElement,
    ContextResultItem,
    Fault,
    Pdu,
    Request,
    Response,
)

__all__ = ["MAX_FRAGMENT", "RpcClientConnection"]

MAX_FRAGMENT = 5840  # max_xmit_frag / max_recv_frag of Windows and vlmcs (spec 2.2)
_BIND_FLAGS = FIRST_AND_LAST | PFC.CONC_MPX
_Proposal = tuple[TransferSyntax | None, ...]  # per element; None for BTFN
_Awaited = TypeVar("_Awaited", Bind, AlterContext)


def _element(context_id: int, syntax: TransferSyntax | None) -> ContextElement:
    transfer = btfn_syntax(BTFN_SUPPORTED) if syntax is None else SYNTAX_IDS[syntax]
    return ContextElement(context_id, KMS_INTERFACE_ID, (transfer,))


def _legal(item: ContextResultItem, proposed: TransferSyntax | None) -> bool:
    """Is ``item`` a well-formed answer to an element proposing ``proposed`` (spec 2.4)?"""
    if item.result == ContextResult.PROVIDER_REJECTION:
        return item.transfer_syntax == NULL_SYNTAX
    if proposed is None:
        return (
            item.result == ContextResult.NEGOTIATE_ACK
            and item.reason & ~BTFN_SUPPORTED == 0
            and item.transfer_syntax == NULL_SYNTAX
        )
    return (
        item.result == ContextResult.ACCEPTANCE
        and item.reason == 0
        and item.transfer_syntax == SYNTAX_IDS[proposed]
    )


class RpcClientConnection:
    """One client association: bind, optional alter_context, then requests."""

    def __init__(self, ndr64: bool = True, btfn: bool = True, first_call_id: int = 2) -> None:
        self._ndr64 = ndr64
        self._btfn = btfn
        self._first_call_id = first_call_id
        self._frames = FrameBuffer(MAX_FRAGMENT)
        self._out = bytearray()
        self._awaiting: Bind | AlterContext | None = None
        self._proposal: _Proposal = ()
        self._contexts: dict[TransferSyntax, int] = {}
        self._calls: dict[int, tuple[int, TransferSyntax]] = {}  # call_id -> context, syntax
        self._requests_sent = 0
        self._closed = False

    @property
    def ready(self) -> bool:
        """True when negotiation is over and a usable NDR context exists."""
        return bool(self._contexts) and self._awaiting is None and not self._closed

    @property
    def closed(self) -> bool:
        """True once the server closed, refused the bind, or broke the protocol."""
        return self._closed

    def bind(self) -> None:
        """Queue the bind (spec 0.3, 2.2)."""
        if self._proposal or self._closed:
            raise RuntimeError("bind() is the first and only bind of a connection")
        proposal: list[TransferSyntax | None] = [TransferSyntax.NDR32]
        if self._ndr64:
            proposal.append(TransferSyntax.NDR64)
        if self._btfn:
            proposal.append(None)
        self._propose(Bind, tuple(proposal))

    def request(self, kms_message: bytes) -> int:
        """Queue a RequestActivation call (spec 3.2); return its call_id."""
        if not self.ready:
            raise RuntimeError("no usable presentation context yet")
        preferred = TransferSyntax.NDR64 if self._requests_sent else TransferSyntax.NDR32
        syntax = preferred if preferred in self._contexts else next(iter(self._contexts))
        call_id = self._first_call_id + self._requests_sent
        stub = wrap_request_stub(kms_message, syntax)
        self._send(
            Request(
                call_id=call_id,
                alloc_hint=len(stub),
                context_id=self._contexts[syntax],
                opnum=0,
                stub=stub,
            )
        )
        self._calls[call_id] = (self._contexts[syntax], syntax)
        self._requests_sent += 1
        return call_id

    def receive_data(self, data: bytes) -> list[ClientEvent]:
        """Feed bytes from the server (``b""`` at end of stream); never raises for bad input."""
        events: list[ClientEvent] = []
        if self._closed:
            return events
        if not data:
            self._close(events, "server closed the connection")
            return events
        try:
            for frame in self._frames.receive(data):
                self._handle_frame(frame, events)
                if self._closed:
                    break
        except FramingError as exc:
            self._fail(exc, events)
        return events

    def data_to_send(self) -> bytes:
        """Return and forget the bytes queued for the server."""
        out = bytes(self._out)
        self._out.clear()
        return out

    # --- input ------------------------------------------------------------------------

    def _handle_frame(self, frame: bytes, events: list[ClientEvent]) -> None:
        try:
            self._handle(parse_pdu(frame), events)
        except RpcError as exc:
            self._fail(exc, events)

    def _fail(self, error: RpcError, events: list[ClientEvent]) -> None:
        events.append(ProtocolViolation(error))
        self._close(events, str(error))

    def _handle(self, pdu: Pdu, events: list[ClientEvent]) -> None:
        match pdu:
            case BindAck():
                self._on_bind_ack(pdu, events)
            case AlterContextResp():
                awaited = self._expect(pdu, AlterContext)
                accepted, _ = self._check_results(pdu, awaited, mirror_mpx=False)
                self._awaiting = None
                events.append(AlterContextRespReceived(pdu.call_id, accepted))
            case BindNak():
                self._expect(pdu, Bind)
                events.append(BindNakReceived(pdu.call_id, pdu.reject_reason))
                self._close(events, f"bind rejected with reason {pdu.reject_reason}")
            case Response():
                self._on_response(pdu, events)
            case Fault():
                self._on_fault(pdu, events)
            case _:
                raise RpcError(f"unexpected {type(pdu).__name__} PDU from a server")

    def _on_bind_ack(self, ack: BindAck, events: list[ClientEvent]) -> None:
        bind = self._expect(ack, Bind)
        accepted, btfn = self._check_results(ack, bind, mirror_mpx=True)
        events.append(BindAckReceived(ack.call_id, accepted, btfn))
        if TransferSyntax.NDR32 in self._contexts or TransferSyntax.NDR64 not in self._contexts:
            self._awaiting = None
        else:  # Windows 8+ host: NDR64 only; get NDR32 for the first call (spec 2.5)
            self._propose(AlterContext, (TransferSyntax.NDR32,))

    def _on_response(self, response: Response, events: list[ClientEvent]) -> None:
        call = self._calls.pop(response.call_id, None)
        if call is None:
            raise RpcError(f"response to call {response.call_id}, which is not pending")
        context_id, syntax = call
        if response.pfc_flags & (FIRST_AND_LAST | PFC.CONC_MPX) != FIRST_AND_LAST:
            raise RpcError(f"response flags {response.pfc_flags:#04x}, expected 0x03")
        if response.context_id != context_id:
            raise RpcError(f"response on context {response.context_id}, request on {context_id}")
        result = unwrap_response_stub(response.stub, syntax, call_id=response.call_id)
        events.append(ResponseReceived(response.call_id, result.hresult, result.payload))

    def _on_fault(self, fault: Fault, events: list[ClientEvent]) -> None:
        if self._calls.pop(fault.call_id, None) is not None:
            events.append(FaultReceived(fault.call_id, fault.status))
            return
        if self._awaiting is None or self._awaiting.call_id != fault.call_id:
            raise RpcError(f"fault for call {fault.call_id}, which is not pending")
        # The server refused the bind or alter_context itself; it closes next.
        events.append(FaultReceived(fault.call_id, fault.status))
        self._close(events, f"negotiation failed with fault {fault.status:#010x}")

    def _expect(self, reply: Pdu, kind: type[_Awaited]) -> _Awaited:
        awaited = self._awaiting
        if not isinstance(awaited, kind) or reply.call_id != awaited.call_id:
            raise RpcError(f"unexpected {type(reply).__name__} for call {reply.call_id}")
        return awaited

    def _check_results(
        self, reply: BindAck | AlterContextResp, proposal: Bind | AlterContext, *, mirror_mpx: bool
    ) -> tuple[tuple[AcceptedContext, ...], int | None]:
        expected_flags = FIRST_AND_LAST | (proposal.pfc_flags & PFC.CONC_MPX if mirror_mpx else 0)
        if reply.pfc_flags & (FIRST_AND_LAST | PFC.CONC_MPX) != expected_flags:
            raise RpcError(f"{type(reply).__name__} flags {reply.pfc_flags:#04x}")
        if len(reply.results) != len(self._proposal):
            raise RpcError(f"{len(reply.results)} results for {len(self._proposal)} contexts")
        accepted: list[AcceptedContext] = []
        btfn: int | None = None
        for element, syntax, item in zip(
            proposal.contexts, self._proposal, reply.results, strict=True
        ):
            if not _legal(item, syntax):
                raise RpcError(f"context {element.context_id}: illegal result {item}")
            if syntax is not None and item.result == ContextResult.ACCEPTANCE:
                accepted.append(AcceptedContext(element.context_id, syntax))
                self._contexts[syntax] = element.context_id
            elif item.result == ContextResult.NEGOTIATE_ACK:
                btfn = item.reason
        return tuple(accepted), btfn

    def _close(self, events: list[ClientEvent], reason: str) -> None:
        self._closed = True
        events.append(ConnectionClosing(reason))

    # --- output -------------------------------------------------------------------------

    def _propose(self, kind: type[Bind] | type[AlterContext], proposal: _Proposal) -> None:
        pdu = kind(
            call_id=self._first_call_id,
            pfc_flags=_BIND_FLAGS,
            max_xmit_frag=MAX_FRAGMENT,
            max_recv_frag=MAX_FRAGMENT,
            assoc_group_id=0,
            contexts=tuple(_element(i, syntax) for i, syntax in enumerate(proposal)),
        )
        self._awaiting, self._proposal = pdu, proposal
        self._send(pdu)

    def _send(self, pdu: Pdu) -> None:
        self._out += build_pdu(pdu)
