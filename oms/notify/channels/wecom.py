"""WeCom (企业微信) group robot: ``POST {base}/cgi-bin/webhook/send?key=KEY``.

* ``markdown`` (content <= 4096 bytes) for ordinary notifications, ``text`` (<= 2048 bytes,
  with ``mentioned_mobile_list``) for emergencies, since only text messages can @ people.
* 20 messages per minute per robot: a token bucket per webhook key, shared by every channel
  using that key; a message that would wait longer than ``max_wait_s`` fails as rate-limited,
  so the notification falls back to the next channel instead of stalling.
* HTTP 200 with a non-zero ``errcode`` is a failure; 45009 ("api freq out of limit") drains
  the bucket and is retried after one refill period share.
"""

from __future__ import annotations

import re
from urllib.parse import quote

import aiohttp

from oms.notify.channels.base import Channel, DeliveryError, Message, request_json, truncate_bytes
from oms.ratelimit import TokenBucket
from oms.schemas import ReasonCode
from oms.schemas.notify_settings import ChannelKind

DEFAULT_BASE = "https://qyapi.weixin.qq.com"
TEXT_MAX_BYTES = 2048
MARKDOWN_MAX_BYTES = 4096
ERR_RATE_LIMITED = 45009
# Robot webhook keys are UUIDs.
KEY_PATTERN = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)


class WeComChannel(Channel):
    kind = ChannelKind.WECOM

    def __init__(
        self,
        name: str,
        *,
        key: str,
        session: aiohttp.ClientSession,
        bucket: TokenBucket,
        base_url: str | None = None,
        mention_mobiles: list[str] | None = None,
        timeout_s: float = 10.0,
        max_wait_s: float = 5.0,
    ) -> None:
        super().__init__(name)
        if not KEY_PATTERN.match(key):
            raise DeliveryError(
                ReasonCode.INVALID_RECIPIENT, f"channel {name}: the webhook key is not a UUID"
            )
        self._url = (
            f"{(base_url or DEFAULT_BASE).rstrip('/')}/cgi-bin/webhook/send?key={quote(key)}"
        )
        self._session = session
        self.bucket = bucket
        self._mentions = mention_mobiles or []
        self._timeout = timeout_s
        self._max_wait = max_wait_s

    def payload(self, message: Message) -> dict[str, object]:
        """The robot message for ``message``."""
        if message.emergency:
            text: dict[str, object] = {
                "content": truncate_bytes(message.text, TEXT_MAX_BYTES),
            }
            if self._mentions:
                text["mentioned_mobile_list"] = self._mentions
            return {"msgtype": "text", "text": text}
        return {
            "msgtype": "markdown",
            "markdown": {"content": truncate_bytes(message.markdown, MARKDOWN_MAX_BYTES)},
        }

    async def send(self, message: Message) -> str:
        if not await self.bucket.acquire(max_wait=self._max_wait):
            raise DeliveryError(
                ReasonCode.RATE_LIMITED,
                f"channel {self.name}: robot over its per-minute limit (local bucket)",
                retryable=False,
            )
        _, body = await request_json(
            self._session,
            "POST",
            self._url,
            timeout_s=self._timeout,
            what="wecom",
            json=self.payload(message),
        )
        if not isinstance(body, dict) or "errcode" not in body:
            raise DeliveryError(
                ReasonCode.PROVIDER_GARBAGE, "wecom answered JSON without errcode", retryable=True
            )
        code = body.get("errcode")
        if code == 0:
            return str(body.get("msgid") or "ok")
        errmsg = str(body.get("errmsg", ""))[:200]
        if code == ERR_RATE_LIMITED:
            self.bucket.drain()
            raise DeliveryError(
                ReasonCode.RATE_LIMITED,
                f"wecom errcode 45009 {errmsg}",
                retryable=True,
                retry_after_s=1.0 / self.bucket.rate,
            )
        raise DeliveryError(ReasonCode.PROVIDER_ERROR, f"wecom errcode {code} {errmsg}")
