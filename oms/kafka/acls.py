"""Who may do what on the broker: the least-privilege ACL table of every Kafka principal.

One principal per component (its Kafka user), one for the lag monitor (the exporter and
KEDA's scaler: it describes, never reads) and one per trading desk (named like the desk,
``Settings.desks``). :data:`COMPONENT_GRANTS` and :data:`DESK_GRANTS` are the table, as data,
and the only one: the README shows it, and the deployment files are generated from
:func:`acl_rules` (compose's ``kafka_acls`` by ``oms_dev.devstack.compose_secrets``, the
Strimzi ``KafkaUser`` resources by ``oms_dev.devstack.k8s_users``). :func:`acl_rules`
resolves it for one settings object into concrete allow rules; :func:`apply_acls` creates
them with the admin client. Whatever is not granted is refused
(``allow.everyone.if.no.acl.found=false``); the broker's own principals and the tooling's
admin are super users and need no rule.

Names are templates over the settings:

| placeholder | value |
|---|---|
| ``{p}`` | the topic prefix (``oms.``) |
| ``{worker}`` | the worker's Faust app id and consumer group (``oms``) |
| ``{keeper}`` | the position keeper's app id and group (``oms-positions``) |
| ``{notifier}`` | the notifier's consumer group (``oms-notify``) |
| ``{fanout}`` | the per-account fan-out's consumer group (``oms-fanout``) |
| ``{desk}`` | the desk (desk grants only); its consumer groups are ``<desk>.<anything>`` |
| ``{account_prefix}`` | ``oms.acct.<account>.`` for each account of the desk |

(``{account_prefix}`` is what every topic of ``Settings.account_topic`` of the account starts
with.)

A Faust app's changelog topics are ``<app id>-<table>-changelog`` and its leader topic
``<app id>-__assignor-__leader``; the app creates them itself, so it may create those names
and no others (literal names: the worker's app id ``oms`` prefixes the keeper's too).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from oms.kafka.security import KafkaConnection
from oms.settings import Settings

Operation = Literal["READ", "WRITE", "CREATE", "DESCRIBE"]
# "cluster": the cluster itself (one resource, named CLUSTER_NAME), e.g. to list groups.
ResourceKind = Literal["topic", "group", "cluster"]
PatternKind = Literal["literal", "prefixed"]
# The name of the cluster resource in Kafka's ACLs.
CLUSTER_NAME = "kafka-cluster"
# A literal "*" names every resource of its kind.
EVERY = "*"


@dataclass(frozen=True)
class Grant:
    """Allow ``operations`` on the ``resource`` named by each template of ``names``."""

    resource: ResourceKind
    names: tuple[str, ...]
    operations: tuple[Operation, ...]
    pattern: PatternKind = "literal"


def _topics(*names: str, ops: tuple[Operation, ...], pattern: PatternKind = "literal") -> Grant:
    return Grant("topic", names, ops, pattern)


def _group(name: str, pattern: PatternKind = "literal") -> Grant:
    return Grant("group", (name,), ("READ",), pattern)


def _describe(resource: ResourceKind, name: str) -> Grant:
    return Grant(resource, (name,), ("DESCRIBE",))


# The Kafka user of each component process.
COMPONENT_PRINCIPALS: Mapping[str, str] = {
    "worker": "oms-worker",
    "gateway": "oms-gateway",
    "sink": "oms-sink",
    "positions": "oms-positions",
    "notifier": "oms-notifier",
    "fanout": "oms-fanout",
    # Not an OMS process: the consumer-lag exporter and KEDA's Kafka scaler.
    "monitor": "oms-monitor",
}

# Tables of the Faust apps (their changelogs), as named in oms.streams.app and
# oms.positions.keeper (tests/kafka/test_acls.py checks these against the apps).
WORKER_TABLES = ("orders", "request-nonces", "finished-orders")
KEEPER_TABLES = ("positions", "position-trades")

_R: tuple[Operation, ...] = ("READ",)
_W: tuple[Operation, ...] = ("WRITE",)
_OWN: tuple[Operation, ...] = ("READ", "WRITE", "CREATE", "DESCRIBE")
# Every component makes sure the pipeline's topics exist when it starts (oms.kafka.admin):
# it must see them all, which DESCRIBE grants (names and partitions, never records).
_SEE_PIPELINE = _topics("{p}", ops=("DESCRIBE",), pattern="prefixed")


def _faust_internal(app: str, tables: Iterable[str]) -> Grant:
    names = [f"{app}-{table}-changelog" for table in tables]
    return _topics(*names, f"{app}-__assignor-__leader", ops=_OWN)


COMPONENT_GRANTS: Mapping[str, tuple[Grant, ...]] = {
    "oms-worker": (
        _SEE_PIPELINE,
        _topics(
            "{p}order-requests",
            "{p}order-commands",
            "{p}execution-reports",
            "{p}order-triggers",
            "{p}order-events",
            "{p}market-ticks",
            "{p}positions",
            "{p}risk-controls",
            ops=_R,
        ),
        _topics(
            "{p}order-commands",
            "{p}execution-reports",
            "{p}order-triggers",
            "{p}order-events",
            "{p}dead-letters",
            "{p}metrics",
            "{p}risk-controls",
            "{p}risk-audit",
            ops=_W,
        ),
        _faust_internal("{worker}", WORKER_TABLES),
        _group("{worker}"),
    ),
    "oms-gateway": (
        _SEE_PIPELINE,
        _topics("{p}execution-reports", "{p}market-ticks", ops=_W),
    ),
    "oms-positions": (
        _SEE_PIPELINE,
        _topics("{p}execution-reports", ops=_R),
        _topics("{p}positions", "{p}order-events", "{p}dead-letters", ops=_W),
        # The keeper's repartition of fills by position (oms.positions.keeper.FILLS_TOPIC).
        _topics("{p}positions-fills", ops=_OWN),
        _faust_internal("{keeper}", KEEPER_TABLES),
        _group("{keeper}"),
        _group("{keeper}-route"),
    ),
    "oms-sink": (
        _SEE_PIPELINE,
        _topics(
            "{p}order-events",
            "{p}execution-reports",
            "{p}market-ticks",
            "{p}dead-letters",
            "{p}positions",
            "{p}notifications",
            "{p}metrics",
            ops=_R,
        ),
        # What it cannot read goes to the dead letters; it writes nothing else.
        _topics("{p}dead-letters", ops=_W),
        _group("{worker}-sink"),
    ),
    "oms-notifier": (
        _SEE_PIPELINE,
        _topics(
            "{p}order-events",
            "{p}positions",
            "{p}notification-settings",
            "{p}notification-acks",
            ops=_R,
        ),
        # Order events: the margin calls and system errors it raises itself.
        _topics("{p}notifications", "{p}order-events", "{p}dead-letters", ops=_W),
        # Its delivery state (oms.notify.service.state_topic).
        _topics("{p}{notifier}-state", ops=_OWN),
        _group("{notifier}"),
    ),
    "oms-fanout": (
        _SEE_PIPELINE,
        _topics("{p}order-events", "{p}positions", "{p}notifications", ops=_R),
        _topics("{p}dead-letters", ops=_W),
        # Every account's own topics: it creates them (an account's first record) and fills
        # them; desks read them (DESK_GRANTS).
        _topics("{p}acct.", ops=("WRITE", "CREATE", "DESCRIBE"), pattern="prefixed"),
        _group("{fanout}"),
    ),
    # Consumer lag of every group (the exporter's metrics, KEDA's scaling): it lists the
    # groups (the cluster), their committed offsets (the groups) and the topics' end offsets
    # (the topics), and reads no record.
    "oms-monitor": (
        _describe("cluster", CLUSTER_NAME),
        _describe("group", EVERY),
        _describe("topic", EVERY),
    ),
}

# Every desk's principal: it sends requests, and reads only its own accounts' topics with
# consumer groups of its own, named ``<desk>.<anything>``: the dot ends the desk's name
# (Settings refuses dots in desk names), so desk ``a``'s prefix never covers desk ``a-b``'s
# groups.
DESK_GRANTS: tuple[Grant, ...] = (
    _topics("{p}order-requests", ops=_W),
    _topics("{account_prefix}", ops=("READ", "DESCRIBE"), pattern="prefixed"),
    _group("{desk}.", pattern="prefixed"),
)


@dataclass(frozen=True)
class AclRule:
    """One resolved allow rule: ``principal`` may ``operation`` the resource."""

    principal: str
    resource: ResourceKind
    name: str
    pattern: PatternKind
    operation: Operation


def _account_prefix(settings: Settings, account: str) -> str:
    # The prefix every per-account topic of the account shares (Settings.account_topic).
    return settings.account_topic(account, "events").removesuffix("events")


def acl_rules(settings: Settings) -> list[AclRule]:
    """The table resolved for ``settings``: every component's rules, then every desk's."""
    worker = settings.worker.app_id
    values = {
        "p": settings.kafka.topic_prefix,
        "worker": worker,
        "keeper": settings.positions.app_id or f"{worker}-positions",
        "notifier": f"{worker}-notify",
        "fanout": settings.access.fanout_group or f"{worker}-fanout",
    }
    rules: list[AclRule] = []

    def add(principal: str, grant: Grant, **extra: str) -> None:
        for template in grant.names:
            name = template.format(**values, **extra)
            for op in grant.operations:
                rules.append(AclRule(principal, grant.resource, name, grant.pattern, op))

    for principal, grants in COMPONENT_GRANTS.items():
        for grant in grants:
            add(principal, grant)
    for desk, accounts in settings.desks.items():
        for grant in DESK_GRANTS:
            if any("{account_prefix}" in name for name in grant.names):
                for account in accounts:
                    add(desk, grant, desk=desk, account_prefix=_account_prefix(settings, account))
            else:
                add(desk, grant, desk=desk)
    return rules


def acl_table(settings: Settings) -> dict[str, list[str]]:
    """Principal -> ``"OPERATION resource name"`` lines (``*`` after a prefix): the table
    as people read it."""
    out: dict[str, list[str]] = {}
    for rule in acl_rules(settings):
        star = "*" if rule.pattern == "prefixed" else ""
        out.setdefault(rule.principal, []).append(
            f"{rule.operation} {rule.resource} {rule.name}{star}"
        )
    return out


async def apply_acls(admin: KafkaConnection, rules: Iterable[AclRule]) -> int:
    """Create every rule as an ALLOW binding for ``User:<principal>`` from any host, with the
    admin client of ``admin`` (a principal allowed to alter ACLs); existing ones are kept.
    Returns the number of rules sent."""
    bindings = [_binding(rule) for rule in rules]
    if not bindings:
        return 0
    return await asyncio.to_thread(_create_acls, admin, bindings)


_RESOURCE_TYPES: Mapping[ResourceKind, ResourceType] = {
    "topic": ResourceType.TOPIC,
    "group": ResourceType.GROUP,
    # The admin API calls the cluster resource BROKER (its name: CLUSTER_NAME).
    "cluster": ResourceType.BROKER,
}


def _binding(rule: AclRule) -> AclBinding:
    return AclBinding(
        _RESOURCE_TYPES[rule.resource],
        rule.name,
        ResourcePatternType.PREFIXED if rule.pattern == "prefixed" else ResourcePatternType.LITERAL,
        f"User:{rule.principal}",
        "*",
        AclOperation[rule.operation],
        AclPermissionType.ALLOW,
    )


def _create_acls(admin: KafkaConnection, bindings: list[AclBinding]) -> int:
    client = AdminClient(admin.confluent({"log_level": 4}))
    for future in client.create_acls(bindings).values():
        future.result(timeout=60)
    # The controller has them once created; the broker authorizes with them a moment later,
    # when it applies that metadata. Its own view is what DescribeAcls answers from.
    everything = AclBindingFilter(
        ResourceType.ANY,
        None,  # type: ignore[arg-type]  # None matches any name (the stubs want a str)
        ResourcePatternType.ANY,
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        AclOperation.ANY,
        AclPermissionType.ANY,
    )
    wanted = set(bindings)
    deadline = time.monotonic() + 60
    while not wanted <= set(client.describe_acls(everything).result(timeout=60)):
        if time.monotonic() > deadline:
            raise TimeoutError("the broker does not show the ACLs created 60 s ago")
        time.sleep(0.1)
    return len(bindings)
