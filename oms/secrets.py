"""Exchange credentials per account, from the environment or a secrets file.

Never put these in settings or logs. Sources, first match wins:

1. ``OMS_ACCOUNT_<ID>_CLIENT_ID`` / ``OMS_ACCOUNT_<ID>_CLIENT_SECRET`` (``<ID>`` upper-cased,
   ``-`` and ``.`` as ``_``);
2. the JSON secrets file (``OMS_SECRETS_FILE``, default ``.local/secrets.json``)::

       {"accounts": {"demo": {"client_id": "...", "client_secret": "..."}}}

Request signing keys come from the same two places:
``OMS_ACCOUNT_<ID>_SIGNING_KEY_ID`` / ``OMS_ACCOUNT_<ID>_SIGNING_KEY``, or the file's
``"signing_keys": {"demo": {"<key id>": "<key>"}}`` (several per account while rotating).

Query tokens of the sink's SQL endpoint (one per desk, and the operator's) likewise:
``OMS_DESK_<DESK>_QUERY_TOKEN`` / ``OMS_QUERY_OPERATOR_TOKEN``, or the file's
``"query_tokens": {"<desk>": "<token>"}`` / ``"query_operator_token"`` (:class:`QueryTokens`).

The Kafka password of the process's principal (``kafka.username``) likewise:
``OMS_KAFKA_PASSWORD``, or the file's ``"kafka_users": {"<username>": "<password>"}`` (one
file can then serve every principal of a development stack).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Credentials:
    """A Deribit API key pair. ``repr`` hides the secret so it can never reach a log."""

    client_id: str
    client_secret: str = field(repr=False)

    def __repr__(self) -> str:
        return f"Credentials(client_id={self.client_id!r}, client_secret='***')"


def _env_name(account_id: str, part: str) -> str:
    return f"OMS_ACCOUNT_{re.sub(r'[^A-Za-z0-9]', '_', account_id).upper()}_{part}"


def load_secrets_file(path: Path) -> dict[str, Credentials]:
    """Read every account's credentials from a secrets file (missing file: none)."""
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    accounts = data.get("accounts", {})
    return {
        account_id: Credentials(str(entry["client_id"]), str(entry["client_secret"]))
        for account_id, entry in accounts.items()
    }


def write_secrets_file(path: Path, credentials: dict[str, Credentials]) -> None:
    """Write a secrets file readable by its owner only (other sections of an existing file,
    e.g. ``signing_keys``, are kept)."""
    body = _read_json(path)
    body["accounts"] = {
        account_id: {"client_id": c.client_id, "client_secret": c.client_secret}
        for account_id, c in credentials.items()
    }
    _write_json(path, body)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    return data if isinstance(data, dict) else {}


def _write_json(path: Path, body: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(body, indent=2))
    tmp.chmod(0o600)
    tmp.replace(path)


class SecretStore:
    """Looks up exchange credentials for an account.

    ``exchange_accounts`` maps an account to the Deribit sub-account (secrets entry) whose
    key pair it trades with (``risk.accounts.<A>.permissions.exchange_account``);
    unmapped accounts use the entry of their own name.
    """

    def __init__(
        self, secrets_file: Path | None = None, exchange_accounts: Mapping[str, str] | None = None
    ) -> None:
        self._file_entries = load_secrets_file(secrets_file) if secrets_file else {}
        self._exchange_accounts = dict(exchange_accounts or {})

    def credentials(self, account_id: str) -> Credentials | None:
        entry = self._exchange_accounts.get(account_id, account_id)
        client_id = os.environ.get(_env_name(entry, "CLIENT_ID"))
        client_secret = os.environ.get(_env_name(entry, "CLIENT_SECRET"))
        if client_id and client_secret:
            return Credentials(client_id, client_secret)
        return self._file_entries.get(entry)

    def accounts(self) -> list[str]:
        """Accounts that have credentials in the secrets file."""
        return sorted(self._file_entries)

    def trading_accounts(self, configured: Iterable[str]) -> list[str]:
        """Accounts that may trade: configured or in the secrets file, and with credentials."""
        names = set(configured) | set(self._file_entries)
        return sorted(a for a in names if self.credentials(a) is not None)


@dataclass(frozen=True)
class SigningKey:
    """A request-signing key of one account. ``repr`` hides the key."""

    account_id: str
    key_id: str
    secret: bytes = field(repr=False)

    def __repr__(self) -> str:
        return f"SigningKey(account_id={self.account_id!r}, key_id={self.key_id!r}, secret='***')"


def load_signing_keys(path: Path) -> dict[str, dict[str, SigningKey]]:
    """Every account's signing keys from a secrets file: ``{account: {key_id: key}}``."""
    section = _read_json(path).get("signing_keys", {})
    return {
        account_id: {
            str(key_id): SigningKey(account_id, str(key_id), str(secret).encode())
            for key_id, secret in keys.items()
        }
        for account_id, keys in section.items()
    }


def write_signing_keys(path: Path, keys: dict[str, dict[str, str]]) -> None:
    """Set the ``signing_keys`` section of a secrets file (``{account: {key_id: key}}``),
    keeping everything else; the file stays readable by its owner only."""
    body = _read_json(path)
    body["signing_keys"] = keys
    _write_json(path, body)


class SigningKeys:
    """Looks up request-signing keys: by key id (to verify) or an account's own (to sign)."""

    def __init__(self, secrets_file: Path | None = None) -> None:
        self._file_keys = load_signing_keys(secrets_file) if secrets_file else {}

    def _env_key(self, account_id: str) -> SigningKey | None:
        key_id = os.environ.get(_env_name(account_id, "SIGNING_KEY_ID"))
        secret = os.environ.get(_env_name(account_id, "SIGNING_KEY"))
        if key_id and secret:
            return SigningKey(account_id, key_id, secret.encode())
        return None

    def lookup(self, account_id: str, key_id: str) -> SigningKey | None:
        """The key ``key_id`` of ``account_id``, or None if the account has no such key."""
        env_key = self._env_key(account_id)
        if env_key is not None and env_key.key_id == key_id:
            return env_key
        return self._file_keys.get(account_id, {}).get(key_id)

    def for_signing(self, account_id: str) -> SigningKey | None:
        """The key a client of ``account_id`` signs with (the environment's, else the
        file's last-listed key, i.e. the newest while rotating)."""
        env_key = self._env_key(account_id)
        if env_key is not None:
            return env_key
        keys = self._file_keys.get(account_id)
        if not keys:
            return None
        return list(keys.values())[-1]


def _desk_env_name(desk: str) -> str:
    return f"OMS_DESK_{re.sub(r'[^A-Za-z0-9]', '_', desk).upper()}_QUERY_TOKEN"


OPERATOR_TOKEN_ENV = "OMS_QUERY_OPERATOR_TOKEN"


@dataclass(frozen=True)
class QueryPrincipal:
    """Who a query token belongs to: a desk, or the operator (``desk`` None, every account)."""

    desk: str | None

    @property
    def is_operator(self) -> bool:
        return self.desk is None


OPERATOR = QueryPrincipal(desk=None)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class QueryTokens:
    """Bearer tokens of the sink's SQL endpoint (and, on a ClickHouse server, the password
    of each desk's user). Sources, first match wins:

    1. ``OMS_DESK_<DESK>_QUERY_TOKEN`` (``<DESK>`` upper-cased, other than letters and
       digits as ``_``) and ``OMS_QUERY_OPERATOR_TOKEN``;
    2. the secrets file: ``{"query_tokens": {"<desk>": "<token>"},
       "query_operator_token": "<token>"}``.

    Tokens are compared as SHA-256 digests with :func:`hmac.compare_digest`, against every
    configured token, so neither the time taken nor an early exit says which one (or how
    much of one) matched. ``repr`` shows desk names only.
    """

    def __init__(self, desks: Iterable[str], secrets_file: Path | None = None) -> None:
        body = _read_json(secrets_file) if secrets_file else {}
        section = body.get("query_tokens", {})
        file_tokens = section if isinstance(section, dict) else {}
        self._tokens: dict[str, str] = {}
        for desk in desks:
            token = os.environ.get(_desk_env_name(desk)) or file_tokens.get(desk)
            if token:
                self._tokens[desk] = str(token)
        operator = os.environ.get(OPERATOR_TOKEN_ENV) or body.get("query_operator_token")
        self._operator = str(operator) if operator else None

    def __repr__(self) -> str:
        return f"QueryTokens(desks={sorted(self._tokens)}, operator={self._operator is not None})"

    def for_desk(self, desk: str) -> str | None:
        """The token a client of ``desk`` sends."""
        return self._tokens.get(desk)

    @property
    def operator(self) -> str | None:
        """The operator's token (full access), if one is configured."""
        return self._operator

    def desks_with_tokens(self) -> list[str]:
        """Desks that have a token (a desk without one cannot read)."""
        return sorted(self._tokens)

    def identify(self, token: str) -> QueryPrincipal | None:
        """The desk (or the operator) ``token`` belongs to, None if it matches nothing."""
        presented = _digest(token)
        candidates = [(QueryPrincipal(desk), t) for desk, t in self._tokens.items()]
        if self._operator:
            candidates.append((OPERATOR, self._operator))
        found: QueryPrincipal | None = None
        for principal, expected in candidates:
            # No early exit: every configured token is compared.
            if hmac.compare_digest(presented, _digest(expected)):
                found = principal
        return found

KAFKA_PASSWORD_ENV = "OMS_KAFKA_PASSWORD"


def load_kafka_users(path: Path) -> dict[str, str]:
    """The ``kafka_users`` section of a secrets file: ``{username: password}``."""
    section = _read_json(path).get("kafka_users", {})
    return {str(user): str(password) for user, password in section.items()}


def write_query_tokens(path: Path, desks: Mapping[str, str], operator: str | None) -> None:
    """Set the ``query_tokens`` section (``{desk: token}``) and the operator's token of a
    secrets file, keeping everything else; the file stays readable by its owner only."""
    body = _read_json(path)
    body["query_tokens"] = dict(desks)
    if operator:
        body["query_operator_token"] = operator
    _write_json(path, body)


def write_kafka_users(path: Path, users: Mapping[str, str]) -> None:
    """Set the ``kafka_users`` section of a secrets file (``{username: password}``), keeping
    everything else; the file stays readable by its owner only."""
    body = _read_json(path)
    body["kafka_users"] = dict(users)
    _write_json(path, body)


def kafka_password(username: str, secrets_file: Path | None = None) -> str | None:
    """The Kafka password of ``username``: ``OMS_KAFKA_PASSWORD``, else the secrets file's
    ``kafka_users`` entry; None when neither has one."""
    from_env = os.environ.get(KAFKA_PASSWORD_ENV)
    if from_env:
        return from_env
    if secrets_file is None:
        return None
    return load_kafka_users(secrets_file).get(username)
