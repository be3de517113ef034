"""Faust codecs for our pydantic records and string keys.

Table values stay Python objects in memory; these codecs only shape the changelog bytes,
which are the same JSON as on every other topic.
"""

from __future__ import annotations

from typing import Any

from faust.serializers.codecs import Codec

from oms.schemas import Record


class StrKeyCodec(Codec):
    """UTF-8 string keys, so recovered tables are keyed by ``str`` as when written."""

    def _dumps(self, s: Any) -> bytes:
        return s.encode() if isinstance(s, str) else bytes(s)

    def _loads(self, s: bytes) -> str:
        return s.decode()


class RecordCodec(Codec):
    """A pydantic :class:`Record` as JSON."""

    def __init__(self, model: type[Record], **kwargs: Any) -> None:
        super().__init__(model=model, **kwargs)
        self._model = model

    def _dumps(self, s: Any) -> bytes:
        data: bytes = s.to_bytes()
        return data

    def _loads(self, s: bytes) -> Record:
        return self._model.from_bytes(s)
