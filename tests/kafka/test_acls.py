"""The ACL table: what each principal may do, resolved per settings (no broker needed;
the broker enforcing it is tests/integration/test_secure_transport.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from oms.fanout.service import fanout_group
from oms.kafka.acls import COMPONENT_PRINCIPALS, AclRule, acl_rules, acl_table
from oms.notify.service import notifier_app_id
from oms.positions.keeper import PositionKeeper, keeper_app_id
from oms.settings import KafkaSettings, Settings, WorkerSettings
from oms.streams.app import create_app


def rules_of(settings: Settings, principal: str) -> set[tuple[str, str, str, str]]:
    return {
        (r.operation, r.resource, r.name, r.pattern)
        for r in acl_rules(settings)
        if r.principal == principal
    }


def test_every_faust_changelog_and_leader_topic_is_granted_to_its_app_only(
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=tmp_path, worker=WorkerSettings(app_id="w1"))
    worker_app = create_app(settings).app
    keeper_app = PositionKeeper(settings, reconcile=False).app
    for app, principal in ((worker_app, "oms-worker"), (keeper_app, "oms-positions")):
        internal = [t.changelog_topic.get_topic_name() for t in app.tables.values()]
        internal.append(f"{app.conf.id}-__assignor-__leader")
        granted = rules_of(settings, principal)
        for name in internal:
            for op in ("READ", "WRITE", "CREATE", "DESCRIBE"):
                assert (op, "topic", name, "literal") in granted, (principal, name, op)
            others = [
                r.principal
                for r in acl_rules(settings)
                if r.name == name and r.principal != principal
            ]
            assert others == [], f"{name} also granted to {others}"


def test_desks_write_requests_and_read_only_their_accounts(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        kafka=KafkaSettings(topic_prefix="p."),
        desks={"desk-a": ["alice", "ann"], "desk-b": ["bob"]},
    )
    assert rules_of(settings, "desk-a") == {
        ("WRITE", "topic", "p.order-requests", "literal"),
        ("READ", "topic", "p.acct.alice.", "prefixed"),
        ("DESCRIBE", "topic", "p.acct.alice.", "prefixed"),
        ("READ", "topic", "p.acct.ann.", "prefixed"),
        ("DESCRIBE", "topic", "p.acct.ann.", "prefixed"),
        ("READ", "group", "desk-a.", "prefixed"),
    }
    # The prefix is what every per-account topic of the account starts with.
    for kind in ("events", "positions", "notifications"):
        assert settings.account_topic("alice", kind).startswith("p.acct.alice.")
    assert not any(
        r.name.startswith("p.acct.bob") for r in acl_rules(settings) if r.principal == "desk-a"
    )


def test_the_sink_writes_only_dead_letters_and_components_never_write_requests() -> None:
    settings = Settings()
    writes = {
        principal: {
            r.name
            for r in acl_rules(settings)
            if r.principal == principal and r.operation == "WRITE"
        }
        for principal in COMPONENT_PRINCIPALS.values()
    }
    assert writes["oms-sink"] == {"oms.dead-letters"}
    assert writes["oms-gateway"] == {"oms.execution-reports", "oms.market-ticks"}
    assert all("oms.order-requests" not in names for names in writes.values())
    # Nothing is granted on every topic: no wildcard (but the monitor's, which only
    # describes); a prefix grants no more than seeing names, except the per-account topics
    # the fan-out fills.
    for rule in acl_rules(settings):
        assert rule.name != ""
        assert rule.name != "*" or (rule.principal, rule.operation) == ("oms-monitor", "DESCRIBE")
        if rule.pattern == "prefixed" and rule.resource == "topic":
            assert rule.operation in ("DESCRIBE", "READ") or (
                rule.principal == "oms-fanout" and rule.name == "oms.acct."
            ), rule


def test_the_groups_are_the_services_own(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    groups = {(r.principal, r.name) for r in acl_rules(settings) if r.resource == "group"}
    assert ("oms-fanout", fanout_group(settings)) in groups
    assert ("oms-notifier", notifier_app_id(settings)) in groups
    assert ("oms-positions", keeper_app_id(settings)) in groups
    assert ("oms-worker", settings.worker.app_id) in groups


def test_the_table_reads_as_lines_per_principal() -> None:
    table = acl_table(Settings(desks={"desk-a": ["alice"]}))
    assert set(table) == {*COMPONENT_PRINCIPALS.values(), "desk-a"}
    assert "READ topic oms.acct.alice.*" in table["desk-a"]
    assert isinstance(acl_rules(Settings())[0], AclRule)


def test_the_monitor_describes_everything_and_reads_nothing() -> None:
    monitor = rules_of(Settings(), COMPONENT_PRINCIPALS["monitor"])
    assert monitor == {
        ("DESCRIBE", "cluster", "kafka-cluster", "literal"),
        ("DESCRIBE", "group", "*", "literal"),
        ("DESCRIBE", "topic", "*", "literal"),
    }


def test_a_desks_group_prefix_covers_none_of_another_desks_groups() -> None:
    settings = Settings(desks={"desk-a": ["alice"], "desk-ab": ["bob"], "desk": ["carol"]})
    prefixes = {
        r.principal: r.name
        for r in acl_rules(settings)
        if r.resource == "group" and r.principal in settings.desks
    }
    assert prefixes == {"desk-a": "desk-a.", "desk-ab": "desk-ab.", "desk": "desk."}
    for desk, prefix in prefixes.items():
        for other in settings.desks:
            assert f"{other}.reader".startswith(prefix) == (other == desk), (desk, other)


@pytest.mark.parametrize(
    "desks",
    [
        {"desk-a": ["alice.b"]},  # oms.acct.alice.b. would sit under oms.acct.alice.
        {"desk.a": ["alice"]},  # desk.a.* groups would sit under desk.'s
        {"desk a": ["alice"]},
        {"desk-a": [""]},
        {"desk-a": ["alice/x"]},
    ],
)
def test_desk_and_account_names_that_would_widen_a_prefix_acl_are_refused(
    desks: dict[str, list[str]],
) -> None:
    with pytest.raises(ValidationError, match="may contain only letters, digits"):
        Settings(desks=desks)
    Settings(desks={"Desk_1-a": ["alice_2-B"]})
