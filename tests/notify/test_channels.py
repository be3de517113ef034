"""Each channel against a local server speaking its provider's protocol: success, provider
errors, garbage, hangs; WeCom's limits; Aliyun's signature; Twilio's basic auth; SMTP with
STARTTLS and AUTH, read back."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from oms.notify.channels import DeliveryError, Message
from oms.notify.channels.email import EmailChannel
from oms.notify.channels.sms import AliyunSmsChannel, TwilioChannel, aliyun_string_to_sign
from oms.notify.channels.wecom import WeComChannel
from oms.notify.channels.wxpusher import WxPusherChannel
from oms.ratelimit import TokenBucket
from oms.schemas import ReasonCode
from oms.schemas.notify_settings import Severity
from oms_dev.notify_fakes import FakeProviders, FakeSmtp

KEY = "0b9d4c1e-2f3a-4b5c-8d7e-6f5a4b3c2d1e"
SID = "AC" + "0123456789abcdef" * 2
TOKEN = "twilio-auth-token-secret"


def msg(text: str = "Filled BTC-PERPETUAL BUY 100 @ 50,000", emergency: bool = False) -> Message:
    return Message(
        title="[demo] Filled", text=text, markdown=f"**{text}**", html=f"<p>{text}</p>",
        severity=Severity.CRITICAL if emergency else Severity.INFO, emergency=emergency,
        idempotency_key="n-1|ch", sms_params={"type": "Filled", "detail": text},
    )  # fmt: skip


@pytest.fixture
async def fakes() -> AsyncIterator[FakeProviders]:
    async with FakeProviders() as providers:
        providers.hang_s = 2.0
        yield providers


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def wecom(fakes: FakeProviders, http: aiohttp.ClientSession, **kw: object) -> WeComChannel:
    fakes.wecom_keys.add(KEY)
    params: dict[str, object] = {
        "key": KEY, "session": http, "bucket": TokenBucket.per_period(20, 60.0),
        "base_url": fakes.base_url, "timeout_s": 1.0, **kw,
    }  # fmt: skip
    return WeComChannel("wecom", **params)  # type: ignore[arg-type]


async def test_wecom_markdown_then_text_with_mentions_for_emergencies(
    fakes: FakeProviders, http: aiohttp.ClientSession
) -> None:
    channel = wecom(fakes, http, mention_mobiles=["13800001111"])
    await channel.send(msg("x" * 5000))
    await channel.send(msg("fire", emergency=True))
    first, second = (r["body"] for r in fakes.sent("wecom"))
    assert first["msgtype"] == "markdown"
    assert len(first["markdown"]["content"].encode()) <= 4096  # cut to the limit
    assert second["msgtype"] == "text"
    assert second["text"]["mentioned_mobile_list"] == ["13800001111"]


async def test_wecom_nonzero_errcode_is_a_failure_despite_http_200(
    fakes: FakeProviders, http: aiohttp.ClientSession
) -> None:
    channel = wecom(fakes, http)
    fakes.script("wecom", "errcode:40058")
    with pytest.raises(DeliveryError) as err:
        await channel.send(msg())
    assert err.value.reason is ReasonCode.PROVIDER_ERROR and not err.value.retryable
    assert "40058" in err.value.detail


async def test_wecom_45009_drains_the_bucket_and_is_retryable(
    fakes: FakeProviders, http: aiohttp.ClientSession
) -> None:
    bucket = TokenBucket.per_period(20, 60.0)
    channel = wecom(fakes, http, bucket=bucket)
    fakes.script("wecom", "45009")
    with pytest.raises(DeliveryError) as err:
        await channel.send(msg())
    assert err.value.reason is ReasonCode.RATE_LIMITED and err.value.retryable
    assert err.value.retry_after_s == pytest.approx(3.0)  # one 20/min token
    assert bucket.available < 1


async def test_wecom_local_bucket_refuses_the_21st_message_in_a_minute(
    fakes: FakeProviders, http: aiohttp.ClientSession
) -> None:
    channel = wecom(fakes, http, max_wait_s=0.0)
    for _ in range(20):
        await channel.send(msg())
    with pytest.raises(DeliveryError) as err:
        await channel.send(msg())
    assert err.value.reason is ReasonCode.RATE_LIMITED
    assert len(fakes.sent("wecom")) == 20  # the 21st never left


async def test_wecom_invalid_key_never_reaches_the_network(
    fakes: FakeProviders, http: aiohttp.ClientSession
) -> None:
    with pytest.raises(DeliveryError) as err:
        wecom(fakes, http, key="not-a-key")
    assert err.value.reason is ReasonCode.INVALID_RECIPIENT
    assert "not-a-key" not in str(err.value)
    assert fakes.requests == []


@pytest.mark.parametrize(
    ("behaviour", "reason"),
    [("garbage", ReasonCode.PROVIDER_GARBAGE), ("hang", ReasonCode.PROVIDER_TIMEOUT),
     ("http502", ReasonCode.PROVIDER_ERROR)],
)  # fmt: skip
async def test_wecom_garbage_hang_and_5xx_are_retryable_failures_without_the_key(
    fakes: FakeProviders, http: aiohttp.ClientSession, behaviour: str, reason: ReasonCode
) -> None:
    channel = wecom(fakes, http)
    fakes.script("wecom", behaviour)
    with pytest.raises(DeliveryError) as err:
        await channel.send(msg())
    assert err.value.reason is reason and err.value.retryable
    assert KEY not in str(err.value)


async def test_wxpusher_success_and_bad_token(
    fakes: FakeProviders, http: aiohttp.ClientSession
) -> None:
    fakes.wxpusher_tokens.add("AT_good")
    good = WxPusherChannel(
        "wx", app_token="AT_good", uids=["UID_a", "UID_b"], session=http, base_url=fakes.base_url
    )
    receipt = await good.send(msg())
    assert receipt == "1000,1001"
    body = fakes.sent("wxpusher")[0]["body"]
    assert body["uids"] == ["UID_a", "UID_b"] and body["contentType"] == 3
    bad = WxPusherChannel(
        "wx", app_token="AT_bad", uids=["UID_a"], session=http, base_url=fakes.base_url
    )
    with pytest.raises(DeliveryError) as err:
        await bad.send(msg())
    assert "1001" in err.value.detail and "AT_bad" not in str(err.value)


def test_aliyun_string_to_sign_sorts_and_encodes_twice() -> None:
    # The RPC v1.0 rule: parameters sorted, RFC 3986 encoded, the whole query encoded again.
    params = {"Action": "SendSms", "TemplateParam": '{"code":"1234"}', "SignName": "阿里云"}
    s = aliyun_string_to_sign("POST", params)
    assert s.startswith("POST&%2F&Action%3DSendSms%26SignName%3D%25E9%2598%25BF")
    assert "TemplateParam%3D%257B%2522code%2522%253A%25221234%2522%257D" in s


async def test_aliyun_signed_request_is_accepted_and_a_wrong_secret_is_not(
    fakes: FakeProviders, http: aiohttp.ClientSession
) -> None:
    fakes.aliyun_keys["LTAI-test"] = "aliyun-secret-value"

    def channel(secret: str) -> AliyunSmsChannel:
        return AliyunSmsChannel(
            "sms", access_key_id="LTAI-test", access_key_secret=secret, sign_name="OMS",
            template_code="SMS_123456", phone_numbers=["13800001111"], session=http,
            base_url=fakes.base_url,
        )  # fmt: skip

    assert await channel("aliyun-secret-value").send(msg())
    params = fakes.sent("aliyun")[0]["params"]
    assert params["PhoneNumbers"] == "13800001111" and params["OutId"] == "n-1|ch"
    assert params["TemplateCode"] == "SMS_123456"
    with pytest.raises(DeliveryError) as err:
        await channel("wrong-secret").send(msg())
    assert "SignatureDoesNotMatch" in err.value.detail and not err.value.retryable
    fakes.script("aliyun", "limit")
    with pytest.raises(DeliveryError) as err:
        await channel("aliyun-secret-value").send(msg())
    assert err.value.reason is ReasonCode.RATE_LIMITED
    assert "aliyun-secret-value" not in str(fakes.requests)


async def test_twilio_basic_auth_form_and_errors(
    fakes: FakeProviders, http: aiohttp.ClientSession
) -> None:
    fakes.twilio_accounts[SID] = TOKEN

    def channel(token: str, to: str = "+14155550100") -> TwilioChannel:
        return TwilioChannel(
            "tw", account_sid=SID, auth_token=token, to_numbers=[to], session=http,
            from_number="+14155550199", base_url=fakes.base_url,
        )  # fmt: skip

    sid = await channel(TOKEN).send(msg())
    assert sid.startswith("SM") and len(sid) == 34
    form = fakes.sent("twilio")[0]["form"]
    assert form == {"To": "+14155550100", "From": "+14155550199", "Body": msg().text}
    with pytest.raises(DeliveryError) as err:
        await channel("wrong").send(msg())
    assert "20003" in err.value.detail
    with pytest.raises(DeliveryError) as err:
        await channel(TOKEN, to="+1x").send(msg())
    assert err.value.reason is ReasonCode.INVALID_RECIPIENT and "21211" in err.value.detail
    assert channel(TOKEN).idempotent is False


async def test_email_starttls_auth_html_and_plain_read_back() -> None:
    with FakeSmtp(starttls=True, password="smtp-pass-123") as smtp:
        channel = EmailChannel(
            "mail", host="127.0.0.1", port=smtp.port, security="starttls",
            sender="oms@example.com", recipients=["trader@example.com"], username="oms",
            password="smtp-pass-123", verify_tls=False, timeout_s=5,
        )  # fmt: skip
        await channel.send(msg("Filled 100", emergency=True))
        (mail,) = await smtp.wait_for(1)
        assert smtp.tls_used == [True]
        assert mail["Subject"] == "[demo] Filled" and mail["To"] == "trader@example.com"
        assert mail["Importance"] == "high"
        parts = {p.get_content_type(): p.get_payload(decode=True).decode() for p in mail.walk()
                 if not p.is_multipart()}  # fmt: skip
        assert "Filled 100" in parts["text/plain"] and "<p>Filled 100</p>" in parts["text/html"]


async def test_email_wrong_password_and_refused_recipient_fail_with_reasons() -> None:
    with FakeSmtp(password="right") as smtp:

        def channel(password: str, to: str) -> EmailChannel:
            return EmailChannel(
                "mail", host="127.0.0.1", port=smtp.port, security="none",
                sender="oms@example.com", recipients=[to], username="oms", password=password,
            )  # fmt: skip

        with pytest.raises(DeliveryError) as err:
            await channel("wrong", "a@example.com").send(msg())
        assert err.value.reason is ReasonCode.PROVIDER_ERROR and "wrong" not in str(err.value)
        with pytest.raises(DeliveryError) as err:
            await channel("right", "x@refused.invalid").send(msg())
        assert err.value.reason is ReasonCode.INVALID_RECIPIENT
        assert smtp.messages == []


async def test_email_server_down_is_retryable() -> None:
    from oms_dev.devstack.net import free_port

    channel = EmailChannel(
        "mail", host="127.0.0.1", port=free_port(), security="none", sender="oms@example.com",
        recipients=["a@example.com"], timeout_s=2,
    )  # fmt: skip
    with pytest.raises(DeliveryError) as err:
        await channel.send(msg())
    assert err.value.retryable
