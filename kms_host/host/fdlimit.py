"""Enough file descriptors for ``server.max_connections``: raise the soft limit at start.

Every open connection holds a descriptor, and the daemon needs some more of its own (the
listening sockets, SQLite's files, the event loop, the metrics, dashboard and DNS sockets).
systemd and most shells start services with a soft RLIMIT_NOFILE of 1024 and a much higher
hard limit, and leave raising the soft one to the program (systemd.exec(5), LimitNOFILE=):
at 1024 the default ``max_connections`` of 1024 could never be reached, and at the limit
asyncio's accept loop logs an error and stops accepting for a second, while waiting clients
time out. So the soft limit is raised as far as the hard one allows; when even that is
short, ``max_connections`` is lowered to what fits and one warning says so at start: further
connections are then refused cleanly, as over any ``max_connections``, instead of failing.
"""

from __future__ import annotations

import resource

import structlog

__all__ = ["RESERVED_FDS", "fit_fd_limit"]

log = structlog.get_logger("kms_host.server")

RESERVED_FDS = 256
"""Descriptors kept for the daemon's own files and sockets, beside one per connection."""


def fit_fd_limit(max_connections: int) -> int:
    """Raise the soft RLIMIT_NOFILE to fit ``max_connections``; return the connections that fit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max_connections + RESERVED_FDS
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return max_connections
    ceiling = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if ceiling > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))
        log.debug("fd_limit_raised", soft_before=soft, soft=ceiling, hard=hard)
        soft = ceiling
    if soft >= wanted:
        return max_connections
    fitting = max(soft - RESERVED_FDS, 1)
    log.warning(
        "fd_limit_low",
        soft=soft,
        hard=hard,
        max_connections=max_connections,
        needed=wanted,
        max_connections_served=fitting,
    )
    return fitting
