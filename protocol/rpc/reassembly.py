"""Reassembly of fragmented requests by call_id (spec 1.5).

Real KMS clients never fragment: a request is at most 300 bytes. The spec still asks
for the robust behaviour: a request without PFC_LAST_FRAG starts (PFC_FIRST_FRAG) or
continues a call; its stub bytes are appended until the fragment with PFC_LAST_FRAG
arrives. The stub bytes of all pending calls together are capped, so a peer cannot
make the buffers grow without bound (architecture 4.8); over the cap the connection
closes (:class:`~protocol.errors.FramingError`). A fragment that restarts a pending
call or continues a call that is not pending breaks the protocol and closes too.
"""

from __future__ import annotations

from protocol.errors import FramingError, RpcError
from protocol.rpc.constants import PFC
from protocol.rpc.pdus import Request

__all__ = ["Reassembler"]


class Reassembler:
    """Collect the stub data of fragmented calls."""

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._pending: dict[int, bytearray] = {}  # call_id -> stub so far
        self._pending_bytes = 0

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
