"""Topics exist before a Faust worker starts: the pipeline's, extra ones and every table's
changelog (compacted), so the first assignment can never see a table with 0 partitions."""

from __future__ import annotations

import asyncio

from oms.kafka.admin import delete_topics, describe_topic, list_topics
from oms.kafka.faust_worker import create_topics_first
from oms.streams.app import create_app
from tests.conftest import MakeSettings


async def test_changelogs_and_extra_topics_are_created_before_faust_starts(
    make_settings: MakeSettings,
) -> None:
    settings = await make_settings(create_topics=False, partitions=3)
    app = create_app(settings).app
    changelog = app.tables["orders"].changelog_topic.get_topic_name()
    extra = settings.topic("positions-fills")
    # On a thread of its own: it installs a fresh event loop, as a worker process does.
    await asyncio.to_thread(create_topics_first, app, settings, {extra: 3})
    try:
        names = set(await list_topics(settings.kafka.bootstrap, settings.kafka.topic_prefix))
        names |= set(await list_topics(settings.kafka.bootstrap, changelog))
        assert {changelog, extra, settings.topic("order-requests")} <= names
        partitions, config = await describe_topic(settings.kafka.bootstrap, changelog)
        assert partitions == 3
        assert config["cleanup.policy"] == "compact"
    finally:
        await delete_topics(settings.kafka.bootstrap, [changelog, extra])
