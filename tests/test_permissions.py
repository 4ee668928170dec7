"""Who may do what: every role against every API endpoint and every socket frame type.

Both tables are read row by row: one line per endpoint (or frame type), one
expected answer per role. chat/permissions.py is the one place both the API and
the socket ask, so the two tables must agree on who writes.
"""

from __future__ import annotations

import uuid

import pytest
from rest_framework.test import APIClient

from agents.models import AgentConfig, Run, RunStatus
from chat.models import Role, ThreadMember
from usage.models import Budget

OWNER, PARTICIPANT, OBSERVER, STAFF = (
    Role.OWNER,
    Role.PARTICIPANT,
    Role.OBSERVER,
    Role.STAFF,
)
STRANGER, ANONYMOUS = "stranger", "anonymous"
ROLES = [OWNER, PARTICIPANT, OBSERVER, STAFF, STRANGER, ANONYMOUS]


def row(owner, participant, observer, staff, stranger, anonymous=401) -> dict:
    return dict(
        zip(
            ROLES,
            [owner, participant, observer, staff, stranger, anonymous],
            strict=True,
        )
    )


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    """The users fixture hashes five passwords per test; PBKDF2 takes ~0.5 s each."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


# name: (method, path, body, expected status per role)
# {thread} is the shared thread, {run} a queued run in it, "extra" a participant
# other than the caller, "spare" an agent no thread uses.
API_TABLE = {
    "audit": ("get", "/api/audit/", None, row(403, 403, 403, 200, 403)),
    "threads-list": ("get", "/api/threads/", None, row(200, 200, 200, 200, 200)),
    "threads-create": (
        "post",
        "/api/threads/",
        {"agent": "echo"},
        row(201, 201, 201, 201, 201),
    ),
    "thread-read": (
        "get",
        "/api/threads/{thread}/",
        None,
        row(200, 200, 200, 200, 404),
    ),
    "thread-rename": (
        "patch",
        "/api/threads/{thread}/",
        {"title": "new"},
        row(200, 403, 403, 200, 404),
    ),
    "thread-config": (
        "patch",
        "/api/threads/{thread}/",
        {"config": {"temperature": 0.1}},
        row(200, 200, 403, 403, 404),
    ),
    "thread-delete": (
        "delete",
        "/api/threads/{thread}/",
        None,
        row(204, 403, 403, 204, 404),
    ),
    "messages": (
        "get",
        "/api/threads/{thread}/messages/",
        None,
        row(200, 200, 200, 200, 404),
    ),
    "read": (
        "post",
        "/api/threads/{thread}/read/",
        None,
        row(200, 200, 200, 200, 404),
    ),
    "reset": (
        "post",
        "/api/threads/{thread}/reset/",
        None,
        row(204, 403, 403, 204, 404),
    ),
    "members-list": (
        "get",
        "/api/threads/{thread}/members/",
        None,
        row(200, 200, 200, 200, 404),
    ),
    "members-add": (
        "post",
        "/api/threads/{thread}/members/",
        {"username": "newbie", "role": "observer"},
        row(201, 403, 403, 201, 404),
    ),
    "members-remove": (
        "delete",
        "/api/threads/{thread}/members/extra/",
        None,
        row(204, 403, 403, 204, 404),
    ),
    "thread-runs-list": (
        "get",
        "/api/threads/{thread}/runs/",
        None,
        row(200, 200, 200, 200, 404),
    ),
    "thread-runs-post": (
        "post",
        "/api/threads/{thread}/runs/",
        {"content": "hi"},
        row(202, 202, 403, 403, 404),
    ),
    "runs-list": ("get", "/api/runs/", None, row(200, 200, 200, 200, 200)),
    "run-read": ("get", "/api/runs/{run}/", None, row(200, 200, 200, 200, 404)),
    "run-cancel": (
        "post",
        "/api/runs/{run}/cancel/",
        None,
        row(200, 200, 403, 403, 404),
    ),
    "streams": ("get", "/api/streams/", None, row(403, 403, 403, 200, 403)),
    "agents-list": ("get", "/api/agents/", None, row(200, 200, 200, 200, 200)),
    "agent-read": ("get", "/api/agents/echo/", None, row(200, 200, 200, 200, 200)),
    "agent-create": (
        "post",
        "/api/agents/",
        {"name": "new-agent", "provider": "echo"},
        row(403, 403, 403, 201, 403),
    ),
    "agent-update": (
        "patch",
        "/api/agents/echo/",
        {"description": "d"},
        row(403, 403, 403, 200, 403),
    ),
    "agent-delete": (
        "delete",
        "/api/agents/spare/",
        None,
        row(403, 403, 403, 204, 403),
    ),
    "token-revoke": ("delete", "/api/auth/token/", None, row(204, 204, 204, 204, 204)),
    # Usage and budgets (usage/): everyone reads their own; staff set budgets.
    "usage": ("get", "/api/usage/", None, row(200, 200, 200, 200, 200)),
    "usage-other": (
        "get",
        "/api/usage/?user=extra",
        None,
        row(403, 403, 403, 200, 403),
    ),
    "usage-budget": ("get", "/api/usage/budget/", None, row(200, 200, 200, 200, 200)),
    "budgets-list": ("get", "/api/usage/budgets/", None, row(403, 403, 403, 200, 403)),
    "budgets-create": (
        "post",
        "/api/usage/budgets/",
        {"user": "newbie", "monthly_tokens": 5},
        row(403, 403, 403, 201, 403),
    ),
    "budget-read": (
        "get",
        "/api/usage/budgets/{budget}/",
        None,
        row(403, 403, 403, 200, 403),
    ),
    "budget-update": (
        "patch",
        "/api/usage/budgets/{budget}/",
        {"hard": True},
        row(403, 403, 403, 200, 403),
    ),
    "budget-delete": (
        "delete",
        "/api/usage/budgets/{budget}/",
        None,
        row(403, 403, 403, 204, 403),
    ),
    # Webhooks (webhooks/): each caller's own; a thread's, its owner's only
    # (tests/webhooks has the successes; here no host is allowed: 400).
    "webhooks-list": ("get", "/api/webhooks/", None, row(200, 200, 200, 200, 200)),
    "webhooks-create": (
        "post",
        "/api/webhooks/",
        {"url": "https://hooks.example.com/x"},
        row(400, 400, 400, 400, 400),
    ),
    "webhook-read": (
        "get",
        "/api/webhooks/{thread}/",
        None,
        row(404, 404, 404, 404, 404),
    ),
    "webhook-delete": (
        "delete",
        "/api/webhooks/{thread}/",
        None,
        row(404, 404, 404, 404, 404),
    ),
    "webhook-deliveries": (
        "get",
        "/api/webhooks/{thread}/deliveries/",
        None,
        row(404, 404, 404, 404, 404),
    ),
    "thread-webhook-read": (
        "get",
        "/api/threads/{thread}/webhook/",
        None,
        row(404, 403, 403, 403, 404),
    ),
    "thread-webhook-set": (
        "put",
        "/api/threads/{thread}/webhook/",
        {"url": "https://hooks.example.com/x"},
        row(400, 403, 403, 403, 404),
    ),
    "thread-webhook-delete": (
        "delete",
        "/api/threads/{thread}/webhook/",
        None,
        row(404, 403, 403, 403, 404),
    ),
    "run-webhook": (
        "post",
        "/api/runs/{run}/webhook/",
        {"webhook": "00000000-0000-4000-8000-000000000000"},
        row(404, 404, 404, 404, 404),
    ),
    "delivery-read": (
        "get",
        "/api/webhooks/deliveries/{thread}/",
        None,
        row(404, 404, 404, 404, 404),
    ),
    "delivery-redeliver": (
        "post",
        "/api/webhooks/deliveries/{thread}/redeliver/",
        None,
        row(404, 404, 404, 404, 404),
    ),
}

API_CASES = [
    pytest.param(name, role, id=f"{name}-{getattr(role, 'value', role)}")
    for name in API_TABLE
    for role in ROLES
]


@pytest.mark.django_db
@pytest.mark.parametrize(("endpoint", "role"), API_CASES)
def test_api_permissions(endpoint, role, users, thread, make_user):
    method, path, body, expected = API_TABLE[endpoint]
    make_user("newbie")
    ThreadMember.objects.create(
        thread=thread, user=make_user("extra"), role=Role.PARTICIPANT
    )
    AgentConfig.objects.create(name="spare", provider="echo")
    run = Run.objects.create(thread=thread, agent=thread.agent, status=RunStatus.QUEUED)
    budget = Budget.objects.create(thread=thread, monthly_tokens=10**6)
    client = APIClient()
    if role != ANONYMOUS:
        client.force_authenticate(users[role])
    url = path.format(thread=thread.id, run=run.id, budget=budget.id)
    response = getattr(client, method)(url, body, format="json")
    assert response.status_code == expected[role], response.content
    if response.status_code >= 400:
        assert set(response.json()["error"]) >= {"code", "message"}
    if response.status_code == 403 and role == OBSERVER and "{thread}" in path:
        assert response.json()["error"]["code"] == "read_only"


def test_the_api_table_covers_every_endpoint_in_the_schema():
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)
    documented = {
        (
            method,
            path.replace("{id}", "{x}")
            .replace("{name}", "{x}")
            .replace("{username}", "{x}"),
        )
        for path, operations in schema["paths"].items()
        for method in operations
        if path not in ("/api/schema/",)
    }
    tested = {
        (
            method,
            path.replace("{thread}", "{x}")
            .replace("{run}", "{x}")
            .replace("{budget}", "{x}")
            .replace("?user=extra", "")
            .replace("echo", "{x}")
            .replace("spare", "{x}")
            .replace("extra", "{x}"),
        )
        for method, path, _, _ in API_TABLE.values()
    }
    # The POST form of token revocation behaves as DELETE /api/auth/token/.
    tested.add(("post", "/api/auth/token/revoke/"))
    # Logging in needs no role (tests/chat/test_api.py covers it).
    tested.add(("post", "/api/auth/token/"))
    assert documented <= tested, documented - tested


# --- The socket ---------------------------------------------------------------------

# frame type: (frame, what a writer gets back); observers and staff get
# `error` `read_only` for everything but ping.
SOCKET_FRAMES = {
    "message": ({"type": "message", "content": "hello"}, ("message", None)),
    "config": ({"type": "config", "content": {"temperature": 0.3}}, ("status", None)),
    "cancel": ({"type": "cancel", "content": None}, ("error", "run_not_found")),
    "input": (
        {"type": "input", "content": {"run_id": str(uuid.uuid4()), "text": "yes"}},
        ("error", "run_not_found"),
    ),
    "ping": ({"type": "ping", "content": None}, ("pong", None)),
}
READ_ONLY = ("error", "read_only")
SOCKET_TABLE = {
    frame_type: {
        OWNER: writer_reply,
        PARTICIPANT: writer_reply,
        OBSERVER: writer_reply if frame_type == "ping" else READ_ONLY,
        STAFF: writer_reply if frame_type == "ping" else READ_ONLY,
    }
    for frame_type, (_, writer_reply) in SOCKET_FRAMES.items()
}
SOCKET_CASES = [
    pytest.param(frame_type, role, id=f"{frame_type}-{role.value}")
    for frame_type in SOCKET_TABLE
    for role in (OWNER, PARTICIPANT, OBSERVER, STAFF)
]


def _is_reply(frame: dict) -> bool:
    """Frames answering what the test sent (not the connect-time status frames)."""
    if frame["type"] == "status":
        return frame["content"].get("state") not in ("connected", "snapshot")
    return True


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("frame_type", "role"), SOCKET_CASES)
async def test_socket_permissions(
    frame_type, role, users, thread, client_for, settings
):
    settings.PARLEY_EMBEDDED_WORKER = False
    frame, _ = SOCKET_FRAMES[frame_type]
    expected_type, expected_code = SOCKET_TABLE[frame_type][role]
    socket = client_for(thread.id, users[role])
    connected, _ = await socket.connect()
    assert connected
    await socket.receive_until(
        lambda f: f["type"] == "status" and f["content"].get("state") == "snapshot"
    )
    await socket.send({**frame, "request_id": "check"})
    reply = (await socket.receive_until(_is_reply))[-1]
    assert reply["type"] == expected_type, reply
    if expected_code is not None:
        assert reply["content"]["code"] == expected_code
    await socket.close()


@pytest.mark.django_db(transaction=True)
async def test_strangers_sockets_are_closed_with_4403(
    users, thread, client_for, settings
):
    settings.PARLEY_EMBEDDED_WORKER = False
    socket = client_for(thread.id, users[STRANGER])
    await socket.connect()
    closed = await socket.communicator.receive_output(timeout=5)
    assert closed == {"type": "websocket.close", "code": 4403}
    await socket.close()
