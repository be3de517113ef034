"""SMS: Aliyun SendSms (mainland China) and Twilio (international).

SMS is not idempotent at either provider (Aliyun's ``OutId`` and Twilio's message SID only
trace a message, they do not deduplicate), so both channels say ``idempotent = False``: the
notifier records that it is about to send before the request and never resends after an
unknown outcome (see :mod:`oms.notify.delivery`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid
from collections.abc import Mapping
from urllib.parse import quote

import aiohttp
import orjson

from oms.notify.channels.base import Channel, DeliveryError, Message, request_json
from oms.schemas import ReasonCode
from oms.schemas.notify_settings import ChannelKind

# ---------------------------------------------------------------- Aliyun SendSms (RPC, v1 sig)

ALIYUN_BASE = "https://dysmsapi.aliyuncs.com"
ALIYUN_VERSION = "2017-05-25"
# Aliyun caps each template variable (35 characters for notification templates).
ALIYUN_PARAM_MAX = 35
_ALIYUN_RETRYABLE = {"Throttling", "Throttling.User", "ServiceUnavailable", "InternalError"}
_ALIYUN_LIMITS = {"isv.BUSINESS_LIMIT_CONTROL", "isv.DAY_LIMIT_CONTROL"}


def percent_encode(value: str) -> str:
    """RFC 3986 encoding as Aliyun's signature wants it (space -> %20, ``*`` -> %2A, ``~``
    kept)."""
    return quote(value, safe="~")


def aliyun_string_to_sign(method: str, params: Mapping[str, str]) -> str:
    """``METHOD&%2F&percentEncode(canonicalized query)`` with parameters sorted by name."""
    canonical = "&".join(
        f"{percent_encode(k)}={percent_encode(v)}" for k, v in sorted(params.items())
    )
    return f"{method}&{percent_encode('/')}&{percent_encode(canonical)}"


def aliyun_signature(secret: str, method: str, params: Mapping[str, str]) -> str:
    """Base64 HMAC-SHA1 of the string to sign, keyed with ``secret + "&"`` (Signature v1.0)."""
    digest = hmac.new(
        f"{secret}&".encode(), aliyun_string_to_sign(method, params).encode(), hashlib.sha1
    ).digest()
    return base64.b64encode(digest).decode()


class AliyunSmsChannel(Channel):
    kind = ChannelKind.ALIYUN_SMS
    idempotent = False

    def __init__(
        self,
        name: str,
        *,
        access_key_id: str,
        access_key_secret: str,
        sign_name: str,
        template_code: str,
        phone_numbers: list[str],
        session: aiohttp.ClientSession,
        region_id: str = "cn-hangzhou",
        base_url: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        super().__init__(name)
        self._key_id, self._secret = access_key_id, access_key_secret
        self._sign_name, self._template = sign_name, template_code
        self._phones = phone_numbers
        self._region = region_id
        self._url = (base_url or ALIYUN_BASE).rstrip("/") + "/"
        self._session = session
        self._timeout = timeout_s

    def signed_params(self, message: Message) -> dict[str, str]:
        """The SendSms request parameters, signed."""
        template_param = {
            k: v[:ALIYUN_PARAM_MAX]
            for k, v in (message.sms_params or {"title": message.title}).items()
        }
        params = {
            "AccessKeyId": self._key_id,
            "Action": "SendSms",
            "Format": "JSON",
            "OutId": message.idempotency_key[:256],
            "PhoneNumbers": ",".join(self._phones),
            "RegionId": self._region,
            "SignName": self._sign_name,
            "SignatureMethod": "HMAC-SHA1",
            "SignatureNonce": uuid.uuid4().hex,
            "SignatureVersion": "1.0",
            "TemplateCode": self._template,
            "TemplateParam": orjson.dumps(template_param).decode(),
            "Timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "Version": ALIYUN_VERSION,
        }
        params["Signature"] = aliyun_signature(self._secret, "POST", params)
        return params

    async def send(self, message: Message) -> str:
        _, body = await request_json(
            self._session,
            "POST",
            self._url,
            timeout_s=self._timeout,
            what="aliyun sms",
            data=self.signed_params(message),
        )
        if not isinstance(body, dict) or "Code" not in body:
            raise DeliveryError(
                ReasonCode.PROVIDER_GARBAGE,
                "aliyun sms answered JSON without Code",
                retryable=True,
            )
        code = str(body["Code"])
        if code == "OK":
            return str(body.get("BizId") or body.get("RequestId") or "ok")
        detail = f"aliyun sms {code} {str(body.get('Message', ''))[:200]}"
        if code in _ALIYUN_LIMITS:
            raise DeliveryError(ReasonCode.RATE_LIMITED, detail)
        raise DeliveryError(ReasonCode.PROVIDER_ERROR, detail, retryable=code in _ALIYUN_RETRYABLE)


# ---------------------------------------------------------------- Twilio Messages API

TWILIO_BASE = "https://api.twilio.com"
TWILIO_BODY_MAX = 1600  # characters per message (Twilio concatenates segments up to this)


class TwilioChannel(Channel):
    kind = ChannelKind.TWILIO
    idempotent = False

    def __init__(
        self,
        name: str,
        *,
        account_sid: str,
        auth_token: str,
        to_numbers: list[str],
        session: aiohttp.ClientSession,
        from_number: str | None = None,
        messaging_service_sid: str | None = None,
        base_url: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        super().__init__(name)
        base = (base_url or TWILIO_BASE).rstrip("/")
        self._url = f"{base}/2010-04-01/Accounts/{account_sid}/Messages.json"
        self._auth_header = {"Authorization": aiohttp.encode_basic_auth(account_sid, auth_token)}
        self._to = to_numbers
        self._from = from_number
        self._service = messaging_service_sid
        self._session = session
        self._timeout = timeout_s

    def form(self, message: Message, to: str) -> dict[str, str]:
        """The form fields of one Messages.json request."""
        fields = {"To": to, "Body": message.text[:TWILIO_BODY_MAX]}
        if self._service:
            fields["MessagingServiceSid"] = self._service
        else:
            assert self._from is not None
            fields["From"] = self._from
        return fields

    async def send(self, message: Message) -> str:
        sids: list[str] = []
        for index, to in enumerate(self._to):
            try:
                status, body = await request_json(
                    self._session,
                    "POST",
                    self._url,
                    timeout_s=self._timeout,
                    what="twilio",
                    data=self.form(message, to),
                    headers=self._auth_header,
                )
            except DeliveryError as exc:
                if index:  # some numbers got it: a retry would text them twice
                    exc.retryable = False
                raise
            if (
                status == 201
                and isinstance(body, dict)
                and str(body.get("sid", "")).startswith(("SM", "MM"))
            ):
                sids.append(str(body["sid"]))
                continue
            if not isinstance(body, dict) or ("code" not in body and "sid" not in body):
                raise DeliveryError(
                    ReasonCode.PROVIDER_GARBAGE,
                    f"twilio answered HTTP {status} without a message",
                    retryable=not index,
                )
            code = body.get("code")
            reason = (
                ReasonCode.INVALID_RECIPIENT
                if code in (21211, 21614)
                else ReasonCode.PROVIDER_ERROR
            )
            raise DeliveryError(
                reason, f"twilio HTTP {status} code {code} {str(body.get('message', ''))[:200]}"
            )
        return ",".join(sids)
