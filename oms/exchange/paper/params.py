"""Typed access to JSON-RPC params, with Deribit's -32602 on anything malformed.

HTTP GET requests carry every value as a string, so each getter also accepts the string
form of its type.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from oms.exchange.paper.errors import invalid_param

_TRUE = ("true", "1")
_FALSE = ("false", "0")


class Params:
    """A request's params."""

    __slots__ = ("raw",)

    def __init__(self, raw: dict[str, Any]) -> None:
        self.raw = raw

    def has(self, name: str) -> bool:
        return self.raw.get(name) is not None

    def text(self, name: str, default: str | None = None, required: bool = False) -> str | None:
        value = self.raw.get(name)
        if value is None:
            if required:
                raise invalid_param(name, "value required")
            return default
        if not isinstance(value, str):
            raise invalid_param(name, "must be a string")
        return value

    def req_str(self, name: str) -> str:
        value = self.text(name, required=True)
        assert value is not None
        return value

    def choice(
        self, name: str, choices: Sequence[str], default: str | None = None, required: bool = False
    ) -> str | None:
        value = self.text(name, default, required)
        if value is not None and value not in choices:
            raise invalid_param(name, f"must be one of {', '.join(choices)}")
        return value

    def num(self, name: str, default: float | None = None, required: bool = False) -> float | None:
        value = self.raw.get(name)
        if value is None:
            if required:
                raise invalid_param(name, "value required")
            return default
        if isinstance(value, bool):
            raise invalid_param(name, "must be a number")
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise invalid_param(name, "must be a number")

    def integer(self, name: str, default: int | None = None, required: bool = False) -> int | None:
        value = self.num(name, None, required)
        if value is None:
            return default
        if not value.is_integer():
            raise invalid_param(name, "must be an integer")
        return int(value)

    def flag(self, name: str, default: bool = False) -> bool:
        value = self.raw.get(name)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            if value.lower() in _TRUE:
                return True
            if value.lower() in _FALSE:
                return False
        raise invalid_param(name, "must be a boolean")

    def str_list(self, name: str) -> list[str]:
        value = self.raw.get(name)
        if isinstance(value, str):
            # HTTP GET: a JSON array in the query string, or a single channel.
            if value.startswith("["):
                try:
                    value = orjson.loads(value)
                except orjson.JSONDecodeError:
                    raise invalid_param(name, "must be an array of strings") from None
            else:
                value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise invalid_param(name, "must be an array of strings")
        return value

    def obj_list(self, name: str) -> list[dict[str, Any]]:
        """An array of objects (HTTP GET: as a JSON array in the query string); empty if
        absent."""
        value = self.raw.get(name)
        if value is None:
            return []
        if isinstance(value, str):
            try:
                value = orjson.loads(value)
            except orjson.JSONDecodeError:
                raise invalid_param(name, "must be an array of objects") from None
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise invalid_param(name, "must be an array of objects")
        return value
