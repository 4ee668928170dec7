"""The chat REST API: threads, history, members, runs, tokens and the error shape."""

from __future__ import annotations

import uuid

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from agents.models import AgentConfig, Run, RunStatus
from chat.models import Message, MessageRole, Role, Thread, ThreadMember
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    """The users fixture hashes five passwords per test; PBKDF2 takes ~0.5 s each."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def client_as(user=None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


def assert_error(response, status: int, code: str | None = None) -> dict:
    """The contract's error shape, as JSON, never HTML."""
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json"), response[
        "Content-Type"
    ]
    error = response.json()["error"]
    assert isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code, error
    return error


# --- Threads ----------------------------------------------------------------------


def test_creating_a_thread_returns_201_with_its_id(users, echo_agent):
    response = client_as(users[Role.OWNER]).post(
        "/api/threads/", {"agent": "echo", "title": "Plans"}, format="json"
    )
    assert response.status_code == 201
    body = response.json()
    thread = Thread.objects.get(pk=body["id"])
    assert thread.owner == users[Role.OWNER]
    assert (
        body["agent"] == "echo" and body["title"] == "Plans" and body["role"] == "owner"
    )


def test_creating_a_thread_with_an_unknown_or_disabled_agent_is_a_400(
    users, echo_agent
):
    client = client_as(users[Role.OWNER])
    assert_error(
        client.post("/api/threads/", {"agent": "nobody"}, format="json"),
        400,
        "agent_not_found",
    )
    AgentConfig.objects.create(name="off", provider="echo", enabled=False)
    assert_error(
        client.post("/api/threads/", {"agent": "off"}, format="json"),
        400,
        "agent_disabled",
    )


def test_creating_a_thread_with_overrides_the_agent_forbids_is_a_400(users, echo_agent):
    echo_agent.allowed_overrides = ["temperature"]
    echo_agent.save()
    response = client_as(users[Role.OWNER]).post(
        "/api/threads/", {"agent": "echo", "config": {"model": "x"}}, format="json"
    )
    assert_error(response, 400, "invalid_config")


def test_thread_list_shows_only_threads_the_caller_may_see(users, thread, echo_agent):
    other_agent = AgentConfig.objects.create(name="other", provider="echo")
    Thread.objects.create(owner=users["stranger"], agent=other_agent, title="private")

    def titles(user, query=""):
        response = client_as(user).get(f"/api/threads/{query}")
        assert response.status_code == 200
        return sorted(item["title"] for item in response.json()["results"])

    assert titles(users[Role.OWNER]) == ["t"]
    assert titles(users[Role.OBSERVER]) == ["t"]
    assert titles(users["stranger"]) == ["private"]
    assert titles(users[Role.STAFF]) == ["private", "t"]
    assert titles(users[Role.STAFF], "?agent=other") == ["private"]
    roles = {
        item["title"]: item["role"]
        for item in client_as(users[Role.STAFF]).get("/api/threads/").json()["results"]
    }
    assert roles == {"t": "staff", "private": "staff"}
    assert (
        client_as(users[Role.OBSERVER])
        .get("/api/threads/")
        .json()["results"][0]["role"]
        == "observer"
    )


def test_thread_list_is_paginated_with_limit_and_offset(users, echo_agent):
    for number in range(5):
        Thread.objects.create(
            owner=users[Role.OWNER], agent=echo_agent, title=f"t{number}"
        )
    body = client_as(users[Role.OWNER]).get("/api/threads/?limit=2&offset=1").json()
    assert body["count"] == 5
    assert len(body["results"]) == 2
    assert body["next"] and body["previous"]


def test_participants_change_config_and_owners_rename(users, thread):
    response = client_as(users[Role.PARTICIPANT]).patch(
        f"/api/threads/{thread.id}/", {"config": {"temperature": 0.2}}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["config"] == {"temperature": 0.2}
    response = client_as(users[Role.OWNER]).patch(
        f"/api/threads/{thread.id}/", {"title": "Renamed"}, format="json"
    )
    assert response.status_code == 200 and response.json()["title"] == "Renamed"
    thread.refresh_from_db()
    assert thread.title == "Renamed" and thread.config == {"temperature": 0.2}


def test_an_invalid_config_override_is_a_400(users, thread):
    response = client_as(users[Role.OWNER]).patch(
        f"/api/threads/{thread.id}/", {"config": {"temperature": 9}}, format="json"
    )
    assert_error(response, 400, "invalid_config")


def test_deleting_a_thread_removes_it(users, thread):
    assert (
        client_as(users[Role.OWNER]).delete(f"/api/threads/{thread.id}/").status_code
        == 204
    )
    assert not Thread.objects.filter(pk=thread.pk).exists()


# --- History ------------------------------------------------------------------------


def test_history_is_oldest_first_and_cursor_paginated(users, thread):
    for number in range(7):
        Message.objects.create(
            thread=thread,
            author=users[Role.OWNER],
            role=MessageRole.USER,
            text=f"m{number}",
        )
    client = client_as(users[Role.OBSERVER])
    seen = []
    url = f"/api/threads/{thread.id}/messages/?page_size=3"
    pages = 0
    while url:
        body = client.get(url).json()
        seen += [message["text"] for message in body["results"]]
        url = body["next"]
        pages += 1
    assert seen == [f"m{number}" for number in range(7)]
    assert pages == 3
    first = client.get(f"/api/threads/{thread.id}/messages/").json()["results"][0]
    assert first["author"] == {"username": "owner"}
    assert first["role"] == "user" and first["status"] is None


def test_a_bad_cursor_is_a_json_404(users, thread):
    response = client_as(users[Role.OWNER]).get(
        f"/api/threads/{thread.id}/messages/?cursor=zzz"
    )
    assert_error(response, 404, "not_found")


# --- Runs -------------------------------------------------------------------------


def test_posting_a_run_stores_the_message_and_queues_a_run(users, thread):
    response = client_as(users[Role.PARTICIPANT]).post(
        f"/api/threads/{thread.id}/runs/", {"content": "hello there"}, format="json"
    )
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "queued"
    run = Run.objects.get(pk=body["id"])
    assert run.requested_by == users[Role.PARTICIPANT]
    assert run.prompt.text == "hello there"
    assert body["prompt"] == str(run.prompt_id)
    assert body["stream_url"] == f"/api/runs/{run.id}/stream/"
    history = (
        client_as(users[Role.OWNER]).get(f"/api/threads/{thread.id}/messages/").json()
    )
    assert [m["text"] for m in history["results"]] == ["hello there"]


def test_posting_an_empty_or_too_long_message_is_refused(users, thread, settings):
    client = client_as(users[Role.OWNER])
    assert_error(
        client.post(f"/api/threads/{thread.id}/runs/", {"content": ""}, format="json"),
        400,
    )
    assert_error(
        client.post(
            f"/api/threads/{thread.id}/runs/", {"content": "   "}, format="json"
        ),
        400,
        "validation_error",
    )
    settings.PARLEY_MAX_MESSAGE_CHARS = 10
    assert_error(
        client.post(
            f"/api/threads/{thread.id}/runs/", {"content": "x" * 11}, format="json"
        ),
        413,
        "message_too_long",
    )


def test_runs_posted_by_api_obey_the_message_rate_limit(users, thread, settings):
    settings.PARLEY_MESSAGES_PER_MINUTE = 2
    client = client_as(users[Role.OWNER])
    for _ in range(2):
        assert (
            client.post(
                f"/api/threads/{thread.id}/runs/", {"content": "hi"}, format="json"
            ).status_code
            == 202
        )
    response = client.post(
        f"/api/threads/{thread.id}/runs/", {"content": "hi"}, format="json"
    )
    assert_error(response, 429, "rate_limited")


def test_a_busy_thread_with_reject_policy_answers_409(users, thread):
    thread.agent.busy_policy = "reject"
    thread.agent.save()
    client = client_as(users[Role.OWNER])
    assert (
        client.post(
            f"/api/threads/{thread.id}/runs/", {"content": "a"}, format="json"
        ).status_code
        == 202
    )
    response = client.post(
        f"/api/threads/{thread.id}/runs/", {"content": "b"}, format="json"
    )
    assert_error(response, 409, "thread_busy")


def test_run_status_and_cancel(users, thread):
    client = client_as(users[Role.OWNER])
    run_id = client.post(
        f"/api/threads/{thread.id}/runs/", {"content": "hi"}, format="json"
    ).json()["id"]
    body = client.get(f"/api/runs/{run_id}/").json()
    assert (
        body["status"] == "queued"
        and body["thread"] == str(thread.id)
        and body["agent"] == "echo"
    )
    response = client.post(f"/api/runs/{run_id}/cancel/")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert_error(client.post(f"/api/runs/{run_id}/cancel/"), 409, "run_not_active")


def test_cancelling_a_running_run_asks_its_worker_to_stop(users, thread):
    run = Run.objects.create(
        thread=thread, agent=thread.agent, status=RunStatus.RUNNING
    )
    response = client_as(users[Role.PARTICIPANT]).post(f"/api/runs/{run.id}/cancel/")
    assert response.status_code == 200
    assert (
        response.json()["status"] == "running"
        and response.json()["cancel_requested"] is True
    )


def test_run_lists_filter_by_status(users, thread):
    Run.objects.create(thread=thread, agent=thread.agent, status=RunStatus.COMPLETED)
    Run.objects.create(thread=thread, agent=thread.agent, status=RunStatus.FAILED)
    client = client_as(users[Role.OBSERVER])
    body = client.get(f"/api/threads/{thread.id}/runs/?status=failed").json()
    assert [run["status"] for run in body["results"]] == ["failed"]
    body = client.get("/api/runs/?status=completed").json()
    assert [run["status"] for run in body["results"]] == ["completed"]
    assert client.get(f"/api/runs/?thread={thread.id}").json()["count"] == 2
    assert client_as(users["stranger"]).get("/api/runs/").json()["count"] == 0
    assert_error(client.get("/api/runs/?status=bogus"), 400, "validation_error")


def test_streams_lists_active_runs_for_staff(users, thread):
    Run.objects.create(thread=thread, agent=thread.agent, status=RunStatus.RUNNING)
    Run.objects.create(thread=thread, agent=thread.agent, status=RunStatus.COMPLETED)
    body = client_as(users[Role.STAFF]).get("/api/streams/").json()["results"]
    assert len(body) == 1
    assert body[0]["status"] == "running"
    assert body[0]["clients"] == 0 and body[0]["age_seconds"] >= 0
    assert body[0]["thread_title"] == "t"
    assert_error(client_as(users[Role.OWNER]).get("/api/streams/"), 403, "forbidden")


# --- Members --------------------------------------------------------------------------


def test_owner_adds_lists_and_removes_members(users, thread, make_user):
    make_user("newbie")
    client = client_as(users[Role.OWNER])
    url = f"/api/threads/{thread.id}/members/"
    response = client.post(
        url, {"username": "newbie", "role": "observer"}, format="json"
    )
    assert response.status_code == 201 and response.json()["role"] == "observer"
    response = client.post(
        url, {"username": "newbie", "role": "participant"}, format="json"
    )
    assert response.status_code == 200 and response.json()["role"] == "participant"
    members = {m["username"]: m["role"] for m in client.get(url).json()}
    assert members == {
        "participant": "participant",
        "observer": "observer",
        "newbie": "participant",
    }
    assert client.delete(f"{url}newbie/").status_code == 204
    assert not ThreadMember.objects.filter(
        thread=thread, user__username="newbie"
    ).exists()


def test_adding_an_unknown_user_or_a_bad_role_is_a_400(users, thread):
    client = client_as(users[Role.OWNER])
    url = f"/api/threads/{thread.id}/members/"
    assert_error(
        client.post(url, {"username": "ghost", "role": "observer"}, format="json"),
        400,
        "user_not_found",
    )
    error = assert_error(
        client.post(url, {"username": "stranger", "role": "owner"}, format="json"),
        400,
        "validation_error",
    )
    assert "role" in error["details"]


def test_a_member_may_leave_a_thread(users, thread):
    response = client_as(users[Role.OBSERVER]).delete(
        f"/api/threads/{thread.id}/members/observer/"
    )
    assert response.status_code == 204
    assert (
        client_as(users[Role.OBSERVER]).get(f"/api/threads/{thread.id}/").status_code
        == 404
    )


def test_reset_clears_the_history(users, thread):
    Message.objects.create(
        thread=thread, author=users[Role.OWNER], role=MessageRole.USER, text="x"
    )
    assert (
        client_as(users[Role.OWNER])
        .post(f"/api/threads/{thread.id}/reset/")
        .status_code
        == 204
    )
    assert not Message.objects.filter(thread=thread).exists()


# --- Tokens ---------------------------------------------------------------------------


def test_a_token_is_issued_for_a_username_and_password(users):
    client = APIClient()
    response = client.post(
        "/api/auth/token/", {"username": "owner", "password": PASSWORD}, format="json"
    )
    assert response.status_code == 200
    key = response.json()["token"]
    assert Token.objects.get(key=key).user == users[Role.OWNER]
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert client.get("/api/threads/").status_code == 200


def test_wrong_credentials_get_the_error_shape(users):
    response = APIClient().post(
        "/api/auth/token/", {"username": "owner", "password": "nope"}, format="json"
    )
    assert_error(response, 400, "not_authenticated")
    assert_error(
        APIClient().post("/api/auth/token/", {}, format="json"), 400, "validation_error"
    )


@pytest.mark.parametrize("how", ["delete", "post-revoke"])
def test_revoking_a_token_makes_it_useless(users, how):
    key = Token.objects.create(user=users[Role.OWNER]).key
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    if how == "delete":
        response = client.delete("/api/auth/token/")
    else:
        response = client.post("/api/auth/token/revoke/")
    assert response.status_code == 204
    assert not Token.objects.filter(key=key).exists()
    assert_error(client.get("/api/threads/"), 401, "not_authenticated")


@pytest.mark.django_db(transaction=True)
async def test_revoking_a_token_closes_its_live_sockets(
    users, thread, client_for, settings
):
    settings.PARLEY_EMBEDDED_WORKER = False
    token = await Token.objects.acreate(user=users[Role.OWNER])
    socket = client_for(
        thread.id, headers=[(b"authorization", b"Token " + token.key.encode())]
    )
    connected, _ = await socket.connect()
    assert connected
    await socket.receive_until(
        lambda f: f["type"] == "status" and f["content"].get("state") == "snapshot"
    )

    def revoke():
        api = APIClient()
        api.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
        return api.delete("/api/auth/token/").status_code

    assert await sync_to_async(revoke)() == 204
    error = await socket.receive_type("error", timeout=5)
    assert error["content"]["code"] == "not_authenticated"
    closed = await socket.communicator.receive_output(timeout=5)
    assert closed == {"type": "websocket.close", "code": 4401}
    await socket.close()


@pytest.mark.django_db(transaction=True)
async def test_a_run_posted_by_api_reaches_every_socket_on_the_thread(
    users, thread, client_for, settings
):
    settings.PARLEY_EMBEDDED_WORKER = False
    sockets = [
        client_for(thread.id, users[Role.OWNER]),
        client_for(thread.id, users[Role.OBSERVER]),
    ]
    for socket in sockets:
        assert (await socket.connect())[0]
        await socket.receive_until(
            lambda f: f["type"] == "status" and f["content"].get("state") == "snapshot"
        )

    def post():
        return client_as(users[Role.PARTICIPANT]).post(
            f"/api/threads/{thread.id}/runs/",
            {"content": "via the API", "request_id": "r1"},
            format="json",
        )

    response = await sync_to_async(post)()
    assert response.status_code == 202
    for socket in sockets:
        frame = await socket.receive_type("message")
        assert frame["content"]["text"] == "via the API"
        assert frame["content"]["author"] == {"username": "participant"}
        assert frame["run_id"] == response.json()["id"]
        queued = await socket.receive_type("status")
        assert queued["content"]["state"] == "queued"
    for socket in sockets:
        await socket.close()


# --- The error shape -----------------------------------------------------------------------


def test_unknown_thread_and_run_are_json_404s(users):
    client = client_as(users[Role.OWNER])
    assert_error(client.get(f"/api/threads/{uuid.uuid4()}/"), 404, "thread_not_found")
    assert_error(client.get(f"/api/runs/{uuid.uuid4()}/"), 404, "run_not_found")
    assert_error(client.get("/api/threads/not-a-uuid/"), 404, "not_found")


@pytest.mark.parametrize("method", ["get", "post", "delete", "put"])
def test_unknown_api_paths_are_json_404s(users, method):
    response = getattr(client_as(users[Role.OWNER]), method)("/api/no/such/thing/")
    assert_error(response, 404, "not_found")
    assert_error(APIClient().get("/api/nothing-here"), 404, "not_found")


def test_a_missing_trailing_slash_gets_a_hint(users):
    error = assert_error(
        client_as(users[Role.OWNER]).get("/api/threads"), 404, "not_found"
    )
    assert "/api/threads/" in error["message"]


def test_unsupported_methods_are_json_405s(users, thread):
    client = client_as(users[Role.OWNER])
    assert_error(
        client.put(f"/api/threads/{thread.id}/", {}, format="json"),
        405,
        "method_not_allowed",
    )
    assert_error(client.get("/api/auth/token/revoke/"), 405, "method_not_allowed")


def test_validation_errors_name_the_fields(users, echo_agent):
    error = assert_error(
        client_as(users[Role.OWNER]).post(
            "/api/threads/", {"title": "x" * 300}, format="json"
        ),
        400,
        "validation_error",
    )
    assert set(error["details"]) == {"agent", "title"}


def test_malformed_json_is_a_400(users):
    response = client_as(users[Role.OWNER]).post(
        "/api/threads/", "{not json", content_type="application/json"
    )
    assert_error(response, 400, "validation_error")


def test_unauthenticated_calls_are_401_with_a_challenge(thread):
    response = APIClient().get(f"/api/threads/{thread.id}/")
    assert_error(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"] == "Token"
    response = APIClient(HTTP_AUTHORIZATION="Token not-a-real-token").get(
        "/api/threads/"
    )
    assert_error(response, 401, "not_authenticated")


def test_too_many_requests_are_throttled_with_429(users, settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"user": "3/min", "anon": "2/min"},
    }
    client = client_as(users[Role.OWNER])
    for _ in range(3):
        assert client.get("/api/threads/").status_code == 200
    response = client.get("/api/agents/")
    assert_error(response, 429, "rate_limited")
    assert int(response["Retry-After"]) > 0
    # Anonymous callers reach only the token endpoint, throttled per address.
    anonymous = APIClient()
    for _ in range(2):
        anonymous.post(
            "/api/auth/token/", {"username": "owner", "password": "x"}, format="json"
        )
    response = anonymous.post(
        "/api/auth/token/", {"username": "owner", "password": PASSWORD}, format="json"
    )
    assert_error(response, 429, "rate_limited")


def test_a_server_error_inside_a_view_is_json_without_a_traceback(users, monkeypatch):
    def explode(**kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr("chat.api.thread_list_for_user", explode)
    response = client_as(users[Role.OWNER]).get("/api/threads/")
    error = assert_error(response, 500, "server_error")
    assert "secret" not in response.content.decode()
    assert "Traceback" not in response.content.decode()
    assert error["message"] == "Something went wrong on our side."


def test_errors_outside_drf_views_are_json_for_api_paths(rf):
    from restapi.errors import handler404, handler500

    response = handler500(rf.get("/api/threads/"))
    assert (
        response.status_code == 500 and response["Content-Type"] == "application/json"
    )
    assert handler404(rf.get("/api/x/"), None).status_code == 404
    assert handler500(rf.get("/")).status_code == 500
    assert "html" in handler500(rf.get("/"))["Content-Type"]


# --- Schema and docs ------------------------------------------------------------------------


def test_schema_and_docs_are_served(users):
    schema = APIClient().get("/api/schema/?format=json")
    assert schema.status_code == 200
    assert schema.json()["openapi"].startswith("3.")
    docs = APIClient().get("/api/docs/")
    assert docs.status_code == 200 and b"<html" in docs.content.lower()


def test_token_created_for_a_new_user_via_api_has_its_own_key(make_user):
    make_user("someone")
    first = APIClient().post(
        "/api/auth/token/", {"username": "someone", "password": PASSWORD}, format="json"
    )
    again = APIClient().post(
        "/api/auth/token/", {"username": "someone", "password": PASSWORD}, format="json"
    )
    assert first.json()["token"] == again.json()["token"]
    assert (
        get_user_model().objects.get(username="someone").auth_token.key
        == first.json()["token"]
    )


def test_list_pages_are_capped(users, echo_agent):
    Thread.objects.bulk_create(
        Thread(owner=users[Role.OWNER], agent=echo_agent, title=f"t{n}")
        for n in range(205)
    )
    body = client_as(users[Role.OWNER]).get("/api/threads/?limit=1000").json()
    assert body["count"] == 205 and len(body["results"]) == 200


def test_the_api_speaks_only_json(users):
    client = client_as(users[Role.OWNER])
    response = client.get("/api/threads/", HTTP_ACCEPT="text/html")
    assert_error(response, 406, "not_acceptable")
    response = client.post("/api/threads/", {"agent": "echo"})  # multipart form
    assert_error(response, 415, "unsupported_media_type")


def test_hostile_query_values_are_client_errors(users, thread):
    """Values PostgreSQL would choke on (NUL, absurd offsets, forged cursors)."""
    import base64

    client = client_as(users[Role.OWNER])
    assert_error(client.get("/api/threads/?agent=a%00b"), 400, "validation_error")
    assert_error(client.get("/api/runs/?agent=a%00b"), 400, "validation_error")
    assert client.get("/api/threads/?offset=99999999999999999999999").status_code == 200
    forged = base64.b64encode(b"p=not-a-time").decode()
    assert_error(client.get(f"/api/threads/{thread.id}/messages/?cursor={forged}"), 404)
    assert_error(client.delete(f"/api/threads/{thread.id}/members/a%00b/"), 404)


def test_nul_characters_in_config_are_refused(users, thread):
    response = client_as(users[Role.OWNER]).patch(
        f"/api/threads/{thread.id}/", {"config": {"model": "a\u0000b"}}, format="json"
    )
    assert_error(response, 400, "invalid_config")
    response = client_as(users[Role.STAFF]).post(
        "/api/agents/",
        {"name": "x", "provider": "echo", "extra_params": {"k": "a\u0000b"}},
        format="json",
    )
    assert "extra_params" in assert_error(response, 400, "validation_error")["details"]


def test_paths_with_control_characters_are_json_404s(users):
    response = client_as(users[Role.OWNER]).delete("/api/threads/a%0Ab/")
    assert_error(response, 404, "not_found")
