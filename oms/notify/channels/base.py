"""The one interface every channel implements, the message it sends and how it fails."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from oms.schemas import ReasonCode
from oms.schemas.notify_settings import ChannelKind, Severity


@dataclass
class Message:
    """One rendered notification, in every form a channel may want."""

    title: str
    text: str  # plain text, short lines: readable on a phone
    markdown: str
    html: str
    severity: Severity = Severity.INFO
    emergency: bool = False
    # Stable per (notification, channel): providers that accept one get it, we keep it too.
    idempotency_key: str = ""
    # Template variables for template-only providers (Aliyun SMS).
    sms_params: dict[str, str] = field(default_factory=dict)


class DeliveryError(Exception):
    """A failed send: a reason code, a human detail (never containing a secret), whether a
    retry on the same channel can help, and how long the provider asked us to wait."""

    def __init__(
        self,
        reason: ReasonCode,
        detail: str,
        *,
        retryable: bool = False,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail
        self.retryable = retryable
        self.retry_after_s = retry_after_s


class Channel(ABC):
    """A destination for messages. ``send`` returns the provider's receipt (message id) or
    raises :class:`DeliveryError`."""

    kind: ChannelKind
    # False when a resend after an unknown outcome could reach the recipient twice and the
    # provider has no idempotency key (SMS): the notifier then never resends blindly.
    idempotent: bool = True

    def __init__(self, name: str) -> None:
        self.name = name

    @abstractmethod
    async def send(self, message: Message) -> str:
        """Deliver one message."""


def truncate_bytes(text: str, limit: int, suffix: str = "…") -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes, on a character boundary."""
    raw = text.encode()
    if len(raw) <= limit:
        return text
    keep = limit - len(suffix.encode())
    return raw[:keep].decode(errors="ignore") + suffix


async def request_json(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    timeout_s: float,
    what: str,
    **kwargs: Any,
) -> tuple[int, Any]:
    """One HTTP request whose answer must be JSON: returns (status, body).

    Transport failures and non-JSON answers become :class:`DeliveryError` whose detail names
    ``what`` (the provider) but never the URL, which may carry a key.
    """
    try:
        async with session.request(
            method, url, timeout=aiohttp.ClientTimeout(total=timeout_s), **kwargs
        ) as resp:
            body = await resp.read()
            status = resp.status
    except TimeoutError as exc:
        raise DeliveryError(
            ReasonCode.PROVIDER_TIMEOUT,
            f"{what} did not answer within {timeout_s:g}s",
            retryable=True,
        ) from exc
    except aiohttp.ClientError as exc:
        raise DeliveryError(
            ReasonCode.PROVIDER_ERROR,
            f"{what} unreachable: {type(exc).__name__}",
            retryable=True,
        ) from exc
    if status == 429 or status >= 500:
        raise DeliveryError(
            ReasonCode.RATE_LIMITED if status == 429 else ReasonCode.PROVIDER_ERROR,
            f"{what} answered HTTP {status}",
            retryable=True,
        )
    try:
        return status, orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise DeliveryError(
            ReasonCode.PROVIDER_GARBAGE,
            f"{what} answered HTTP {status} with a body that is not JSON ({len(body)} bytes)",
            retryable=True,
        ) from exc
