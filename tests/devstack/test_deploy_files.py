"""docker-compose.yml, Dockerfile, .dockerignore and k8s/ are valid and match the code.

Compose validation runs for real (no skip): ``docker compose config`` when the plugin exists,
else Debian's ``docker-compose`` (v1, needs no engine for ``config``), and in both cases a
JSON-schema check against the compose-spec schema that package ships. ``make test`` /
``.ci/run`` install the package when it is missing (``make tools``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from oms.devstack import healthcheck
from oms.schemas.topics import Topic
from oms.settings import KafkaSettings, Settings

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


def test_compose_config_validates() -> None:
    cli = _compose_cli()
    if cli is None:
        pytest.fail(f"neither `docker compose` nor `docker-compose` found: {INSTALL_HINT}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    proc = subprocess.run(
        [*cli, "-f", str(COMPOSE), "config", "-q"],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


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


OMS_SERVICES = ("paper-exchange", "gateway", "worker", "sink", "notify")


def test_compose_services_and_dependencies(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"kafka", "clickhouse", *OMS_SERVICES}
    for name, svc in services.items():
        assert "healthcheck" in svc, f"{name} has no healthcheck"
        image = svc["image"]
        if "${" not in image:
            assert ":" in image and not image.endswith(":latest"), f"{name}: unpinned {image}"
    assert services["kafka"]["image"] == f"apache/kafka:{KafkaSettings().version}"
    for name in ("gateway", "worker", "sink"):
        deps = services[name]["depends_on"]
        assert deps["kafka"]["condition"] == "service_healthy", name
    assert services["sink"]["depends_on"]["clickhouse"]["condition"] == "service_healthy"
    for name in OMS_SERVICES:
        assert services[name]["command"][0] == name


def _expand(value: str) -> str:
    # ${VAR:-default} -> default (the file's own defaults; no environment involved).
    import re

    return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", value)


@pytest.mark.parametrize("service", OMS_SERVICES)
def test_compose_env_reaches_settings(
    compose: dict[str, Any], service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The OMS_* names in compose really set the fields they mean (extra env is ignored)."""
    for key in list(os.environ):
        if key.startswith("OMS_"):
            monkeypatch.delenv(key)
    env = compose["services"][service]["environment"]
    for key, value in env.items():
        monkeypatch.setenv(key, _expand(str(value)))
    settings = Settings()
    assert settings.kafka.bootstrap == "kafka:19092"
    assert settings.kafka.partitions == 8
    assert settings.exchange.url == "ws://paper-exchange:8765/ws/api/v2"
    assert settings.clickhouse_url is not None
    assert (
        settings.clickhouse_url.startswith("http://")
        and "@clickhouse:8123" in settings.clickhouse_url
    )
    assert str(settings.data_dir) == "/data"
    assert settings.log_json is True
    assert settings.accounts == ["demo"]
    if service == "sink":
        assert settings.sink.query_host == "0.0.0.0"


def test_dockerfile_is_pinned_non_root_with_healthcheck() -> None:
    text = (ROOT / "Dockerfile").read_text()
    froms = [line.split()[1] for line in text.splitlines() if line.startswith("FROM ")]
    assert froms and all(f.startswith("python:3.11.") and "slim" in f for f in froms)
    assert "\nUSER oms\n" in text
    assert "HEALTHCHECK" in text and "oms.devstack.healthcheck" in text
    assert 'ENTRYPOINT ["oms"]' in text
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".local" in ignored and ".venv" in ignored


def test_healthcheck_reports_unhealthy_when_nothing_listens(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from oms.devstack.kafka import free_port
    from oms.settings import get_settings

    monkeypatch.setenv("OMS_WORKER__WEB_PORT", str(free_port()))
    monkeypatch.setenv("OMS_SINK__QUERY_PORT", str(free_port()))
    monkeypatch.setenv("OMS_PAPER__PORT", str(free_port()))
    monkeypatch.setenv("OMS_NOTIFY__WEB_PORT", str(free_port()))
    get_settings.cache_clear()
    try:
        assert not healthcheck.check("worker")
        assert not healthcheck.check("sink")
        assert not healthcheck.check("paper-exchange")
        assert not healthcheck.check("notify")
        assert healthcheck.check("gateway")
    finally:
        get_settings.cache_clear()


def test_k8s_base_parses_and_is_complete() -> None:
    kustomization = _yaml_docs(K8S / "kustomization.yaml")[0]
    kinds: dict[str, list[dict[str, Any]]] = {}
    for resource in kustomization["resources"]:
        path = K8S / resource
        assert path.exists(), resource
        for doc in _yaml_docs(path):
            assert {"apiVersion", "kind", "metadata"} <= set(doc), f"{resource}: {doc}"
            kinds.setdefault(doc["kind"], []).append(doc)
    deployments = {d["metadata"]["name"]: d for d in kinds["Deployment"]}
    assert set(deployments) == {"oms-worker", "oms-sink", "oms-gateway"}
    assert deployments["oms-sink"]["spec"]["replicas"] == 1
    worker = deployments["oms-worker"]["spec"]["template"]["spec"]["containers"][0]
    assert {"containerPort": 6066, "name": "web"} in worker["ports"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert worker[probe]["httpGet"]["port"] in ("web", 6066)
    assert len(kinds["ConfigMap"]) == 1 and len(kinds["Secret"]) == 1
    secret = kinds["Secret"][0]
    assert set(secret["stringData"].values()) == {"REPLACE_ME"}, "no real secrets in k8s/"
    topics = {d["spec"]["topicName"]: d for d in kinds["KafkaTopic"]}
    assert set(topics) == {f"oms.{t.value}" for t in Topic}
    co_partitioned = {
        Topic.ORDER_REQUESTS,
        Topic.EXECUTION_REPORTS,
        Topic.ORDER_TRIGGERS,
        Topic.ORDER_EVENTS,
    }
    assert len({topics[f"oms.{t.value}"]["spec"]["partitions"] for t in co_partitioned}) == 1
