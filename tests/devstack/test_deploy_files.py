"""docker-compose.yml, Dockerfile, .dockerignore and k8s/ are valid and match the code.

Compose validation runs for real (no skip): ``docker compose config`` when the plugin exists,
else Debian's ``docker-compose`` (v1, needs no engine for ``config``), and in both cases a
JSON-schema check against the compose-spec schema that package ships. ``make test`` /
``.ci/run`` install the package when it is missing (``make tools``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from oms import healthcheck
from oms.kafka.admin import topic_specs
from oms.schemas.topics import Topic
from oms.secrets import KAFKA_PASSWORD_ENV, kafka_password
from oms.settings import KafkaSettings, Settings
from oms_dev.devstack import compose_secrets as compose_secrets_module

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
K8S = ROOT / "k8s"
# Shipped by Debian's docker-compose package (python3-compose).
COMPOSE_SPEC_CANDIDATES = [
    Path("/usr/lib/python3/dist-packages/compose/config/compose_spec.json"),
]
SYSTEM_PYTHON = "/usr/bin/python3"
INSTALL_HINT = "install it with `apt-get install -y docker-compose` (make tools does)"


def _yaml_docs(path: Path) -> list[Any]:
    """Parse YAML (all documents) with PyYAML from the venv or, failing that, Debian's."""
    try:
        import yaml
    except ModuleNotFoundError:
        pass
    else:
        with path.open() as fh:
            return [d for d in yaml.safe_load_all(fh) if d is not None]
    # PyYAML is not a project dependency; Debian's python3-yaml comes with docker-compose.
    if not Path(SYSTEM_PYTHON).exists():
        pytest.fail(f"no YAML parser: {INSTALL_HINT}")
    code = (
        "import json, sys, yaml\n"
        "docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]\n"
        "print(json.dumps(docs))\n"
    )
    proc = subprocess.run(
        [SYSTEM_PYTHON, "-c", code, str(path)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        pytest.fail(
            f"YAML parse of {path} failed (or no python3-yaml: {INSTALL_HINT}):\n{proc.stderr}"
        )
    docs: list[Any] = json.loads(proc.stdout)
    return docs


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    docs = _yaml_docs(COMPOSE)
    assert len(docs) == 1
    data: dict[str, Any] = docs[0]
    return data


def _compose_cli() -> list[str] | None:
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, text=True, check=False
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    v1 = shutil.which("docker-compose")
    return [v1] if v1 else None


@pytest.fixture(scope="module")
def compose_secrets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Secrets generated as `make compose-secrets` does, and the variables pointing at them."""
    directory = tmp_path_factory.mktemp("compose") / "secrets"
    env_path, secrets_path, grafana_path = compose_secrets_module.generate(directory)
    return {
        "OMS_COMPOSE_ENV_FILE": str(env_path),
        "OMS_COMPOSE_SECRETS_FILE": str(secrets_path),
        "OMS_COMPOSE_GRAFANA_ENV_FILE": str(grafana_path),
        "OMS_COMPOSE_KAFKA_DIR": str(directory / compose_secrets_module.KAFKA_DIR),
    }


def _compose_run(args: list[str], extra_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    cli = _compose_cli()
    if cli is None:
        pytest.fail(f"neither `docker compose` nor `docker-compose` found: {INSTALL_HINT}")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("COMPOSE_", "OMS_")) and k != "CLICKHOUSE_PASSWORD"
    }
    env.update(extra_env)
    return subprocess.run(
        [*cli, "-f", str(COMPOSE), *args], capture_output=True, text=True, check=False,
        cwd=ROOT, env=env,
    )  # fmt: skip


@pytest.mark.parametrize("profiles", [[], ["paper"], ["monitoring"], ["paper", "monitoring"]])
def test_compose_config_validates(compose_secrets: dict[str, str], profiles: list[str]) -> None:
    args = [a for p in profiles for a in ("--profile", p)]
    proc = _compose_run([*args, "config", "-q"], compose_secrets)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_compose_needs_the_generated_secrets(tmp_path: Path) -> None:
    """No secret is inline: without the env file the file does not even resolve."""
    proc = _compose_run(
        ["config", "-q"],
        {
            "OMS_COMPOSE_ENV_FILE": str(tmp_path / "missing.env"),
            "OMS_COMPOSE_SECRETS_FILE": str(tmp_path / "missing.json"),
            "OMS_COMPOSE_GRAFANA_ENV_FILE": str(tmp_path / "missing-grafana.env"),
            "OMS_COMPOSE_KAFKA_DIR": str(tmp_path / "missing-kafka"),
        },
    )
    assert proc.returncode != 0
    assert "missing.env" in proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def resolved_compose(compose_secrets: dict[str, str]) -> dict[str, Any]:
    """``compose config`` output: env files merged into each service's environment."""
    import yaml

    proc = _compose_run(
        ["--profile", "paper", "--profile", "monitoring", "config"], compose_secrets
    )
    assert proc.returncode == 0, proc.stderr
    data: dict[str, Any] = yaml.safe_load(proc.stdout)
    return data


def test_compose_matches_compose_spec_schema(compose: dict[str, Any]) -> None:
    schema_path = next((p for p in COMPOSE_SPEC_CANDIDATES if p.exists()), None)
    if schema_path is None:
        pytest.fail(f"compose-spec schema not found: {INSTALL_HINT}")
    schema = json.loads(schema_path.read_text())
    # The file names draft 2019-09 with a trailing '#' that jsonschema does not resolve.
    validator = jsonschema.Draft201909Validator(schema)
    validator.validate(compose)
    # The check has teeth: a misspelt key is rejected.
    broken = {
        **compose,
        "services": {
            **compose["services"],
            "worker": {**compose["services"]["worker"], "helthcheck": {}},
        },
    }
    assert not validator.is_valid(broken)


OMS_SERVICES = ("paper-exchange", "gateway", "worker", "sink", "positions", "notify", "fanout")
# Services that run once and exit (kafka-init: topics, users, ACLs); the others wait for it to
# have completed successfully, and it has no health to check.
ONE_SHOT = ("kafka-init",)
# Each service that uses Kafka and the principal it authenticates as.
KAFKA_PRINCIPALS = {
    "gateway": "oms-gateway",
    "worker": "oms-worker",
    "sink": "oms-sink",
    "positions": "oms-positions",
    "notify": "oms-notifier",
    "fanout": "oms-fanout",
    "kafka-exporter": "oms-monitor",
}
MONITORING = ("kafka-exporter", "prometheus", "grafana")
PROFILES = {"paper-exchange": ["paper"], **{name: ["monitoring"] for name in MONITORING}}
COMMANDS = {
    "paper-exchange": ["paper-exchange"],
    "gateway": ["gateway"],
    "worker": ["worker"],
    "sink": ["sink"],
    "positions": ["positions", "run"],
    "notify": ["notify", "run"],
    "fanout": ["fanout"],
}


def test_compose_services_profiles_and_start_order(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"kafka", "clickhouse", *ONE_SHOT, *OMS_SERVICES, *MONITORING}
    for name in ONE_SHOT:
        assert services[name]["restart"] == "no", name
    for name, svc in services.items():
        if name not in ONE_SHOT:
            assert "healthcheck" in svc and svc["healthcheck"]["test"], f"{name} has no healthcheck"
        image = svc["image"]
        if "${" not in image:
            assert ":" in image and not image.endswith(":latest"), f"{name}: unpinned {image}"
        assert svc.get("profiles", []) == PROFILES.get(name, []), name
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            # Waiting on a service only makes sense if it can say it is healthy (or, run
            # once, that it is done)...
            if dep in ONE_SHOT:
                assert cond["condition"] == "service_completed_successfully", (name, dep)
            else:
                assert cond["condition"] == "service_healthy", (name, dep)
                assert "healthcheck" in services[dep]
            # ...and is started with it: a dependency behind a profile the dependent
            # does not share would refuse to start (or pull in) the profile.
            assert set(services[dep].get("profiles", [])) <= set(svc.get("profiles", [])), (
                name,
                dep,
            )
    assert services["kafka"]["image"] == f"apache/kafka:{KafkaSettings().version}"
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    for name in ("gateway", "worker", "sink", "positions", "notify", "fanout", "kafka-exporter"):
        assert "kafka" in services[name]["depends_on"], name
        # ...and the users and ACLs it authenticates with.
        assert "kafka-init" in services[name]["depends_on"], name
    for name in ("sink", "positions"):
        assert "clickhouse" in services[name]["depends_on"], name
    assert services["grafana"]["depends_on"] == {"prometheus": {"condition": "service_healthy"}}
    for name, command in COMMANDS.items():
        assert services[name]["command"][: len(command)] == command, name
    # Several workers by default, and no fixed name/port that would stop replicas.
    worker = services["worker"]
    assert worker["deploy"]["replicas"] >= 2
    assert "container_name" not in worker and "ports" not in worker
    assert worker["deploy"]["replicas"] <= int(
        services["worker"]["environment"]["OMS_KAFKA__PARTITIONS"]
    )


SECRET_WORDS = ("SECRET", "PASSWORD", "SIGNING_KEY", "TOKEN", "CLICKHOUSE_URL")


def _inline_secrets(compose: dict[str, Any]) -> list[str]:
    found = []
    for name, svc in compose["services"].items():
        for key in svc.get("environment") or {}:
            # *_FILE variables hold paths to secrets, not secrets.
            if any(w in key for w in SECRET_WORDS) and not key.endswith("_FILE"):
                found.append(f"{name}: {key}")
    return found


def test_compose_has_no_inline_secrets(compose: dict[str, Any]) -> None:
    """Secret-looking variables never have a value in the file (nor a ${VAR:-default})."""
    text = COMPOSE.read_text()
    assert _inline_secrets(compose) == []
    leaky = json.loads(json.dumps(compose))
    leaky["services"]["worker"]["environment"]["OMS_ACCOUNT_DEMO_CLIENT_SECRET"] = "s3cret"
    assert _inline_secrets(leaky) == ["worker: OMS_ACCOUNT_DEMO_CLIENT_SECRET"]
    assert ":-paper-only" not in text and "oms-dev-only" not in text
    assert compose["secrets"]["oms_secrets"]["file"].startswith("${OMS_COMPOSE_SECRETS_FILE")
    for name in OMS_SERVICES:
        # The fan-out moves records only: no exchange or channel credentials.
        wanted = ["kafka_ca"] if name == "fanout" else ["oms_secrets", "kafka_ca"]
        assert compose["services"][name]["secrets"] == wanted, name
    for name, secret in compose["secrets"].items():
        assert secret["file"].startswith("${OMS_COMPOSE_"), name
    gitignored = (ROOT / ".gitignore").read_text().split()
    assert ".local" in gitignored  # where `make compose-secrets` writes them


def test_compose_secrets_generator(tmp_path: Path) -> None:
    """Fresh random values, readable by the containers' user, kept on a second run."""
    from oms.secrets import SecretStore, load_secrets_file, load_signing_keys

    first = compose_secrets_module.generate(tmp_path / "a")
    other = compose_secrets_module.generate(tmp_path / "b")
    env = dict(line.split("=", 1) for line in first[0].read_text().splitlines() if "=" in line)
    assert len(env["CLICKHOUSE_PASSWORD"]) >= 32
    assert env["OMS_CLICKHOUSE_URL"] == (
        f"http://oms:{env['CLICKHOUSE_PASSWORD']}@clickhouse:8123/oms"
    )
    assert first[0].read_text() != other[0].read_text()
    creds = load_secrets_file(first[1])["demo"]
    assert creds != load_secrets_file(other[1])["demo"]
    assert load_signing_keys(first[1])["demo"]
    assert SecretStore(secrets_file=first[1]).credentials("demo") == creds
    assert first[2].read_text() != other[2].read_text()
    assert "GF_SECURITY_ADMIN_PASSWORD=" in first[2].read_text()
    for path in first:
        assert path.stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "a").stat().st_mode & 0o777 == 0o700
    before = [p.read_text() for p in first]
    compose_secrets_module.generate(tmp_path / "a")
    assert [p.read_text() for p in first] == before


def test_compose_kafka_is_sasl_ssl_with_acls(compose: dict[str, Any]) -> None:
    """No listener without authentication and encryption, SCRAM for clients, certificates
    only for the broker's own and the admin's, nobody allowed what no ACL grants, and the
    one-shot kafka-init reading the generated users, ACLs and topics."""
    kafka = compose["services"]["kafka"]["environment"]
    protocols = dict(p.split(":") for p in kafka["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(protocols.values()) <= {"SASL_SSL", "SSL"}
    listeners = {entry.split("://")[0] for entry in kafka["KAFKA_LISTENERS"].split(",")}
    assert listeners == set(protocols)
    for name, protocol in protocols.items():
        if protocol == "SSL":  # certificates are the only way in there
            assert kafka[f"KAFKA_LISTENER_NAME_{name}_SSL_CLIENT_AUTH"] == "required", name
    assert protocols["CLIENTS"] == protocols["EXTERNAL"] == "SASL_SSL"
    assert kafka["KAFKA_SASL_ENABLED_MECHANISMS"] == "SCRAM-SHA-512"
    assert kafka["KAFKA_AUTHORIZER_CLASS_NAME"].endswith("StandardAuthorizer")
    assert kafka["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
    assert kafka["KAFKA_SUPER_USERS"] == "User:CN=kafka;User:CN=oms-admin"
    assert kafka["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    jaas = ROOT / "deploy" / "kafka" / "kafka_server_jaas.conf"
    assert "ScramLoginModule" in jaas.read_text()
    init = compose["services"]["kafka-init"]
    script = (ROOT / "deploy" / "kafka" / "init-security.sh").read_text()
    # The script reads the first four; the admin's settings (kafka_admin) the last two.
    read_by_script = ["kafka_admin", "kafka_topics", "kafka_users", "kafka_acls"]
    assert set(init["secrets"]) == {*read_by_script, "kafka_admin_keystore", "kafka_ca"}
    assert set(init["secrets"]) <= set(compose["secrets"])
    for secret in read_by_script:
        assert f"/run/secrets/{secret}" in script, secret
    assert init["depends_on"] == {"kafka": {"condition": "service_healthy"}}
    # Every Kafka client gets its own user's env file, and no two share one.
    files = {}
    for service, principal in KAFKA_PRINCIPALS.items():
        env_files = compose["services"][service]["env_file"]
        env_files = [env_files] if isinstance(env_files, str) else env_files
        [own] = [f for f in env_files if "OMS_COMPOSE_KAFKA_DIR" in f]
        assert own.endswith(f"/{principal}.env"), service
        files[service] = own
    assert len(set(files.values())) == len(files)


def test_compose_kafka_material_generator(tmp_path: Path) -> None:
    """The CA signs the broker's certificate for the names clients use, every principal has
    its own password (kept on a second run), and the ACLs and topics kafka-init applies are
    the table's and the code's."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import pkcs12

    from oms.kafka.acls import COMPONENT_PRINCIPALS, acl_rules
    from oms.kafka.admin import topic_specs

    directory = tmp_path / "kafka"
    paths = compose_secrets_module.generate_kafka(directory)
    ca = x509.load_pem_x509_certificate(paths["ca"].read_bytes())
    broker_dir = paths["broker"]
    password = (broker_dir / "keystore_creds").read_text()
    store = pkcs12.load_pkcs12((broker_dir / "kafka.keystore.p12").read_bytes(), password.encode())
    assert store.key is not None and store.cert is not None
    broker = store.cert.certificate
    broker.verify_directly_issued_by(ca)
    names = broker.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.DNSName)) == {"kafka", "localhost"}
    assert broker.subject.rfc4514_string() == "CN=kafka"  # the super user User:CN=kafka
    admin = (directory / "admin.properties").read_text()
    assert "security.protocol=SSL" in admin and "/run/secrets/kafka_admin_keystore" in admin
    users = dict(
        line.split(" ", 1)
        for line in paths["users"].read_text().splitlines()
        if line and not line.startswith("#")
    )
    desks = list(compose_secrets_module.DEFAULT_DESKS)
    assert set(users) == {*COMPONENT_PRINCIPALS.values(), *desks}
    assert len(set(users.values())) == len(users)
    for principal, secret in users.items():
        env = paths[f"{principal}.env"].read_text()
        assert f"OMS_KAFKA__USERNAME={principal}\n" in env
        assert f"OMS_KAFKA_PASSWORD={secret}\n" in env
    # The ACLs are the runtime table's for the compose desks, line by line.
    rules = acl_rules(compose_secrets_module.compose_settings())
    lines = paths["acls"].read_text().splitlines()
    assert [tuple(line.split(" ")) for line in lines] == [
        (r.principal, r.resource, r.pattern, r.name, r.operation.capitalize()) for r in rules
    ]
    assert {line.split(" ")[1] for line in lines} == {"topic", "group", "cluster"}
    assert {line.split(" ")[4] for line in lines} <= {"Read", "Write", "Create", "Describe"}
    assert "oms-monitor cluster literal kafka-cluster Describe" in lines
    assert "oms-positions group literal oms-positions-route Read" in lines
    topics = paths["topics"].read_text().splitlines()
    assert [line.split()[:2] for line in topics] == [
        [spec.name, str(spec.partitions)] for spec in topic_specs(Settings())
    ]
    assert "oms.risk-controls 8 cleanup.policy=compact" in topics
    assert directory.stat().st_mode & 0o777 == 0o700
    assert (directory / "users").stat().st_mode & 0o777 == 0o644
    before = {name: path.read_bytes() for name, path in paths.items() if path.is_file()}
    again = compose_secrets_module.generate_kafka(directory)
    assert {name: path.read_bytes() for name, path in again.items() if path.is_file()} == before


def test_every_kafka_variable_of_the_deploy_files_is_one_the_code_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every ``OMS_KAFKA*`` name in docker-compose.yml, k8s/, deploy/ and the env files
    ``make compose-secrets`` writes is read: the password's by the secrets store, every other
    one sets its field of the Kafka settings. A name the code ignores would leave a service
    on its defaults (no user, the system's CAs) without a word."""
    generated = compose_secrets_module.generate_kafka(tmp_path / "kafka")
    files = [
        COMPOSE,
        *K8S.rglob("*.yaml"),
        *(ROOT / "deploy").rglob("*"),
        *(path for path in generated.values() if path.suffix == ".env"),
    ]
    names = {
        name
        for path in files
        if path.is_file()
        for name in re.findall(r"OMS_KAFKA[A-Z0-9_]*", path.read_text())
    }
    assert {"OMS_KAFKA__USERNAME", "OMS_KAFKA__CA_FILE", KAFKA_PASSWORD_ENV} <= names
    for key in list(os.environ):
        if key.startswith("OMS_"):
            monkeypatch.delenv(key)
    for name in sorted(names):
        if name == KAFKA_PASSWORD_ENV:
            monkeypatch.setenv(name, "the-password")
            assert kafka_password("anyone", tmp_path / "no-secrets.json") == "the-password"
        else:
            field = name.removeprefix("OMS_KAFKA__").lower()
            assert name.startswith("OMS_KAFKA__") and field in KafkaSettings.model_fields, name
            default = KafkaSettings.model_fields[field].default
            monkeypatch.setenv(name, "x" if default is None else str(default))
            assert field in Settings().kafka.model_fields_set, name
        monkeypatch.delenv(name)


def test_k8s_kafka_users_are_generated_from_the_acl_table() -> None:
    """kafka-users.yaml is what `make k8s-users` writes now: nobody edited it by hand and the
    table did not change since."""
    from oms_dev.devstack.k8s_users import USERS_FILE, k8s_settings, render_kafka_users

    assert USERS_FILE == K8S / "base" / "kafka-users.yaml"
    assert USERS_FILE.read_text() == render_kafka_users(k8s_settings()), "run `make k8s-users`"


def test_compose_desk_acls_cover_only_their_accounts() -> None:
    """A desk writes requests and reads its own accounts' topics: no shared output topic,
    no other account, no other desk's groups."""
    from oms.kafka.acls import acl_rules

    settings = compose_secrets_module.compose_settings({"desk-x": ["a1", "a2"], "desk-y": ["b1"]})
    lines = compose_secrets_module.acl_lines(acl_rules(settings)).splitlines()
    x = {tuple(line.split(" ")[1:]) for line in lines if line.startswith("desk-x ")}
    assert x == {
        ("topic", "literal", "oms.order-requests", "Write"),
        ("topic", "prefixed", "oms.acct.a1.", "Read"),
        ("topic", "prefixed", "oms.acct.a1.", "Describe"),
        ("topic", "prefixed", "oms.acct.a2.", "Read"),
        ("topic", "prefixed", "oms.acct.a2.", "Describe"),
        ("group", "prefixed", "desk-x.", "Read"),
    }


@pytest.mark.parametrize("service", OMS_SERVICES)
def test_compose_env_reaches_settings(
    resolved_compose: dict[str, Any],
    compose_secrets: dict[str, str],
    service: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The resolved environment of each OMS service (file + env file) really sets the fields
    it means, and the secrets file it mounts gives the account's credentials."""
    from oms.secrets import load_secrets_file

    for key in list(os.environ):
        if key.startswith("OMS_"):
            monkeypatch.delenv(key)
    svc = resolved_compose["services"][service]
    env = svc["environment"]
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    settings = Settings()
    assert settings.kafka.bootstrap == "kafka:19092"
    assert settings.kafka.partitions == 8
    assert settings.exchange.url == "ws://paper-exchange:8765/ws/api/v2"
    if service in KAFKA_PRINCIPALS:
        # Its own Kafka user, from its own env file, over SASL_SSL against the private CA.
        assert env["OMS_KAFKA__USERNAME"] == KAFKA_PRINCIPALS[service]
        assert len(env["OMS_KAFKA_PASSWORD"]) >= 32
        assert env["OMS_KAFKA__SECURITY_PROTOCOL"] == "SASL_SSL"
        assert env["OMS_KAFKA__SASL_MECHANISM"] == "SCRAM-SHA-512"
        assert env["OMS_KAFKA__CA_FILE"] == "/run/secrets/kafka_ca"
        # ... which the settings and the secrets store really read.
        assert settings.kafka.username == KAFKA_PRINCIPALS[service]
        assert settings.kafka.ca_file == Path("/run/secrets/kafka_ca")
        assert kafka_password(KAFKA_PRINCIPALS[service]) == env[KAFKA_PASSWORD_ENV]
    if service == "fanout":
        # Nothing but its Kafka user: it never queries ClickHouse.
        assert settings.clickhouse_url is None and "CLICKHOUSE_PASSWORD" not in env
        assert settings.access.per_account_topics
        assert settings.desks == {
            desk: list(accounts) for desk, accounts in compose_secrets_module.DEFAULT_DESKS.items()
        }
        return
    assert settings.clickhouse_url is not None
    assert settings.clickhouse_url.startswith("http://oms:")
    assert settings.clickhouse_url.endswith("@clickhouse:8123/oms")
    assert env["CLICKHOUSE_PASSWORD"] in settings.clickhouse_url
    assert str(settings.data_dir) == "/data"
    assert settings.log_json is True
    assert settings.accounts == ["demo"]
    assert str(settings.resolved_secrets_file) == "/run/secrets/oms_secrets"
    assert "demo" in load_secrets_file(Path(compose_secrets["OMS_COMPOSE_SECRETS_FILE"]))
    if service == "sink":
        assert settings.sink.query_host == "0.0.0.0"
    if service == "notify":
        assert settings.notify.web_host == "0.0.0.0"
    # ClickHouse gets the very password the URL carries.
    assert (
        resolved_compose["services"]["clickhouse"]["environment"]["CLICKHOUSE_PASSWORD"]
        == (env["CLICKHOUSE_PASSWORD"])
    )


# --------------------------------------------------------------------------- monitoring

MONITORING_DIR = ROOT / "deploy" / "monitoring"
# Metric names of the Kafka exporter (danielqsj/kafka_exporter) used by the dashboard.
EXPORTER_METRICS = {"kafka_consumergroup_lag", "up"}


def _service_port(svc: dict[str, Any]) -> int | None:
    command = svc.get("command") or []
    for flag in ("--web-port", "--port"):
        if flag in command:
            return int(command[command.index(flag) + 1])
    for arg in command:
        if isinstance(arg, str) and arg.startswith("--web.listen-address=:"):
            return int(arg.rsplit(":", 1)[1])
    return None


def test_prometheus_targets_exist_in_compose(compose: dict[str, Any]) -> None:
    """Every scrape target is a compose service on the port that service listens on, and the
    file is mounted where the prometheus command reads it."""
    import yaml

    services = compose["services"]
    config = yaml.safe_load((MONITORING_DIR / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert {"oms-worker", "oms-notify", "kafka"} <= set(jobs)
    targets: list[tuple[str, int]] = []
    for job in jobs.values():
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                targets.append((host, int(port)))
        for sd in job.get("dns_sd_configs", []):
            assert sd["type"] == "A"
            targets.extend((name, int(sd["port"])) for name in sd["names"])
    assert targets
    for host, port in targets:
        if host == "localhost":
            continue
        assert host in services, f"scrape target {host} is not a compose service"
        assert _service_port(services[host]) == port, (host, port)
        # The scraper reaches it: its profile is active whenever monitoring is.
        assert set(services[host].get("profiles", [])) <= {"monitoring"}, host
    assert ("worker", Settings().worker.web_port) in targets
    mounts = services["prometheus"]["volumes"]
    assert "./deploy/monitoring/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in mounts
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]


def _known_metric_names() -> set[str]:
    """Sample names the OMS really exports: the worker's collector and the notifier's."""
    from oms.metrics.collector import OrderMetricsCollector
    from oms.notify.prometheus import render

    names: set[str] = set()
    collector = OrderMetricsCollector()
    for family in collector.registry.collect():
        # Labelled families have no samples until used: derive their series names.
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
        names.update(family.name + s for s in suffixes.get(family.type, [""]))
        names.update(s.name for s in family.samples)
    stats = {
        "counters": {"consumed": 1},
        "delivery": {
            "notifications": {"delivered": 1, "undelivered": 0},
            "attempts": {"sent": 1},
            "by_channel": {"console:sent": 1},
            "success_rate": 1.0,
        },
        "pending": 0,
        "inflight": 0,
        "active_alerts": 0,
    }
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(render(stats).decode()):
        names.update(s.name for s in family.samples)
    return names


def test_grafana_dashboard_uses_real_metrics() -> None:
    """Every metric the dashboard queries exists in the code (or the Kafka exporter), every
    panel uses the provisioned datasource, and the provisioning points at the dashboard."""
    import re

    import yaml

    datasources = yaml.safe_load(
        (MONITORING_DIR / "grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"]
    uids = {d["uid"] for d in datasources}
    assert {d["url"] for d in datasources} == {"http://prometheus:9090"}
    providers = yaml.safe_load(
        (MONITORING_DIR / "grafana/provisioning/dashboards/oms.yml").read_text()
    )["providers"]
    assert providers[0]["options"]["path"] == "/etc/grafana/dashboards"
    dashboard = json.loads((MONITORING_DIR / "grafana/dashboards/oms.json").read_text())
    known = _known_metric_names() | EXPORTER_METRICS
    used: set[str] = set()
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] in uids, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] in uids
            names = set(re.findall(r"\b((?:oms|kafka)_[a-z_]+|up)\b(?=[{\[ )]|$)", target["expr"]))
            assert names, target["expr"]
            unknown = names - known
            assert not unknown, f"{panel['title']}: unknown metrics {unknown}"
            used |= names
    # What the dashboard must show.
    for required in (
        "oms_order_events_total",  # orders per state
        "oms_stage_latency_seconds_bucket",  # latency per stage
        "oms_queue_depth",  # queue depth
        "oms_notify_success_rate",  # notification success
        "kafka_consumergroup_lag",  # consumer lag
    ):
        assert required in used, required


def test_grafana_mounts_match_provisioning(compose: dict[str, Any]) -> None:
    volumes = compose["services"]["grafana"]["volumes"]
    for volume in volumes:
        source = volume.split(":")[0]
        if source.startswith("./"):
            assert (ROOT / source).is_dir(), source
    assert "./deploy/monitoring/grafana/dashboards:/etc/grafana/dashboards:ro" in volumes
    assert "./deploy/monitoring/grafana/provisioning:/etc/grafana/provisioning:ro" in volumes


# --------------------------------------------------------------------------- image


def test_dockerfile_is_pinned_non_root_with_healthcheck() -> None:
    text = (ROOT / "Dockerfile").read_text()
    froms = [line.split()[1] for line in text.splitlines() if line.startswith("FROM ")]
    # An exact patch release (3.11.N) of the slim image, never a floating tag.
    assert froms and all(re.fullmatch(r"python:3\.11\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", f)
                         for f in froms), froms  # fmt: skip
    assert "\nUSER oms\n" in text
    assert "HEALTHCHECK" in text and "oms.healthcheck" in text
    assert 'ENTRYPOINT ["oms"]' in text


def test_dockerignore_keeps_local_state_out_of_the_build_context(tmp_path: Path) -> None:
    """Docker's own .dockerignore matching (docker-py, shipped with docker-compose) over a
    context shaped like a developer's checkout: .local/ and .venv/ are left out, everything
    the Dockerfile copies stays in, the development package stays out."""
    import re as _re

    context = tmp_path / "ctx"
    files = [
        "Dockerfile", "pyproject.toml", "README.md", "oms/__init__.py", "oms/cli/main.py",
        ".local/secrets.json", ".local/compose/oms.env", ".local/kafka/data/x.log",
        ".venv/bin/python", ".venv/lib/site.py", "oms/__pycache__/main.cpython-311.pyc",
        ".git/HEAD", "bench/results/e2e.json", "oms_dev/__init__.py",
    ]  # fmt: skip
    for name in files:
        path = context / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    shutil.copy(ROOT / ".dockerignore", context / ".dockerignore")
    code = (
        "import json, sys\n"
        "from docker.utils.build import exclude_paths\n"
        "root = sys.argv[1]\n"
        "patterns = [l.strip() for l in open(root + '/.dockerignore')\n"
        "            if l.strip() and not l.startswith('#')]\n"
        "print(json.dumps(sorted(exclude_paths(root, patterns))))\n"
    )
    proc = subprocess.run(
        [SYSTEM_PYTHON, "-c", code, str(context)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, f"docker-py missing? {INSTALL_HINT}\n{proc.stderr}"
    included = set(json.loads(proc.stdout))
    for name in files:
        if name.startswith((".local/", ".venv/", ".git/")) or "__pycache__" in name:
            assert name not in included, f"{name} would be sent to the Docker daemon"
    assert not any(p.startswith((".local", ".venv")) for p in included)
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied = _re.findall(r"^COPY (?!--from)(.+) \S+$", dockerfile, flags=_re.M)
    for sources in copied:
        for source in sources.split():
            assert source in included, f"Dockerfile copies {source}, but it is ignored"
    assert "oms/cli/main.py" in included
    # The development package never reaches the image.
    assert not any(p.startswith("oms_dev") for p in included)


def test_worker_web_server_is_reachable_from_outside_the_container(tmp_path: Path) -> None:
    """Kubernetes httpGet probes and Prometheus connect to the pod/container address, not
    loopback: the Faust web server of workers and the position keeper binds every interface
    (the notifier's, plain aiohttp, binds OMS_NOTIFY__WEB_HOST, 0.0.0.0 in compose)."""
    from oms.kafka.faust_worker import new_faust_app

    settings = Settings(data_dir=tmp_path)
    app = new_faust_app(settings, "deploy-check", settings.worker.web_port)
    assert app.conf.web_bind == "0.0.0.0"
    assert app.conf.web_port == settings.worker.web_port


def test_healthcheck_reports_unhealthy_when_nothing_listens(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from oms.settings import get_settings
    from oms_dev.devstack.net import free_port

    monkeypatch.setenv("OMS_WORKER__WEB_PORT", str(free_port()))
    monkeypatch.setenv("OMS_SINK__QUERY_PORT", str(free_port()))
    monkeypatch.setenv("OMS_PAPER__PORT", str(free_port()))
    monkeypatch.setenv("OMS_NOTIFY__WEB_PORT", str(free_port()))
    monkeypatch.setenv("OMS_POSITIONS__WEB_PORT", str(free_port()))
    get_settings.cache_clear()
    try:
        assert not healthcheck.check("worker")
        assert not healthcheck.check("sink")
        assert not healthcheck.check("paper-exchange")
        assert not healthcheck.check("notify")
        assert not healthcheck.check("positions")
        assert healthcheck.check("gateway")
    finally:
        get_settings.cache_clear()


async def test_healthcheck_sees_a_positions_web_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check is not always-false: a server answering /health on the port passes."""
    import asyncio

    from aiohttp import web

    from oms.settings import get_settings
    from oms_dev.devstack.net import free_port

    app = web.Application()

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app.router.add_get("/health", health)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    monkeypatch.setenv("OMS_POSITIONS__WEB_PORT", str(port))
    get_settings.cache_clear()
    try:
        assert await asyncio.to_thread(healthcheck.check, "positions")
    finally:
        get_settings.cache_clear()
        await runner.cleanup()


# --------------------------------------------------------------------------- k8s/

K8S_BASE = K8S / "base"
OVERLAYS = ("dev", "prod")
KUBE_VERSION = "1.33.0"
# Custom resources: no bundled schema; they must still parse with apiVersion/kind/metadata.
CRD_KINDS = {"KafkaTopic", "ScaledObject", "Kafka", "KafkaNodePool", "KafkaUser"}
CO_PARTITIONED = (
    Topic.ORDER_COMMANDS,
    Topic.EXECUTION_REPORTS,
    Topic.ORDER_TRIGGERS,
    Topic.ORDER_EVENTS,
)
COMPACTED = {Topic.RISK_CONTROLS, Topic.NOTIFICATION_SETTINGS, Topic.NOTIFICATION_ACKS}


def _kustomize_cli() -> list[str]:
    local = ROOT / ".local" / "bin" / "kustomize"
    if local.exists():
        return [str(local), "build"]
    found = shutil.which("kustomize")
    if found:
        return [found, "build"]
    kubectl = shutil.which("kubectl")
    if kubectl:
        probe = subprocess.run(
            [kubectl, "version", "--client"], capture_output=True, text=True, check=False
        )
        if "Kustomize Version: v5" in probe.stdout:
            return [kubectl, "kustomize"]
    pytest.fail("kustomize not found: `make k8s-tools` installs it")


def _kustomize_build(path: Path) -> list[dict[str, Any]]:
    import yaml

    proc = subprocess.run(
        [*_kustomize_cli(), str(path)], capture_output=True, text=True, check=False, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d is not None]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {name: _kustomize_build(K8S / "overlays" / name) for name in OVERLAYS}


def _by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def _validate(doc: dict[str, Any]) -> None:
    import kubernetes_validate

    kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_k8s_overlay_validates_against_kubernetes_schemas(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    """Every built object is valid for Kubernetes (strict: unknown fields fail); custom
    resources at least parse with apiVersion/kind/metadata."""
    docs = rendered[overlay]
    validated = 0
    for doc in docs:
        assert {"apiVersion", "kind", "metadata"} <= set(doc), doc
        assert doc["metadata"].get("name"), doc
        if doc["kind"] in CRD_KINDS:
            continue
        _validate(doc)
        validated += 1
    kinds = {d["kind"] for d in docs}
    assert {
        "Namespace", "ConfigMap", "Secret", "Deployment", "StatefulSet", "Service",
        "HorizontalPodAutoscaler", "PodDisruptionBudget", "KafkaTopic",
    } <= kinds  # fmt: skip
    assert validated >= 14
    # Everything lands in the oms namespace (cluster-scoped Namespace aside).
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {"oms"}


def test_k8s_schema_check_has_teeth() -> None:
    """The validator really rejects a misspelt field and a wrong type."""
    import kubernetes_validate

    docs = _kustomize_build(K8S / "overlays" / "dev")
    worker = _by_kind(docs, "Deployment")["oms-worker"]
    container = worker["spec"]["template"]["spec"]["containers"][0]
    broken = json.loads(json.dumps(worker))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = container[
        "readinessProbe"
    ]
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(broken)
    wrong_type = json.loads(json.dumps(worker))
    wrong_type["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(wrong_type)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_k8s_workloads_match_the_code(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    docs = rendered[overlay]
    deployments = _by_kind(docs, "Deployment")
    assert set(deployments) == {
        "oms-worker", "oms-sink", "oms-gateway", "oms-positions", "oms-notify", "oms-fanout",
    }  # fmt: skip
    commands = {
        name: d["spec"]["template"]["spec"]["containers"][0]["args"]
        for name, d in deployments.items()
    }
    assert commands["oms-worker"][0] == "worker"
    assert commands["oms-positions"][:2] == ["positions", "run"]
    assert commands["oms-notify"][:2] == ["notify", "run"]
    assert commands["oms-fanout"] == ["fanout"]
    # Single-writer services never run twice, even during a rollout.
    for name in ("oms-gateway", "oms-notify"):
        assert deployments[name]["spec"]["replicas"] == 1, name
        assert deployments[name]["spec"]["strategy"]["type"] == "Recreate", name
    worker = deployments["oms-worker"]["spec"]["template"]["spec"]["containers"][0]
    web = Settings().worker.web_port
    assert {"containerPort": web, "name": "web"} in worker["ports"]
    assert worker["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert worker["livenessProbe"]["httpGet"]["path"] == "/live"
    for probe in ("readinessProbe", "livenessProbe"):
        assert worker[probe]["httpGet"]["port"] in ("web", web)
    rollout = deployments["oms-worker"]["spec"]["strategy"]["rollingUpdate"]
    assert rollout["maxUnavailable"] == 0  # a new worker is ready before an old one leaves
    notifier = deployments["oms-notify"]["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "OMS_NOTIFY__WEB_HOST", "value": "0.0.0.0"} in notifier["env"]
    assert notifier["readinessProbe"]["httpGet"]["port"] in ("web", Settings().notify.web_port)
    keeper = deployments["oms-positions"]["spec"]["template"]["spec"]["containers"][0]
    assert keeper["ports"][0]["containerPort"] == Settings().positions.web_port
    # Every image is pinned (the oms image by the overlay's tag).
    for d in [*deployments.values(), *_by_kind(docs, "StatefulSet").values()]:
        for c in d["spec"]["template"]["spec"]["containers"]:
            assert ":" in c["image"] and not c["image"].endswith(":latest"), c["image"]
    # Autoscaling never goes beyond the partition count (extra workers would idle).
    settings = _by_kind(docs, "ConfigMap")["oms-settings"]["data"]
    partitions = int(settings["OMS_KAFKA__PARTITIONS"])
    hpa = _by_kind(docs, "HorizontalPodAutoscaler")["oms-worker"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == "oms-worker"
    assert hpa["minReplicas"] <= deployments["oms-worker"]["spec"]["replicas"]
    assert hpa["maxReplicas"] <= partitions
    pdbs = _by_kind(docs, "PodDisruptionBudget")
    assert (
        pdbs["oms-worker"]["spec"]["selector"]["matchLabels"]
        == (deployments["oms-worker"]["spec"]["selector"]["matchLabels"])
    )
    # The ClickHouse URL the services get comes from a Secret, never the ConfigMap.
    assert "OMS_CLICKHOUSE_URL" not in settings
    assert "clickhouse" in _by_kind(docs, "StatefulSet")
    assert "clickhouse" in _by_kind(docs, "Service")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_k8s_settings_and_secrets(
    rendered: dict[str, list[dict[str, Any]]], overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ConfigMap holds only known settings (they load), Secrets only placeholders, and no
    secret-looking name sits in the ConfigMap."""
    docs = rendered[overlay]
    data = _by_kind(docs, "ConfigMap")["oms-settings"]["data"]
    for key in list(os.environ):
        if key.startswith("OMS_"):
            monkeypatch.delenv(key)
    for key, value in data.items():
        monkeypatch.setenv(key, value)
        assert not any(w in key for w in ("SECRET", "PASSWORD", "KEY", "TOKEN")), key
    settings = Settings()
    assert settings.kafka.partitions == int(data["OMS_KAFKA__PARTITIONS"])
    secrets = _by_kind(docs, "Secret")
    assert set(secrets) == {"oms-deribit", "oms-notify", "oms-clickhouse"}
    for secret in secrets.values():
        assert set(secret["stringData"].values()) == {"REPLACE_ME"}, "no real secrets in k8s/"
    assert all(k.startswith("OMS_NOTIFY_SECRET_") for k in secrets["oms-notify"]["stringData"])


# Each deployment and the KafkaUser it authenticates as.
K8S_PRINCIPALS = {
    "oms-worker": "oms-worker",
    "oms-gateway": "oms-gateway",
    "oms-sink": "oms-sink",
    "oms-positions": "oms-positions",
    "oms-notify": "oms-notifier",
    "oms-fanout": "oms-fanout",
}


def _strimzi_acls(user: dict[str, Any]) -> set[tuple[str, str, str, str, str]]:
    out = set()
    for rule in user["spec"]["authorization"]["acls"]:
        resource = rule["resource"]
        pattern = "prefixed" if resource.get("patternType") == "prefix" else "literal"
        name = resource.get("name", "kafka-cluster")
        for operation in rule["operations"]:
            out.add((user["metadata"]["name"], resource["type"], pattern, name, operation))
    return out


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_k8s_kafka_is_scram_over_tls_with_least_privilege(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    """Every listener is TLS with SCRAM-SHA-512 and the cluster authorizes; one KafkaUser per
    service and per desk of OMS_DESKS, granted exactly the ACL table's rules (the one the
    services run with, oms.kafka.acls); every deployment authenticates as its own user with
    the password from that user's Secret (never a value) and verifies the brokers with the
    cluster CA."""
    from oms.kafka.acls import COMPONENT_PRINCIPALS, acl_rules

    docs = rendered[overlay]
    [kafka] = _by_kind(docs, "Kafka").values()
    assert kafka["metadata"]["name"] == "oms-kafka"
    listeners = kafka["spec"]["kafka"]["listeners"]
    assert listeners and all(
        lst["tls"] is True and lst["authentication"]["type"] == "scram-sha-512"
        for lst in listeners
    )
    assert kafka["spec"]["kafka"]["authorization"]["type"] == "simple"
    assert kafka["spec"]["kafka"]["config"]["auto.create.topics.enable"] is False
    pools = _by_kind(docs, "KafkaNodePool")
    assert all(p["metadata"]["labels"]["strimzi.io/cluster"] == "oms-kafka" for p in pools.values())
    settings = _by_kind(docs, "ConfigMap")["oms-settings"]["data"]
    port = listeners[0]["port"]
    assert settings["OMS_KAFKA__BOOTSTRAP"] == f"oms-kafka-kafka-bootstrap:{port}"
    assert settings["OMS_KAFKA__SECURITY_PROTOCOL"] == "SASL_SSL"
    assert settings["OMS_KAFKA__SASL_MECHANISM"] == "SCRAM-SHA-512"
    desks = json.loads(settings["OMS_DESKS"])
    users = _by_kind(docs, "KafkaUser")
    assert set(users) == {*COMPONENT_PRINCIPALS.values(), *desks}
    for user in users.values():
        assert user["metadata"]["labels"]["strimzi.io/cluster"] == "oms-kafka"
        assert user["spec"]["authentication"]["type"] == "scram-sha-512"
        assert user["spec"]["authorization"]["type"] == "simple"
    granted = set().union(*(_strimzi_acls(u) for u in users.values()))
    wanted = {
        (r.principal, r.resource, r.pattern, r.name, r.operation.capitalize())
        for r in acl_rules(Settings(desks=desks))
    }
    assert granted == wanted
    deployments = _by_kind(docs, "Deployment")
    ca_file = Path(settings["OMS_KAFKA__CA_FILE"])
    for name, principal in K8S_PRINCIPALS.items():
        spec = deployments[name]["spec"]["template"]["spec"]
        [container] = spec["containers"]
        env = {e["name"]: e for e in container["env"]}
        assert env["OMS_KAFKA__USERNAME"]["value"] == principal, name
        password = env["OMS_KAFKA_PASSWORD"]
        assert "value" not in password, name
        assert password["valueFrom"]["secretKeyRef"] == {"name": principal, "key": "password"}
        [mount] = [m for m in container["volumeMounts"] if m["name"] == "kafka-ca"]
        assert ca_file.parent == Path(mount["mountPath"]), name
        [volume] = [v for v in spec["volumes"] if v["name"] == "kafka-ca"]
        assert volume["secret"]["secretName"] == "oms-kafka-cluster-ca-cert"
        assert {"key": "ca.crt", "path": ca_file.name} in volume["secret"]["items"]
    # The fan-out needs nothing but its Kafka user.
    fanout = deployments["oms-fanout"]["spec"]["template"]["spec"]["containers"][0]
    assert fanout["envFrom"] == [{"configMapRef": {"name": "oms-settings"}}]


@pytest.fixture(scope="module")
def internal_topics(tmp_path_factory: pytest.TempPathFactory) -> dict[str, int | None]:
    """Internal topic names as the code builds them (default app ids) -> partitions (None:
    follows OMS_KAFKA__PARTITIONS): Faust table changelogs and leader topics of the worker and
    the position keeper, the keeper's repartition topic, the notifier's state topic."""
    from oms.notify.service import state_topic
    from oms.positions.keeper import PositionKeeper
    from oms.streams.worker import OrderWorker

    settings = Settings(data_dir=tmp_path_factory.mktemp("apps"))
    found: dict[str, int | None] = {}
    keeper = PositionKeeper(settings)
    for app in (OrderWorker(settings).app, keeper.app):
        for table in app.tables.values():
            found[table.changelog_topic.get_topic_name()] = None
        found[f"{app.conf.id}-__assignor-__leader"] = 1
    found[keeper.fills_topic] = None
    found[state_topic(settings)] = 1
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_k8s_topics_match_the_code(
    rendered: dict[str, list[dict[str, Any]]],
    internal_topics: dict[str, int | None],
    overlay: str,
) -> None:
    docs = rendered[overlay]
    topics = {d["spec"]["topicName"]: d for d in docs if d["kind"] == "KafkaTopic"}
    public = {f"oms.{t.value}" for t in Topic}
    assert set(topics) == public | set(internal_topics)
    partitions = int(_by_kind(docs, "ConfigMap")["oms-settings"]["data"]["OMS_KAFKA__PARTITIONS"])
    specs = {name: d["spec"] for name, d in topics.items()}
    assert {specs[f"oms.{t.value}"]["partitions"] for t in CO_PARTITIONED} == {partitions}
    for name, d in topics.items():
        expected = internal_topics.get(name) or partitions
        assert specs[name]["partitions"] == expected, name
        follows = d["metadata"]["labels"].get("oms.io/partitions") == "follow-setting"
        assert follows == (internal_topics.get(name) is None), name
    compacted = {
        name for name, spec in specs.items() if spec["config"].get("cleanup.policy") == "compact"
    }
    changelogs = {name for name in internal_topics if name.endswith("-changelog")}
    assert len(changelogs) >= 4
    assert compacted == {f"oms.{t.value}" for t in COMPACTED} | changelogs | {
        n for n in internal_topics if n.endswith("-state")
    }
    for spec in specs.values():
        assert int(spec["config"]["min.insync.replicas"]) <= spec["replicas"]
    # Every setting the code gives a topic when it creates it holds in k8s too.
    for wanted in topic_specs(Settings()):
        have = specs[wanted.name]["config"]
        assert {k: have.get(k) for k in wanted.config} == dict(wanted.config), wanted.name
    hpa = _by_kind(docs, "HorizontalPodAutoscaler")["oms-worker"]["spec"]
    assert hpa["maxReplicas"] <= partitions


def test_k8s_keda_component_replaces_the_hpa(tmp_path: Path) -> None:
    """prod + the KEDA component: a ScaledObject on the workers' lag, and no CPU HPA left
    (KEDA owns its own)."""
    overlay = tmp_path / "prod-keda"
    overlay.mkdir()
    rel = os.path.relpath(K8S, overlay)
    (overlay / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources: [{rel}/overlays/prod]\ncomponents: [{rel}/components/keda-lag]\n"
    )
    docs = _kustomize_build(overlay)
    assert not _by_kind(docs, "HorizontalPodAutoscaler")
    scaled = _by_kind(docs, "ScaledObject")["oms-worker"]["spec"]
    assert scaled["scaleTargetRef"]["name"] == "oms-worker"
    trigger = scaled["triggers"][0]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["consumerGroup"] == Settings().worker.app_id
    assert trigger["metadata"]["topic"] == f"oms.{Topic.ORDER_REQUESTS.value}"
    # Over TLS with SCRAM, as the workers' own user, from their env: no credential inline.
    assert (trigger["metadata"]["sasl"], trigger["metadata"]["tls"]) == ("scram_sha512", "enable")
    auth = _by_kind(docs, "TriggerAuthentication")[trigger["authenticationRef"]["name"]]["spec"]
    assert {e["parameter"]: e["name"] for e in auth["env"]} == {
        "username": "OMS_KAFKA__USERNAME",
        "password": "OMS_KAFKA_PASSWORD",
    }
    assert {e["containerName"] for e in auth["env"]} == {"worker"}
