"""A Kafka message as the inbox, the fetch loop and the step loop read it (Faust's
``Message`` has these fields), for the tests of ``stream.inbox``, ``stream.transport`` and
``stream.app.consume``."""

from __future__ import annotations

from dataclasses import dataclass

from faust.types import TP


@dataclass(frozen=True)
class Msg:
    topic: str
    partition: int
    offset: int
    key: bytes | None = b"card"
    value: bytes | None = b"{}"

    @property
    def tp(self) -> TP:
        return TP(self.topic, self.partition)
