"""The resume rules (parley_client/view.py) against random disconnects: however
a reply's connection is cut, replayed, repeated, resynced or gapped, the text
the client assembles is the reply, once, and the run completes once.

Two levels: the view alone, fed the frames a server would send (many cases,
fast), and the whole client over real sockets against a loopback server that
cuts connections at random points (fewer cases, every reconnect real).
"""

from __future__ import annotations

import asyncio

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from parley_client import (
    ConnectionState,
    MessagePosted,
    ParleyClient,
    RetryPolicy,
    RunCompleted,
    TextDelta,
    TextReset,
    ThreadView,
)
from parley_client.events import ResyncNeeded
from parley_client.frames import Frame

from tests.client.fake_thread import LoopbackThreadServer, Plan, ThreadLog

chunks = st.lists(
    st.text(alphabet="ab ,.\nxyzé", min_size=1, max_size=4), min_size=1, max_size=25
)
plans = st.lists(
    st.builds(
        Plan,
        start=st.sampled_from(["replay", "replay", "resync", "repeat"]),
        repeat=st.integers(0, 6),
        cut_after=st.one_of(st.none(), st.integers(0, 35)),
        drop=st.one_of(st.none(), st.integers(0, 35)),
        lag=st.integers(0, 4),
    ),
    max_size=6,
)


def assemble(events) -> tuple[str, list[RunCompleted], int]:
    text, completed, resets = "", [], 0
    for event in events:
        if isinstance(event, TextDelta):
            text += event.text
        elif isinstance(event, TextReset):
            text, resets = event.text, resets + 1
        elif isinstance(event, RunCompleted):
            completed.append(event)
    return text, completed, resets


def deliver(log: ThreadLog, connection_plans: list[Plan]) -> list:
    """What one client's view makes of the thread across these connections,
    fed as the loopback server would send it (a lost connection's client
    reconnects with its last_event_id)."""
    view, produced, events = ThreadView(), 0, []

    def feed(frame: dict) -> bool:
        applied = view.apply(Frame.from_dict(frame))
        events.extend(e for e in applied if not isinstance(e, ResyncNeeded))
        return any(isinstance(e, ResyncNeeded) for e in applied)

    def feed_snapshot(state: str, lag: int) -> bool:
        snapshot = log.snapshot(produced, state, lag)
        gap = feed(snapshot)
        for event in log.events[snapshot["content"]["last_event_id"] : produced]:
            gap |= feed(event)
        return gap

    for number, plan in enumerate([*connection_plans, Plan()]):
        wants_snapshot = False
        if number == 0:
            wants_snapshot = feed_snapshot("snapshot", plan.lag)
        elif plan.start == "resync":
            wants_snapshot = feed_snapshot("resynced", plan.lag)
        else:
            start = max(0, view.last_event_id - plan.repeat)
            for event in log.events[start:produced]:
                wants_snapshot |= feed(event)
        sent_live, drop = 0, plan.drop
        while produced < len(log.events):
            if wants_snapshot:
                wants_snapshot = feed_snapshot("resynced", plan.lag)
            if plan.cut_after is not None and sent_live >= plan.cut_after:
                break
            event = log.events[produced]
            produced += 1
            sent_live += 1
            if drop is not None and sent_live - 1 == drop:
                drop = None
                if event["type"] == "response":
                    continue
            wants_snapshot |= feed(event)
        if produced >= len(log.events):
            break
    return events


@settings(max_examples=400, deadline=None)
@given(chunks=chunks, connection_plans=plans)
def test_the_view_builds_the_reply_once_whatever_the_disconnects(
    chunks, connection_plans
):
    log = ThreadLog(chunks)

    events = deliver(log, connection_plans)

    text, completed, resets = assemble(events)
    assert text == log.reply
    posted = [e.message.id for e in events if isinstance(e, MessagePosted)]
    assert posted == [log.message_id]  # the user's message, shown once
    assert [c.text for c in completed] == [log.reply]
    assert resets == 0


def test_a_gap_in_the_chunks_asks_for_a_snapshot_once():
    log = ThreadLog(["a", "b", "c", "d"])
    view = ThreadView()
    view.apply(Frame.from_dict(log.snapshot(0)))
    for event in log.events[:4]:  # message, queued, running, chunk 0
        view.apply(Frame.from_dict(event))

    first_gap = view.apply(Frame.from_dict(log.events[5]))  # chunk 2: 1 is missing
    second_gap = view.apply(Frame.from_dict(log.events[6]))

    assert first_gap == [ResyncNeeded(log.run_id, expected=1, got=2)]
    assert second_gap == []  # one request is enough until the snapshot comes
    assert view.text_of(log.run_id) == "a"


def test_an_event_already_applied_is_ignored():
    log = ThreadLog(["one ", "two"])
    view = ThreadView()
    view.apply(Frame.from_dict(log.snapshot(0)))
    applied = [view.apply(Frame.from_dict(e)) for e in log.events[:5]]

    again = [view.apply(Frame.from_dict(e)) for e in log.events[:5]]

    assert any(applied) and not any(again)
    assert view.text_of(log.run_id) == "one two"


async def follow_over_loopback(log: ThreadLog, connection_plans: list[Plan]):
    async with LoopbackThreadServer(log, [*connection_plans, Plan()]) as server:
        client = ParleyClient(
            server.url,
            log.thread_id,
            token="t",
            retry=RetryPolicy(initial_delay=0.005, max_delay=0.02, give_up_after=10),
        )
        states = []
        client.on_state_change(states.append)
        async with client:
            events = []
            async with asyncio.timeout(20):
                async for event in client.follow(log.run_id):
                    events.append(event)
        return events, server, client, states


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(chunks=chunks, connection_plans=plans)
def test_random_disconnects_of_real_sockets_never_lose_or_double_text(
    chunks, connection_plans
):
    log = ThreadLog(chunks)

    events, server, client, states = asyncio.run(
        follow_over_loopback(log, connection_plans)
    )

    text, completed, resets = assemble(events)
    assert text == log.reply
    assert [c.text for c in completed] == [log.reply]
    assert resets == 0
    assert client.reconnects == server.connections - 1
    if client.reconnects:
        assert ConnectionState.RECONNECTING in states
    assert states[-1] is ConnectionState.DISCONNECTED
