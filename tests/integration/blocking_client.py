"""A KMS client in plain blocking sockets, as vlmcs is: no event loop anywhere.

What a lab's own client looks like to the ``kms_host`` fixture: it holds the thread it runs
in until the host answers. It speaks through ``protocol``'s sans-I/O client side (bind,
request, the spec 5.7 checks) and only depends on the standard library and ``protocol``,
so that a test suite with nothing but the package installed can carry it as it is.
The product identity is Windows 10/11 Pro's, from the spec (8.5, 8.6), not from our catalog.
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import UTC, datetime

from protocol.kms import (
    KmsRequest,
    KmsResponse,
    ProtocolVersion,
    build_request,
    datetime_to_filetime,
    open_response,
)
from protocol.rpc import ResponseReceived, RpcClientConnection

WINDOWS = uuid.UUID("55c92734-d682-4d71-983e-d6ec3f16059f")
WINDOWS_10_PRO = uuid.UUID("2de67392-b7a7-462a-b1ca-108dd189f588")
WINDOWS_10_KMS_ID = uuid.UUID("58e2134f-8e11-4d17-9cb2-91069c151148")


def windows_request(cmid: uuid.UUID, when: datetime | None = None) -> KmsRequest:
    """A Windows 10/11 Pro client in its initial grace period, asking for 25 (V6)."""
    return KmsRequest(
        version=ProtocolVersion.V6,
        is_client_vm=0,
        license_status=2,
        grace_time_min=43200,
        application_id=WINDOWS,
        sku_id=WINDOWS_10_PRO,
        kms_counted_id=WINDOWS_10_KMS_ID,
        client_machine_id=cmid,
        required_client_count=25,
        request_time=datetime_to_filetime(when or datetime.now(UTC)),
        previous_client_machine_id=uuid.UUID(int=0),
        machine_name="blocking-client.lab.test",
    )


def activate(host: str, port: int, request: KmsRequest, timeout_s: float = 10.0) -> KmsResponse:
    """Bind, send one request, and return the verified response; raise on anything else."""
    rpc = RpcClientConnection()
    pending = build_request(request, rng=os.urandom)
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        rpc.bind()
        call_id: int | None = None
        while True:
            if rpc.ready and call_id is None:
                call_id = rpc.request(pending.wire)
            sock.sendall(rpc.data_to_send())
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("the host closed the connection")
            for event in rpc.receive_data(data):
                if isinstance(event, ResponseReceived) and event.call_id == call_id:
                    if event.hresult != 0 or event.kms_message is None:
                        raise RuntimeError(f"the host answered 0x{event.hresult:08X}")
                    return open_response(event.kms_message, pending).response
            if rpc.closed:
                raise ConnectionError("the RPC association failed")
