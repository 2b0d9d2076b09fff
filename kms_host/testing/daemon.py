"""A real daemon in a thread of its own, with its own event loop, for a test to talk to.

Why a thread and not the test's event loop: a client under test is often blocking code (a
``vlmcs`` binary in ``subprocess.run``, a plain socket). If the daemon ran in the test's loop,
that loop would be stuck in the blocking call and the daemon could never answer. In a thread
of its own, the daemon's loop runs whatever the test's thread is doing: blocking, in another
event loop (pytest-asyncio's), or idle.

Why a thread and not a process: the test drives the host from the outside while it runs
(:meth:`~kms_host.testing.KmsHost.advance` moves its :class:`~kms_host.clock.Clock`,
:meth:`~kms_host.testing.KmsHost.rules` installs scenario rules, ``logs`` collects its
events). In one process those are the daemon's own objects, with no protocol to keep in step
with them; a start costs a few milliseconds instead of a second interpreter's imports; and an
error that stops the daemon reaches the test as the exception itself. The price is the GIL,
shared with the test: a test that computes hard slows its host down, which matters only to
measurements (``kms-host serve`` and ``kms-host bench`` are for those). A blocking client
releases the GIL while it waits on its socket, so the host answers it.

Everything that changes the host's state while it runs goes through :meth:`HostThread.call`,
onto the daemon's loop, between two of its steps: the scenario rules and their counters, for
instance, are swapped without an ``await`` in between (:mod:`kms_host.policy.scenario`), an
invariant another thread could break halfway.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any, TypeVar

import structlog

from kms_host import loop
from kms_host.clock import Clock
from kms_host.config import Config
from kms_host.host.app import BoundAddresses, serve
from kms_host.policy.scenario import ScenarioBook

__all__ = ["HostNotRunning", "HostThread", "captured_logs"]

_T = TypeVar("_T")

START_TIMEOUT_S = 10.0
"""How long a start may take before the test is told the host did not start."""
STOP_TIMEOUT_S = 15.0
"""How long a graceful stop may take (above ``[server] shutdown_grace_s``'s default of 5 s)."""
CALL_TIMEOUT_S = 10.0
"""How long a change of state may wait for the daemon's loop to run it."""


class HostNotRunning(RuntimeError):
    """The daemon is not running (it did not start, stopped, or failed): nothing can change."""


class HostThread:
    """One daemon serving ``config`` in a thread, from :meth:`start` to :meth:`stop`."""

    def __init__(self, config: Config, clock: Clock, scenarios: ScenarioBook) -> None:
        self.config = config
        self.clock = clock
        self.scenarios = scenarios
        self._ready: concurrent.futures.Future[BoundAddresses] = concurrent.futures.Future()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._stop_requested = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"kms-host {config.storage.data_dir}", daemon=True
        )

    def start(self) -> tuple[str, int]:
        """Start the daemon; return its first TCP address once every socket is bound.

        Raises what stopped the start (a :class:`kms_host.errors.KmsHostError` for a bad
        config, say), or :class:`HostNotRunning` after :data:`START_TIMEOUT_S`. Whatever
        interrupts the wait (Ctrl-C included) stops the daemon before it propagates.
        """
        self._thread.start()
        try:
            bound = self._ready.result(timeout=START_TIMEOUT_S)
        except concurrent.futures.TimeoutError:
            self._stop_quietly()
            raise HostNotRunning(f"the KMS host did not start within {START_TIMEOUT_S} s") from None
        except BaseException:
            self._stop_quietly()
            raise
        return bound.tcp[0]

    def stop(self) -> None:
        """Stop gracefully (as SIGTERM would) and wait; raise what failed the daemon, if any."""
        self._stop_requested.set()
        running = self._loop
        if running is not None and self._stop_event is not None:
            with contextlib.suppress(RuntimeError):  # its loop already closed: it stopped
                running.call_soon_threadsafe(self._stop_event.set)
        self._thread.join(STOP_TIMEOUT_S)
        if self._thread.is_alive():
            raise HostNotRunning(f"the KMS host did not stop within {STOP_TIMEOUT_S} s")
        if self._error is not None:
            raise self._error

    def call(self, function: Callable[[], _T]) -> _T:
        """Run ``function`` on the daemon's loop, between two of its steps; return its result."""
        running = self._loop
        if running is None or not self._thread.is_alive():
            raise HostNotRunning(self._why_not_running())

        async def step() -> _T:
            return function()

        try:
            future = asyncio.run_coroutine_threadsafe(step(), running)
        except RuntimeError:  # the loop closed since the check
            raise HostNotRunning(self._why_not_running()) from None
        try:
            return future.result(timeout=CALL_TIMEOUT_S)
        except concurrent.futures.CancelledError:  # the daemon stopped with it queued
            raise HostNotRunning(self._why_not_running()) from None
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise HostNotRunning(
                f"the KMS host's event loop did not run a call within {CALL_TIMEOUT_S} s"
            ) from None

    # --- the daemon's thread ----------------------------------------------------------------

    def _run(self) -> None:
        try:
            loop.run(self._main, self.config.server.event_loop)
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread, raised there
            self._error = exc
            if not self._ready.done():
                self._ready.set_exception(exc)
        if not self._ready.done():
            self._ready.set_exception(HostNotRunning("the KMS host stopped before it was ready"))

    async def _main(self) -> None:
        self._stop_event = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        if self._stop_requested.is_set():  # stopped before the loop existed
            return
        await serve(
            self.config,
            shutdown_trigger=self._stop_event.wait,
            on_ready=self._ready.set_result,
            clock=self.clock,
            scenarios=self.scenarios,
        )

    def _stop_quietly(self) -> None:
        """Stop after a failed start, keeping the start's own error as the one raised."""
        with contextlib.suppress(Exception):
            self.stop()

    def _why_not_running(self) -> str:
        if self._error is not None:
            return f"the KMS host stopped: {type(self._error).__name__}: {self._error}"
        return "the KMS host is not running"


@contextlib.contextmanager
def captured_logs() -> Iterator[list[MutableMapping[str, Any]]]:
    """Collect every structlog event, of every level, as dicts; restore the config after.

    ``structlog.testing.capture_logs`` replaces the processors but keeps the level filter of
    whatever configured structlog before (a suite that called ``configure_logging`` at
    ``warning`` would see no ``activation`` event), so the filter is opened for the duration
    and put back with the processors, whatever ends the context: nothing leaks into the
    next test, in either direction.
    """
    saved_wrapper = structlog.get_config()["wrapper_class"]
    with structlog.testing.capture_logs() as logs:
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.NOTSET))
        try:
            yield logs
        finally:
            structlog.configure(wrapper_class=saved_wrapper)
