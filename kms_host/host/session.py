"""One TCP connection: socket bytes <-> the sans-I/O RPC machine <-> the activation service.

This is the thin asyncio shell around :class:`protocol.rpc.RpcServerConnection`
(architecture 4.3), written as an ``asyncio.Protocol`` rather than on streams: bytes arrive
in ``data_received``, the machine turns them into events, and binds are answered on the
spot; only a call, which waits for its client record to be committed, runs as a task: a
stream reader, writer and task per connection, plus a future and a timeout handle per read,
would cost more than the connection's own work.

Rules kept from the stream version: calls on one connection are answered one at a time, in
order (reading pauses while a call is in flight, so a client that floods requests is held to
one buffered read); the connection closes after ``idle_timeout_s`` without traffic while no
call is in flight (spec 1.1, 10.22: 30 s like genuine hosts), and after
``exchange_timeout_s`` from the first byte of a PDU that is still not whole: bytes trickled
one a second reset the idle timer but never make a message, and a genuine client sends each
PDU at once. Reading also pauses while the peer does not read what was written. This
module holds the daemon's only broad ``except``: a bug in one connection is logged with its
traceback and closes that connection, never the daemon.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterator
from typing import cast

import structlog

from kms_host.addresses import IpAddress, format_peer, peer_ip
from kms_host.host.observe import HostObserver
from kms_host.host.peer_policy import PeerGate
from kms_host.host.reply import CallHandler, KmsReply
from protocol.errors import ProxyHeaderError
from protocol.proxy import parse_proxy_header
from protocol.rpc import (
    BindCompleted,
    CallReceived,
    ConnectionClosing,
    ProtocolViolation,
    RpcServerConnection,
    ServerEvent,
    ServerSettings,
)

__all__ = ["Admission", "Session"]

log = structlog.get_logger("kms_host.session")

_conn_ids = itertools.count(1)


Admission = Callable[["Session", asyncio.Transport], ServerSettings | None]
"""The listener's say on a new connection: its RPC settings, or None to refuse it."""


class Session(asyncio.Protocol):
    """Serves one accepted connection until the peer leaves, it idles out or the host drains."""

    def __init__(
        self,
        *,
        handler: CallHandler,
        admit: Admission,
        on_finished: Callable[[Session], None],
        idle_timeout_s: float,
        exchange_timeout_s: float,
        observer: HostObserver,
        gate: PeerGate | None = None,
    ) -> None:
        self._handler = handler
        self._gate = gate
        self._admit = admit
        self._on_finished = on_finished
        self._idle_timeout_s = idle_timeout_s
        self._exchange_timeout_s = exchange_timeout_s
        self._observer = observer
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._rpc: RpcServerConnection | None = None
        self._call: asyncio.Task[None] | None = None
        self._backlog: list[bytes] = []
        self._proxy_header: bytearray | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self._exchange_timer: asyncio.TimerHandle | None = None
        self._last_activity = 0.0
        self._lost = False
        self._close_after_call = False
        self._write_paused = False
        self._reported = False
        self.conn_id = next(_conn_ids)
        self.peer = "unknown"
        self.peer_ip: IpAddress | None = None
        self.via: str | None = None
        """The load balancer's address, when a PROXY header named the peer."""
        self._log = log

    # --- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport: uvloop's is one too, without subclassing asyncio.Transport.
        stream = self._transport = cast(asyncio.Transport, transport)
        peername = stream.get_extra_info("peername")
        self.peer, self.peer_ip = format_peer(peername), peer_ip(peername)
        self._log = log.bind(conn_id=self.conn_id, peer=self.peer)
        self._last_activity = self._loop.time()
        if self._gate is not None and self._gate.expects_proxy(self.peer_ip):
            # A load balancer's: admitted once its PROXY header says whose connection it is.
            self._proxy_header = bytearray()
            self._idle_timer = self._loop.call_later(self._idle_timeout_s, self._check_idle)
            return
        self._open(stream)

    def _open(self, stream: asyncio.Transport) -> bool:
        """Admit the connection and start its RPC machine; False if it was refused."""
        settings = self._admit(self, stream)
        if settings is None:
            stream.close()
            return False
        self._rpc = RpcServerConnection(settings)
        self._log.debug("connection_opened")
        if self._idle_timer is None:
            self._idle_timer = self._loop.call_later(self._idle_timeout_s, self._check_idle)
        return True

    def data_received(self, data: bytes) -> None:
        self._last_activity = self._loop.time()
        if self._proxy_header is not None:
            self._guarded(self._read_proxy_header, data)
            return
        if self._rpc is None:
            return  # refused at admission; the close is under way
        if self._call is not None:
            self._backlog.append(data)
            self._transport_or_fail().pause_reading()
            return
        self._guarded(self._feed, data)

    def eof_received(self) -> bool | None:
        self._log.debug("connection_closed_by_peer")
        if self._call is None:
            return None  # close our side too
        self._close_after_call = True  # answer the call in flight first
        return True

    def pause_writing(self) -> None:
        # The peer is not reading what we wrote: read nothing more from it until it does.
        self._write_paused = True
        self._transport_or_fail().pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._call is None:
            self._transport_or_fail().resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        if self._exchange_timer is not None:
            self._exchange_timer.cancel()
        if exc is not None:
            self._log.info("connection_lost", error=str(exc))
        if self._call is None:
            self._finish()

    # --- the listener's controls --------------------------------------------------------

    def close(self) -> None:
        """Close the connection once what was written is sent."""
        if self._transport is not None:
            self._transport.close()

    def close_when_idle(self) -> None:
        """Close now if no call is in flight, else right after answering it (the drain)."""
        if self._call is None:
            self.close()
        else:
            self._close_after_call = True

    def abort(self) -> None:
        """Drop the connection now, cancelling a call in flight (the drain's grace is over)."""
        if self._call is not None:
            self._call.cancel()
        if self._transport is not None:
            self._transport.abort()

    # --- the PROXY protocol v2 header of a load balancer's connection -------------------

    def _read_proxy_header(self, data: bytes) -> None:
        """Collect the header; then the client it names is the peer, admitted or refused."""
        assert self._proxy_header is not None
        buffer = self._proxy_header
        buffer += data
        try:
            header = parse_proxy_header(bytes(buffer))
        except ProxyHeaderError as exc:
            self._proxy_header = None
            assert self._gate is not None
            self._gate.refuse(
                "proxy_header_invalid", peer=self.peer, address=self.peer_ip, error=str(exc)
            )
            self._transport_or_fail().close()
            return
        if header is None:
            return
        self._proxy_header = None
        rest = bytes(buffer[header.length :])
        if header.source is not None:
            self.via, self.peer = self.peer, format_peer(header.source)
            self.peer_ip = peer_ip(header.source)
            self._log = log.bind(conn_id=self.conn_id, peer=self.peer, via=self.via)
        if self._open(self._transport_or_fail()) and rest:
            self._feed(rest)

    # --- feeding the machine ------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        assert self._rpc is not None
        events = iter(self._rpc.receive_data(data))
        self._time_exchange()
        if self._answer_until_call(events):
            self._close_if_done()

    def _answer_until_call(self, events: Iterator[ServerEvent]) -> bool:
        """Handle events up to the first call, which is handed to a task.

        Returns True when every event was handled here (no call is in flight).
        """
        for event in events:
            if isinstance(event, CallReceived):
                self._call = self._loop.create_task(self._serve_calls(event, events))
                return False
            self._note(event)
            self._flush()
        return True

    async def _serve_calls(self, call: CallReceived, rest: Iterator[ServerEvent]) -> None:
        """Answer ``call``, then the events after it, then any bytes that came meanwhile."""
        try:
            while True:
                reply = await self._handler(call, self.peer)
                if reply.close:
                    self._log.info("connection_dropped_by_service", call_id=call.call_id)
                    self.close()
                    return
                self._answer(call, reply)
                self._flush()
                next_call = self._next_call(rest)
                if next_call is None:
                    break
                call = next_call
        except asyncio.CancelledError:
            self._log.debug("connection_cancelled")
            raise
        except Exception:  # noqa: BLE001 - the one broad catch of the daemon (architecture 4.4)
            self._fail()
            return
        finally:
            self._call = None
            self._last_activity = self._loop.time()
            if self._lost:
                self._finish()
        self._after_calls()

    def _next_call(self, rest: Iterator[ServerEvent]) -> CallReceived | None:
        """The next call among the events left over, handling the others in passing."""
        for event in rest:
            if isinstance(event, CallReceived):
                return event
            self._note(event)
            self._flush()
        return None

    def _after_calls(self) -> None:
        if self._lost or self._close_if_done():
            return
        if self._close_after_call:
            self.close()
            return
        backlog, self._backlog = b"".join(self._backlog), []
        if not self._write_paused:
            self._transport_or_fail().resume_reading()
        if backlog:
            self._guarded(self._feed, backlog)

    def _note(self, event: ServerEvent) -> None:
        if isinstance(event, BindCompleted):
            self._log.debug(
                "bind_completed",
                call_id=event.call_id,
                ptype=event.ptype.name.lower(),
                ndr_syntaxes=[s.value for s in event.ndr_syntaxes],
                btfn=event.btfn,
            )
        elif isinstance(event, ProtocolViolation):
            self._observer.protocol_violation(type(event.error).__name__)
            self._log.warning(
                "protocol_violation",
                reason=str(event.error),
                error=type(event.error).__name__,
                action=event.error.action.value,
                status=f"0x{event.error.status:08X}",
            )
        elif isinstance(event, ConnectionClosing):
            self._log.info("connection_closing", reason=event.reason)

    def _answer(self, call: CallReceived, reply: KmsReply) -> None:
        assert self._rpc is not None
        if reply.fault_status is not None:
            self._rpc.send_fault(call, reply.fault_status)
        elif reply.message is not None:
            self._rpc.send_kms_response(call, reply.message)
        else:
            self._rpc.send_kms_error(call, reply.hresult)

    def _flush(self) -> None:
        assert self._rpc is not None
        out = self._rpc.data_to_send()
        transport = self._transport_or_fail()
        if out and not transport.is_closing():
            transport.write(out)

    def _close_if_done(self) -> bool:
        """Close when the machine decided to (after a fault that ends the association)."""
        assert self._rpc is not None
        if self._rpc.closed:
            self.close()
        return self._rpc.closed

    def _guarded(self, step: Callable[[bytes], None], data: bytes) -> None:
        try:
            step(data)
        except Exception:  # noqa: BLE001 - the same one broad catch, for the synchronous part
            self._fail()

    def _fail(self) -> None:
        self._log.exception("connection_failed")
        self._transport_or_fail().abort()

    def _time_exchange(self) -> None:
        """Start the exchange timer at a PDU's first byte; stop it once no PDU is partial."""
        assert self._rpc is not None
        if not self._rpc.receiving:
            if self._exchange_timer is not None:
                self._exchange_timer.cancel()
                self._exchange_timer = None
        elif self._exchange_timer is None:
            self._exchange_timer = self._loop.call_later(
                self._exchange_timeout_s, self._exchange_expired
            )

    def _exchange_expired(self) -> None:
        """A PDU began ``exchange_timeout_s`` ago and is still not whole: close.

        While a call is in flight the wait is the host's, not the peer's: the bytes held back
        meanwhile are fed after the answer, which starts the timer again if still partial.
        """
        self._exchange_timer = None
        if self._lost or self._call is not None:
            return
        self._log.info("connection_exchange_timeout", exchange_timeout_s=self._exchange_timeout_s)
        self._observer.connection_timed_out("exchange")
        self.close()

    def _check_idle(self) -> None:
        """The idle timer: close after ``idle_timeout_s`` of silence, or look again later."""
        if self._lost:
            return
        quiet = self._loop.time() - self._last_activity
        if self._call is None and quiet >= self._idle_timeout_s:
            self._log.info("connection_idle_timeout", idle_timeout_s=self._idle_timeout_s)
            self._observer.connection_timed_out("idle")
            self.close()
            return
        wait = self._idle_timeout_s if self._call else max(self._idle_timeout_s - quiet, 0.0)
        self._idle_timer = self._loop.call_later(wait, self._check_idle)

    def _finish(self) -> None:
        if not self._reported and self._rpc is not None:
            self._reported = True
            self._on_finished(self)

    def _transport_or_fail(self) -> asyncio.Transport:
        assert self._transport is not None
        return self._transport
