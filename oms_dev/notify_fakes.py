"""Local stand-ins for the notification providers, speaking their real protocols.

:class:`FakeProviders` is one aiohttp server that answers like the WeCom robot webhook,
WxPusher, Aliyun SendSms (it verifies the HMAC-SHA1 signature with the AccessKey secret) and
Twilio's Messages API (it checks HTTP basic auth), with scripted failures: every provider
takes a queue of behaviours for its next requests (``"ok"``, ``"garbage"``, ``"hang"``,
``"http500"``, ``"45009"``, ``"errcode:93000"``, ...). :class:`FakeSmtp` wraps aiosmtpd
(optionally STARTTLS with a throw-away certificate, and AUTH) and keeps every message.

Used by the tests and by hand: ``python -m oms_dev.notify_fakes`` serves them and prints URLs.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets as pysecrets
import ssl
import subprocess
import tempfile
import threading
from collections import Counter, defaultdict
from email import message_from_bytes
from email.message import Message as EmailMessage
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from oms.notify.channels.sms import aliyun_signature

WECOM_KEY_EXAMPLE = "693a91f6-7a1b-4bc4-97a0-0ec2a1fa5aaa"


class FakeProviders:
    """WeCom, WxPusher, Aliyun SMS and Twilio on one local port."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        # Requests received per provider, answered or not (a hung one counts at once).
        self.arrivals: Counter[str] = Counter()
        self.scripts: dict[str, list[str]] = defaultdict(list)
        self.wecom_keys: set[str] = set()
        self.wxpusher_tokens: set[str] = set()
        self.aliyun_keys: dict[str, str] = {}
        self.twilio_accounts: dict[str, str] = {}
        self.hang_s = 30.0
        self._runner: web.AppRunner | None = None
        self.port = 0
        self._arrived = asyncio.Event()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, provider: str, *behaviours: str) -> None:
        """Queue behaviours for the next requests to ``provider`` (then ``ok`` again)."""
        self.scripts[provider].extend(behaviours)

    def sent(self, provider: str) -> list[dict[str, Any]]:
        """Requests to ``provider`` that were answered with success."""
        return [r for r in self.requests if r["provider"] == provider and r["ok"]]

    async def wait_for(self, provider: str, count: int, within: float = 20.0) -> None:
        """Wait until ``provider`` has answered ``count`` requests successfully."""
        async with asyncio.timeout(within):
            while len(self.sent(provider)) < count:
                self._arrived.clear()
                await self._arrived.wait()

    async def start(self, port: int = 0) -> FakeProviders:
        app = web.Application()
        app.router.add_post("/cgi-bin/webhook/send", self._wecom)
        app.router.add_post("/api/send/message", self._wxpusher)
        app.router.add_post("/", self._aliyun)
        app.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", self._twilio)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> FakeProviders:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- plumbing --------------------------------------------------------------------------

    async def _behaviour(self, provider: str) -> str | web.Response:
        """The scripted behaviour; transport-level ones are answered here."""
        self.arrivals[provider] += 1
        queue = self.scripts.get(provider)
        behaviour = queue.pop(0) if queue else "ok"
        if behaviour == "hang":
            await asyncio.sleep(self.hang_s)
            return web.Response(status=504)
        if behaviour == "garbage":
            return web.Response(text="<html>502 Bad Gateway</html>", content_type="text/html")
        if behaviour.startswith("http"):
            return web.Response(status=int(behaviour[4:]), text="error")
        return behaviour

    def _log(self, provider: str, ok: bool, **fields: Any) -> None:
        self.requests.append({"provider": provider, "ok": ok, **fields})
        self._arrived.set()

    @staticmethod
    def _json(body: dict[str, Any], status: int = 200) -> web.Response:
        return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")

    # -- WeCom robot -----------------------------------------------------------------------

    async def _wecom(self, request: web.Request) -> web.Response:
        key = request.query.get("key", "")
        raw = await request.read()
        b = await self._behaviour("wecom")
        if isinstance(b, web.Response):
            self._log("wecom", False, key=key, behaviour="transport")
            return b
        if key not in self.wecom_keys:
            self._log("wecom", False, key=key)
            return self._json({"errcode": 93000, "errmsg": "invalid webhook url"})
        if b == "45009":
            self._log("wecom", False, key=key, errcode=45009)
            return self._json({"errcode": 45009, "errmsg": "api freq out of limit"})
        if b.startswith("errcode:"):
            code = int(b.split(":", 1)[1])
            self._log("wecom", False, key=key, errcode=code)
            return self._json({"errcode": code, "errmsg": "scripted error"})
        body = orjson.loads(raw)
        msgtype = body.get("msgtype")
        content = (body.get(msgtype) or {}).get("content", "")
        limit = 2048 if msgtype == "text" else 4096
        if msgtype not in ("text", "markdown") or not content:
            self._log("wecom", False, key=key)
            return self._json({"errcode": 40008, "errmsg": "invalid message type"})
        if len(content.encode()) > limit:
            self._log("wecom", False, key=key)
            return self._json({"errcode": 40058, "errmsg": "content exceed max length"})
        self._log("wecom", True, key=key, body=body)
        return self._json({"errcode": 0, "errmsg": "ok"})

    # -- WxPusher --------------------------------------------------------------------------

    async def _wxpusher(self, request: web.Request) -> web.Response:
        b = await self._behaviour("wxpusher")
        if isinstance(b, web.Response):
            self._log("wxpusher", False, behaviour="transport")
            return b
        body = orjson.loads(await request.read())
        if body.get("appToken") not in self.wxpusher_tokens:
            self._log("wxpusher", False)
            return self._json(
                {"code": 1001, "msg": "appToken不正确", "data": None, "success": False}
            )
        data = [
            {"uid": uid, "messageId": 1000 + i, "code": 1000, "status": "创建发送任务成功"}
            for i, uid in enumerate(body.get("uids") or [])
        ]
        self._log("wxpusher", True, body=body)
        return self._json({"code": 1000, "msg": "处理成功", "data": data, "success": True})

    # -- Aliyun SendSms --------------------------------------------------------------------

    async def _aliyun(self, request: web.Request) -> web.Response:
        b = await self._behaviour("aliyun")
        if isinstance(b, web.Response):
            self._log("aliyun", False, behaviour="transport")
            return b
        form = dict(await request.post())
        params = {k: str(v) for k, v in form.items()}
        rid = pysecrets.token_hex(8).upper()
        signature = params.pop("Signature", "")
        secret = self.aliyun_keys.get(params.get("AccessKeyId", ""))
        if secret is None:
            self._log("aliyun", False, params=params)
            return self._json(
                {"Code": "InvalidAccessKeyId.NotFound", "Message": "Specified access key is not "
                 "found.", "RequestId": rid}, 404)  # fmt: skip
        if aliyun_signature(secret, request.method, params) != signature:
            self._log("aliyun", False, params=params)
            return self._json(
                {"Code": "SignatureDoesNotMatch", "Message": "Specified signature is not "
                 "matched with our calculation.", "RequestId": rid}, 400)  # fmt: skip
        if b == "limit":
            self._log("aliyun", False, params=params)
            return self._json(
                {"Code": "isv.BUSINESS_LIMIT_CONTROL", "Message": "触发分钟级流控Permits:1",
                 "RequestId": rid})  # fmt: skip
        if params.get("Action") != "SendSms" or params.get("Version") != "2017-05-25":
            self._log("aliyun", False, params=params)
            return self._json({"Code": "InvalidAction", "Message": "bad action", "RequestId": rid})
        self._log("aliyun", True, params=params)
        return self._json(
            {"Code": "OK", "Message": "OK", "BizId": f"{rid[:10]}^0", "RequestId": rid}
        )

    # -- Twilio ----------------------------------------------------------------------------

    async def _twilio(self, request: web.Request) -> web.Response:
        sid = request.match_info["sid"]
        b = await self._behaviour("twilio")
        if isinstance(b, web.Response):
            self._log("twilio", False, behaviour="transport")
            return b
        auth = request.headers.get("Authorization", "")
        expected = self.twilio_accounts.get(sid)
        given = ""
        if auth.startswith("Basic "):
            given = base64.b64decode(auth[6:]).decode(errors="replace")
        if expected is None or given != f"{sid}:{expected}":
            self._log("twilio", False)
            return self._json(
                {"code": 20003, "message": "Authenticate", "more_info":
                 "https://www.twilio.com/docs/errors/20003", "status": 401}, 401)  # fmt: skip
        form = {k: str(v) for k, v in (await request.post()).items()}
        to = form.get("To", "")
        if not to.startswith("+") or not to[1:].isdigit():
            self._log("twilio", False, form=form)
            return self._json(
                {"code": 21211, "message": f"The 'To' number {to} is not a valid phone number.",
                 "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400},
                400)  # fmt: skip
        msid = "SM" + pysecrets.token_hex(16)
        self._log("twilio", True, form=form)
        return self._json(
            {"sid": msid, "account_sid": sid, "to": to, "from": form.get("From"),
             "body": form.get("Body"), "status": "queued", "num_segments": "1",
             "error_code": None, "error_message": None,
             "uri": f"/2010-04-01/Accounts/{sid}/Messages/{msid}.json"}, 201)  # fmt: skip


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A throw-away certificate for localhost (openssl CLI), for STARTTLS tests."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", "/CN=localhost"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


class _Handler:
    def __init__(self, owner: FakeSmtp) -> None:
        self.owner = owner

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:
        if address.endswith("@refused.invalid"):
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.owner.lock:
            self.owner.messages.append(message_from_bytes(envelope.content))
            self.owner.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
            self.owner.tls_used.append(session.ssl is not None)
        return "250 Message accepted for delivery"


class FakeSmtp:
    """aiosmtpd on a free port; ``starttls=True`` offers (and requires) STARTTLS with a
    self-signed certificate; ``password`` enables AUTH PLAIN/LOGIN for ``username``."""

    def __init__(
        self, *, starttls: bool = False, username: str = "oms", password: str | None = None
    ) -> None:
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.tls_used: list[bool] = []
        self.lock = threading.Lock()
        self.starttls = starttls
        self.username, self.password = username, password
        self.port = 0
        self._controller: Any = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    def start(self) -> FakeSmtp:
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult, LoginPassword

        from oms_dev.devstack.net import free_port

        kwargs: dict[str, Any] = {}
        if self.starttls:
            self._tmp = tempfile.TemporaryDirectory()
            cert, key = self_signed_cert(Path(self._tmp.name))
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(cert, key)
            kwargs.update(tls_context=context, require_starttls=True)
        if self.password is not None:
            user, password = self.username, self.password

            def authenticator(
                server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
            ) -> AuthResult:
                ok = isinstance(auth_data, LoginPassword) and (
                    auth_data.login.decode() == user and auth_data.password.decode() == password
                )
                return AuthResult(success=ok, handled=False)

            kwargs.update(authenticator=authenticator, auth_require_tls=self.starttls)
        self.port = free_port()
        self._controller = Controller(
            _Handler(self), hostname="127.0.0.1", port=self.port, **kwargs
        )
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            with contextlib.suppress(Exception):
                self._controller.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> FakeSmtp:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def wait_for(self, count: int, within: float = 20.0) -> list[EmailMessage]:
        """Wait until ``count`` messages arrived; returns them."""
        async with asyncio.timeout(within):
            while len(self.messages) < count:  # noqa: ASYNC110 - filled by aiosmtpd's thread
                await asyncio.sleep(0.05)
        return list(self.messages)


async def _serve() -> None:  # pragma: no cover - manual use
    providers = await FakeProviders().start(8899)
    providers.wecom_keys.add(WECOM_KEY_EXAMPLE)
    smtp = FakeSmtp().start()
    print(f"providers on {providers.base_url} (wecom key {WECOM_KEY_EXAMPLE}); smtp on {smtp.port}")
    try:
        await asyncio.Event().wait()
    finally:
        smtp.stop()
        await providers.stop()


if __name__ == "__main__":  # pragma: no cover
    asyncio.run(_serve())
