"""Exchange credentials per account, from the environment or a secrets file.

Never put these in settings or logs. Sources, first match wins:

1. ``OMS_ACCOUNT_<ID>_CLIENT_ID`` / ``OMS_ACCOUNT_<ID>_CLIENT_SECRET`` (``<ID>`` upper-cased,
   ``-`` and ``.`` as ``_``);
2. the JSON secrets file (``OMS_SECRETS_FILE``, default ``.local/secrets.json``)::

       {"accounts": {"demo": {"client_id": "...", "client_secret": "..."}}}
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path


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
    """Write a secrets file readable by its owner only (other sections, such as the
    notification channels' ``notify``, are kept)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = json.loads(path.read_text()) if path.exists() else {}
    body |= {
        "accounts": {
            account_id: {"client_id": c.client_id, "client_secret": c.client_secret}
            for account_id, c in credentials.items()
        }
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(body, indent=2))
    tmp.chmod(0o600)
    tmp.replace(path)


class SecretStore:
    """Looks up exchange credentials for an account."""

    def __init__(self, secrets_file: Path | None = None) -> None:
        self._file_entries = load_secrets_file(secrets_file) if secrets_file else {}

    def credentials(self, account_id: str) -> Credentials | None:
        client_id = os.environ.get(_env_name(account_id, "CLIENT_ID"))
        client_secret = os.environ.get(_env_name(account_id, "CLIENT_SECRET"))
        if client_id and client_secret:
            return Credentials(client_id, client_secret)
        return self._file_entries.get(account_id)

    def accounts(self) -> list[str]:
        """Accounts that have credentials in the secrets file."""
        return sorted(self._file_entries)

    def trading_accounts(self, configured: Iterable[str]) -> list[str]:
        """Accounts that may trade: configured or in the secrets file, and with credentials."""
        names = set(configured) | set(self._file_entries)
        return sorted(a for a in names if self.credentials(a) is not None)
