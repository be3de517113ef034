"""The secure mode of the local broker: TLS certificates made here, SCRAM users, ACLs on.

:class:`BrokerSecurity` holds what a SASL_SSL broker needs: a local CA and a certificate for
``127.0.0.1``/``localhost`` signed by it (PEM files, made with ``cryptography``), and the
passwords of every principal, kept in the devstack's secrets file (``kafka_users``, mode
0600) and never printed. It renders the broker's configuration (a SASL_SSL client listener
with SCRAM-SHA-512, the controller listener on SASL PLAIN, the standard authorizer refusing
whatever no ACL allows) and the ``--add-scram`` arguments that create the users when the
storage is formatted, and :func:`ensure_scram_users` adds the users a running broker lacks
(a desk configured after the storage was formatted).
"""

from __future__ import annotations

import datetime
import ipaddress
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka.admin import (
    AdminClient,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from oms.kafka.acls import COMPONENT_PRINCIPALS
from oms.kafka.security import KafkaConnection
from oms.secrets import load_kafka_users, write_kafka_users
from oms.settings import Settings

# The broker's own principals (inter-broker and controller traffic) and the tooling's admin:
# super users, allowed everything without ACLs.
BROKER_USER = "broker"
CONTROLLER_USER = "controller"
ADMIN_USER = "oms-admin"
SUPER_USERS = (BROKER_USER, CONTROLLER_USER, ADMIN_USER)

_VALID_DAYS = 825
# Kafka's default for SCRAM-SHA-512 credentials (kafka-storage format --add-scram).
_SCRAM_ITERATIONS = 4096


def ensure_scram_users(admin: KafkaConnection, passwords: Mapping[str, str]) -> list[str]:
    """Create the SCRAM-SHA-512 credentials of every user of ``passwords`` the broker does
    not know yet, as ``admin`` (blocking); returns who was added. Users the broker knows keep
    their credentials: the secrets file and the broker agree from the first format on."""
    client = AdminClient(admin.confluent({"log_level": 4}))
    every_user = client.describe_user_scram_credentials()  # None: one future for all users
    assert not isinstance(every_user, dict)
    known = set(every_user.result(timeout=60))
    wanted = {u: p for u, p in passwords.items() if u != CONTROLLER_USER and u not in known}
    if not wanted:
        return []
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, _SCRAM_ITERATIONS)
    upserts = [UserScramCredentialUpsertion(u, info, p.encode()) for u, p in wanted.items()]
    for future in client.alter_user_scram_credentials(upserts).values():  # type: ignore[arg-type]
        future.result(timeout=60)
    return sorted(wanted)


@dataclass(frozen=True)
class BrokerSecurity:
    """TLS files and user passwords of a secure local broker (``tls_dir`` holds the PEMs)."""

    tls_dir: Path
    passwords: Mapping[str, str] = field(repr=False)

    @property
    def ca_file(self) -> Path:
        """The local CA's certificate: what clients verify the broker with."""
        return self.tls_dir / "ca.pem"

    @property
    def keystore_file(self) -> Path:
        """The broker's private key and certificate chain, one PEM file (Kafka's PEM
        keystore)."""
        return self.tls_dir / "broker.pem"

    @classmethod
    def ensure(
        cls, tls_dir: Path, secrets_file: Path, users: Iterable[str], host: str = "127.0.0.1"
    ) -> BrokerSecurity:
        """Certificates in ``tls_dir`` (made once) and a password for every user of ``users``
        and the super users (kept ones from ``secrets_file``, new ones generated and
        written there)."""
        ensure_certificates(tls_dir, host)
        known = load_kafka_users(secrets_file)
        wanted = [*SUPER_USERS, *users]
        missing = [u for u in wanted if u not in known]
        if missing:
            known.update({u: secrets.token_urlsafe(24) for u in missing})
            write_kafka_users(secrets_file, known)
        return cls(tls_dir, {u: known[u] for u in dict.fromkeys(wanted)})

    @classmethod
    def for_settings(cls, settings: Settings, tls_dir: Path) -> BrokerSecurity:
        """:meth:`ensure` for every component's principal and every desk of ``settings``,
        the passwords in the settings' secrets file."""
        users = [*COMPONENT_PRINCIPALS.values(), *settings.desks]
        return cls.ensure(tls_dir, settings.resolved_secrets_file, users)

    def server_properties(self, host: str, port: int, controller_port: int) -> dict[str, str]:
        """What a secure broker adds to (and overrides in) the plaintext configuration."""
        controller = self.passwords[CONTROLLER_USER]
        broker = self.passwords[BROKER_USER]
        plain = (
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'username="{CONTROLLER_USER}" password="{controller}" '
            f'user_{CONTROLLER_USER}="{controller}";'
        )
        scram = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{BROKER_USER}" password="{broker}";'
        )
        return {
            "listeners": f"SASL_SSL://{host}:{port},CONTROLLER://{host}:{controller_port}",
            "advertised.listeners": f"SASL_SSL://{host}:{port}",
            "inter.broker.listener.name": "SASL_SSL",
            "listener.security.protocol.map": "SASL_SSL:SASL_SSL,CONTROLLER:SASL_PLAINTEXT",
            # SCRAM users live in the metadata log, which the controller serves: its own
            # listener authenticates with PLAIN against the static user in its JAAS config.
            "sasl.mechanism.controller.protocol": "PLAIN",
            "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
            "listener.name.controller.plain.sasl.jaas.config": plain,
            "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
            "listener.name.sasl_ssl.sasl.enabled.mechanisms": "SCRAM-SHA-512",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": scram,
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(self.keystore_file),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.ca_file),
            "ssl.client.auth": "none",
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "allow.everyone.if.no.acl.found": "false",
            "super.users": ";".join(f"User:{u}" for u in SUPER_USERS),
        }

    def scram_arguments(self) -> list[str]:
        """``--add-scram`` arguments of ``kafka-storage format`` creating every SCRAM user
        (all but the controller's PLAIN one)."""
        args: list[str] = []
        for user, password in self.passwords.items():
            if user != CONTROLLER_USER:
                args += ["--add-scram", f"SCRAM-SHA-512=[name={user},password={password}]"]
        return args

    def redact(self, text: str) -> str:
        """``text`` with every password replaced by ``***`` (tool output shown on errors)."""
        for password in self.passwords.values():
            text = text.replace(password, "***")
        return text

    def connection(self, bootstrap: str, user: str = ADMIN_USER) -> KafkaConnection:
        """A SASL_SSL connection to the broker as ``user`` (the admin by default)."""
        return KafkaConnection(
            bootstrap,
            security_protocol="SASL_SSL",
            username=user,
            password=self.passwords[user],
            ca_file=self.ca_file,
        )


def ensure_certificates(tls_dir: Path, host: str = "127.0.0.1") -> None:
    """A local CA (``ca.pem``) and a broker certificate for ``host``, ``127.0.0.1`` and
    ``localhost`` signed by it (``broker.pem``: key then chain), made once; readable by the
    owner only."""
    if (tls_dir / "ca.pem").exists() and (tls_dir / "broker.pem").exists():
        return
    tls_dir.mkdir(parents=True, exist_ok=True)
    tls_dir.chmod(0o700)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "oms devstack local CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=_VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    for ip in dict.fromkeys(["127.0.0.1", host]):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(ip)))
        except ValueError:
            names.append(x509.DNSName(ip))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=_VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    # Kafka's PEM keystore reads an unencrypted PKCS#8 key followed by the chain.
    key_pem = key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write_private(
        tls_dir / "broker.pem", key_pem + cert.public_bytes(pem) + ca_cert.public_bytes(pem)
    )
    _write_private(tls_dir / "ca.pem", ca_cert.public_bytes(pem))


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.chmod(0o600)
    tmp.replace(path)
