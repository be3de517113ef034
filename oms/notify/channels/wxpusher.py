"""WeChat personal push through WxPusher: ``POST {base}/api/send/message``.

Chosen over ServerChan: WxPusher is free without ServerChan's small daily quota, one app
token reaches any number of followers by UID, and the answer reports a status per recipient
(so a partial failure is visible). Success is ``code == 1000`` (``success: true``); any other
code, also with HTTP 200, is a failure.
"""

from __future__ import annotations

import aiohttp

from oms.notify.channels.base import Channel, DeliveryError, Message, request_json, truncate_bytes
from oms.schemas import ReasonCode
from oms.schemas.notify_settings import ChannelKind

DEFAULT_BASE = "https://wxpusher.zjiecode.com"
OK = 1000
CONTENT_MARKDOWN = 3
SUMMARY_MAX_CHARS = 100  # WxPusher truncates summaries beyond this


class WxPusherChannel(Channel):
    kind = ChannelKind.WXPUSHER

    def __init__(
        self,
        name: str,
        *,
        app_token: str,
        uids: list[str],
        session: aiohttp.ClientSession,
        base_url: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        super().__init__(name)
        if not app_token.startswith("AT_"):
            raise DeliveryError(
                ReasonCode.INVALID_RECIPIENT, f"channel {name}: the app token is not an AT_ token"
            )
        self._url = f"{(base_url or DEFAULT_BASE).rstrip('/')}/api/send/message"
        self._token = app_token
        self._uids = uids
        self._session = session
        self._timeout = timeout_s

    async def send(self, message: Message) -> str:
        payload = {
            "appToken": self._token,
            "content": truncate_bytes(message.markdown, 40_000),
            "summary": message.title[:SUMMARY_MAX_CHARS],
            "contentType": CONTENT_MARKDOWN,
            "uids": self._uids,
            "verifyPayType": 0,
        }
        _, body = await request_json(
            self._session,
            "POST",
            self._url,
            timeout_s=self._timeout,
            what="wxpusher",
            json=payload,
        )
        if not isinstance(body, dict) or "code" not in body:
            raise DeliveryError(
                ReasonCode.PROVIDER_GARBAGE, "wxpusher answered JSON without code", retryable=True
            )
        if body.get("code") != OK or body.get("success") is False:
            raise DeliveryError(
                ReasonCode.PROVIDER_ERROR,
                f"wxpusher code {body.get('code')} {str(body.get('msg', ''))[:200]}",
            )
        failed = [
            r.get("uid")
            for r in body.get("data") or []
            if isinstance(r, dict) and r.get("code") not in (None, OK)
        ]
        if failed and len(failed) == len(self._uids):
            raise DeliveryError(ReasonCode.PROVIDER_ERROR, f"wxpusher refused every uid: {failed}")
        ids = [str(r.get("messageId")) for r in body.get("data") or [] if isinstance(r, dict)]
        return ",".join(ids) or "ok"
