"""Run the work items that become ready in one loop iteration as one batch.

Why (docs/performance.md): the cipher's work on a V6 exchange is cheaper in
batches. :func:`protocol.kms.open_requests` decrypts the blocks of many requests in one
wide step, and :func:`protocol.kms.seal_responses` encrypts many replies side by side for
about the price of one, where CBC would otherwise take a reply's 15 blocks one by one. A
busy host has many of both at once: the requests read in one loop turn, and the replies
whose records one grouped commit (:mod:`kms_host.storage.sqlite`) resolved together.

Each caller waits on a future; the first one of an iteration schedules the flush with
``call_soon``, which runs after every callback already ready in that iteration, so all the
callers woken by the same event have queued their items by then. A lone item waits one
loop turn and is handled as before. Durability is untouched: the host seals a reply only
after its record has committed.

:func:`wait_while_busy` is the longer form for the grouped commits: it lets a batch keep
filling over several loop turns, but only while the loop has other work to do.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Final, Generic, TypeVar

__all__ = ["IDLE_TURN_S", "LoopBatcher", "wait_while_busy"]

IDLE_TURN_S: Final = 50e-6
"""A loop turn shorter than this ran nothing but the waiter's own wake-up; a turn that reads
or accepts anything takes longer. A turn misjudged as busy (the process was preempted) costs
one more turn; one misjudged as idle ends the wait early."""


async def wait_while_busy(max_wait_s: float, enough: Callable[[], bool]) -> None:
    """Yield loop turns while each one does other work, for at most ``max_wait_s``.

    Returns at once when ``enough()``, after the first turn that found nothing else to do,
    or when ``max_wait_s`` have passed. So a wait never leaves the CPU idle: on a quiet host
    it costs one turn, and on a saturated one, where every turn reads, accepts or answers
    something, it lets work accumulate for a batch (the grouped commits of
    :mod:`kms_host.storage.sqlite`, ``[storage] commit_delay_ms``).
    """
    if max_wait_s <= 0:
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max_wait_s
    clock = time.perf_counter
    while not enough():
        started = clock()
        await asyncio.sleep(0)
        if clock() - started < IDLE_TURN_S or loop.time() >= deadline:
            return


_In = TypeVar("_In")
_Out = TypeVar("_Out")


class LoopBatcher(Generic[_In, _Out]):
    """Hands ``work`` every item submitted in one loop iteration, in submission order.

    ``work`` returns one result per item, or an exception for an item that failed on its
    own; an exception it raises goes to every caller of the batch, so nobody waits forever.
    A caller cancelled before the flush is left out of the batch.
    """

    __slots__ = ("_pending", "_work")

    def __init__(self, work: Callable[[list[_In]], Sequence[_Out | Exception]]) -> None:
        self._work = work
        self._pending: list[tuple[_In, asyncio.Future[_Out]]] = []

    async def run(self, item: _In) -> _Out:
        """``item``'s result, computed with the other items of this loop iteration."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[_Out] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append((item, waiter))
        return await waiter

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        live = [(item, waiter) for item, waiter in pending if not waiter.done()]
        try:
            results = self._work([item for item, _ in live])
        except Exception as exc:  # noqa: BLE001 - every waiting caller gets it, none hangs
            for _, waiter in live:
                waiter.set_exception(exc)
            return
        for (_, waiter), result in zip(live, results, strict=True):
            if isinstance(result, Exception):
                waiter.set_exception(result)
            else:
                waiter.set_result(result)
