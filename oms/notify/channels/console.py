"""The console/log channel: the embedded default, so a local stack shows notifications."""

from __future__ import annotations

import structlog

from oms.notify.channels.base import Channel, Message
from oms.schemas.notify_settings import ChannelKind

log = structlog.get_logger("oms.notify.console")


class ConsoleChannel(Channel):
    """Logs the message (one structured line) and counts it."""

    kind = ChannelKind.CONSOLE

    def __init__(self, name: str, *, quiet: bool = False) -> None:
        super().__init__(name)
        self.quiet = quiet
        self.sent = 0

    async def send(self, message: Message) -> str:
        self.sent += 1
        if not self.quiet:
            log.info(
                "notification",
                channel=self.name,
                severity=message.severity.value,
                title=message.title,
                text=message.text,
            )
        return f"console-{self.sent}"
