"""``wait_while_busy``: a batch may keep filling while the loop works, never while it idles.

A "busy" loop here is a real task that burns CPU for a few hundred microseconds each turn, as
a host's reads, accepts and answers do; an idle loop has nothing but the waiter. The bounds
that involve time are generous (seconds against a loop turn's microseconds), so what the
tests check is whether the wait ended, and why, not how fast anything is.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from kms_host.batching import IDLE_TURN_S, wait_while_busy

pytestmark = pytest.mark.asyncio

BURN_S = 8 * IDLE_TURN_S
"""CPU a busy turn takes: far above an idle turn, as reading a request is."""


class Burner:
    """A task that keeps the loop busy for ``turns`` turns (or until stopped)."""

    def __init__(self, turns: int | None = None) -> None:
        self.turns = 0
        self._limit = turns
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while self._limit is None or self.turns < self._limit:
            end = time.perf_counter() + BURN_S
            while time.perf_counter() < end:
                pass
            self.turns += 1
            await asyncio.sleep(0)

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


class Enough:
    """``enough`` for the waiter: counts its calls (one per turn waited) and says no."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> bool:
        self.calls += 1
        return False


async def test_an_idle_loop_ends_the_wait_at_once() -> None:
    enough = Enough()
    await asyncio.wait_for(wait_while_busy(60, enough), timeout=10)
    # One turn found nothing else to do (a few more only if the process was preempted).
    assert enough.calls < 10


async def test_a_busy_loop_keeps_the_wait_going_until_enough() -> None:
    burner = Burner(turns=40)
    try:
        await asyncio.wait_for(wait_while_busy(60, lambda: burner.turns >= 30), timeout=10)
        assert 30 <= burner.turns < 40  # ended by ``enough``, the loop still busy
    finally:
        await burner.stop()


async def test_the_wait_ends_when_the_loop_falls_idle() -> None:
    burner = Burner(turns=20)
    enough = Enough()
    await asyncio.wait_for(wait_while_busy(60, enough), timeout=10)
    assert burner.turns == 20  # it waited through every busy turn, and no longer
    assert enough.calls <= 20 + 10
    await burner.stop()


async def test_the_wait_ends_after_max_wait_s_on_a_loop_that_stays_busy() -> None:
    burner = Burner()
    loop = asyncio.get_running_loop()
    try:
        started = loop.time()
        await asyncio.wait_for(wait_while_busy(0.02, Enough()), timeout=10)
        assert loop.time() - started >= 0.02
        assert burner.turns > 0
    finally:
        await burner.stop()


async def test_no_wait_at_all_when_max_wait_s_is_zero() -> None:
    enough = Enough()
    await wait_while_busy(0, enough)
    assert enough.calls == 0
