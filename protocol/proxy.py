"""The PROXY protocol version 2 header a load balancer puts before a client's bytes.

HAProxy's "The PROXY protocol, versions 1 & 2", section 2.2: a TCP proxy (HAProxy, a cloud
load balancer in front of a Kubernetes Service) that hides the client's address from the
server may open each connection with a binary header naming it. Layout:

* 12 bytes of signature, ``\\r\\n\\r\\n\\0\\r\\nQUIT\\n``, chosen so that no other protocol
  starts with it;
* one byte: the version (high nibble, always 2) and the command (low nibble): 0 LOCAL, the
  proxy's own connection such as a health check, whose endpoints are the real ones; 1
  PROXY, a relayed connection, whose addresses follow; other values must be refused;
* one byte: the address family (high nibble: 0 UNSPEC, 1 INET, 2 INET6, 3 UNIX) and the
  transport (low nibble: 0 UNSPEC, 1 STREAM, 2 DGRAM); only the seven combinations the
  spec lists are valid;
* two bytes, big-endian: how many bytes follow (addresses, then optional TLVs);
* the addresses: source and destination address, then source and destination port, each
  in network byte order (12 bytes for INET, 36 for INET6, 216 for UNIX paths).

The receiver must not process the connection before it has the whole header. The 16-bit
length bounds a header at 65,551 bytes. TLVs are skipped: kms-host needs only the source.

Parsed with ``construct`` straight from :data:`PROXY_V2_HEADER`: a header comes once per
connection and only from configured load balancers, and ``protocol.layout``'s derived
readers handle the little-endian RPC layouts, not this big-endian one.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass
from typing import Any

from construct import (
    BitStruct,
    Bytes,
    Const,
    ConstructError,
    FixedSized,
    GreedyBytes,
    Int16ub,
    Nibble,
    Pass,
    Struct,
    Switch,
    this,
)

from protocol.errors import ProxyHeaderError

__all__ = [
    "PREAMBLE_BYTES",
    "PROXY_V2_HEADER",
    "SIGNATURE",
    "ProxyCommand",
    "ProxyHeader",
    "parse_proxy_header",
]

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
PREAMBLE_BYTES = 16
"""Signature, version and command, family and transport, length: all that comes before
the addresses."""

_INET = Struct(
    "source" / Bytes(4),
    "destination" / Bytes(4),
    "source_port" / Int16ub,
    "destination_port" / Int16ub,
)
_INET6 = Struct(
    "source" / Bytes(16),
    "destination" / Bytes(16),
    "source_port" / Int16ub,
    "destination_port" / Int16ub,
)
_UNIX = Struct("source" / Bytes(108), "destination" / Bytes(108))

_PREAMBLE = Struct(
    "signature" / Const(SIGNATURE),
    "version_command" / BitStruct("version" / Nibble, "command" / Nibble),
    "family_transport" / BitStruct("family" / Nibble, "transport" / Nibble),
    "length" / Int16ub,
)

PROXY_V2_HEADER = Struct(
    "preamble" / _PREAMBLE,
    "body"
    / FixedSized(
        this.preamble.length,
        Struct(
            "addresses"
            / Switch(
                this._.preamble.family_transport.family, {1: _INET, 2: _INET6, 3: _UNIX}, Pass
            ),
            "tlvs" / GreedyBytes,
        ),
    ),
)
"""The whole header, section 2.2; ``length`` counts the bytes after the 16 of the preamble."""

_VALID_FAMILY_TRANSPORT = frozenset({(0, 0), (1, 1), (1, 2), (2, 1), (2, 2), (3, 1), (3, 2)})


class ProxyCommand(enum.IntEnum):
    """The low nibble of the 13th byte (section 2.2)."""

    LOCAL = 0
    PROXY = 1


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A parsed header: what it says, and how many bytes of the stream it took."""

    command: ProxyCommand
    source: tuple[str, int] | None
    """The client's IP address and port; None for LOCAL, UNSPEC and UNIX headers, whose
    connection keeps the address the socket sees (section 2.2)."""
    destination: tuple[str, int] | None
    length: int
    """Bytes of the stream the header took, preamble included."""


def parse_proxy_header(data: bytes) -> ProxyHeader | None:
    """The header at the start of ``data``; None while it is still incomplete.

    Raises :class:`ProxyHeaderError` as soon as the bytes cannot start a valid v2 header (a
    client that speaks RPC directly fails at its first byte), so a caller never waits for
    bytes that cannot make one.
    """
    if not data.startswith(SIGNATURE[: len(data)]):
        raise ProxyHeaderError("no PROXY protocol v2 signature")
    if len(data) < PREAMBLE_BYTES:
        return None
    try:
        preamble = _PREAMBLE.parse(data[:PREAMBLE_BYTES])
    except ConstructError as exc:  # pragma: no cover - the signature was checked above
        raise ProxyHeaderError(f"bad PROXY v2 preamble: {exc}") from None
    _check(preamble)
    total = PREAMBLE_BYTES + int(preamble.length)
    if len(data) < total:
        return None
    try:
        header = PROXY_V2_HEADER.parse(data[:total])
    except ConstructError as exc:
        raise ProxyHeaderError(f"PROXY v2 length too short for its addresses: {exc}") from None
    command = ProxyCommand(preamble.version_command.command)
    family = int(preamble.family_transport.family)
    source = destination = None
    if command is ProxyCommand.PROXY and family in (1, 2):
        source, destination = _endpoints(header.body.addresses)
    return ProxyHeader(command=command, source=source, destination=destination, length=total)


def _check(preamble: Any) -> None:
    if preamble.version_command.version != 2:
        raise ProxyHeaderError(f"PROXY protocol version {preamble.version_command.version}, not 2")
    if preamble.version_command.command not in (0, 1):
        raise ProxyHeaderError(f"unknown PROXY v2 command {preamble.version_command.command}")
    pair = (preamble.family_transport.family, preamble.family_transport.transport)
    if pair not in _VALID_FAMILY_TRANSPORT:
        raise ProxyHeaderError(f"invalid PROXY v2 family and transport 0x{pair[0]:x}{pair[1]:x}")


def _endpoints(addresses: Any) -> tuple[tuple[str, int], tuple[str, int]]:
    source = ipaddress.ip_address(bytes(addresses.source))
    destination = ipaddress.ip_address(bytes(addresses.destination))
    return (
        (str(source), int(addresses.source_port)),
        (str(destination), int(addresses.destination_port)),
    )
