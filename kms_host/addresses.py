"""Addresses as kms-host reads and shows them: ``HOST:PORT``, an IPv6 host in brackets.

One parser for every listen address (``[server] listen``, ``--listen``, ``[metrics]``,
``probe``'s target) and one renderer for logs, ``runtime.json`` and ``status``, so that an
address reads the same wherever it appears.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

__all__ = ["ListenAddress", "format_address", "format_peer", "parse_listen"]


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


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """One address to listen on; ``host`` is bare (no brackets), ready for ``start_server``."""

    host: str
    port: int

    def __str__(self) -> str:
        return format_address((self.host, self.port))


_HOSTNAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
_PORT = re.compile(r"[0-9]{1,5}")


def parse_listen(text: str) -> ListenAddress:
    """Parse ``HOST:PORT`` (``[v6]:PORT`` for IPv6, port 0..65535); ValueError says why not."""
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
        raise ValueError(f"IPv6 addresses go in brackets, as in '[::]:1688', got {text!r}")
    elif not _HOSTNAME.fullmatch(host):
        raise ValueError(f"{host!r} in {text!r} is not a host name or IPv4 address")
    if not _PORT.fullmatch(port_text) or int(port_text) > 65535:
        raise ValueError(f"port must be a number from 0 to 65535, got {text!r}")
    return ListenAddress(host, int(port_text))
