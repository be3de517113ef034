"""Faust codecs for our pydantic records.

Table values stay Python objects in memory; these codecs only shape the changelog bytes,
which are the same JSON as on every other topic.
"""

from __future__ import annotations

from typing import Any

from faust.serializers.codecs import Codec

from oms.schemas import OrderRecord, Record


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


class OrderRecordValue:
    """The ``value_type`` of the orders table.

    Faust picks a table's codec from ``value_type._options.serializer`` (made for faust
    Records) and, after decoding, calls ``value_type.from_data``; this adapter plugs our
    pydantic codec into both, so the changelog holds the same JSON as our topics.
    """

    class _options:  # the attribute name Faust looks up
        serializer = RecordCodec(OrderRecord)

    @classmethod
    def from_data(cls, data: Any, preferred_type: Any = None) -> Any:
        return data
