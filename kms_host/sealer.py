"""Seal the responses that become ready in one loop iteration together.

Why (issue 7, docs/performance.md): CBC encryption is sequential inside a message, and a V6
response is 15 blocks, so one reply alone costs pure Python some 15 T-table block
encryptions. :func:`protocol.kms.seal_responses` encrypts many replies side by side for
about the price of one. A busy host has many: the records of one grouped commit
(:mod:`kms_host.storage.sqlite`) resolve together, so their callers reach the seal in the
same iteration. Each caller waits on a future; the first one schedules a flush with
``call_soon``, which runs after every caller already woken in that iteration has queued its
reply. A lone reply waits one loop turn and is sealed as before.

Durability is untouched: a reply is queued here only after its record has committed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from protocol.kms import KmsResponse, OpenedRequest, seal_responses

__all__ = ["ResponseSealer"]


class ResponseSealer:
    """Seals replies for the running loop, batched per iteration (module docstring)."""

    __slots__ = ("_hwid", "_pending", "_rng")

    def __init__(self, *, hwid: bytes, rng: Callable[[int], bytes]) -> None:
        self._hwid = hwid
        self._rng = rng
        self._pending: list[tuple[OpenedRequest, KmsResponse, asyncio.Future[bytes]]] = []

    async def seal(self, opened: OpenedRequest, response: KmsResponse) -> bytes:
        """The sealed response message, as :func:`protocol.kms.seal_response` builds it."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bytes] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append((opened, response, waiter))
        return await waiter

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        live = [item for item in pending if not item[2].done()]  # a cancelled caller's is dropped
        try:
            messages = seal_responses(
                [(opened, response) for opened, response, _ in live], hwid=self._hwid, rng=self._rng
            )
        except Exception as exc:  # noqa: BLE001 - each waiting caller gets the error, as if it had sealed alone
            for _, _, waiter in live:
                waiter.set_exception(exc)
            return
        for (_, _, waiter), message in zip(live, messages, strict=True):
            waiter.set_result(message)
