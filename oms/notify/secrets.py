"""Secrets of notification channels, and a redactor that keeps them out of logs and records.

Channel settings travel over Kafka, so they only *name* a secret (``secret_ref``). The value
comes from, first match wins:

1. ``OMS_NOTIFY_SECRET_<REF>`` (``<REF>`` upper-cased, other characters as ``_``);
2. the secrets file's ``notify`` section: ``{"notify": {"<ref>": "<value>"}}``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path


def _env_name(ref: str) -> str:
    return f"OMS_NOTIFY_SECRET_{re.sub(r'[^A-Za-z0-9]', '_', ref).upper()}"


class NotifySecrets:
    """Looks up channel secrets by reference; every value handed out is remembered so that
    :meth:`redact` can strip it from any text."""

    def __init__(self, secrets_file: Path | None = None) -> None:
        self._file: dict[str, str] = {}
        if secrets_file is not None and secrets_file.exists():
            data = json.loads(secrets_file.read_text())
            self._file = {str(k): str(v) for k, v in (data.get("notify") or {}).items()}
        self._known: set[str] = set(self._file.values())

    def get(self, ref: str) -> str | None:
        value = os.environ.get(_env_name(ref)) or self._file.get(ref)
        if value:
            self._known.add(value)
        return value

    def redact(self, text: str) -> str:
        """``text`` with every known secret replaced by ``***``."""
        for secret in self._known:
            if len(secret) >= 4 and secret in text:
                text = text.replace(secret, "***")
        return text


def write_notify_secrets(path: Path, values: dict[str, str]) -> None:
    """Merge ``values`` into the secrets file's ``notify`` section (mode 600)."""
    data = json.loads(path.read_text()) if path.exists() else {}
    data.setdefault("notify", {}).update(values)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.chmod(0o600)
    tmp.replace(path)
