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


# --------------------------------------------------------------------------- k8s/

K8S_BASE = K8S / "base"
OVERLAYS = ("dev", "prod")
KUBE_VERSION = "1.33.0"
# Custom resources: no bundled schema; they must still parse with apiVersion/kind/metadata.
CRD_KINDS = {"KafkaTopic", "ScaledObject"}
CO_PARTITIONED = (
    Topic.ORDER_REQUESTS,
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
        "oms-worker", "oms-sink", "oms-gateway", "oms-positions", "oms-notify",
    }  # fmt: skip
    commands = {
        name: d["spec"]["template"]["spec"]["containers"][0]["args"]
        for name, d in deployments.items()
    }
    assert commands["oms-worker"][0] == "worker"
    assert commands["oms-positions"][:2] == ["positions", "run"]
    assert commands["oms-notify"][:2] == ["notify", "run"]
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


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_k8s_topics_match_the_code(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    docs = rendered[overlay]
    topics = {d["spec"]["topicName"]: d["spec"] for d in docs if d["kind"] == "KafkaTopic"}
    assert set(topics) == {f"oms.{t.value}" for t in Topic}
    partitions = int(_by_kind(docs, "ConfigMap")["oms-settings"]["data"]["OMS_KAFKA__PARTITIONS"])
    assert {topics[f"oms.{t.value}"]["partitions"] for t in CO_PARTITIONED} == {partitions}
    compacted = {
        name for name, spec in topics.items() if spec["config"].get("cleanup.policy") == "compact"
    }
    assert compacted == {f"oms.{t.value}" for t in COMPACTED}
    for spec in topics.values():
        assert int(spec["config"]["min.insync.replicas"]) <= spec["replicas"]
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
