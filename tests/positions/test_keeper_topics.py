"""The keeper creates its internal fills topic before joining its group (left to Faust, the
first assignment could skip the topic and the keeper never became ready)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from oms.harness import isolated_settings
from oms.kafka_admin import list_topics
from oms.positions.keeper import PositionKeeper


def test_fills_topic_exists_before_the_keeper_starts(kafka_bootstrap: str, tmp_path: Path) -> None:
    settings = isolated_settings(tmp_path, kafka_bootstrap, ["acct"], partitions=4, label="pk")
    keeper = PositionKeeper(settings)
    prefix = settings.kafka.topic_prefix
    assert keeper.fills_topic not in asyncio.run(list_topics(kafka_bootstrap, prefix))
    keeper.create_fills_topic()
    assert keeper.fills_topic in asyncio.run(list_topics(kafka_bootstrap, prefix))
    keeper.create_fills_topic()  # idempotent: a restart finds it there
