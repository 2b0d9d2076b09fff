"""An asyncio KMS client built from ``protocol``'s client side.

It is what our tests, ``kms-host activate``, ``probe`` and ``bench`` speak: one TCP
association, bound like a Windows client (NDR32 + NDR64 + BTFN, alter_context when the host
prefers NDR64, spec 2.5), carrying any number of RequestActivation calls, each response
verified with every check of spec 5.7 before it is believed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from kms_host.errors import KmsHostError
from protocol.errors import ProtocolError, ResponseVerificationError
from protocol.kms import KmsRequest, KmsResponse, PendingRequest, build_request, open_response
from protocol.rpc import (
    AlterContextRespReceived,
    BindAckReceived,
    BindNakReceived,
    ConnectionClosing,
    FaultReceived,
    ProtocolViolation,
    ResponseReceived,
    RpcClientConnection,
)

__all__ = ["ActivationResult", "ClientError", "KmsClient"]

_READ_CHUNK = 65536


class ClientError(KmsHostError):
    """The exchange failed before a verified answer arrived.

    ``stage`` says where (``connect``, ``bind``, ``call``, ``verify``, ``timeout``,
    ``closed``), ``status`` carries an RPC fault status when there was one.
    """

    def __init__(self, message: str, *, stage: str, status: int | None = None) -> None:
        super().__init__(message)
        self.stage = stage
        self.status = status


@dataclass(frozen=True, slots=True)
class ActivationResult:
    """A host's verified answer to one request."""

    call_id: int
    hresult: int
    response: KmsResponse | None
    hwid: bytes | None


class KmsClient:
    """One association with a KMS host."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        rpc: RpcClientConnection,
        timeout_s: float,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._rpc = rpc
        self._timeout_s = timeout_s

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        *,
        ndr64: bool = True,
        btfn: bool = True,
        timeout_s: float = 5.0,
        preamble: bytes = b"",
        local_host: str | None = None,
    ) -> KmsClient:
        """Open a TCP connection and bind (with alter_context if needed).

        ``preamble`` is written first: a PROXY protocol header, to stand in for a load
        balancer in front of a host configured with ``[server] proxy_protocol_from``.
        ``local_host`` is the source address to connect from (default: the system's choice).
        """
        local_addr = None if local_host is None else (local_host, 0)
        try:
            async with asyncio.timeout(timeout_s):
                reader, writer = await asyncio.open_connection(host, port, local_addr=local_addr)
                writer.write(preamble)
        except TimeoutError as exc:
            raise ClientError(f"connecting to {host}:{port} timed out", stage="timeout") from exc
        except OSError as exc:
            raise ClientError(f"cannot connect to {host}:{port}: {exc}", stage="connect") from exc
        client = cls(reader, writer, RpcClientConnection(ndr64=ndr64, btfn=btfn), timeout_s)
        try:
            await client._bind()
        except BaseException:
            await client.close()
            raise
        return client

    async def __aenter__(self) -> KmsClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _bind(self) -> None:
        """Bind, and alter_context when the host accepted only NDR64 (spec 2.5)."""
        self._rpc.bind()
        while not self._rpc.ready:
            for event in await self._exchange("bind"):
                if isinstance(event, BindNakReceived):
                    raise ClientError(
                        f"bind refused (bind_nak reason {event.reason})", stage="bind"
                    )
                if isinstance(event, ProtocolViolation | FaultReceived | ConnectionClosing):
                    raise ClientError(f"bind failed: {_describe(event)}", stage="bind")
                if (
                    isinstance(event, BindAckReceived | AlterContextRespReceived)
                    and not event.accepted
                ):
                    raise ClientError("the host accepted no presentation context", stage="bind")

    async def _exchange(self, stage: str) -> list[object]:
        """Send what is queued, read once, return the events it produced."""
        out = self._rpc.data_to_send()
        try:
            async with asyncio.timeout(self._timeout_s):
                if out:
                    self._writer.write(out)
                    await self._writer.drain()
                data = await self._reader.read(_READ_CHUNK)
        except TimeoutError as exc:
            raise ClientError(f"no answer within {self._timeout_s} s", stage="timeout") from exc
        except OSError as exc:
            raise ClientError(f"connection failed: {exc}", stage="closed") from exc
        if not data:
            raise ClientError(f"host closed the connection during {stage}", stage="closed")
        return list(self._rpc.receive_data(data))

    async def activate(
        self, request: KmsRequest, *, rng: Callable[[int], bytes] = os.urandom
    ) -> ActivationResult:
        """Send one request and return the verified answer (HRESULT or response)."""
        return await self.activate_pending(build_request(request, rng=rng))

    async def activate_pending(self, pending: PendingRequest) -> ActivationResult:
        """Send a request built beforehand (``bench`` builds its pool outside the timing)."""
        call_id = self._rpc.request(pending.wire)
        while True:
            for event in await self._exchange("call"):
                if isinstance(event, FaultReceived) and event.call_id == call_id:
                    raise ClientError(
                        f"RPC fault 0x{event.status:08X}", stage="call", status=event.status
                    )
                if isinstance(event, ProtocolViolation | ConnectionClosing):
                    raise ClientError(f"bad RPC answer: {_describe(event)}", stage="call")
                if isinstance(event, ResponseReceived) and event.call_id == call_id:
                    return self._verify(call_id, event, pending)

    @staticmethod
    def _verify(call_id: int, event: ResponseReceived, pending: PendingRequest) -> ActivationResult:
        if event.hresult != 0 or event.kms_message is None:
            return ActivationResult(call_id, event.hresult, None, None)
        try:
            verified = open_response(event.kms_message, pending)
        except ResponseVerificationError as exc:
            raise ClientError(f"response rejected: {exc} ({exc.check})", stage="verify") from exc
        except ProtocolError as exc:
            raise ClientError(f"response rejected: {exc}", stage="verify") from exc
        return ActivationResult(call_id, 0, verified.response, verified.hwid)

    async def close(self) -> None:
        """Close the association."""
        if self._writer.is_closing():
            return
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()


def _describe(event: object) -> str:
    if isinstance(event, ProtocolViolation):
        return str(event.error)
    if isinstance(event, FaultReceived):
        return f"RPC fault 0x{event.status:08X}"
    if isinstance(event, ConnectionClosing):
        return event.reason
    return type(event).__name__
