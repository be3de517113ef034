"""Who may do what on the deployed broker: the Kafka principals of the OMS services and of
the desks, and their ACLs (least privilege), for ``docker-compose.yml``.

The one-shot ``kafka-init`` service of the compose file applies :func:`acl_lines` (written by
``make compose-secrets``); ``k8s/base/kafka-users.yaml`` grants the same to the same names
as Strimzi ``KafkaUser`` resources, and ``tests/devstack/test_deploy_files.py`` checks that
the two agree. Names follow the default settings (topic prefix ``oms.``, Faust app id
``oms``).

Reads (r) and writes (w), by principal:

* ``oms-worker``: r requests, commands, reports, triggers, ticks, risk controls; w commands,
  reports, triggers, events, dead letters, metrics; its Faust topics (prefix ``oms-``);
  group ``oms``.
* ``oms-gateway``: w ticks, reports.
* ``oms-sink``: r the topics it stores; w dead letters only; group ``oms-sink``.
* ``oms-positions``: r reports; w positions, events, dead letters; its Faust topics (prefix
  ``oms-positions``) and ``oms.positions-fills``; group ``oms-positions``.
* ``oms-notifier``: r events, positions, settings, acks; w notifications, events, dead
  letters; its state topic; group ``oms-notify``.
* ``oms-fanout``: r events, positions, notifications; w dead letters; creates and writes
  ``oms.acct.*``; group ``oms-fanout``.
* ``oms-monitor`` (the lag exporter): describe groups and topics, never a record.
* a desk: w ``oms.order-requests``; r ``oms.acct.<account>.*`` of its accounts only; groups
  ``<desk>*``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from oms.schemas.topics import Topic
from oms.settings import Settings

Resource = Literal["topic", "group", "cluster"]
Pattern = Literal["literal", "prefixed"]
# Kafka's operation names, as kafka-acls.sh and Strimzi spell them.
Operation = Literal["Read", "Write", "Create", "Describe", "DescribeConfigs", "All"]


@dataclass(frozen=True, order=True)
class Acl:
    """One ALLOW rule: ``principal`` may do ``operation`` on a resource."""

    principal: str
    resource: Resource
    pattern: Pattern
    name: str
    operation: Operation


SERVICE_PRINCIPALS = (
    "oms-worker",
    "oms-gateway",
    "oms-sink",
    "oms-positions",
    "oms-notifier",
    "oms-fanout",
    "oms-monitor",
)


def _grants(
    principal: str,
    *,
    read: Iterable[str] = (),
    write: Iterable[str] = (),
    create: Iterable[str] = (),
    prefixed: Mapping[str, Iterable[Operation]] | None = None,
    groups: Iterable[str] = (),
) -> list[Acl]:
    out = [Acl(principal, "topic", "literal", t, "Read") for t in read]
    out += [Acl(principal, "topic", "literal", t, "Write") for t in write]
    out += [Acl(principal, "topic", "literal", t, "Create") for t in create]
    for name, operations in (prefixed or {}).items():
        out += [Acl(principal, "topic", "prefixed", name, op) for op in operations]
    out += [Acl(principal, "group", "literal", g, "Read") for g in groups]
    return out


def service_acls(settings: Settings | None = None) -> list[Acl]:
    """The ACLs of the OMS services' principals (:data:`SERVICE_PRINCIPALS`)."""
    s = settings or Settings()
    app = s.worker.app_id
    keeper = s.positions.app_id or f"{app}-positions"
    notifier = f"{app}-notify"
    notifier_state = s.topic(f"{notifier}-state")
    fills = s.topic("positions-fills")

    def t(*topics: Topic) -> list[str]:
        return [s.topic(topic.value) for topic in topics]

    changelog_ops: list[Operation] = ["Read", "Write", "Create", "Describe", "DescribeConfigs"]
    acls = _grants(
        "oms-worker",
        read=t(
            Topic.ORDER_REQUESTS, Topic.ORDER_COMMANDS, Topic.EXECUTION_REPORTS,
            Topic.ORDER_TRIGGERS, Topic.MARKET_TICKS, Topic.RISK_CONTROLS,
        ),
        write=t(
            Topic.ORDER_COMMANDS, Topic.EXECUTION_REPORTS, Topic.ORDER_TRIGGERS,
            Topic.ORDER_EVENTS, Topic.DEAD_LETTERS, Topic.METRICS,
        ),
        # Faust's changelogs and leader topic: "<app id>-<table>-changelog".
        prefixed={f"{app}-": changelog_ops},
        groups=[app],
    )  # fmt: skip
    acls += _grants("oms-gateway", write=t(Topic.MARKET_TICKS, Topic.EXECUTION_REPORTS))
    acls += _grants(
        "oms-sink",
        read=t(
            Topic.ORDER_EVENTS, Topic.EXECUTION_REPORTS, Topic.MARKET_TICKS, Topic.DEAD_LETTERS,
            Topic.POSITIONS, Topic.NOTIFICATIONS, Topic.METRICS,
        ),
        write=t(Topic.DEAD_LETTERS),
        groups=[f"{app}-sink"],
    )  # fmt: skip
    acls += _grants(
        "oms-positions",
        read=[*t(Topic.EXECUTION_REPORTS), fills],
        # Order events: fills it cannot apply, flagged for review.
        write=[*t(Topic.POSITIONS, Topic.ORDER_EVENTS, Topic.DEAD_LETTERS), fills],
        create=[fills],
        prefixed={keeper: changelog_ops},
        groups=[keeper],
    )
    acls += _grants(
        "oms-notifier",
        read=[
            *t(Topic.ORDER_EVENTS, Topic.POSITIONS, Topic.NOTIFICATION_SETTINGS),
            *t(Topic.NOTIFICATION_ACKS),
            notifier_state,
        ],
        # Order events: margin calls and system errors it raises itself.
        write=[*t(Topic.NOTIFICATIONS, Topic.ORDER_EVENTS, Topic.DEAD_LETTERS), notifier_state],
        create=[notifier_state],
        groups=[notifier],
    )
    acls += _grants(
        "oms-fanout",
        read=t(Topic.ORDER_EVENTS, Topic.POSITIONS, Topic.NOTIFICATIONS),
        write=t(Topic.DEAD_LETTERS),
        prefixed={s.topic("acct."): ["Write", "Create", "Describe"]},
        groups=[f"{app}-fanout"],
    )
    # The lag exporter: offsets of every group, never a record.
    acls += [
        Acl("oms-monitor", "cluster", "literal", "kafka-cluster", "Describe"),
        Acl("oms-monitor", "group", "literal", "*", "Describe"),
        Acl("oms-monitor", "topic", "literal", "*", "Describe"),
    ]
    return sorted(acls)


def desk_acls(desks: Mapping[str, Iterable[str]], settings: Settings | None = None) -> list[Acl]:
    """A desk (principal named like it) sends order requests and reads only its accounts'
    own topics (``oms.acct.<account>.``), in consumer groups named after itself."""
    s = settings or Settings()
    acls: list[Acl] = []
    for desk, accounts in desks.items():
        acls.append(Acl(desk, "topic", "literal", s.topic(Topic.ORDER_REQUESTS.value), "Write"))
        for account in accounts:
            prefix = s.account_topic(account, "events").removesuffix("events")
            acls += [
                Acl(desk, "topic", "prefixed", prefix, "Read"),
                Acl(desk, "topic", "prefixed", prefix, "Describe"),
            ]
        acls.append(Acl(desk, "group", "prefixed", desk, "Read"))
    return sorted(acls)


def acl_lines(acls: Iterable[Acl]) -> str:
    """One rule a line, ``principal resource pattern name operation``, as the compose init
    script reads them."""
    return "".join(
        f"{a.principal} {a.resource} {a.pattern} {a.name} {a.operation}\n" for a in acls
    )
