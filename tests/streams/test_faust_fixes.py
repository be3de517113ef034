"""Faust's producer buffer flush must not return while table writes are still buffered."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from faust.transport.producer import ProducerBuffer

from oms.streams import faust_fixes


class SlowChannel:
    """A channel whose publish takes longer than Faust's 0.1 s flush patience."""

    def __init__(self) -> None:
        self.published: list[int] = []

    async def publish_message(self, fut: Any, wait: bool = False) -> None:
        await asyncio.sleep(0.25)
        self.published.append(fut.n)


async def test_flush_waits_for_every_buffered_message() -> None:
    faust_fixes.install()
    buffer = ProducerBuffer()
    buffer.app = SimpleNamespace(conf=SimpleNamespace(producer_threaded=False))  # type: ignore[assignment]
    channel = SlowChannel()
    await buffer.start()
    try:
        for n in range(4):
            buffer.put(SimpleNamespace(n=n, message=SimpleNamespace(channel=channel)))  # type: ignore[arg-type]
        await buffer.flush()
        # Unpatched, flush returned after the first 0.1 s without progress, with 3 pending.
        assert channel.published == [0, 1, 2, 3]
        assert buffer.size == 0
    finally:
        await buffer.stop()


async def test_install_is_idempotent() -> None:
    faust_fixes.install()
    flush = ProducerBuffer.flush
    faust_fixes.install()
    assert ProducerBuffer.flush is flush
