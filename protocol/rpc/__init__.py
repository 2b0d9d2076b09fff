"""DCE/RPC for the KMS interface: framing, PDUs, NDR stubs and both state machines.

Sans-I/O (architecture 4.1): bytes in, typed events and bytes out. The daemon drives
:class:`RpcServerConnection`; tests and the integration tester drive
:class:`RpcClientConnection`. Everything not re-exported here is private.
"""

from __future__ import annotations

from protocol.rpc.client import RpcClientConnection
from protocol.rpc.codec import build_pdu, parse_header, parse_pdu
from protocol.rpc.connection import RpcServerConnection, ServerSettings
from protocol.rpc.constants import (
    PFC,
    ContextResult,
    ProviderReason,
    PType,
    TransferSyntax,
)
from protocol.rpc.events import (
    AcceptedContext,
    AlterContextRespReceived,
    BindAckReceived,
    BindCompleted,
    BindNakReceived,
    CallReceived,
    ClientEvent,
    ConnectionClosing,
    Event,
    FaultReceived,
    ProtocolViolation,
    ResponseReceived,
    ServerEvent,
)
from protocol.rpc.framing import FrameBuffer
from protocol.rpc.ndr import (
    StubResult,
    unwrap_request_stub,
    unwrap_response_stub,
    wrap_error_stub,
    wrap_request_stub,
    wrap_response_stub,
)
from protocol.rpc.pdus import (
    AlterContext,
    AlterContextResp,
    Bind,
    BindAck,
    BindNak,
    BindNakReason,
    CommonHeader,
    ContextElement,
    ContextResultItem,
    Fault,
    Pdu,
    Request,
    Response,
    SyntaxId,
)

__all__ = [
    "PFC",
    "AcceptedContext",
    "AlterContext",
    "AlterContextResp",
    "AlterContextRespReceived",
    "Bind",
    "BindAck",
    "BindAckReceived",
    "BindCompleted",
    "BindNak",
    "BindNakReason",
    "BindNakReceived",
    "CallReceived",
    "ClientEvent",
    "CommonHeader",
    "ConnectionClosing",
    "ContextElement",
    "ContextResult",
    "ContextResultItem",
    "Event",
    "Fault",
    "FaultReceived",
    "FrameBuffer",
    "PType",
    "Pdu",
    "ProtocolViolation",
    "ProviderReason",
    "Request",
    "Response",
    "ResponseReceived",
    "RpcClientConnection",
    "RpcServerConnection",
    "ServerEvent",
    "ServerSettings",
    "StubResult",
    "SyntaxId",
    "TransferSyntax",
    "build_pdu",
    "parse_header",
    "parse_pdu",
    "unwrap_request_stub",
    "unwrap_response_stub",
    "wrap_error_stub",
    "wrap_request_stub",
    "wrap_response_stub",
]
