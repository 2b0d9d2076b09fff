"""One TCP connection: socket bytes <-> the sans-I/O RPC machine <-> the activation service.

This is the thin asyncio shell around :class:`protocol.rpc.RpcServerConnection`
(architecture 4.3): it reads with an idle timeout (spec 1.1, 10.22: 30 s like genuine hosts),
feeds the machine, hands each call to the service, writes what the machine queued, and closes
when the peer does or the machine decides to. It holds the daemon's only broad ``except``:
a bug in one connection is logged with its traceback and closes that connection, never the
daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from kms_host.observe import HostObserver
from protocol.rpc import (
    BindCompleted,
    CallReceived,
    ConnectionClosing,
    ProtocolViolation,
    RpcServerConnection,
    ServerSettings,
)

__all__ = ["CallHandler", "KmsReply", "Session", "format_peer"]

log = structlog.get_logger("kms_host.session")

_READ_CHUNK = 65536
_conn_ids = itertools.count(1)


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


def format_peer(peername: object) -> str:
    """Render a socket peer name as ``ip:port`` (``[ip]:port`` for IPv6)."""
    if not isinstance(peername, tuple) or len(peername) < 2:
        return "unknown"
    host, port = str(peername[0]), int(peername[1])
    if host.startswith("::ffff:") and "." in host:
        host = host.removeprefix("::ffff:")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Session:
    """Serves one accepted connection until the peer leaves, it idles out or the host drains."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        handler: CallHandler,
        rpc_settings: ServerSettings,
        idle_timeout_s: float,
        observer: HostObserver,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._handler = handler
        self._rpc = RpcServerConnection(rpc_settings)
        self._idle_timeout_s = idle_timeout_s
        self._observer = observer
        self.peer = format_peer(writer.get_extra_info("peername"))
        self.conn_id = next(_conn_ids)
        self.busy = False
        """True while a PDU is being processed; the drain lets busy sessions finish."""
        self._log = log.bind(conn_id=self.conn_id, peer=self.peer)

    async def run(self) -> None:
        """Serve the connection; never raises except on cancellation."""
        self._log.debug("connection_opened")
        try:
            await self._serve()
        except asyncio.CancelledError:
            self._log.debug("connection_cancelled")
            raise
        except (ConnectionError, OSError) as exc:
            self._log.info("connection_lost", error=str(exc))
        except Exception:  # noqa: BLE001 - the one broad catch of the daemon (architecture 4.4)
            self._log.exception("connection_failed")
        finally:
            await self._close()

    async def _serve(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self._idle_timeout_s):
                    data = await self._reader.read(_READ_CHUNK)
            except TimeoutError:
                self._log.info("connection_idle_timeout", idle_timeout_s=self._idle_timeout_s)
                return
            if not data:
                self._log.debug("connection_closed_by_peer")
                return
            self.busy = True
            try:
                if not await self._process(data):
                    return
            finally:
                self.busy = False

    async def _process(self, data: bytes) -> bool:
        """Feed one read to the RPC machine; return False when the connection must end."""
        for event in self._rpc.receive_data(data):
            if isinstance(event, CallReceived):
                reply = await self._handler(event, self.peer)
                if reply.close:
                    self._log.info("connection_dropped_by_service", call_id=event.call_id)
                    return False
                self._answer(event, reply)
            elif isinstance(event, BindCompleted):
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
            await self._flush()
        await self._flush()
        return not self._rpc.closed

    def _answer(self, call: CallReceived, reply: KmsReply) -> None:
        if reply.fault_status is not None:
            self._rpc.send_fault(call, reply.fault_status)
        elif reply.message is not None:
            self._rpc.send_kms_response(call, reply.message)
        else:
            self._rpc.send_kms_error(call, reply.hresult)

    async def _flush(self) -> None:
        out = self._rpc.data_to_send()
        if out:
            self._writer.write(out)
            await self._writer.drain()

    async def _close(self) -> None:
        if self._writer.is_closing():
            return
        self._writer.close()
        # The peer may already have reset the connection; there is nothing left to flush then.
        with contextlib.suppress(ConnectionError, OSError):
            await self._writer.wait_closed()
