"""An agent team in real processes: a round-robin team of two agents and a human
seat, driven by two people on one daphne process and watched by an observer on
another; every turn is a run of the worker process, and the observer sees the
same events in the same order, with consecutive event ids."""

from __future__ import annotations

import pytest

from tests.integration.conftest import Socket

pytestmark = pytest.mark.integration

TEAM = {
    "policy": "round_robin",
    "seats": ["alpha", "beta", "human"],
    "max_turns": 3,
    "human_timeout": 60,
}


def team_thread(stack) -> dict:
    """Users owner/participant/observer with tokens; echo agents alpha and beta;
    a thread of both running TEAM."""
    return stack.python(
        "from django.contrib.auth import get_user_model\n"
        "from rest_framework.authtoken.models import Token\n"
        "from agents.models import AgentConfig\n"
        "from chat import services\n"
        "from chat.models import ThreadMember\n"
        "U = get_user_model()\n"
        "users = {n: U.objects.get_or_create(username=n)[0] for n in ('owner', 'participant', 'observer')}\n"
        "for name in ('alpha', 'beta'):\n"
        "    AgentConfig.objects.update_or_create(name=name, defaults=dict(provider='echo', extra_params={'tokens_per_second': 100}))\n"
        f"thread = services.thread_create(owner=users['owner'], agent_names=['alpha', 'beta'], title='team', config={{'team': {TEAM!r}}})\n"
        "ThreadMember.objects.create(thread=thread, user=users['participant'], role='participant')\n"
        "ThreadMember.objects.create(thread=thread, user=users['observer'], role='observer')\n"
        "result = {'thread': str(thread.id), 'tokens': {n: Token.objects.get_or_create(user=u)[0].key for n, u in users.items()}}\n"
    )


def floor_is(speaker: str):
    def predicate(frame: dict) -> bool:
        content = frame["content"]
        return (
            frame["type"] == "status"
            and isinstance(content, dict)
            and content.get("state") == "team"
            and content.get("speaker") == speaker
        )

    return predicate


def turns(frames: list[dict]) -> list[tuple[str, str]]:
    return [
        (frame["agent"], frame["content"]["text"])
        for frame in frames
        if frame["type"] == "state_complete"
    ]


def thread_events(frames: list[dict]) -> list[dict]:
    return [frame for frame in frames if frame.get("event_id") is not None]


async def test_a_team_with_a_human_seat_is_watched_live_on_another_daphne(stack):
    setup = team_thread(stack)
    thread, tokens = setup["thread"], setup["tokens"]
    web_a, web_b = stack.daphne(), stack.daphne()
    stack.worker()
    async with (
        Socket(web_a.ws_url(thread), tokens["owner"]) as owner,
        Socket(web_a.ws_url(thread), tokens["participant"]) as participant,
        Socket(web_b.ws_url(thread), tokens["observer"]) as observer,
    ):
        for socket in (owner, participant, observer):
            assert (await socket.receive())["content"]["state"] == "connected"
            assert (await socket.receive())["content"]["state"] == "snapshot"

        await owner.send({"type": "message", "content": "hello team"})
        first = await owner.receive_until(floor_is("human"), timeout=60)
        await participant.receive_until(floor_is("human"), timeout=60)
        # The second person takes the human seat by writing; the chain goes on.
        await participant.send({"type": "message", "content": "go on please"})
        second = await owner.receive_until(floor_is("human"), timeout=60)

        assert turns(first + second) == [
            ("alpha", "hello team"),
            ("beta", "alpha: hello team"),
            ("alpha", "go on please"),
            ("beta", "alpha: go on please"),
        ]
        run_ids = {
            frame["run_id"]
            for frame in first + second
            if frame["type"] == "state_complete"
        }
        assert len(run_ids) == 4  # each turn a run of its own

        # The observer, on the other process, saw every turn live: the same
        # events in the same order, with consecutive event ids.
        watched = await observer.receive_until(floor_is("human"), timeout=60)
        watched += await observer.receive_until(floor_is("human"), timeout=60)
        assert thread_events(watched) == thread_events(first + second)
        ids = [frame["event_id"] for frame in thread_events(watched)]
        assert ids == list(range(ids[0], ids[0] + len(ids)))
