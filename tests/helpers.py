"""Helpers shared by the end-to-end tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


async def eventually(condition: Callable[[], object], timeout: float = 5.0) -> None:
    """Wait until ``condition()`` is true; fail with TimeoutError after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def linked_pair(path: Any, settle: float = 0.0) -> tuple[Any, Any]:
    """Two real aiortc PeerLinks joined directly over loopback, the offerer's UDP through
    ``path`` (an ImpairedPath); ``settle`` s more for the handshake's packets to settle."""
    from netcode.transport.direct import accept_answer, answer_link, offer_link

    a, offer = await offer_link(include_loopback=True, impairment=path)
    b, answer = await answer_link(offer, include_loopback=True)
    await accept_answer(a, answer)
    await asyncio.gather(a.wait_open(10), b.wait_open(10))
    if settle:
        await asyncio.sleep(settle)
    return a, b
