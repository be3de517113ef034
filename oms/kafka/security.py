"""How every Kafka client of the OMS connects: one :class:`KafkaConnection` built from the
settings and the secrets store, turned into each library's options.

| library | options |
|---|---|
| aiokafka (producers, consumers, the admin client) | :meth:`KafkaConnection.aiokafka` |
| confluent-kafka (the sink's consumer) | :meth:`KafkaConnection.confluent` |
| Faust (the worker, the position keeper) | :meth:`KafkaConnection.faust` |

``PLAINTEXT`` (the default) gives exactly the options the clients had before transport
security existed. ``SSL`` verifies the broker against ``kafka.ca_file``; ``SASL_SSL`` also
logs in as ``kafka.username`` (SCRAM-SHA-512 by default) with the password from the secrets
store (:func:`oms.secrets.kafka_password`). The password is kept out of ``repr`` and out of
every error this module raises.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from aiokafka.helpers import create_ssl_context
from faust.auth import SASLCredentials, SSLCredentials
from faust.types.auth import CredentialsT

from oms.secrets import KAFKA_PASSWORD_ENV, kafka_password
from oms.settings import KafkaSaslMechanism, KafkaSecurityProtocol, Settings


class KafkaSecurityError(Exception):
    """The Kafka transport settings cannot be used (a missing password or file)."""


@dataclass(frozen=True)
class KafkaConnection:
    """Where a Kafka client connects and how it proves who it is.

    A bare ``KafkaConnection("host:port")`` is a plaintext connection (tests, benchmarks and
    tools that talk to a development broker).
    """

    bootstrap: str
    security_protocol: KafkaSecurityProtocol = "PLAINTEXT"
    sasl_mechanism: KafkaSaslMechanism = "SCRAM-SHA-512"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    def __post_init__(self) -> None:
        if self.security_protocol == "SASL_SSL" and not (self.username and self.password):
            raise KafkaSecurityError(
                f"SASL_SSL needs a username and its password (user {self.username!r})"
            )

    def __repr__(self) -> str:
        return (
            f"KafkaConnection(bootstrap={self.bootstrap!r}, "
            f"security_protocol={self.security_protocol!r}, username={self.username!r})"
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> KafkaConnection:
        """The connection the settings describe, its password from the secrets store.

        Raises :class:`KafkaSecurityError` when SASL is asked for and the store has no
        password for the user.
        """
        k = settings.kafka
        password = None
        if k.security_protocol == "SASL_SSL":
            if not k.username:
                raise KafkaSecurityError(
                    "kafka.username (OMS_KAFKA__USERNAME) is required with SASL_SSL"
                )
            password = kafka_password(k.username, settings.resolved_secrets_file)
            if not password:
                raise KafkaSecurityError(
                    f"no Kafka password for user {k.username!r}: set {KAFKA_PASSWORD_ENV} or "
                    f"kafka_users.{k.username} in {settings.resolved_secrets_file}"
                )
        return cls(
            bootstrap=k.bootstrap,
            security_protocol=k.security_protocol,
            sasl_mechanism=k.sasl_mechanism,
            username=k.username,
            password=password,
            ca_file=k.ca_file,
            cert_file=k.cert_file,
            key_file=k.key_file,
        )

    def as_user(self, username: str, password: str) -> KafkaConnection:
        """The same broker and TLS settings, logged in as another principal."""
        return KafkaConnection(
            bootstrap=self.bootstrap,
            security_protocol=self.security_protocol,
            sasl_mechanism=self.sasl_mechanism,
            username=username,
            password=password,
            ca_file=self.ca_file,
            cert_file=self.cert_file,
            key_file=self.key_file,
        )

    @property
    def uses_tls(self) -> bool:
        """True for SSL and SASL_SSL."""
        return self.security_protocol != "PLAINTEXT"

    @cached_property
    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context of every client of this connection (None for PLAINTEXT): the
        broker verified against ``ca_file`` (or the system's CAs), host name checked."""
        if not self.uses_tls:
            return None
        for path in (self.ca_file, self.cert_file, self.key_file):
            if path is not None and not path.is_file():
                raise KafkaSecurityError(f"Kafka TLS file not found: {path}")
        return create_ssl_context(
            cafile=str(self.ca_file) if self.ca_file else None,
            certfile=str(self.cert_file) if self.cert_file else None,
            keyfile=str(self.key_file) if self.key_file else None,
        )

    def aiokafka(self, **options: Any) -> dict[str, Any]:
        """Keyword arguments of an aiokafka producer, consumer or admin client:
        ``bootstrap_servers``, the security options, then ``options``."""
        kwargs: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap,
            "security_protocol": self.security_protocol,
        }
        if self.uses_tls:
            kwargs["ssl_context"] = self.ssl_context
        if self.security_protocol == "SASL_SSL":
            kwargs.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.username,
                sasl_plain_password=self.password,
            )
        kwargs.update(options)
        return kwargs

    def confluent(self, config: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """A confluent-kafka (librdkafka) configuration: ``bootstrap.servers``, the security
        properties, then ``config``."""
        out: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap,
            "security.protocol": self.security_protocol.lower(),
        }
        if self.uses_tls:
            if self.ca_file is not None:
                out["ssl.ca.location"] = str(self.ca_file)
            if self.cert_file is not None and self.key_file is not None:
                out["ssl.certificate.location"] = str(self.cert_file)
                out["ssl.key.location"] = str(self.key_file)
            out["ssl.endpoint.identification.algorithm"] = "https"
        if self.security_protocol == "SASL_SSL":
            out.update(
                {
                    "sasl.mechanisms": self.sasl_mechanism,
                    "sasl.username": self.username,
                    "sasl.password": self.password,
                }
            )
        out.update(config or {})
        return out

    def faust_credentials(self) -> CredentialsT | None:
        """Faust's ``broker_credentials`` (None for PLAINTEXT)."""
        if self.security_protocol == "SASL_SSL":
            return SASLCredentials(
                username=self.username,
                password=self.password,
                ssl_context=self.ssl_context,
                mechanism=self.sasl_mechanism,
            )
        if self.security_protocol == "SSL":
            assert self.ssl_context is not None
            return SSLCredentials(self.ssl_context)
        return None

    def faust(self) -> dict[str, Any]:
        """Faust app options: ``broker`` and, when secured, ``broker_credentials``."""
        options: dict[str, Any] = {"broker": f"kafka://{self.bootstrap}"}
        credentials = self.faust_credentials()
        if credentials is not None:
            options["broker_credentials"] = credentials
        return options


def as_connection(target: KafkaConnection | str) -> KafkaConnection:
    """``target`` itself, or a plaintext connection to the ``host:port`` it names."""
    return target if isinstance(target, KafkaConnection) else KafkaConnection(target)
