"""``stream.app.consume``: the loop that hands an inbox's messages to the worker a step at a
time, in Faust's place. Faust's consumer and monitor are faked (what the loop calls of them
is recorded); the real ones are in the integration tests, the rebalances in
``tests/integration/test_faults.py``."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from faust.types import TP

from stream.app import consume
from stream.inbox import Inbox
from stream.worker import RawMessage
from tests.unit.stream.fake_messages import Msg

TOPIC = "ns.transactions.v1"


@dataclass
class Recorder:
    """Faust's consumer, its monitor and the worker, as far as the loop uses them."""

    calls: list[tuple[str, int]] = field(default_factory=list)
    flow_active: bool = True
    can_resume_flow: asyncio.Event = field(default_factory=asyncio.Event)
    dead: list[tuple[int, str]] = field(default_factory=list)
    stream_inbound_time: dict[TP, float] = field(default_factory=dict)

    def track_message(self, message: Msg) -> None:
        self.calls.append(("track", message.offset))

    def ack(self, message: Msg) -> None:
        self.calls.append(("ack", message.offset))

    def dead_letter(self, message: RawMessage, reason: str) -> None:
        self.dead.append((message.offset, reason))


def messages(first: int, n: int) -> list[Msg]:
    return [Msg(TOPIC, 0, offset) for offset in range(first, first + n)]


def start_loop(
    recorder: Recorder,
    inbox: Inbox[Any],
    handle: Any,
    size: int = 3,
    *,
    prepare: Any = None,
    within_s: float = 0.0,
) -> asyncio.Task[None]:
    """``consume`` over ``inbox`` as a task, with the recorder as Faust and a recorded flush."""
    app = SimpleNamespace(consumer=recorder, monitor=recorder)

    async def after_step() -> None:
        recorder.calls.append(("flush", 0))

    return asyncio.create_task(
        consume(
            app,  # type: ignore[arg-type]
            inbox,
            size,
            within_s,
            handle,
            after_step,
            recorder.dead_letter,
            prepare=prepare,
        )
    )


async def run_loop(
    recorder: Recorder,
    inbox: Inbox[Any],
    handle: Any,
    until: Any,
    size: int = 3,
    *,
    prepare: Any = None,
    within_s: float = 0.0,
) -> None:
    loop = start_loop(recorder, inbox, handle, size, prepare=prepare, within_s=within_s)
    try:
        for _ in range(500):
            if until():
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"the loop never got there: {recorder.calls}")
    finally:
        loop.cancel()


def test_a_step_is_tracked_handled_flushed_then_acknowledged_in_that_order():
    recorder = Recorder()
    handled: list[list[tuple[int, bytes]]] = []

    async def handle(raw: list[RawMessage]) -> None:
        recorder.calls.append(("handle", len(raw)))
        handled.append([(m.offset, m.value) for m in raw])

    async def run() -> None:
        inbox: Inbox[Any] = Inbox(TOPIC, capacity=10)
        inbox.put([*messages(0, 2), Msg(TOPIC, 0, 2, value=None)])
        await run_loop(recorder, inbox, handle, until=lambda: ("ack", 2) in recorder.calls)

    asyncio.run(run())
    assert recorder.calls == [
        ("track", 0), ("track", 1), ("track", 2), ("handle", 3), ("flush", 0),
        ("ack", 0), ("ack", 1), ("ack", 2),
    ]  # fmt: skip
    assert handled == [[(0, b"{}"), (1, b"{}"), (2, b"")]]  # a tombstone: empty, dead-lettered
    assert list(recorder.stream_inbound_time) == [TP(TOPIC, 0)]  # Faust's stalled-stream check


def test_a_step_that_raises_goes_to_the_dead_letter_topic_and_the_loop_goes_on():
    recorder = Recorder()
    steps: list[int] = []

    async def handle(raw: list[RawMessage]) -> None:
        steps.append(raw[0].offset)
        if raw[0].offset == 0:
            raise KeyError("a bug")

    async def run() -> None:
        inbox: Inbox[Any] = Inbox(TOPIC, capacity=10)
        inbox.put(messages(0, 5))
        await run_loop(recorder, inbox, handle, until=lambda: ("ack", 4) in recorder.calls)

    asyncio.run(run())
    assert steps == [0, 3]
    assert recorder.dead == [(offset, "the worker failed on it (KeyError)") for offset in range(3)]
    assert [offset for call, offset in recorder.calls if call == "ack"] == [0, 1, 2, 3, 4]


def test_nothing_is_taken_while_the_flow_is_stopped():
    """A rebalance stops the flow: the messages stay in the inbox (the revocation drops
    them and reads them again); once the flow resumes they are handled."""
    recorder = Recorder(flow_active=False)
    handled: list[int] = []

    async def handle(raw: list[RawMessage]) -> None:
        handled.extend(m.offset for m in raw)

    async def run() -> tuple[list[int], int]:
        inbox: Inbox[Any] = Inbox(TOPIC, capacity=10)
        inbox.put(messages(0, 2))

        async def resume_later() -> tuple[list[int], int]:
            await asyncio.sleep(0.2)
            seen = (list(handled), len(inbox))
            recorder.flow_active = True
            recorder.can_resume_flow.set()
            return seen

        resumer = asyncio.create_task(resume_later())
        await run_loop(recorder, inbox, handle, until=lambda: handled == [0, 1])
        return await resumer

    before_resume = asyncio.run(run())
    assert before_resume == ([], 2)


def test_a_step_cut_short_by_the_worker_stopping_is_not_acknowledged():
    """Faust commits what was acknowledged when the worker stops: a step cancelled halfway
    must stay unacknowledged, so that the next worker reads it again."""
    recorder = Recorder()
    started = asyncio.Event()

    async def handle(raw: list[RawMessage]) -> None:
        started.set()
        await asyncio.sleep(60)  # e.g. waiting for Redis when the stop comes

    async def run() -> None:
        inbox: Inbox[Any] = Inbox(TOPIC, capacity=10)
        inbox.put(messages(0, 2))
        loop = start_loop(recorder, inbox, handle, 5)
        await asyncio.wait_for(started.wait(), 5)
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)

    asyncio.run(run())
    assert ("flush", 0) in recorder.calls  # what the step sent still goes
    assert not [call for call in recorder.calls if call[0] == "ack"]


# --- with a prepare: the next step's look-ups while this step is handled ------------------


def test_with_prepare_the_next_step_is_prepared_while_this_one_is_handled():
    recorder = Recorder()

    async def prepare(raw: list[RawMessage]) -> list[RawMessage]:
        recorder.calls.append(("prepare", raw[0].offset))
        await asyncio.sleep(0)  # a Redis look-up
        return raw

    async def handle(raw: list[RawMessage]) -> None:
        recorder.calls.append(("handle", raw[0].offset))
        await asyncio.sleep(0.01)  # saving to Redis: the next step's prepare runs meanwhile
        recorder.calls.append(("handled", raw[0].offset))

    async def run() -> None:
        inbox: Inbox[Any] = Inbox(TOPIC, capacity=10)
        inbox.put(messages(0, 9))  # three steps of 3, all there already
        await run_loop(
            recorder, inbox, handle, until=lambda: ("ack", 8) in recorder.calls, prepare=prepare
        )

    asyncio.run(run())
    calls = recorder.calls
    assert [c for c in calls if c[0] == "handle"] == [("handle", 0), ("handle", 3), ("handle", 6)]
    assert calls.index(("prepare", 3)) < calls.index(("handled", 0))  # the overlap
    assert calls.index(("prepare", 6)) < calls.index(("handled", 3))
    for first in (0, 3, 6):  # each step: handled, flushed, then acknowledged
        handled = calls.index(("handled", first))
        assert (
            calls.index(("flush", 0), handled)
            < calls.index(("ack", first))
            < calls.index(("ack", first + 2))
        )
    assert [offset for call, offset in calls if call == "ack"] == list(range(9))


def test_with_prepare_a_step_is_finished_before_the_loop_waits_for_more():
    """Only a step already in the inbox is prepared ahead: the last one is handled and
    acknowledged at once, not held until more messages come (or ``within_s`` passes)."""
    recorder = Recorder()

    async def prepare(raw: list[RawMessage]) -> list[RawMessage]:
        recorder.calls.append(("prepare", raw[0].offset))
        return raw

    async def handle(raw: list[RawMessage]) -> None:
        recorder.calls.append(("handle", raw[0].offset))

    async def run() -> None:
        inbox: Inbox[Any] = Inbox(TOPIC, capacity=10)
        inbox.put(messages(0, 3))
        await run_loop(
            recorder,
            inbox,
            handle,
            until=lambda: ("ack", 2) in recorder.calls,
            prepare=prepare,
            within_s=30.0,  # a second step would wait this long for its messages
        )

    asyncio.run(run())
    assert [c for c in recorder.calls if c[0] in ("prepare", "handle")] == [
        ("prepare", 0),
        ("handle", 0),
    ]


def test_with_prepare_a_step_whose_prepare_raises_is_dead_lettered_and_the_loop_goes_on():
    recorder = Recorder()
    handled: list[int] = []

    async def prepare(raw: list[RawMessage]) -> list[RawMessage]:
        if raw[0].offset == 0:
            raise KeyError("a bug")
        return raw

    async def handle(raw: list[RawMessage]) -> None:
        handled.append(raw[0].offset)

    async def run() -> None:
        inbox: Inbox[Any] = Inbox(TOPIC, capacity=10)
        inbox.put(messages(0, 6))
        await run_loop(
            recorder, inbox, handle, until=lambda: ("ack", 5) in recorder.calls, prepare=prepare
        )

    asyncio.run(run())
    assert handled == [3]
    assert recorder.dead == [(offset, "the worker failed on it (KeyError)") for offset in range(3)]
    assert [offset for call, offset in recorder.calls if call == "ack"] == list(range(6))


def test_with_prepare_the_worker_stopping_acknowledges_neither_step_in_hand():
    """Stopped while one step is handled and the next is prepared: neither is acknowledged
    (the next worker reads both again), and the prepare under way is cancelled."""
    recorder = Recorder()
    handling = asyncio.Event()
    prepares: list[asyncio.Task[Any]] = []

    async def prepare(raw: list[RawMessage]) -> list[RawMessage]:
        task = asyncio.current_task()
        assert task is not None
        prepares.append(task)
        if raw[0].offset == 3:
            await asyncio.sleep(60)  # waiting for Redis when the stop comes
        return raw

    async def handle(raw: list[RawMessage]) -> None:
        handling.set()
        await asyncio.sleep(60)

    async def run() -> None:
        inbox: Inbox[Any] = Inbox(TOPIC, capacity=10)
        inbox.put(messages(0, 6))
        loop = start_loop(recorder, inbox, handle, 3, prepare=prepare)
        await asyncio.wait_for(handling.wait(), 5)
        await asyncio.sleep(0.01)
        assert len(prepares) == 2 and not prepares[1].done()  # in hand: waiting for Redis
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
        await asyncio.sleep(0)  # a cancelled task is done once it ran its cancellation
        assert prepares[1].cancelled()  # by the loop, before asyncio.run's own clean-up

    asyncio.run(run())
    assert not [call for call in recorder.calls if call[0] == "ack"]
