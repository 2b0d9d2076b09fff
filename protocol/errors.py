"""The one exception root of ``protocol`` and what each error becomes on the wire.

Every function in ``protocol`` that is handed bad input raises a subclass of
:class:`ProtocolError` and nothing else (the fuzz tests hold it to that, as h11 does).
Each class says what the host must put on the wire in answer, so the layer that
catches it does a lookup, not a ladder of ``isinstance`` checks (architecture 4.4):

* :attr:`WireAction.CLOSE`: no call can be addressed; drop the connection
  (spec 1.1, "closing the TCP connection is acceptable").
* :attr:`WireAction.FAULT`: answer the call with an RPC fault PDU carrying
  :attr:`RpcError.status` and keep the association (spec 3.5, 3.6).
* :attr:`WireAction.FAULT_AND_CLOSE`: answer with a fault, then close (a PDU that was
  framed correctly but cannot be parsed; the stream may be out of step after it).
* :attr:`WireAction.HRESULT`: answer with a normal response PDU whose stub carries a
  NULL pointer and :attr:`KmsError.hresult` (spec 3.4.3, 7.4).
"""

from __future__ import annotations

import enum
from typing import ClassVar

__all__ = [
    "HRESULT_INVALID_DATA",
    "NCA_S_FAULT_UNSPEC",
    "NCA_S_OP_RNG_ERROR",
    "NCA_S_PROTO_ERROR",
    "NCA_S_SERVER_TOO_BUSY",
    "NCA_S_UNK_IF",
    "RPC_X_BAD_STUB_DATA",
    "EpidError",
    "FramingError",
    "KmsError",
    "KmsIntegrityError",
    "KmsMalformed",
    "MalformedPdu",
    "ProtocolError",
    "ProxyHeaderError",
    "ResponseVerificationError",
    "RpcError",
    "RpcFault",
    "UnsupportedVersion",
    "WireAction",
]

# NCA status codes (C706 appendix E; spec 3.5).
NCA_S_OP_RNG_ERROR = 0x1C010002
NCA_S_UNK_IF = 0x1C010003
NCA_S_PROTO_ERROR = 0x1C01000B
NCA_S_FAULT_UNSPEC = 0x1C000012
# The call did not run for want of resources; Windows clients report RPC_S_SERVER_TOO_BUSY.
NCA_S_SERVER_TOO_BUSY = 0x1C010014
RPC_X_BAD_STUB_DATA = 0x000006F7

# HRESULT_FROM_WIN32(ERROR_INVALID_DATA): every malformed KMS message (spec 7.4).
HRESULT_INVALID_DATA = 0x8007000D


class WireAction(enum.Enum):
    """What the host does on the wire when an error of a given class is raised."""

    CLOSE = "close"
    FAULT = "fault"
    FAULT_AND_CLOSE = "fault_and_close"
    HRESULT = "hresult"


class ProtocolError(Exception):
    """Root of every error ``protocol`` raises for bad input."""

    action: ClassVar[WireAction] = WireAction.CLOSE


class RpcError(ProtocolError):
    """A DCE/RPC-level problem (spec sections 1 to 3)."""

    status: int = NCA_S_PROTO_ERROR


class FramingError(RpcError):
    """The byte stream cannot be split into PDUs (bad header, bad length, over the cap)."""

    action = WireAction.CLOSE


class MalformedPdu(RpcError):
    """A PDU was framed correctly but its body cannot be parsed."""

    action = WireAction.FAULT_AND_CLOSE

    def __init__(self, message: str, *, call_id: int = 0) -> None:
        super().__init__(message)
        self.call_id = call_id


class RpcFault(RpcError):
    """A call the host refuses at the RPC layer with a fault PDU (spec 3.5, 3.6)."""

    action = WireAction.FAULT

    def __init__(self, message: str, *, status: int, call_id: int, context_id: int = 0) -> None:
        super().__init__(message)
        self.status = status
        self.call_id = call_id
        self.context_id = context_id


class KmsError(ProtocolError):
    """A KMS message the host answers with an HRESULT in a normal response (spec 3.4.3)."""

    action = WireAction.HRESULT
    hresult: int = HRESULT_INVALID_DATA


class KmsMalformed(KmsError):
    """The KMS message is too short or its fields are inconsistent (spec 4.1)."""


class UnsupportedVersion(KmsError):
    """The KMS protocol version is not 4.0, 5.0 or 6.0 (spec 4.1, 10.12)."""


class KmsIntegrityError(KmsError):
    """A MAC, padding or hash check failed while opening a message (spec 4.3, 5.6)."""


class ResponseVerificationError(ProtocolError):
    """Client side: a host's response failed one of the checks of spec 5.7.

    ``check`` names the failed check (stable, snake_case) so that tools can report it.
    """

    action = WireAction.CLOSE

    def __init__(self, message: str, *, check: str) -> None:
        super().__init__(message)
        self.check = check


class EpidError(ProtocolError):
    """An ePID string does not have the layout of spec 6.1."""


class ProxyHeaderError(ProtocolError):
    """A connection that must start with a PROXY protocol v2 header does not (HAProxy's
    proxy-protocol.txt, section 2.2): the receiver closes it without reading further."""

    action = WireAction.CLOSE
