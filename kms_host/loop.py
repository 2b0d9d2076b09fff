"""Which event loop runs the daemon: uvloop when it is installed, asyncio's own otherwise.

uvloop is an optional extra (``pip install 'kms-host[uvloop]'``), not a dependency: the
host must start on a machine with nothing but the standard library's loop, and the tests
run in-process on that loop. With the session written as an ``asyncio.Protocol``, uvloop's
transports cut the host's CPU per keep-alive activation by about a tenth on the test
machine, and changed nothing measurable with a fresh connection per activation
(docs/performance.md). ``[server] event_loop`` picks: ``auto`` (uvloop if
installed), ``asyncio``, or ``uvloop`` (refused at start when it is not installed).
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from kms_host.errors import ConfigError

__all__ = ["EVENT_LOOPS", "resolve", "run", "running"]

EVENT_LOOPS = ("auto", "asyncio", "uvloop")

_T = TypeVar("_T")


def resolve(choice: str) -> str:
    """The loop ``choice`` means here: ``asyncio`` or ``uvloop``."""
    installed = importlib.util.find_spec("uvloop") is not None
    if choice == "uvloop" and not installed:
        raise ConfigError(
            "uvloop is not installed (pip install 'kms-host[uvloop]')", key="server.event_loop"
        )
    return "uvloop" if choice == "uvloop" or (choice == "auto" and installed) else "asyncio"


def run(main: Callable[[], Coroutine[Any, Any, _T]], choice: str) -> _T:
    """Run ``main()`` to completion on the loop ``choice`` resolves to.

    ``main`` is called only once the loop is settled, so a refused choice leaves no
    coroutine behind unawaited.
    """
    if resolve(choice) == "uvloop":
        import uvloop  # noqa: PLC0415 - optional: imported only when it runs the host

        return uvloop.run(main())
    return asyncio.run(main())


def running() -> str:
    """The running loop's kind, as the ``listening`` event reports it."""
    module = type(asyncio.get_running_loop()).__module__
    return "uvloop" if module.startswith("uvloop") else "asyncio"
