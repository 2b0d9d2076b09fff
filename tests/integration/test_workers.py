"""``serve --workers N``: processes sharing one port and one data dir (issue 7)."""

from __future__ import annotations

import errno
import socket

import pytest

from kms_host.config import ListenAddress
from kms_host.server import reserve_addresses


def test_a_reservation_settles_port_zero_for_reuse_port_listeners() -> None:
    (reserved,) = reserve_addresses((ListenAddress("127.0.0.1", 0),))
    port = reserved.getsockname()[1]
    listeners = [socket.create_server(("127.0.0.1", port), reuse_port=True) for _ in range(2)]
    reserved.close()
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        # Something listens there: a second host fails to start, as a single process would.
        with pytest.raises(OSError) as info:
            reserve_addresses((ListenAddress("127.0.0.1", port),))
        assert info.value.errno == errno.EADDRINUSE
    finally:
        for listener in listeners:
            listener.close()
