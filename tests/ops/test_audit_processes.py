"""The audit log behind a real daphne on PostgreSQL and Redis: an API call and
a socket's cancel are recorded with their actor and the client's address."""

from __future__ import annotations

import json
import os
import urllib.request

import pytest

from tests.eventually import eventually_sync
from tests.integration.conftest import Socket, Stack

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not (
            os.environ.get("DATABASE_URL", "").startswith("postgres")
            and os.environ.get("REDIS_URL")
        ),
        reason="needs DATABASE_URL (PostgreSQL) and REDIS_URL",
    ),
]


@pytest.fixture
def stack(tmp_path):
    stack = Stack(tmp_path).start()
    try:
        yield stack
    finally:
        stack.stop()


def audit_rows(stack: Stack, action: str) -> list:
    return stack.python(
        "from audit.models import AuditEvent\n"
        f"result = list(AuditEvent.objects.filter(action={action!r}).values_list("
        "'actor_username', 'ip', 'target_repr'))\n"
    )


async def test_api_and_socket_actions_are_recorded_with_actor_and_address(stack):
    setup = stack.setup_thread(tokens_per_second=20)
    thread, tokens = setup["thread"], setup["tokens"]
    web = stack.daphne()
    stack.worker()

    request = urllib.request.Request(
        f"http://127.0.0.1:{web.port}/api/threads/{thread}/members/",
        data=json.dumps({"username": "observer", "role": "participant"}).encode(),
        headers={
            "Authorization": f"Token {tokens['owner']}",
            "Content-Type": "application/json",
        },
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200  # an existing member's role changed
    assert audit_rows(stack, "member.role_change") == [
        ["owner", "127.0.0.1", "observer"]
    ]

    words = " ".join(f"w{i}" for i in range(100))  # 5 s at 20 words a second
    async with Socket(web.ws_url(thread), tokens["participant"]) as socket:
        assert (await socket.receive())["content"]["state"] == "connected"
        await socket.send({"type": "message", "content": words})
        first = (await socket.receive_until(lambda f: f["type"] == "response"))[-1]
        await socket.send({"type": "cancel", "content": {"run_id": first["run_id"]}})
        done = (await socket.receive_until(lambda f: f["type"] == "state_complete"))[-1]
    assert done["content"]["status"] == "cancelled"
    cancels = eventually_sync(
        lambda: audit_rows(stack, "run.cancel"), timeout=10, what="the cancel recorded"
    )
    assert cancels == [["participant", "127.0.0.1", f"run {first['run_id']}"]]
