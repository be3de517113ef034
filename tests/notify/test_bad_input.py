"""Bad settings, bad channels, bad templates and bad providers: a clear error or a failed
record with its reason, the other notifications keep flowing, and no secret shows up in any
record, dead letter or log line."""

from __future__ import annotations

import json
from typing import Any

import pytest

from oms.notify.secrets import write_notify_secrets
from oms.notify.settings_io import NotificationSettingsError, build_settings
from oms.schemas import ReasonCode, Topic
from oms.settings import Settings
from oms_dev.devstack.testing import consume_json, produce_json
from oms_dev.notify_fakes import FakeProviders
from tests.notify.conftest import (
    SECRETS,
    order_event,
    publish_events,
    records,
    running,
    store,
    wait_until,
    wecom_channel,
)


@pytest.mark.parametrize(
    ("kwargs", "reason", "where"),
    [
        ({"channels": ["pager"]}, ReasonCode.UNKNOWN_CHANNEL, "pager"),
        ({"channels": [{"kind": "fax", "name": "f"}]}, ReasonCode.UNKNOWN_CHANNEL, "fax"),
        ({"channels": ["email"]}, ReasonCode.INVALID_SETTINGS, "needs its configuration"),
        ({"channels": [{"kind": "email", "host": "h", "sender": "oms@example.com",
                        "recipients": ["not-an-address"]}]},
         ReasonCode.INVALID_SETTINGS, "invalid email address"),
        ({"channels": [{"kind": "twilio", "account_sid": "AC" + "0" * 32, "secret_ref": "t",
                        "from_number": "+14155550100", "to_numbers": ["0800"]}]},
         ReasonCode.INVALID_SETTINGS, "E.164"),
        ({"timezone": "Mars/Olympus"}, ReasonCode.INVALID_SETTINGS, "unknown time zone"),
        ({"rules": [{"channels": ["nowhere"]}]}, ReasonCode.INVALID_SETTINGS, "unknown channels"),
        ({"silences": [{"ends_at": 1}]}, ReasonCode.INVALID_SETTINGS, "needs event_types"),
        ({"notification_types": ["fills"]}, ReasonCode.INVALID_SETTINGS, "fills"),
        ({"quiet_hours": [{"start": "25:00", "end": "07:00"}]}, ReasonCode.INVALID_SETTINGS,
         "quiet_hours"),
    ],
)  # fmt: skip
def test_bad_settings_are_refused_with_a_reason(
    kwargs: dict[str, Any], reason: ReasonCode, where: str
) -> None:
    with pytest.raises(NotificationSettingsError) as err:
        build_settings("acct", **kwargs)
    assert err.value.reason_code is reason
    assert where in str(err.value)


async def test_bad_channels_templates_and_providers_fail_with_reasons_while_others_flow(
    nsettings: Settings, fakes: FakeProviders, capsys: pytest.CaptureFixture[str]
) -> None:
    write_notify_secrets(nsettings.resolved_secrets_file, {"bad-key": "secret-but-not-a-uuid"})
    bad_key = {**wecom_channel(fakes, "bad"), "secret_ref": "bad-key"}
    missing = {**wecom_channel(fakes, "missing"), "secret_ref": "no-such-secret"}
    await store(nsettings, "acct-bad", channels=[bad_key, missing, "console"])
    await store(
        nsettings, "acct-tpl", channels=[wecom_channel(fakes)],
        templates={"filled": "{instrument} {no_such_field}"},
    )  # fmt: skip
    await store(nsettings, "acct-flaky", channels=[wecom_channel(fakes, "flaky")])
    await store(nsettings, "acct-ok", channels=[wecom_channel(fakes)])
    settings_topic = nsettings.topic(Topic.NOTIFICATION_SETTINGS)
    # Garbage for acct-ok's key: dead-lettered, acct-ok keeps its previous settings.
    await produce_json(
        nsettings.kafka.bootstrap, settings_topic, [("acct-ok", {"account_id": "acct-ok",
                                                                 "channels": "wecom"})]
    )  # fmt: skip
    # acct-flaky: garbage, then a hang, then garbage again: retries exhausted.
    fakes.script("wecom", "garbage", "hang", "garbage")
    async with running(nsettings) as notifier:
        await publish_events(nsettings, [order_event("acct-flaky", 1)])
        await wait_until(lambda: notifier.deliverer.notifications["undelivered"] == 1)
        await publish_events(
            nsettings,
            [order_event("acct-bad", 1), order_event("acct-tpl", 1), order_event("acct-ok", 1)],
        )
        await wait_until(lambda: sum(notifier.deliverer.notifications.values()) == 4)
        assert notifier.counters["settings_invalid"] == 1
        got = await records(nsettings, 8)
    by_account: dict[str, list[tuple[str, str, str | None]]] = {}
    for r in got:
        by_account.setdefault(r["account_id"], []).append(
            (r["channel"], r["status"], r["reason_code"])
        )
    assert by_account["acct-flaky"] == [
        ("flaky", "failed", "provider_garbage"),
        ("flaky", "failed", "provider_timeout"),
        ("flaky", "failed", "provider_garbage"),
    ]
    assert by_account["acct-bad"] == [
        ("bad", "failed", "invalid_recipient"),
        ("missing", "failed", "secret_missing"),
        ("console", "sent", None),
    ]
    assert by_account["acct-tpl"] == [("wecom", "failed", "template_error")]
    assert by_account["acct-ok"] == [("wecom", "sent", None)]  # previous settings still apply
    template_error = next(r for r in got if r["account_id"] == "acct-tpl")
    assert "no_such_field" in template_error["error_message"]
    dead = await consume_json(nsettings.kafka.bootstrap, nsettings.topic(Topic.DEAD_LETTERS), 1)
    assert dead[0][1]["reason_code"] == "invalid_settings"
    assert dead[0][1]["source_topic"] == settings_topic
    everything = json.dumps(got) + json.dumps(dead) + "".join(capsys.readouterr())
    for secret in [*SECRETS.values(), "secret-but-not-a-uuid"]:
        assert secret not in everything
