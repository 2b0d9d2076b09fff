"""Addresses as kms-host reads and shows them: ``HOST:PORT``, an IPv6 host in brackets.

One parser for every ``HOST:PORT`` the daemon and its commands read (``[server] listen``,
``--listen``, ``[metrics]``, ``probe``'s and ``bench``'s targets, the ``[dns]`` addresses,
``activate``'s servers) and one renderer for logs, ``runtime.json`` and ``status``, so that an
address reads the same wherever it appears. Callers differ only in which bare host names
they accept and in the lowest port.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "ANY_PEER",
    "LAB_NETWORKS",
    "HostCheck",
    "IpAddress",
    "IpNetwork",
    "ListenAddress",
    "check_host_name",
    "format_address",
    "format_peer",
    "parse_host_port",
    "parse_listen",
    "parse_network",
    "peer_ip",
]

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ANY_PEER = "any"
"""The ``[server] allow`` entry that lets every peer in."""

LAB_NETWORKS = (
    "127.0.0.0/8",
    "::1/128",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "fc00::/7",
    "169.254.0.0/16",
    "fe80::/10",
    "100.64.0.0/10",
)
"""The peers a lab tool serves by default: loopback, private (RFC 1918, IPv6 unique local,
RFC 4193), link-local (RFC 3927, RFC 4291) and shared address space (RFC 6598). The last is
not routed on the Internet either; Tailscale's tailnets and several Kubernetes overlays hand
it out, so a lab reaching its host over one of them works without a config change."""


def format_address(address: tuple[str, int]) -> str:
    """``host:port``, or ``[host]:port`` for IPv6."""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def format_peer(peername: object) -> str:
    """A socket's peer name as :func:`format_address` renders it, an IPv4-mapped host unmapped."""
    if not isinstance(peername, tuple) or len(peername) < 2:
        return "unknown"
    host, port = str(peername[0]), int(peername[1])
    if host.startswith("::ffff:") and "." in host:
        host = host.removeprefix("::ffff:")
    return format_address((host, port))


def peer_ip(peername: object) -> IpAddress | None:
    """A socket's peer address as an IP, an IPv4-mapped IPv6 one (a dual-stack socket's view
    of an IPv4 peer, ``::ffff:a.b.c.d``) as its IPv4 address; None if it is not an IP."""
    if not isinstance(peername, tuple) or not peername:
        return None
    try:
        address = ipaddress.ip_address(str(peername[0]))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def parse_network(text: str) -> IpNetwork:
    """A CIDR block ("10.0.0.0/8", "fc00::/7") or a single address; ValueError says why not.

    Host bits must be clear ("10.1.0.0/8" is refused): such a value is usually a typo for a
    narrower block, and widening it silently would let in more peers than meant.
    """
    try:
        return ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a CIDR block or IP address ({exc})") from None


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """One address to listen on; ``host`` is bare (no brackets), ready for ``start_server``."""

    host: str
    port: int

    def __str__(self) -> str:
        return format_address((self.host, self.port))


_HOSTNAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
_PORT = re.compile(r"[0-9]{1,5}")  # ASCII digits only: str.isdigit() also takes "\u0661\u0666"

HostCheck = Callable[[str], object]
"""Checks a host given without brackets and without a colon; raises ValueError saying why not."""


def check_host_name(host: str) -> None:
    """A host name or an IPv4 address, as a listen address or a target gives it."""
    if not _HOSTNAME.fullmatch(host):
        raise ValueError(f"{host!r} is not a host name or IPv4 address")


def parse_host_port(
    text: str,
    *,
    check_host: HostCheck = check_host_name,
    min_port: int = 0,
    example: str = "[::]:1688",
) -> tuple[str, int]:
    """Parse ``HOST:PORT`` (``[v6]:PORT`` for IPv6) into a bare host and a port.

    ``check_host`` judges a host outside brackets; ``example`` is the bracketed form an
    error about an unbracketed IPv6 address suggests. ValueError says what is wrong.
    """
    host, sep, port_text = text.strip().rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} in {text!r} is not an IPv6 address") from None
    elif ":" in host:
        raise ValueError(f"IPv6 addresses go in brackets, as in {example!r}, got {text!r}")
    else:
        check_host(host)
    if not _PORT.fullmatch(port_text) or not min_port <= int(port_text) <= 65535:
        raise ValueError(f"port must be a number from {min_port} to 65535, got {text!r}")
    return host, int(port_text)


def parse_listen(text: str) -> ListenAddress:
    """Parse a listen address, ``HOST:PORT`` with port 0..65535 (0: any free port)."""
    return ListenAddress(*parse_host_port(text))
