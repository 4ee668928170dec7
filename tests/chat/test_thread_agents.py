"""Several agents in one thread (issue 16, first half): the thread's ordered
`agents` (API and services), addressing by leading `@mentions`, the `agent`
envelope field on every frame of a run, and each run answered by its own agent
with its own config.

Two echo agents, `alpha` (the default) and `beta`, share one thread; the
worker runs in the test's event loop, as in the embedded mode.
"""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from rest_framework.test import APIClient

from agents.models import AgentConfig, Run
from agents.prompts import request_for
from chat import services
from chat.mentions import message_mentions, prompt_text
from chat.models import Message, MessageRole, Role, Thread, ThreadAgent, ThreadMember
from chat.selectors import thread_agents
from realtime.errors import ServiceError

FAST = {"tokens_per_second": 0}


def until_completes(count: int):
    """A predicate that is true at the `count`-th `state_complete` it sees."""
    seen = []

    def predicate(frame) -> bool:
        if frame["type"] == "state_complete":
            seen.append(frame)
        return len(seen) >= count

    return predicate


def events(frames):
    return [frame for frame in frames if frame["event_id"] is not None]


def run_frames(frames):
    """The frames about a run (they carry its run_id), the user's `message` aside."""
    return [frame for frame in frames if frame["run_id"] and frame["type"] != "message"]


def client_as(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def alpha(db):
    return AgentConfig.objects.create(name="alpha", provider="echo", extra_params=FAST)


@pytest.fixture
def beta(db):
    return AgentConfig.objects.create(
        name="beta", provider="echo", extra_params=FAST, temperature=1.5
    )


@pytest.fixture
def duo(users, alpha, beta):
    """A thread of alpha (the default) and beta, shared with a participant."""
    thread = services.thread_create(
        owner=users[Role.OWNER], agent_names=["alpha", "beta"], title="duo"
    )
    ThreadMember.objects.create(
        thread=thread, user=users[Role.PARTICIPANT], role=Role.PARTICIPANT
    )
    ThreadMember.objects.create(
        thread=thread, user=users[Role.OBSERVER], role=Role.OBSERVER
    )
    return thread


# --- addressing rules ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "names", "rest"),
    [
        ("hello", [], "hello"),
        ("@beta hello", ["beta"], "hello"),
        ("  @beta, hello", ["beta"], "hello"),
        ("@alpha @beta compare these", ["alpha", "beta"], "compare these"),
        ("@beta: @beta twice", ["beta"], "twice"),
        ("@beta", ["beta"], ""),
        ("mail me @beta later", [], "mail me @beta later"),
        ("@beta@alpha glued", [], "@beta@alpha glued"),
        ("email@example.com", [], "email@example.com"),
    ],
)
def test_leading_mentions_address_agents_in_order(text, names, rest):
    assert message_mentions(text) == (names, rest)


def test_the_model_gets_the_text_without_the_mentions():
    assert prompt_text("@alpha @beta compare these") == "compare these"
    assert prompt_text("@beta") == "@beta"  # nothing else: the text as it is
    assert prompt_text("no mention") == "no mention"


# --- the thread's agents (services and API) ----------------------------------------


def test_a_thread_made_with_one_agent_has_just_that_one(thread, echo_agent):
    assert thread_agents(thread=thread) == [echo_agent]
    assert not ThreadAgent.objects.filter(thread=thread).exists()


def test_post_threads_with_agents_keeps_their_order(users, alpha, beta):
    response = client_as(users[Role.OWNER]).post(
        "/api/threads/", {"agents": ["beta", "alpha"], "title": "x"}, format="json"
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["agents"] == ["beta", "alpha"] and body["agent"] == "beta"
    thread = Thread.objects.get(pk=body["id"])
    assert [agent.name for agent in thread_agents(thread=thread)] == ["beta", "alpha"]

    shown = client_as(users[Role.OWNER]).get(f"/api/threads/{thread.pk}/").json()
    assert shown["agents"] == ["beta", "alpha"]
    listed = client_as(users[Role.OWNER]).get("/api/threads/?agent=alpha").json()
    assert [item["id"] for item in listed["results"]] == [str(thread.pk)]
    assert listed["results"][0]["agents"] == ["beta", "alpha"]


def test_post_threads_with_one_agent_answers_agents_too(users, alpha):
    response = client_as(users[Role.OWNER]).post(
        "/api/threads/", {"agent": "alpha"}, format="json"
    )
    assert response.status_code == 201
    assert response.json()["agents"] == ["alpha"]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"agents": []}, "validation_error"),
        ({}, "validation_error"),
        ({"agents": ["alpha", "alpha"]}, "validation_error"),
        ({"agents": ["alpha", "nobody"]}, "agent_not_found"),
        ({"agents": ["alpha", "off"]}, "agent_disabled"),
        ({"agent": "beta", "agents": ["alpha", "beta"]}, "validation_error"),
        ({"agents": "alpha"}, "validation_error"),
    ],
)
def test_post_threads_refuses_bad_agents(users, alpha, beta, body, code):
    AgentConfig.objects.create(name="off", provider="echo", enabled=False)
    response = client_as(users[Role.OWNER]).post("/api/threads/", body, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == code
    assert not Thread.objects.exists()


def test_the_owner_patches_the_agents_and_others_may_not(duo, users, alpha, beta):
    gamma = AgentConfig.objects.create(name="gamma", provider="echo")
    url = f"/api/threads/{duo.pk}/"

    for role in (Role.PARTICIPANT, Role.OBSERVER):
        refused = client_as(users[role]).patch(
            url, {"agents": ["alpha"]}, format="json"
        )
        assert refused.status_code == 403, (role, refused.content)
    assert [agent.name for agent in thread_agents(thread=duo)] == ["alpha", "beta"]

    response = client_as(users[Role.OWNER]).patch(
        url, {"agents": ["alpha", "gamma", "beta"]}, format="json"
    )
    assert response.status_code == 200, response.content
    assert response.json()["agents"] == ["alpha", "gamma", "beta"]
    duo.refresh_from_db()
    assert [a.pk for a in thread_agents(thread=duo)] == [alpha.pk, gamma.pk, beta.pk]

    # A new default; the old one may go.
    response = client_as(users[Role.OWNER]).patch(
        url, {"agents": ["beta"]}, format="json"
    )
    assert response.json()["agents"] == ["beta"] and response.json()["agent"] == "beta"

    for bad, code in (
        ([], "validation_error"),
        (["beta", "nobody"], "agent_not_found"),
    ):
        refused = client_as(users[Role.OWNER]).patch(
            url, {"agents": bad}, format="json"
        )
        assert refused.status_code == 400 and refused.json()["error"]["code"] == code
    duo.refresh_from_db()
    assert [agent.name for agent in thread_agents(thread=duo)] == ["beta"]


def test_an_agent_disabled_while_in_the_thread_may_stay_but_not_be_added(
    duo, users, beta
):
    beta.enabled = False
    beta.save()
    kept = services.thread_update(
        actor=users[Role.OWNER], thread=duo, agent_names=["alpha", "beta"]
    )
    assert [agent.name for agent in thread_agents(thread=kept)] == ["alpha", "beta"]
    services.thread_update(actor=users[Role.OWNER], thread=duo, agent_names=["alpha"])
    with pytest.raises(ServiceError) as refused:
        services.thread_update(
            actor=users[Role.OWNER], thread=duo, agent_names=["alpha", "beta"]
        )
    assert refused.value.code == "agent_disabled"


def test_switching_the_default_with_agent_name_leaves_no_duplicate(duo, users):
    services.thread_update(
        actor=users[Role.PARTICIPANT], thread=duo, config={"agent_name": "beta"}
    )
    duo.refresh_from_db()
    assert [agent.name for agent in thread_agents(thread=duo)] == ["beta"]


# --- each run with its own agent -------------------------------------------------------


def test_a_run_of_another_agent_uses_that_agents_config(duo, users, alpha, beta):
    services.thread_update(
        actor=users[Role.OWNER], thread=duo, config={"temperature": 0.1}
    )
    duo.refresh_from_db()
    message = Message.objects.create(
        thread=duo, author=users[Role.OWNER], role=MessageRole.USER, text="@beta hi"
    )
    for agent, temperature in ((alpha, 0.1), (beta, 1.5)):
        run = Run.objects.select_related("agent", "thread", "prompt").get(
            pk=Run.objects.create(thread=duo, agent=agent, prompt=message).pk
        )
        request, _provider = request_for(run)
        # The thread's overrides are its default agent's; beta keeps its own.
        assert request.temperature == temperature, agent.name
        assert request.messages[-1].content == "hi"


def test_post_runs_addresses_agents_and_refuses_unknown_ones(duo, users):
    api = client_as(users[Role.PARTICIPANT])
    url = f"/api/threads/{duo.pk}/runs/"

    one = api.post(url, {"content": "@beta hello"}, format="json")
    assert one.status_code == 202, one.content
    assert one.json()["agent"] == "beta"
    assert [run["agent"] for run in one.json()["runs"]] == ["beta"]

    both = api.post(url, {"content": "@beta @alpha compare"}, format="json")
    assert both.status_code == 202, both.content
    body = both.json()
    assert body["agent"] == "beta"
    assert [run["agent"] for run in body["runs"]] == ["beta", "alpha"]
    assert len({run["prompt"] for run in body["runs"]}) == 1

    plain = api.post(url, {"content": "no mention"}, format="json")
    assert plain.json()["agent"] == "alpha"

    unknown = api.post(url, {"content": "@nobody hello"}, format="json")
    assert unknown.status_code == 400
    error = unknown.json()["error"]
    assert error["code"] == "agent_not_in_thread"
    assert "@alpha" in error["message"] and "@beta" in error["message"]
    assert "nobody" in error["message"]
    assert not Message.objects.filter(text="@nobody hello").exists()
    assert Run.objects.filter(thread=duo).count() == 4


# --- over the socket -----------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_mentions_go_to_the_right_agent_and_every_run_frame_names_it(
    duo, users, worker, client_for
):
    owner = client_for(duo.id, users[Role.OWNER])
    observer = client_for(duo.id, users[Role.OBSERVER])
    await owner.join()
    await observer.join()

    await owner.send({"type": "message", "content": "@beta one two three"})
    await owner.send({"type": "message", "content": "four five"})
    owner_frames = await owner.receive_until(until_completes(2))
    observer_frames = await observer.receive_until(until_completes(2))

    # The second socket sees both streams, in the same order, ids consecutive.
    assert events(owner_frames) == events(observer_frames)
    ids = [frame["event_id"] for frame in events(owner_frames)]
    assert ids == list(range(ids[0], ids[0] + len(ids)))

    by_run: dict[str, list[dict]] = {}
    for frame in run_frames(owner_frames):
        by_run.setdefault(frame["run_id"], []).append(frame)
    first, second = by_run.values()
    assert {frame["type"] for frame in first} >= {
        "status",
        "response",
        "state",
        "state_complete",
    }
    assert {frame["agent"] for frame in first} == {"beta"}
    assert {frame["agent"] for frame in second} == {"alpha"}
    assert first[-1]["content"]["text"] == "one two three"  # no mention in it
    assert second[-1]["content"]["text"] == "four five"
    # Frames about no run leave the field out (the user's `message` names the
    # run it started, not an agent).
    assert all("agent" not in frame for frame in owner_frames if not frame["run_id"])
    assert all(
        "agent" not in frame for frame in owner_frames if frame["type"] == "message"
    )

    replies = await database_sync_to_async(
        lambda: list(
            Message.objects.filter(thread=duo, role=MessageRole.ASSISTANT)
            .order_by("created_at")
            .values_list("agent__name", "text")
        )
    )()
    assert replies == [("beta", "one two three"), ("alpha", "four five")]

    # History (API) and snapshot entries of the replies carry their agent.
    history = await sync_to_async(
        lambda: (
            client_as(users[Role.OWNER]).get(f"/api/threads/{duo.pk}/messages/").json()
        )
    )()
    assert [
        (entry["agent"], entry["text"])
        for entry in history["results"]
        if entry["role"] == "assistant"
    ] == replies
    later = client_for(duo.id, users[Role.PARTICIPANT])
    _status, snapshot = await later.join()
    assert [
        (entry["agent"], entry["text"])
        for entry in snapshot["content"]["messages"]
        if entry["role"] == "assistant"
    ] == replies


@pytest.mark.django_db(transaction=True)
async def test_several_mentions_start_one_run_each_in_mention_order(
    duo, users, worker, client_for
):
    owner = client_for(duo.id, users[Role.OWNER])
    participant = client_for(duo.id, users[Role.PARTICIPANT])
    await owner.join()
    await participant.join()

    await participant.send(
        {"type": "message", "content": "@beta @alpha same words", "request_id": "m"}
    )
    owner_frames = await owner.receive_until(until_completes(2))
    participant_frames = await participant.receive_until(until_completes(2))
    assert events(owner_frames) == events(participant_frames)

    message = next(frame for frame in owner_frames if frame["type"] == "message")
    assert message["content"]["text"] == "@beta @alpha same words"
    queued = [
        frame
        for frame in owner_frames
        if frame["type"] == "status" and frame["content"]["state"] == "queued"
    ]
    assert [(frame["agent"], frame["content"]["position"]) for frame in queued] == [
        ("beta", 0),
        ("alpha", 1),
    ]
    assert message["run_id"] == queued[0]["run_id"]
    # One run after the other, beta first: past the two `queued`, every beta
    # frame comes before alpha's.
    agents_in_order = [
        frame["agent"] for frame in run_frames(owner_frames) if frame not in queued
    ]
    assert agents_in_order == sorted(agents_in_order, key=lambda name: name != "beta")
    completes = [frame for frame in owner_frames if frame["type"] == "state_complete"]
    assert [(frame["agent"], frame["content"]["text"]) for frame in completes] == [
        ("beta", "same words"),
        ("alpha", "same words"),
    ]


@pytest.mark.django_db(transaction=True)
async def test_an_unknown_or_disabled_agent_is_refused_by_name(
    duo, users, beta, worker, client_for
):
    owner = client_for(duo.id, users[Role.OWNER])
    await owner.join()

    await owner.send({"type": "message", "content": "@nobody hi", "request_id": "u"})
    error = await owner.receive_type("error")
    assert error["request_id"] == "u"
    assert error["content"]["code"] == "agent_not_in_thread"
    assert "@alpha" in error["content"]["message"]
    assert "@beta" in error["content"]["message"]

    beta.enabled = False
    await database_sync_to_async(beta.save)()
    await owner.send({"type": "message", "content": "@beta hi", "request_id": "d"})
    error = await owner.receive_type("error")
    assert error["request_id"] == "d"
    assert error["content"]["code"] == "agent_disabled"
    assert "'beta'" in error["content"]["message"]
    # A mention of both refuses the whole message: no run for alpha either.
    await owner.send({"type": "message", "content": "@alpha @beta hi"})
    assert (await owner.receive_type("error"))["content"]["code"] == "agent_disabled"

    count = await database_sync_to_async(Message.objects.filter(thread=duo).count)()
    assert count == 0

    # The default still answers.
    await owner.send({"type": "message", "content": "still here"})
    frames = await owner.receive_until(until_completes(1))
    assert frames[-1]["agent"] == "alpha"


@pytest.mark.django_db(transaction=True)
async def test_an_agent_added_later_answers_and_the_thread_hears_of_it(
    duo, users, worker, client_for
):
    await database_sync_to_async(AgentConfig.objects.create)(
        name="gamma", provider="echo", extra_params=FAST
    )
    owner = client_for(duo.id, users[Role.OWNER])
    await owner.join()
    await owner.send({"type": "message", "content": "@gamma too early"})
    assert (await owner.receive_type("error"))["content"][
        "code"
    ] == "agent_not_in_thread"

    response = await sync_to_async(
        lambda: client_as(users[Role.OWNER]).patch(
            f"/api/threads/{duo.pk}/",
            {"agents": ["alpha", "beta", "gamma"]},
            format="json",
        )
    )()
    assert response.status_code == 200, response.content
    updated = await owner.receive_until(
        lambda frame: (
            frame["type"] == "status" and frame["content"]["state"] == "thread_updated"
        )
    )
    assert updated[-1]["content"]["agents"] == ["alpha", "beta", "gamma"]

    await owner.send({"type": "message", "content": "@gamma now then"})
    frames = await owner.receive_until(until_completes(1))
    assert frames[-1]["agent"] == "gamma"
    assert frames[-1]["content"]["text"] == "now then"


# --- the web UI's pages ------------------------------------------------------------------


def test_the_owner_adds_removes_and_reorders_agents_in_settings(
    client, duo, users, alpha, beta
):
    AgentConfig.objects.create(name="gamma", provider="echo")
    url = f"/threads/{duo.pk}/settings/"
    client.force_login(users[Role.OWNER])
    page = client.get(url).content.decode()
    assert 'id="agents-heading"' in page and '<option value="gamma">' in page

    def names() -> list[str]:
        duo.refresh_from_db()
        return [agent.name for agent in thread_agents(thread=duo)]

    client.post(url, {"action": "agent_add", "agent": "gamma"})
    assert names() == ["alpha", "beta", "gamma"]
    client.post(url, {"action": "agent_default", "agent": "gamma"})
    assert names() == ["gamma", "alpha", "beta"]
    client.post(url, {"action": "agent_remove", "agent": "alpha"})
    assert names() == ["gamma", "beta"]
    client.post(url, {"action": "agent_remove", "agent": "gamma"})
    client.post(url, {"action": "agent_remove", "agent": "beta"})  # the last one
    assert names() == ["beta"]

    client.force_login(users[Role.PARTICIPANT])
    assert (
        client.post(url, {"action": "agent_add", "agent": "alpha"}).status_code == 403
    )
    assert names() == ["beta"]


def test_the_chat_page_names_the_agents_and_each_reply_its_own(
    client, duo, users, beta
):
    message = Message.objects.create(
        thread=duo, author=users[Role.OWNER], role=MessageRole.USER, text="@beta hi"
    )
    run = Run.objects.create(thread=duo, agent=beta, prompt=message, status="completed")
    message.run = run
    message.save()
    Message.objects.create(
        thread=duo, agent=beta, role=MessageRole.ASSISTANT, text="hi", run=run
    )
    client.force_login(users[Role.PARTICIPANT])
    page = client.get(f"/threads/{duo.pk}/").content.decode()
    assert '<strong class="agent-name">alpha</strong>' in page
    assert '<strong class="agent-name">beta</strong>' in page
    assert (
        '<script id="thread-agents" type="application/json">["alpha", "beta"]' in page
    )
    assert 'data-name="beta"></span><span class="msg-author">beta</span>' in page
    assert 'data-name="owner"></span><span class="msg-author">owner</span>' in page


@pytest.mark.django_db(transaction=True)
async def test_a_snapshot_mid_reply_names_the_runs_agents(
    duo, users, beta, worker, client_for
):
    beta.extra_params = {"tokens_per_second": 5}
    await database_sync_to_async(beta.save)()
    owner = client_for(duo.id, users[Role.OWNER])
    await owner.join()
    await owner.send({"type": "message", "content": "@beta @alpha " + "word " * 50})
    await owner.receive_until(lambda frame: frame["type"] == "response")

    later = client_for(duo.id, users[Role.OBSERVER])
    _status, snapshot = await later.join()
    runs = snapshot["content"]["runs"]
    assert [(run["agent"], run["status"]) for run in runs] == [
        ("beta", "running"),
        ("alpha", "queued"),
    ]
    await owner.send({"type": "cancel", "content": None})
    cancelled = await later.receive_type("state_complete")
    assert cancelled["agent"] == "beta"
    assert cancelled["content"]["status"] == "cancelled"
