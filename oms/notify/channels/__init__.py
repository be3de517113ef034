"""Notification channels: one small class per provider behind :class:`Channel`."""

from __future__ import annotations

import aiohttp

from oms.notify.channels.base import Channel, DeliveryError, Message
from oms.notify.channels.console import ConsoleChannel
from oms.notify.channels.email import EmailChannel
from oms.notify.channels.sms import AliyunSmsChannel, TwilioChannel
from oms.notify.channels.wecom import WeComChannel
from oms.notify.channels.wxpusher import WxPusherChannel
from oms.notify.secrets import NotifySecrets
from oms.ratelimit import TokenBucket
from oms.schemas import ReasonCode
from oms.schemas import notify_settings as ns
from oms.settings import NotifySettings

__all__ = [
    "Channel",
    "ChannelFactory",
    "ConsoleChannel",
    "DeliveryError",
    "Message",
]


class ChannelFactory:
    """Builds channel objects from settings, resolving secret references.

    Shares one HTTP session and one WeCom token bucket per webhook key (the limit is per
    robot, whichever account or channel uses it). A missing secret or a malformed key raises
    :class:`DeliveryError`, which the caller records as a failed attempt.
    """

    def __init__(
        self,
        config: NotifySettings,
        secrets: NotifySecrets,
        session: aiohttp.ClientSession,
        console: ConsoleChannel | None = None,
    ) -> None:
        self.config = config
        self.secrets = secrets
        self.session = session
        self.console = console
        self._buckets: dict[str, TokenBucket] = {}

    def _secret(self, channel: str, ref: str | None) -> str:
        value = self.secrets.get(ref) if ref else None
        if not value:
            raise DeliveryError(
                ReasonCode.SECRET_MISSING,
                f"channel {channel}: secret {ref!r} is not in the environment or secrets file",
            )
        return value

    def bucket(self, key: str) -> TokenBucket:
        if key not in self._buckets:
            self._buckets[key] = TokenBucket.per_period(self.config.wecom_per_minute, 60.0)
        return self._buckets[key]

    def build(self, cfg: ns.ChannelConfig) -> Channel:
        """A ready channel for one configured entry."""
        c = self.config
        timeout = c.http_timeout_s
        if isinstance(cfg, ns.ConsoleChannel):
            return self.console or ConsoleChannel(cfg.name)
        if isinstance(cfg, ns.WeComChannel):
            key = self._secret(cfg.name, cfg.secret_ref)
            return WeComChannel(
                cfg.name,
                key=key,
                session=self.session,
                bucket=self.bucket(key),
                base_url=cfg.base_url,
                mention_mobiles=cfg.mention_mobiles,
                timeout_s=timeout,
                max_wait_s=c.wecom_max_wait_s,
            )
        if isinstance(cfg, ns.WxPusherChannel):
            return WxPusherChannel(
                cfg.name,
                app_token=self._secret(cfg.name, cfg.secret_ref),
                uids=cfg.uids,
                session=self.session,
                base_url=cfg.base_url,
                timeout_s=timeout,
            )
        if isinstance(cfg, ns.EmailChannel):
            password = self._secret(cfg.name, cfg.secret_ref) if cfg.secret_ref else None
            return EmailChannel(
                cfg.name,
                host=cfg.host,
                port=cfg.port,
                security=cfg.security,
                sender=cfg.sender,
                recipients=cfg.recipients,
                username=cfg.username,
                password=password,
                verify_tls=cfg.verify_tls,
                timeout_s=timeout,
            )
        if isinstance(cfg, ns.AliyunSmsChannel):
            return AliyunSmsChannel(
                cfg.name,
                access_key_id=cfg.access_key_id,
                access_key_secret=self._secret(cfg.name, cfg.secret_ref),
                sign_name=cfg.sign_name,
                template_code=cfg.template_code,
                phone_numbers=cfg.phone_numbers,
                session=self.session,
                region_id=cfg.region_id,
                base_url=cfg.base_url,
                timeout_s=timeout,
            )
        if isinstance(cfg, ns.TwilioChannel):
            return TwilioChannel(
                cfg.name,
                account_sid=cfg.account_sid,
                auth_token=self._secret(cfg.name, cfg.secret_ref),
                to_numbers=cfg.to_numbers,
                session=self.session,
                from_number=cfg.from_number,
                messaging_service_sid=cfg.messaging_service_sid,
                base_url=cfg.base_url,
                timeout_s=timeout,
            )
        raise DeliveryError(ReasonCode.UNKNOWN_CHANNEL, f"unknown channel kind {cfg!r}")
