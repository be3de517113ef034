"""A Faust app given ``before_producer_flush`` runs it first in every producer flush (what
Faust does before committing offsets), and can still flush only what was sent."""

from __future__ import annotations

from pathlib import Path

from oms.kafka.faust_worker import FlushFirstProducer, new_faust_app
from oms.settings import Settings


async def test_before_producer_flush_runs_first_in_every_flush(tmp_path: Path) -> None:
    calls: list[str] = []

    async def send_buffer() -> None:
        calls.append("buffer sent")

    app = new_faust_app(
        Settings(data_dir=tmp_path), "flush-first", 6999, before_producer_flush=send_buffer
    )
    producer = app.producer
    assert isinstance(producer, FlushFirstProducer)
    await producer.flush()
    assert calls == ["buffer sent"]
    await producer.flush_sent()  # what the keeper's router needs: the buffer left alone
    assert calls == ["buffer sent"]


def test_without_it_the_app_keeps_faust_s_producer(tmp_path: Path) -> None:
    app = new_faust_app(Settings(data_dir=tmp_path), "plain", 6999)
    assert not isinstance(app.producer, FlushFirstProducer)
