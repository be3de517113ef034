"""The one place every Kafka client's connection options come from (no broker needed)."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from faust.auth import SASLCredentials, SSLCredentials
from pydantic import ValidationError

from oms.kafka.security import KafkaConnection, KafkaSecurityError, as_connection
from oms.secrets import KAFKA_PASSWORD_ENV, write_kafka_users
from oms.settings import KafkaSettings, Settings
from oms_dev.devstack.kafka.secure import ensure_certificates


@pytest.fixture
def tls(tmp_path: Path) -> Path:
    ensure_certificates(tmp_path / "tls")
    return tmp_path / "tls"


def sasl_settings(tmp_path: Path, tls: Path, user: str = "oms-worker") -> Settings:
    return Settings(
        data_dir=tmp_path,
        kafka=KafkaSettings(
            bootstrap="127.0.0.1:9093",
            security_protocol="SASL_SSL",
            username=user,
            ca_file=tls / "ca.pem",
        ),
    )


def test_plaintext_gives_the_options_clients_always_had() -> None:
    kafka = KafkaConnection.from_settings(Settings())
    assert kafka.aiokafka(acks="all") == {
        "bootstrap_servers": "127.0.0.1:9092",
        "security_protocol": "PLAINTEXT",
        "acks": "all",
    }
    assert kafka.confluent({"group.id": "g"}) == {
        "bootstrap.servers": "127.0.0.1:9092",
        "security.protocol": "plaintext",
        "group.id": "g",
    }
    assert kafka.faust() == {"broker": "kafka://127.0.0.1:9092"}
    assert as_connection("h:1") == KafkaConnection("h:1")


def test_sasl_ssl_options_for_every_library(
    tmp_path: Path, tls: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KAFKA_PASSWORD_ENV, raising=False)
    settings = sasl_settings(tmp_path, tls)
    write_kafka_users(settings.resolved_secrets_file, {"oms-worker": "pw-worker", "x": "pw-x"})
    kafka = KafkaConnection.from_settings(settings)

    options = kafka.aiokafka(linger_ms=1)
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "oms-worker"
    assert options["sasl_plain_password"] == "pw-worker"
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    assert options["ssl_context"].check_hostname
    assert options["linger_ms"] == 1

    conf = kafka.confluent({"group.id": "g"})
    assert conf["security.protocol"] == "sasl_ssl"
    assert conf["sasl.mechanisms"] == "SCRAM-SHA-512"
    assert (conf["sasl.username"], conf["sasl.password"]) == ("oms-worker", "pw-worker")
    assert conf["ssl.ca.location"] == str(tls / "ca.pem")

    credentials = kafka.faust()["broker_credentials"]
    assert isinstance(credentials, SASLCredentials)
    assert credentials.username == "oms-worker"
    assert credentials.password == "pw-worker"
    assert credentials.protocol.value == "SASL_SSL"
    assert credentials.mechanism.value == "SCRAM-SHA-512"


def test_ssl_only_verifies_the_broker(tls: Path) -> None:
    kafka = KafkaConnection("h:1", security_protocol="SSL", ca_file=tls / "ca.pem")
    assert "sasl_mechanism" not in kafka.aiokafka()
    assert isinstance(kafka.faust_credentials(), SSLCredentials)
    assert "sasl.password" not in kafka.confluent()


def test_the_environment_password_wins_over_the_file(
    tmp_path: Path, tls: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = sasl_settings(tmp_path, tls)
    write_kafka_users(settings.resolved_secrets_file, {"oms-worker": "from-file"})
    monkeypatch.setenv(KAFKA_PASSWORD_ENV, "from-env")
    assert KafkaConnection.from_settings(settings).password == "from-env"


def test_a_missing_password_is_a_clear_error(
    tmp_path: Path, tls: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KAFKA_PASSWORD_ENV, raising=False)
    settings = sasl_settings(tmp_path, tls, user="nobody")
    with pytest.raises(KafkaSecurityError, match="no Kafka password for user 'nobody'"):
        KafkaConnection.from_settings(settings)


def test_sasl_needs_a_user_and_a_missing_ca_file_is_named(tmp_path: Path) -> None:
    # Settings load without one (a process that never connects shares the environment)...
    settings = Settings(data_dir=tmp_path, kafka=KafkaSettings(security_protocol="SASL_SSL"))
    # ... and a client is refused with the setting to fix named.
    with pytest.raises(KafkaSecurityError, match="OMS_KAFKA__USERNAME"):
        KafkaConnection.from_settings(settings)
    with pytest.raises(ValidationError, match="go together"):
        KafkaSettings(cert_file=tmp_path / "c.pem")
    kafka = KafkaConnection("h:1", security_protocol="SSL", ca_file=tmp_path / "none.pem")
    with pytest.raises(KafkaSecurityError, match=r"none\.pem"):
        kafka.aiokafka()


def test_the_password_is_never_shown(
    tmp_path: Path, tls: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KAFKA_PASSWORD_ENV, raising=False)
    settings = sasl_settings(tmp_path, tls)
    write_kafka_users(settings.resolved_secrets_file, {"oms-worker": "s3cret-pw"})
    kafka = KafkaConnection.from_settings(settings)
    shown = [repr(kafka), str(kafka), repr(settings), repr(kafka.faust_credentials())]
    assert all("s3cret-pw" not in text for text in shown)
    assert (tmp_path / "secrets.json").stat().st_mode & 0o077 == 0
