"""Agent teams (issue 16, second half): a thread's agents taking turns under a
team policy (`round_robin`, `selector`, `handoff`), each turn a run of its own,
bounded by `max_turns` and a termination phrase, with a human seat the people
of the thread take by writing a message (agents/teams.py, docs/protocol.md
"Agent teams").

The models are real HTTP servers on loopback (tests/fakes/llm_servers.py)
spoken to through the official SDK, or the offline echo agent where a turn's
words do not matter; the worker runs in the test's event loop, as in the
embedded mode.
"""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from rest_framework.test import APIClient

from agents.models import ACTIVE_RUN_STATUSES, AgentConfig, Run, RunStatus
from agents.teams import Team, first_speaker, next_in_rotation, selector_choice
from chat import services
from chat.models import Role, Thread, ThreadMember
from tests.fakes import FakeOpenAIServer, FakeToolCall, Scenario

KEY_ENV = "PARLEY_TEST_TEAMS_KEY"
FAST = {"tokens_per_second": 0}


# --- helpers -------------------------------------------------------------------------


def team_of(frame) -> dict | None:
    """The content of a `status` `team` frame, else None."""
    content = frame.get("content")
    if frame["type"] == "status" and isinstance(content, dict):
        if content.get("state") == "team":
            return content
    return None


def until_team(**wanted):
    """A predicate true at the first `team` status whose content has `wanted`."""

    def predicate(frame) -> bool:
        content = team_of(frame)
        return content is not None and all(
            content.get(key) == value for key, value in wanted.items()
        )

    return predicate


def completes(frames) -> list[tuple[str, str, str]]:
    """(agent, status, text) of every `state_complete`, in order."""
    return [
        (frame["agent"], frame["content"]["status"], frame["content"]["text"])
        for frame in frames
        if frame["type"] == "state_complete"
    ]


def events(frames) -> list[dict]:
    return [frame for frame in frames if frame["event_id"] is not None]


def make_team_thread(users, agents, team: dict) -> Thread:
    """A thread of `agents` (the first the default) running `team`, shared
    with a participant and an observer."""
    thread = services.thread_create(
        owner=users[Role.OWNER],
        agent_names=[agent.name for agent in agents],
        title="team",
        config={"team": team},
    )
    ThreadMember.objects.create(
        thread=thread, user=users[Role.PARTICIPANT], role=Role.PARTICIPANT
    )
    ThreadMember.objects.create(
        thread=thread, user=users[Role.OBSERVER], role=Role.OBSERVER
    )
    return thread


def active_runs(thread) -> int:
    return Run.objects.filter(thread=thread, status__in=ACTIVE_RUN_STATUSES).count()


@pytest.fixture
def model_server(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-parley-teams-0123456789")
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture
def model_agents(db, model_server):
    """alpha, beta and gamma: three agents on the fake OpenAI model."""
    return [
        AgentConfig.objects.create(
            name=name,
            provider="openai",
            model="model-test",
            base_url=model_server.base_url,
            api_key_env=KEY_ENV,
            description=f"the {name} agent",
        )
        for name in ("alpha", "beta", "gamma")
    ]


@pytest.fixture
def echo_agents(db):
    """alpha and beta: echo agents, `slow` ones taking about 0.1 s a word."""
    return [
        AgentConfig.objects.create(name=name, provider="echo", extra_params=FAST)
        for name in ("alpha", "beta")
    ]


def slow_down(agents, tokens_per_second: float) -> None:
    for agent in agents:
        agent.extra_params = {"tokens_per_second": tokens_per_second}
        agent.save()


# --- the rules -------------------------------------------------------------------------


def test_round_robin_goes_around_the_seats_and_a_message_opens_after_the_human():
    team = Team(policy="round_robin", seats=("alpha", "beta", "human"))
    names = ["alpha", "beta"]
    assert first_speaker(team, names) == "alpha"
    assert next_in_rotation(team, names, "alpha") == "beta"
    assert next_in_rotation(team, names, "beta") == "human"
    assert (
        first_speaker(
            Team(policy="round_robin", seats=("beta", "human", "alpha")), names
        )
        == "alpha"
    )
    assert first_speaker(Team(policy="round_robin"), ["beta", "alpha"]) == "beta"


@pytest.mark.parametrize(
    ("answer", "chosen"),
    [
        ("gamma", "gamma"),
        ("Gamma.", "gamma"),
        ("@beta", "beta"),
        ("I think beta should speak, then gamma.", "beta"),
        ("nobody", None),
        ("alphabet", None),
    ],
)
def test_the_selector_answer_is_read_as_a_name(answer, chosen):
    assert selector_choice(answer, ["beta", "gamma"]) == chosen


def test_team_settings_are_checked(users, echo_agents):
    thread = make_team_thread(users, echo_agents, {"policy": "round_robin"})
    owner = users[Role.OWNER]
    bad = [
        {"policy": "chaos"},
        {"policy": "round_robin", "max_turns": 0},
        {"policy": "round_robin", "max_turns": 51},
        {"policy": "round_robin", "seats": ["alpha", "nobody"]},
        {"policy": "round_robin", "seats": ["human"]},
        {"policy": "selector", "selector": "nobody"},
        {"policy": "round_robin", "human_timeout": 0},
        {"policy": "round_robin", "colour": "red"},
    ]
    for team in bad:
        with pytest.raises(services.ServiceError) as refused:
            services.thread_update(actor=owner, thread=thread, config={"team": team})
        assert refused.value.code.value == "invalid_config", team

    client = APIClient()
    client.force_authenticate(owner)
    team = {"policy": "handoff", "max_turns": 5, "termination": "DONE"}
    response = client.patch(
        f"/api/threads/{thread.pk}/", {"config": {"team": team}}, format="json"
    )
    assert response.status_code == 200, response.content
    assert response.json()["config"]["team"] == team
    response = client.patch(
        f"/api/threads/{thread.pk}/", {"config": {"team": None}}, format="json"
    )
    assert response.status_code == 200
    thread.refresh_from_db()
    assert thread.config["team"] is None


def test_the_settings_page_sets_the_team(users, echo_agents, client):
    thread = make_team_thread(users, echo_agents, {"policy": "round_robin"})
    client.force_login(users[Role.OWNER])
    response = client.post(
        f"/threads/{thread.pk}/settings/",
        {
            "action": "team",
            "policy": "round_robin",
            "max_turns": "4",
            "termination": "TERMINATE",
            "seats": "beta, alpha, human",
            "human_timeout": "60",
        },
    )
    assert response.status_code == 302
    thread.refresh_from_db()
    assert thread.config["team"] == {
        "policy": "round_robin",
        "max_turns": 4,
        "human_timeout": 60.0,
        "termination": "TERMINATE",
        "seats": ["beta", "alpha", "human"],
    }
    page = client.get(f"/threads/{thread.pk}/settings/")
    assert b'id="team-form"' in page.content
    client.post(f"/threads/{thread.pk}/settings/", {"action": "team", "policy": ""})
    thread.refresh_from_db()
    assert thread.config["team"] is None


# --- over the socket -------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_a_round_robin_team_with_a_human_seat_takes_four_turns(
    users, model_agents, model_server, worker, client_for
):
    alpha, beta, _gamma = model_agents
    thread = await database_sync_to_async(make_team_thread)(
        users,
        [alpha, beta],
        {
            "policy": "round_robin",
            "seats": ["alpha", "beta", "human"],
            "max_turns": 3,
            "human_timeout": 60,
        },
    )
    owner = client_for(thread.id, users[Role.OWNER])
    participant = client_for(thread.id, users[Role.PARTICIPANT])
    observer = client_for(thread.id, users[Role.OBSERVER])
    for client in (owner, participant, observer):
        await client.join()

    await owner.send({"type": "message", "content": "hello team"})
    first_round = await owner.receive_until(until_team(speaker="human"))
    # The chain waits for the people: nothing runs.
    assert await database_sync_to_async(active_runs)(thread) == 0
    await participant.receive_until(until_team(speaker="human"))

    # The second user takes the human seat by writing; the chain goes on.
    await participant.send({"type": "message", "content": "go on please"})
    second_round = await owner.receive_until(until_team(speaker="human"))

    turns = completes(first_round) + completes(second_round)
    assert turns == [
        ("alpha", "completed", "hello team"),
        ("beta", "completed", "alpha: hello team"),
        ("alpha", "completed", "go on please"),
        ("beta", "completed", "alpha: go on please"),
    ]
    run_ids = [
        f["run_id"] for f in first_round + second_round if f["type"] == "state_complete"
    ]
    assert len(set(run_ids)) == 4  # every turn its own run

    floor = [
        (content["speaker"], content["turn"], content["max_turns"])
        for content in map(team_of, first_round + second_round)
        if content is not None
    ]
    assert floor == [
        ("alpha", 1, 3),
        ("beta", 2, 3),
        ("human", 3, 3),
        ("alpha", 1, 3),
        ("beta", 2, 3),
        ("human", 3, 3),
    ]
    # beta's model was told who said what.
    conversations = [
        model_server._conversation(request.body) for request in model_server.requests
    ]
    assert conversations[1][-1] == ("user", "alpha: hello team")

    # The observer saw every turn live, the same events in the same order.
    watched = await observer.receive_until(until_team(speaker="human", turn=3))
    watched += await observer.receive_until(until_team(speaker="human", turn=3))
    assert events(watched) == events(first_round + second_round)
    ids = [frame["event_id"] for frame in events(watched)]
    assert ids == list(range(ids[0], ids[0] + len(ids)))


@pytest.mark.django_db(transaction=True)
async def test_a_selector_team_lets_the_selector_model_pick_the_next_speaker(
    users, model_agents, model_server, worker, client_for
):
    thread = await database_sync_to_async(make_team_thread)(
        users, model_agents, {"policy": "selector", "selector": "alpha", "max_turns": 2}
    )
    model_server.script(
        Scenario.reply(["Plan ", "ready."]),  # alpha's turn
        Scenario.reply(["gamma"]),  # alpha's model, asked who speaks next
        Scenario.reply(["Gamma ", "done."]),  # gamma's turn
    )
    owner = client_for(thread.id, users[Role.OWNER])
    await owner.join()
    await owner.send({"type": "message", "content": "plan it"})
    frames = await owner.receive_until(until_team(ended="max_turns"))

    assert completes(frames) == [
        ("alpha", "completed", "Plan ready."),
        ("gamma", "completed", "Gamma done."),
    ]
    asked = model_server._conversation(model_server.requests[1].body)
    question = asked[-1][1]
    assert "Who speaks next?" in question
    assert "beta" in question and "gamma" in question
    assert "alpha: Plan ready." in question
    ended = team_of(frames[-1])
    assert ended["turn"] == 2 and "2 turns" in ended["text"]


@pytest.mark.django_db(transaction=True)
async def test_a_handoff_team_passes_the_floor_with_the_tool(
    users, model_agents, model_server, worker, client_for
):
    alpha, beta, _gamma = model_agents
    thread = await database_sync_to_async(make_team_thread)(
        users, [alpha, beta], {"policy": "handoff", "max_turns": 4}
    )
    model_server.script(
        Scenario.calls(FakeToolCall("handoff", ('{"to": ', '"beta"}'))),
        Scenario.tool_results("Handing over. "),
        Scenario.reply(["Beta ", "answers."]),
    )
    owner = client_for(thread.id, users[Role.OWNER])
    await owner.join()
    await owner.send({"type": "message", "content": "who knows?"})
    frames = await owner.receive_until(until_team(ended="no_speaker"))

    (alpha_turn, beta_turn) = completes(frames)
    assert alpha_turn[:2] == ("alpha", "completed")
    assert "The floor goes to beta" in alpha_turn[2]
    assert beta_turn == ("beta", "completed", "Beta answers.")
    assert "handoff" in model_server.tools_offered(model_server.requests[0].body)
    handed = [content for content in map(team_of, frames) if content]
    assert [(content["speaker"], content["turn"]) for content in handed[:2]] == [
        ("alpha", 1),
        ("beta", 2),
    ]
    tool_results = [
        frame["content"]["data"]
        for frame in frames
        if frame["type"] == "state" and frame["content"]["kind"] == "tool_result"
    ]
    assert tool_results[0]["name"] == "handoff" and "output" in tool_results[0]


@pytest.mark.django_db(transaction=True)
async def test_a_team_run_resumes_and_snapshots_in_the_middle(
    users, echo_agents, worker, client_for
):
    await database_sync_to_async(slow_down)(echo_agents, 20)
    thread = await database_sync_to_async(make_team_thread)(
        users, echo_agents, {"policy": "round_robin", "max_turns": 4}
    )
    owner = client_for(thread.id, users[Role.OWNER])
    await owner.join()
    words = " ".join(f"w{number}" for number in range(16))  # about 0.8 s a turn
    await owner.send({"type": "message", "content": words})
    # Into the second turn: beta has the floor and has begun.
    seen = await owner.receive_until(until_team(speaker="beta", turn=2))
    seen += await owner.receive_until(lambda frame: frame["type"] == "response")
    last_seen = events(seen)[-1]["event_id"]
    await owner.close()

    # A new socket mid-chain: the snapshot has alpha's reply and beta's turn
    # going, with its text so far.
    watcher = client_for(thread.id, users[Role.OBSERVER])
    _status, snapshot = await watcher.join()
    content = snapshot["content"]
    replies = [m for m in content["messages"] if m["role"] == "assistant"]
    assert [(m["agent"], m["text"]) for m in replies] == [("alpha", words)]
    (going,) = content["runs"]
    assert going["agent"] == "beta" and going["status"] == "running"
    assert ("alpha: " + words).startswith(going["text"]) and going["text"]

    # The owner comes back with its last event id: the rest of the chain,
    # every event once, nothing missed.
    again = client_for(thread.id, users[Role.OWNER], query=f"last_event_id={last_seen}")
    connected, _ = await again.connect()
    assert connected
    rest = await again.receive_until(until_team(ended="max_turns"), timeout=20)
    resumed = events(rest)
    assert resumed[0]["event_id"] == last_seen + 1
    ids = [frame["event_id"] for frame in resumed]
    assert ids == list(range(ids[0], ids[0] + len(ids)))
    turns = completes(events(seen) + resumed)
    assert [agent for agent, _status, _text in turns] == [
        "alpha",
        "beta",
        "alpha",
        "beta",
    ]
    # The watcher, from its snapshot on, saw the chain end too.
    await watcher.receive_until(until_team(ended="max_turns"), timeout=20)


@pytest.mark.django_db(transaction=True)
async def test_cancelling_a_turn_stops_the_whole_chain(
    users, echo_agents, worker, client_for
):
    await database_sync_to_async(slow_down)(echo_agents, 20)
    thread = await database_sync_to_async(make_team_thread)(
        users, echo_agents, {"policy": "round_robin", "max_turns": 6}
    )
    owner = client_for(thread.id, users[Role.OWNER])
    participant = client_for(thread.id, users[Role.PARTICIPANT])
    await owner.join()
    await participant.join()
    await owner.send({"type": "message", "content": " ".join(["word"] * 40)})
    await owner.receive_until(until_team(speaker="beta", turn=2))
    await owner.receive_until(lambda frame: frame["type"] == "response")

    # Stop, as the web UI sends it in a team: the current turn, with a reason.
    await participant.send({"type": "cancel", "content": {"reason": "enough"}})
    frames = await owner.receive_until(until_team(ended="cancelled"))
    assert completes(frames)[-1][:2] == ("beta", "cancelled")
    stopped = [f for f in frames if f["type"] == "state_complete"][-1]
    assert stopped["content"]["reason"] == "enough"
    assert team_of(frames[-1])["turn"] == 2

    # No further turn: two runs in all, none going.
    assert await database_sync_to_async(active_runs)(thread) == 0
    assert await database_sync_to_async(Run.objects.filter(thread=thread).count)() == 2


@pytest.mark.django_db(transaction=True)
async def test_a_team_stops_at_its_turn_limit_or_its_termination_phrase(
    users, echo_agents, worker, client_for
):
    thread = await database_sync_to_async(make_team_thread)(
        users, echo_agents, {"policy": "round_robin", "max_turns": 3}
    )
    owner = client_for(thread.id, users[Role.OWNER])
    await owner.join()
    await owner.send({"type": "message", "content": "loop forever"})
    frames = await owner.receive_until(until_team(ended="max_turns"))
    assert [agent for agent, _s, _t in completes(frames)] == ["alpha", "beta", "alpha"]
    ended = team_of(frames[-1])
    assert ended["turn"] == 3 and "3 turns" in ended["text"]
    assert await database_sync_to_async(active_runs)(thread) == 0

    await owner.send(
        {
            "type": "config",
            "content": {
                "team": {
                    "policy": "round_robin",
                    "max_turns": 5,
                    "termination": "TERMINATE",
                }
            },
        }
    )
    await owner.send({"type": "message", "content": "say TERMINATE now"})
    frames = await owner.receive_until(until_team(ended="termination"))
    assert completes(frames) == [("alpha", "completed", "say TERMINATE now")]


@pytest.mark.django_db(transaction=True)
async def test_an_empty_human_seat_ends_the_chain_after_its_timeout(
    users, echo_agents, worker, client_for
):
    thread = await database_sync_to_async(make_team_thread)(
        users,
        echo_agents,
        {"policy": "round_robin", "seats": ["alpha", "human"], "human_timeout": 1},
    )
    owner = client_for(thread.id, users[Role.OWNER])
    await owner.join()
    await owner.send({"type": "message", "content": "anyone?"})
    waiting = team_of((await owner.receive_until(until_team(speaker="human")))[-1])
    assert waiting["waiting_until"]
    frames = await owner.receive_until(until_team(ended="human_timeout"), timeout=10)
    assert "human seat" in team_of(frames[-1])["text"]
    assert (
        await database_sync_to_async(
            Run.objects.filter(thread=thread, status=RunStatus.COMPLETED).count
        )()
        == 1
    )
