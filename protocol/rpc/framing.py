"""Split a TCP byte stream into DCE/RPC PDUs (spec 1.1, 10.6), and fragments into calls (1.5).

TCP gives no message boundaries: a PDU may arrive over several reads and several PDUs
in one read. :class:`FrameBuffer` waits for the 16-byte common header, checks it, then
waits for exactly ``frag_length`` bytes. It is h11's receive buffer with its size cap:
it never holds more than ``max_pdu_bytes``, so a peer cannot make it grow (architecture
4.8). :meth:`FrameBuffer.feed` refuses more than :attr:`FrameBuffer.room` bytes;
:meth:`FrameBuffer.receive` takes a read of any size by feeding it in slices and
handing out the complete PDUs in between.

Header checks, each a :class:`~protocol.errors.FramingError` (nothing can be answered,
the connection closes, architecture 4.4):

* ``rpc_vers`` 5 and ``rpc_vers_minor`` 0 or 1 (spec 1.2; C706 defines 5.0 and 5.1).
  A *bind* of another version is passed through instead, so that the server can answer
  it with a bind_nak "protocol version not supported" as C706 and spec 2.8 ask.
* little-endian integer representation in ``packed_drep`` (spec 0.1: every KMS client
  sends ``10 00 00 00`` and a simulator may refuse anything else). Only the integer
  nibble is checked; KMS PDUs carry no characters or floats whose format would matter.
* ``16 <= frag_length <= max_pdu_bytes``.

:class:`Reassembler` puts fragmented requests back together by call_id (spec 1.5). Real
KMS clients never fragment: a request is at most 300 bytes. The spec still asks for the
robust behaviour: a request without PFC_LAST_FRAG starts (PFC_FIRST_FRAG) or continues a
call; its stub bytes are appended until the fragment with PFC_LAST_FRAG
arrives. The stub bytes of all pending calls together are capped, so a peer cannot
make the buffers grow without bound (architecture 4.8); over the cap the connection
closes (:class:`~protocol.errors.FramingError`). A fragment that restarts a pending
call or continues a call that is not pending breaks the protocol and closes too.
"""

from __future__ import annotations

from collections.abc import Iterator

from protocol.errors import FramingError, RpcError
from protocol.rpc.constants import PFC, PType
from protocol.rpc.pdus import Request

__all__ = ["HEADER_SIZE", "FrameBuffer", "Reassembler"]

HEADER_SIZE = 16
_SUPPORTED_MINOR_VERSIONS = (0, 1)
_LITTLE_ENDIAN = 0x1  # high nibble of packed_drep byte 0


class FrameBuffer:
    """Accumulate bytes; hand out one whole PDU at a time."""

    def __init__(self, max_pdu_bytes: int) -> None:
        if max_pdu_bytes < HEADER_SIZE:
            raise ValueError(f"max_pdu_bytes must be at least {HEADER_SIZE}")
        self._cap = max_pdu_bytes
        self._buffer = bytearray()

    @property
    def room(self) -> int:
        """How many more bytes :meth:`feed` accepts now."""
        return self._cap - len(self._buffer)

    @property
    def buffered(self) -> int:
        """Bytes received that do not yet form a complete PDU (after draining)."""
        return len(self._buffer)

    def feed(self, data: bytes) -> None:
        """Append received bytes; more than :attr:`room` is refused with FramingError."""
        if len(data) > self.room:
            raise FramingError(
                f"refusing to buffer {len(self._buffer) + len(data)} bytes"
                f" (max_pdu_bytes {self._cap})"
            )
        self._buffer += data

    def receive(self, data: bytes) -> Iterator[bytes]:
        """Feed ``data`` in slices of at most :attr:`room` bytes; yield each complete PDU.

        Draining between slices keeps the buffer under the cap however large the read:
        once drained, fewer than ``frag_length <= max_pdu_bytes`` bytes are left.
        """
        offset = 0
        while offset < len(data):
            room = self.room
            self.feed(data[offset : offset + room])
            offset += room
            while (frame := self.next_frame()) is not None:
                yield frame

    def next_frame(self) -> bytes | None:
        """Return the next complete PDU, or None until enough bytes have arrived."""
        if len(self._buffer) < HEADER_SIZE:
            return None
        frag_length = self._check_header()
        if len(self._buffer) < frag_length:
            return None
        frame = bytes(self._buffer[:frag_length])
        del self._buffer[:frag_length]
        return frame

    def _check_header(self) -> int:
        rpc_vers, minor, ptype = self._buffer[0], self._buffer[1], self._buffer[2]
        if ptype != PType.BIND and (rpc_vers != 5 or minor not in _SUPPORTED_MINOR_VERSIONS):
            raise FramingError(f"unsupported RPC version {rpc_vers}.{minor}")
        if self._buffer[4] >> 4 != _LITTLE_ENDIAN:
            raise FramingError(f"unsupported data representation {self._buffer[4:8].hex()}")
        frag_length = int.from_bytes(self._buffer[8:10], "little")
        if not HEADER_SIZE <= frag_length <= self._cap:
            raise FramingError(f"frag_length {frag_length} outside [{HEADER_SIZE}, {self._cap}]")
        return frag_length


class Reassembler:
    """Collect the stub data of fragmented calls."""

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._pending: dict[int, bytearray] = {}  # call_id -> stub so far
        self._pending_bytes = 0

    @property
    def pending(self) -> bool:
        """Whether some fragmented call still waits for its last fragment."""
        return bool(self._pending)

    def add(self, request: Request) -> bytes | None:
        """Return the call's whole stub once ``request`` completes it, else None."""
        first = PFC.FIRST_FRAG in request.pfc_flags
        last = PFC.LAST_FRAG in request.pfc_flags
        pending = self._pending.get(request.call_id)
        if first and last and pending is None:
            return request.stub  # what every real client sends
        if first == (pending is not None):
            state = "restarts a pending call" if first else "continues no pending call"
            raise RpcError(f"request fragment of call {request.call_id} {state}")
        self._pending_bytes += len(request.stub)
        if self._pending_bytes > self._max_bytes:
            raise FramingError(f"fragmented requests exceed {self._max_bytes} bytes")
        if pending is None:
            pending = self._pending[request.call_id] = bytearray()
        pending += request.stub
        if not last:
            return None
        self.forget(request.call_id)
        return bytes(pending)

    def forget(self, call_id: int) -> None:
        """Drop whatever was collected for ``call_id`` (the call was refused)."""
        pending = self._pending.pop(call_id, None)
        if pending is not None:
            self._pending_bytes -= len(pending)
