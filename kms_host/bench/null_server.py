"""The null ceiling for ``kms-host bench``: a server that does no work but the framing.

It accepts, reads each PDU by its ``frag_length`` exactly as a real host frames them, and
answers a bind with a canned bind_ack and a request with a canned response whose call_id
is patched in: no RPC state machine, no crypto, no storage, no logging. Whatever rate it
sustains is what this Python on this machine can do at all, so ``bench`` states kms-host's
throughput as a fraction of it.

The canned answers are real: :func:`canned_exchanges` builds one request per KMS version
from a fixed seed, and the null server seals the replies once, at start, with the host-side
crypto of ``protocol``. ``bench`` sends those very requests to the null server and verifies
the replies with every check of spec 5.7, so its own work per activation is the same
against both servers.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from protocol.kms import (
    KmsRequest,
    KmsResponse,
    PendingRequest,
    ProtocolVersion,
    build_request,
    open_request,
    seal_response,
)
from protocol.rpc import (
    CallReceived,
    PType,
    RpcClientConnection,
    RpcServerConnection,
    ServerSettings,
)

__all__ = [
    "BENCH_MACHINE_NAME",
    "WINDOWS_10_PRO",
    "NullServer",
    "canned_exchanges",
    "make_request",
    "seeded_rng",
]

# Windows 10 Professional (spec 8.4): an activation a default host answers.
WINDOWS_10_PRO: Final = (
    uuid.UUID("55c92734-d682-4d71-983e-d6ec3f16059f"),  # application
    uuid.UUID("2de67392-b7a7-462a-b1ca-108dd189f588"),  # SKU
    uuid.UUID("58e2134f-8e11-4d17-9cb2-91069c151148"),  # KMS counted ID
)
BENCH_MACHINE_NAME: Final = "bench.lab.example"
"""The machine name of every request ``bench`` sends, so its rows in a host's client table
can be told apart and removed (``kms-host bench --cleanup``); a reserved name (RFC 2606)."""
_CANNED_CMID: Final = uuid.UUID("00000000-0000-4000-8000-0000000b0b00")
_CANNED_TIME: Final = 133_485_408_000_000_000  # 2024-01-01T00:00:00Z as a FILETIME
_HEADER: Final = struct.Struct("<BBBB4sHHI")  # the 16-byte common header (spec 2.1)
_CALL_ID: Final = slice(12, 16)
_CONTEXT_ID_OFFSET: Final = 20  # request PDU: header, alloc_hint, then p_cont_id
_STUB_KMS_OFFSET: Final = {0: 32, 1: 40}  # KMS message in an NDR32 / NDR64 request stub
_MAX_PDU: Final = 4096


def seeded_rng(seed: bytes) -> Callable[[int], bytes]:
    """A deterministic byte source (SHA-256 in counter mode), the same in every process."""
    counter = itertools.count()

    def rng(size: int) -> bytes:
        out = b""
        while len(out) < size:
            out += hashlib.sha256(seed + next(counter).to_bytes(8, "little")).digest()
        return out[:size]

    return rng


def make_request(version: ProtocolVersion, cmid: uuid.UUID, request_time: int) -> KmsRequest:
    """A Windows 10 Professional request, as a Windows client sends it."""
    app, sku, kms = WINDOWS_10_PRO
    return KmsRequest(
        version=version,
        is_client_vm=0,
        license_status=2,
        grace_time_min=43200,
        application_id=app,
        sku_id=sku,
        kms_counted_id=kms,
        client_machine_id=cmid,
        required_client_count=25,
        request_time=request_time,
        previous_client_machine_id=uuid.UUID(int=0),
        machine_name=BENCH_MACHINE_NAME,
    )


@dataclass(frozen=True, slots=True)
class CannedExchange:
    """One version's canned request (as the client built it) and the host's sealed reply."""

    pending: PendingRequest
    reply: bytes


def canned_exchanges() -> dict[ProtocolVersion, CannedExchange]:
    """The fixed request of each version and a genuine-looking reply to it."""
    rng = seeded_rng(b"kms-host bench null ceiling")
    exchanges = {}
    for version in ProtocolVersion:
        pending = build_request(make_request(version, _CANNED_CMID, _CANNED_TIME), rng=rng)
        request = pending.request
        response = KmsResponse(
            version=version,
            epid="06401-00206-271-392412-03-1033-17763.0000-0012024",
            client_machine_id=request.client_machine_id,
            response_time=request.request_time,
            current_client_count=50,
            activation_interval_min=120,
            renewal_interval_min=10080,
        )
        opened = open_request(pending.wire)
        reply = seal_response(opened, response, hwid=bytes(8), rng=rng)
        exchanges[version] = CannedExchange(pending, reply)
    return exchanges


def _bound_pair(port: int) -> tuple[RpcServerConnection, RpcClientConnection, dict[int, bytes]]:
    """A real server and a client bound as :class:`KmsClient` binds (NDR32, NDR64, BTFN),
    and the server's negotiation replies by the PDU type they answer."""
    server = RpcServerConnection(ServerSettings(port=port, assoc_group_id=0x1688))
    client = RpcClientConnection()
    client.bind()
    negotiation: dict[int, bytes] = {}
    while not client.ready:
        sent = client.data_to_send()
        server.receive_data(sent)
        reply = server.data_to_send()
        negotiation[sent[2]] = reply
        client.receive_data(reply)
    return server, client, negotiation


def _canned_pdus(port: int) -> tuple[dict[int, bytes], dict[tuple[int, int], bytes]]:
    """The negotiation replies, and the response PDU for each (context, KMS version).

    Produced once by the real state machines, client and server, talking to each other.
    """
    negotiation: dict[int, bytes] = {}
    responses: dict[tuple[int, int], bytes] = {}
    for exchange in canned_exchanges().values():
        server, client, negotiation = _bound_pair(port)
        for _ in range(2):  # the first call travels in NDR32, later ones in NDR64
            client.request(exchange.pending.wire)
            (call,) = server.receive_data(client.data_to_send())
            assert isinstance(call, CallReceived)
            server.send_kms_response(call, exchange.reply)
            pdu = server.data_to_send()
            client.receive_data(pdu)
            responses[call.context_id, exchange.pending.request.version.value] = pdu
    return negotiation, responses


class _NullProtocol(asyncio.Protocol):
    """Frames PDUs by frag_length and answers each with a canned PDU."""

    def __init__(self, negotiation: dict[int, bytes], responses: dict[tuple[int, int], bytes]):
        self._negotiation = negotiation
        self._responses = responses
        self._buffer = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer + data
        while len(buffer) >= _HEADER.size:
            frag_length = _HEADER.unpack_from(buffer)[5]
            if frag_length > _MAX_PDU or frag_length < _HEADER.size:
                self._close()
                return
            if len(buffer) < frag_length:
                break
            pdu, buffer = buffer[:frag_length], buffer[frag_length:]
            if not self._answer(pdu):
                self._close()
                return
        self._buffer = buffer

    def _answer(self, pdu: bytes) -> bool:
        assert self._transport is not None
        ptype, call_id = pdu[2], pdu[_CALL_ID]
        if ptype in self._negotiation:
            canned = self._negotiation[ptype]
        elif ptype == PType.REQUEST:
            context_id = int.from_bytes(pdu[_CONTEXT_ID_OFFSET : _CONTEXT_ID_OFFSET + 2], "little")
            offset = _STUB_KMS_OFFSET.get(context_id, 0)
            major = int.from_bytes(pdu[offset + 2 : offset + 4], "little") if offset else 0
            found = self._responses.get((context_id, major))
            if found is None:
                return False
            canned = found
        else:
            return False
        self._transport.write(canned[:12] + call_id + canned[16:])
        return True

    def _close(self) -> None:
        if self._transport is not None:
            self._transport.close()


_BACKLOG = 1024
"""The accept queue of ``kms-host serve`` by default (``max_connections``), so that both
servers lose no SYN to a full queue at 256 fresh connections and the ceiling compares alike."""


class NullServer:
    """The null ceiling server on one address; ``async with`` it, or ``start``/``close``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port)."""
        assert self._server is not None, "not started"
        name = self._server.sockets[0].getsockname()
        return str(name[0]), int(name[1])

    async def start(self) -> tuple[str, int]:
        """Bind and start accepting; returns the bound address."""
        negotiation, responses = _canned_pdus(self._port or 1688)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _NullProtocol(negotiation, responses),
            self._host,
            self._port,
            backlog=_BACKLOG,
        )
        return self.address

    async def close(self) -> None:
        """Stop accepting and close the listening socket."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def __aenter__(self) -> NullServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
