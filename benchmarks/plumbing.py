"""Faust's own cost: an agent that takes events in batches, as the worker does, and does nothing.

``python -m benchmarks.plumbing worker --web-port N --datadir DIR`` (run by
``benchmarks.worker``). The stream worker's app class, consumer settings and
``take_events(FRAUD_BATCH_SIZE, FRAUD_BATCH_WITHIN_S)`` batching over raw bytes; each step
only sends one message holding the number of events it took (to
``<namespace>.plumbing.v1``), so what is left is Faust moving messages from Kafka to the
agent and acknowledging them: the most any agent built this way can do on this machine.
"""

from __future__ import annotations

from typing import Any, cast

import faust

from benchmarks import stack
from models.settings import Settings


def create_app(settings: Settings) -> faust.App:
    app, source, counts = stack.plumbing_app(
        settings, "plumbing", stack.plumbing_topic(settings.namespace)
    )

    @app.agent(source, name="plumbing")
    async def drain(stream: faust.StreamT[Any]) -> None:
        batches = cast(faust.Stream[Any], stream).take_events(
            settings.batch_size, settings.batch_within_s
        )
        async for events in batches:
            await counts.send(value=str(len(events)).encode())

    return app


app = create_app(Settings.from_env())

if __name__ == "__main__":
    app.main()
