"""Which peers the host serves (``[server] allow``) and which speak PROXY protocol first.

kms-host is a lab tool that answers every KMS request it can parse: by default it serves
only peers from networks that do not reach it from the Internet (loopback, private,
link-local and shared address space, :data:`~kms_host.addresses.LAB_NETWORKS`). A refused
peer is closed as soon as it is accepted, before a byte it sent is parsed: whatever it sent
never reaches a parser.

The refusal is counted for every connection (``kms_host_connections_refused_total``) but
logged at most once per peer per ``refused_log_interval_s``, with the number of refusals left
unlogged: a scanner hammering the port must not fill the log. The set of peers remembered
for that is cleared every interval and bounded by :data:`MAX_PEERS_LOGGED` in one, so
neither memory nor log output grows with the number of addresses an attacker owns (an IPv6
/64 holds many).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog

from kms_host.addresses import ANY_PEER, IpAddress, IpNetwork, parse_network
from kms_host.host.observe import HostObserver

__all__ = ["MAX_PEERS_LOGGED", "PeerGate", "PeerPolicy", "RefusalLog"]

log = structlog.get_logger("kms_host.server")

MAX_PEERS_LOGGED = 1024
"""Distinct peers given a ``connection_refused`` line per interval; later ones in that
interval are counted in the next line's ``suppressed`` and, always, in the metric."""


class PeerPolicy:
    """Answers "may this peer in?" and "must this peer send a PROXY header first?"."""

    def __init__(self, *, allow: tuple[str, ...], proxy_from: tuple[str, ...] = ()) -> None:
        self._allow: tuple[IpNetwork, ...] | None = (
            None if allow == (ANY_PEER,) else tuple(parse_network(net) for net in allow)
        )
        self._proxy_from = tuple(parse_network(net) for net in proxy_from)

    def allows(self, address: IpAddress | None) -> bool:
        """Whether ``address`` (IPv4-mapped already unmapped) is a peer the host serves."""
        if self._allow is None:
            return True
        return address is not None and any(address in net for net in self._allow)

    def expects_proxy(self, address: IpAddress | None) -> bool:
        """Whether a connection from ``address`` must start with a PROXY v2 header."""
        return address is not None and any(address in net for net in self._proxy_from)


class RefusalLog:
    """Logs ``connection_refused`` for a peer at most once per ``interval_s``.

    Each line's ``suppressed`` is the number of refusals, of any peer, left unlogged since
    the line before it.
    """

    def __init__(self, interval_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval_s = interval_s
        self._clock = clock
        self._window_start = clock()
        self._logged: set[str] = set()
        self._suppressed = 0

    def refused(
        self, reason: str, *, peer: str, address: IpAddress | None, **fields: object
    ) -> None:
        """One refused connection: log it unless this peer was logged in this interval."""
        now = self._clock()
        if now - self._window_start >= self._interval_s:
            self._window_start = now
            self._logged.clear()
        key = peer if address is None else str(address)
        if key in self._logged or len(self._logged) >= MAX_PEERS_LOGGED:
            self._suppressed += 1
            return
        self._logged.add(key)
        suppressed, self._suppressed = self._suppressed, 0
        log.warning("connection_refused", reason=reason, peer=peer, suppressed=suppressed, **fields)


class PeerGate:
    """The listener's door: the policy, with every refusal counted and (rate-limited) logged."""

    def __init__(
        self, policy: PeerPolicy, observer: HostObserver, *, log_interval_s: float
    ) -> None:
        self._policy = policy
        self._observer = observer
        self._log = RefusalLog(log_interval_s)

    def admits(self, *, peer: str, address: IpAddress | None, **fields: object) -> bool:
        """Whether the peer may in; a peer outside ``allow`` is refused here ("not_allowed")."""
        if self._policy.allows(address):
            return True
        self.refuse("not_allowed", peer=peer, address=address, **fields)
        return False

    def expects_proxy(self, address: IpAddress | None) -> bool:
        """Whether a connection from ``address`` must start with a PROXY v2 header."""
        return self._policy.expects_proxy(address)

    def refuse(
        self, reason: str, *, peer: str, address: IpAddress | None, **fields: object
    ) -> None:
        """Count a connection closed at accept and log it (at most once per peer per interval)."""
        self._observer.connection_refused(reason)
        self._log.refused(reason, peer=peer, address=address, **fields)
