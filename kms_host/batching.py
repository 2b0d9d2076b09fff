"""Run the work items that become ready in one loop iteration as one batch.

Why (issue 7, docs/performance.md): the cipher's work on a V6 exchange is cheaper in
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
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["LoopBatcher"]

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
