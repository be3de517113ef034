"""Desk query tokens (oms.secrets.QueryTokens) and what a bearer header resolves to
(oms.sinks.access.QueryAccess)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from oms.secrets import OPERATOR, QueryPrincipal, QueryTokens
from oms.sinks.access import AccessDenied, QueryAccess
from oms.sinks.scope import EVERYTHING, Scope

DESKS = {"alpha": ["a1", "a2"], "beta-desk": ["b1"], "empty": []}


@pytest.fixture
def secrets(tmp_path: Path) -> Path:
    path = tmp_path / "secrets.json"
    path.write_text(
        json.dumps(
            {
                "accounts": {},
                "query_tokens": {"alpha": "file-alpha", "beta-desk": "file-beta", "ghost": "g"},
                "query_operator_token": "file-operator",
            }
        )
    )
    return path


def test_tokens_come_from_the_file(secrets: Path) -> None:
    tokens = QueryTokens(DESKS, secrets)
    assert tokens.for_desk("alpha") == "file-alpha"
    assert tokens.operator == "file-operator"
    assert tokens.desks_with_tokens() == ["alpha", "beta-desk"]  # "ghost" is no desk
    assert tokens.identify("file-beta") == QueryPrincipal("beta-desk")
    assert tokens.identify("file-operator") == OPERATOR and OPERATOR.is_operator
    assert tokens.identify("g") is None
    assert tokens.identify("file-alph") is None
    assert tokens.identify("") is None


def test_the_environment_wins(secrets: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMS_DESK_BETA_DESK_QUERY_TOKEN", "env-beta")
    monkeypatch.setenv("OMS_QUERY_OPERATOR_TOKEN", "env-operator")
    tokens = QueryTokens(DESKS, secrets)
    assert tokens.for_desk("beta-desk") == "env-beta"
    assert tokens.identify("file-beta") is None
    assert tokens.identify("env-operator") == OPERATOR
    assert tokens.for_desk("alpha") == "file-alpha"


def test_tokens_never_show(secrets: Path, caplog: pytest.LogCaptureFixture) -> None:
    tokens = QueryTokens(DESKS, secrets)
    logging.getLogger("test").warning("tokens: %r %s", tokens, tokens)
    assert "file-" not in caplog.text and "alpha" in caplog.text


def test_no_secrets_file_means_no_tokens(tmp_path: Path) -> None:
    tokens = QueryTokens(DESKS, tmp_path / "missing.json")
    assert tokens.desks_with_tokens() == [] and tokens.operator is None
    assert tokens.identify("anything") is None


def test_a_bearer_header_resolves_to_a_scope(secrets: Path) -> None:
    access = QueryAccess(DESKS, QueryTokens(DESKS, secrets))
    assert access.enforced
    assert access.scope_for("Bearer file-alpha") == Scope("alpha", frozenset({"a1", "a2"}))
    assert access.scope_for("bearer  file-beta ") == Scope("beta-desk", frozenset({"b1"}))
    assert access.scope_for("Bearer file-operator") == EVERYTHING
    for header, reason in [
        (None, "missing_token"),
        ("", "missing_token"),
        ("Basic file-alpha", "missing_token"),
        ("file-alpha", "missing_token"),
        ("Bearer nope", "invalid_token"),
        ("Bearer g", "invalid_token"),
    ]:
        with pytest.raises(AccessDenied) as denied:
            access.scope_for(header)
        assert denied.value.reason == reason and denied.value.status == 401
        assert "file-" not in str(denied.value)


def test_without_desks_nothing_is_enforced(secrets: Path) -> None:
    access = QueryAccess({}, QueryTokens({}, secrets))
    assert not access.enforced
    assert access.scope_for(None) == EVERYTHING
    assert access.scope_for("Bearer whatever") == EVERYTHING
