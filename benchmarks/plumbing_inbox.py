"""The worker's own input path without the work: inboxes and steps, no scoring.

``python -m benchmarks.plumbing_inbox worker --web-port N --datadir DIR`` (run by
``benchmarks.worker``). The stream worker's app class, transport and consumer settings, its
input topic read through an ``stream.inbox.Inbox`` and handed over by ``stream.app.consume``
in steps of ``FRAUD_BATCH_SIZE`` / ``FRAUD_BATCH_WITHIN_S``, as the worker's are; each step
only sends one message holding the number of events it took (to
``<namespace>.plumbing-inbox.v1``). What is left is moving messages from Kafka to the step
and acknowledging them: the most the worker's design can do on this machine. Next to
:mod:`benchmarks.plumbing`, the same with Faust's agent and stream.
"""

from __future__ import annotations

import faust

from benchmarks import stack
from models.settings import Settings
from stream.app import consume, read_through_inboxes  # importing it builds (never starts) its app
from stream.worker import RawMessage


def create_app(settings: Settings) -> faust.App:
    app, source, counts = stack.plumbing_app(
        settings, "plumbing-inbox", stack.inbox_plumbing_topic(settings.namespace)
    )
    inbox = read_through_inboxes(app, {source: settings.batch_size})[source.get_topic_name()]

    async def count(messages: list[RawMessage]) -> None:
        await counts.send(value=str(len(messages)).encode())

    async def nothing() -> None:
        return None

    @app.task
    async def drain() -> None:
        await consume(
            app, inbox, settings.batch_size, settings.batch_within_s, count, nothing, print
        )

    return app


app = create_app(Settings.from_env())

if __name__ == "__main__":
    app.main()
