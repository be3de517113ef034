"""Email over SMTP with aiosmtplib: STARTTLS (587), implicit TLS (465) or plain (local relay),
AUTH when a password is configured; multipart plain text + HTML."""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import formatdate, make_msgid

import aiosmtplib

from oms.notify.channels.base import Channel, DeliveryError, Message
from oms.schemas import ReasonCode
from oms.schemas.notify_settings import ChannelKind


class EmailChannel(Channel):
    kind = ChannelKind.EMAIL

    def __init__(
        self,
        name: str,
        *,
        host: str,
        port: int,
        security: str,
        sender: str,
        recipients: list[str],
        username: str | None = None,
        password: str | None = None,
        verify_tls: bool = True,
        timeout_s: float = 10.0,
    ) -> None:
        super().__init__(name)
        self.host, self.port, self.security = host, port, security
        self.sender, self.recipients = sender, recipients
        self._username, self._password = username, password
        self._verify = verify_tls
        self._timeout = timeout_s

    def build(self, message: Message) -> EmailMessage:
        """The MIME message: plain text first, HTML as the preferred alternative."""
        mail = EmailMessage()
        mail["Subject"] = message.title
        mail["From"] = self.sender
        mail["To"] = ", ".join(self.recipients)
        mail["Date"] = formatdate(localtime=False)
        domain = self.sender.rsplit("@", 1)[-1]
        mail["Message-ID"] = make_msgid(
            idstring=message.idempotency_key[:60] or None, domain=domain
        )
        if message.emergency:
            mail["X-Priority"] = "1"
            mail["Importance"] = "high"
        mail.set_content(message.text)
        mail.add_alternative(message.html, subtype="html")
        return mail

    async def send(self, message: Message) -> str:
        mail = self.build(message)
        try:
            await aiosmtplib.send(
                mail,
                hostname=self.host,
                port=self.port,
                username=self._username if self._password else None,
                password=self._password,
                use_tls=self.security == "tls",
                start_tls=True if self.security == "starttls" else False,
                validate_certs=self._verify,
                timeout=self._timeout,
            )
        except (aiosmtplib.SMTPRecipientsRefused, aiosmtplib.SMTPRecipientRefused) as exc:
            raise DeliveryError(
                ReasonCode.INVALID_RECIPIENT, f"smtp refused the recipients: {exc}"
            ) from exc
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise DeliveryError(
                ReasonCode.PROVIDER_ERROR, f"smtp auth failed ({exc.code})"
            ) from exc
        except aiosmtplib.SMTPTimeoutError as exc:
            raise DeliveryError(
                ReasonCode.PROVIDER_TIMEOUT, "smtp server timed out", retryable=True
            ) from exc
        except aiosmtplib.SMTPResponseException as exc:
            # 4xx: transient by definition (RFC 5321); 5xx: permanent.
            raise DeliveryError(
                ReasonCode.PROVIDER_ERROR,
                f"smtp {exc.code} {exc.message[:200]}",
                retryable=400 <= exc.code < 500,
            ) from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise DeliveryError(
                ReasonCode.PROVIDER_ERROR, f"smtp: {type(exc).__name__}", retryable=True
            ) from exc
        return str(mail["Message-ID"])
