"""The TCP listener: binds the configured addresses, accepts, limits and drains connections.

Default binding is what a genuine host does on a modern Windows: one dual-stack socket on
``[::]:1688`` that also accepts IPv4, falling back to ``0.0.0.0:1688`` where IPv6 is off
(spec 1.1). asyncio sets IPV6_V6ONLY on every AF_INET6 socket it creates, so the
dual-stack socket is made here and handed over.

With ``serve --workers N`` every worker binds the same addresses with SO_REUSEPORT
and the kernel spreads connections over them; :func:`reserve_addresses` is the supervisor's
side of that, binding each address once to settle its port before the workers exist.

Shutdown order (architecture 4.8, after uvicorn): stop accepting, close sessions that are
idle, give busy ones ``shutdown_grace_s`` to finish their call (they close right after
answering it), abort the rest.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from kms_host.addresses import ANY_PEER, ListenAddress
from kms_host.errors import ListenError
from kms_host.host.admission import LogThrottle, PeerAdmission, PeerLimits
from kms_host.host.observe import HostObserver, NullObserver
from kms_host.host.peer_policy import PeerGate, PeerPolicy
from kms_host.host.reply import CallHandler
from kms_host.host.session import Session
from protocol.rpc import ServerSettings

__all__ = ["DEFAULT_PORT", "KmsServer", "ServerLimits", "reserve_addresses"]

log = structlog.get_logger("kms_host.server")

DEFAULT_PORT = 1688


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """The bounds the listener enforces; each comes from a named config key."""

    idle_timeout_s: float
    exchange_timeout_s: float
    max_connections: int
    max_pdu_bytes: int
    ndr64: bool
    btfn: bool
    peers: PeerLimits
    refused_log_interval_s: float = 60.0


def _bound_socket(
    family: socket.AddressFamily, sockaddr: tuple[Any, ...], *, reuse_port: bool
) -> socket.socket:
    """A TCP socket bound to ``sockaddr`` (not listening); ``::`` on AF_INET6 is dual-stack."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            dual_stack = sockaddr[0] == "::"
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(not dual_stack))
        sock.bind(sockaddr)
    except OSError:
        sock.close()
        raise
    return sock


def reserve_addresses(listen: tuple[ListenAddress, ...]) -> list[socket.socket]:
    """Bind every listen address once, without listening, ready to be shared by SO_REUSEPORT.

    The ``serve --workers`` supervisor holds these until its workers listen: a port 0 thus
    becomes one port that every worker binds, and nothing else takes the port meanwhile.
    They never listen, so the kernel never hands them a connection. Host names are resolved
    here, and the default falls back to IPv4 as :meth:`KmsServer.start` does, so the
    returned sockets' names are the concrete addresses for the workers.

    Each address is first bound without SO_REUSEPORT, to learn its port and to fail as a
    single process does when something already listens there: SO_REUSEPORT alone would let
    a second host of the same user silently share the port with the first.
    """
    default = not listen
    reserved: list[socket.socket] = []
    try:
        for address in listen or (ListenAddress("::", DEFAULT_PORT),):
            try:
                reserved += _reserve(address, fallback=default)
            except OSError as exc:
                raise _listen_error(address, exc) from exc
    except BaseException:
        for sock in reserved:
            sock.close()
        raise
    return reserved


def _listen_error(address: ListenAddress, exc: OSError) -> ListenError:
    """``exc`` of binding ``address`` as one line: the address as configured, the OS's reason."""
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    return ListenError(str(address), exc.errno, reason)


def _reserve(address: ListenAddress, *, fallback: bool) -> list[socket.socket]:
    if address.host == "::":
        try:
            return [_reserve_one(socket.AF_INET6, ("::", address.port))]
        except OSError as exc:
            if not fallback:
                raise
            log.info("ipv6_unavailable", error=str(exc), fallback=f"0.0.0.0:{address.port}")
            return [_reserve_one(socket.AF_INET, ("0.0.0.0", address.port))]  # noqa: S104 - the documented default
    found = socket.getaddrinfo(
        address.host, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    unique = dict.fromkeys((family, sockaddr) for family, _, _, _, sockaddr in found)
    return [_reserve_one(family, sockaddr) for family, sockaddr in unique]


def _reserve_one(family: socket.AddressFamily, sockaddr: tuple[Any, ...]) -> socket.socket:
    with _bound_socket(family, sockaddr, reuse_port=False) as probe:
        port = probe.getsockname()[1]
    return _bound_socket(family, (sockaddr[0], port, *sockaddr[2:]), reuse_port=True)


class KmsServer:
    """Accepts KMS connections on every listen address and tracks their sessions."""

    def __init__(
        self,
        *,
        listen: tuple[ListenAddress, ...],
        handler: CallHandler,
        limits: ServerLimits,
        observer: HostObserver | None = None,
        assoc_group_seed: Callable[[], int] | None = None,
        reuse_port: bool = False,
        peers: PeerPolicy | None = None,
    ) -> None:
        self._listen = listen
        self._reuse_port = reuse_port
        self._limits = limits
        self._observer: HostObserver = observer or NullObserver()
        self._gate = PeerGate(
            peers or PeerPolicy(allow=(ANY_PEER,)),
            self._observer,
            log_interval_s=limits.refused_log_interval_s,
        )
        self._peers = PeerAdmission(limits.peers, self._observer)
        self._handler = self._peers.limit_calls(handler)
        self._refusals = LogThrottle()
        seed = assoc_group_seed() if assoc_group_seed else int.from_bytes(os.urandom(4), "little")
        self._assoc_group = seed
        self._servers: list[asyncio.Server] = []
        self._sessions: dict[Session, asyncio.Future[None]] = {}
        self.bound: list[tuple[str, int]] = []

    @property
    def open_connections(self) -> int:
        """How many connections are being served right now."""
        return len(self._sessions)

    async def start(self) -> list[tuple[str, int]]:
        """Bind every listen address; returns the bound (host, port) pairs."""
        default = not self._listen
        for address in self._listen or (ListenAddress("::", DEFAULT_PORT),):
            try:
                self._servers.append(await self._bind(address, fallback=default))
            except OSError as exc:
                raise _listen_error(address, exc) from exc
        for server in self._servers:
            for sock in server.sockets:
                name = sock.getsockname()
                self.bound.append((str(name[0]), int(name[1])))
        return self.bound

    async def _bind(self, address: ListenAddress, *, fallback: bool) -> asyncio.Server:
        """Bind one address; ``::`` means dual-stack, as ``[::]:1688`` does on Windows."""
        loop = asyncio.get_running_loop()
        reuse_port = self._reuse_port
        # The accept queue holds as many connections as the host would serve at once: with
        # the default 100, a burst of 256 fresh connections lost SYNs and waited 1-2 s for
        # the retransmission (kernel cap: net.core.somaxconn).
        backlog = self._limits.max_connections
        if address.host != "::":
            return await loop.create_server(
                self._new_session,
                address.host,
                address.port,
                reuse_port=reuse_port,
                backlog=backlog,
            )
        try:
            sock = _bound_socket(socket.AF_INET6, ("::", address.port), reuse_port=reuse_port)
        except OSError as exc:
            if not fallback:
                raise
            log.info("ipv6_unavailable", error=str(exc), fallback=f"0.0.0.0:{address.port}")
            return await loop.create_server(
                self._new_session,
                "0.0.0.0",  # noqa: S104 - the documented default
                address.port,
                reuse_port=reuse_port,
                backlog=backlog,
            )
        return await loop.create_server(self._new_session, sock=sock, backlog=backlog)

    def _next_assoc_group(self) -> int:
        # vlmcsd style (spec 2.7): random at start, one more for every accepted connection.
        self._assoc_group = (self._assoc_group + 1) & 0xFFFFFFFF or 1
        return self._assoc_group

    def _new_session(self) -> Session:
        return Session(
            handler=self._handler,
            admit=self._admit,
            on_finished=self._finished,
            idle_timeout_s=self._limits.idle_timeout_s,
            exchange_timeout_s=self._limits.exchange_timeout_s,
            observer=self._observer,
            gate=self._gate,
        )

    def _admit(self, session: Session, transport: asyncio.Transport) -> ServerSettings | None:
        """Take a new connection in, or refuse it: a peer outside ``allow``, ``max_connections``
        open, a peer's limit. Runs before the session reads a byte of the peer's.

        Refusal log lines are throttled (:class:`LogThrottle`): a flood of connections must
        not become a flood of lines; each line says how many it stands for.
        """
        via = {"via": session.via} if session.via else {}
        if not self._gate.admits(peer=session.peer, address=session.peer_ip, **via):
            return None
        if len(self._sessions) >= self._limits.max_connections:
            self._observer.connection_refused()
            if (held := self._refusals.admit()) is not None:
                log.warning(
                    "connection_refused",
                    reason="max_connections",
                    peer=session.peer,
                    max_connections=self._limits.max_connections,
                    suppressed=held,
                )
            return None
        if self._peers.counts_connections and not self._peers.admit(
            session, transport.get_extra_info("peername")
        ):
            return None
        sockname = transport.get_extra_info("sockname")
        self._sessions[session] = asyncio.get_running_loop().create_future()
        self._observer.connection_opened()
        return ServerSettings(
            port=int(sockname[1]) if isinstance(sockname, tuple) else DEFAULT_PORT,
            assoc_group_id=self._next_assoc_group(),
            ndr64=self._limits.ndr64,
            btfn=self._limits.btfn,
            max_pdu_bytes=self._limits.max_pdu_bytes,
        )

    def _finished(self, session: Session) -> None:
        """A session is over: its connection is gone and no call of it is in flight."""
        self._sessions.pop(session).set_result(None)
        if self._peers.counts_connections:
            self._peers.release(session)
        self._observer.connection_closed()

    async def stop(self, grace_s: float) -> None:
        """Stop accepting, let busy calls finish within ``grace_s``, abort the rest."""
        for server in self._servers:
            server.close()
        for session in list(self._sessions):
            session.close_when_idle()
        pending = dict(self._sessions)
        if pending:
            _, still_running = await asyncio.wait(pending.values(), timeout=grace_s)
            if still_running:
                log.warning("shutdown_cancelled_connections", count=len(still_running))
                for session, finished in pending.items():
                    if finished in still_running:
                        session.abort()
                await asyncio.wait(still_running)
        for server in self._servers:
            await server.wait_closed()
