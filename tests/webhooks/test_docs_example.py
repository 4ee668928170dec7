"""The receiver of docs/clients.md, "Webhooks", works as written: it accepts
what Parley's dispatcher really sends, and refuses tampering and replays."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from channels.db import database_sync_to_async
from django.utils import timezone

from agents.models import Run, RunStatus
from chat.models import Role
from tests.eventually import eventually
from tests.webhooks.conftest import call_api
from webhooks import signing

DOC = (Path(__file__).resolve().parents[2] / "docs" / "clients.md").read_text()


def documented_receiver() -> dict:
    (code,) = re.findall(r"```python\n(# example: webhook receiver\n.*?)```", DOC, re.S)
    namespace: dict = {}
    exec(compile(code, "docs/clients.md", "exec"), namespace)  # noqa: S102
    return namespace


@pytest.mark.django_db(transaction=True)
async def test_the_documented_receiver_accepts_a_real_delivery(
    users, thread, dispatcher, receiver, capsys
):
    status, hook = await call_api(
        users[Role.OWNER],
        "put",
        f"/api/threads/{thread.id}/webhook/",
        {"url": receiver.url},
    )
    assert status == 201
    await database_sync_to_async(Run.objects.create)(
        thread=thread,
        agent=thread.agent,
        status=RunStatus.COMPLETED,
        finished_at=timezone.now(),
        partial_text="Done.",
    )
    dispatcher.start()
    (call,) = await eventually(lambda: receiver.received, what="the delivery")
    handle = documented_receiver()["handle"]
    headers = {"X-Parley-Signature": call.headers["x-parley-signature"]}
    seen: set = set()

    assert handle(hook["secret"], headers, call.body, seen) == 200
    assert seen == {call.headers["x-parley-delivery"]}
    assert "run.completed" in capsys.readouterr().out
    assert handle(hook["secret"], headers, call.body, seen) == 200  # a repeat
    assert capsys.readouterr().out == ""
    assert handle(hook["secret"], headers, call.body + b" ", set()) == 400
    assert handle("whsec_wrong", headers, call.body, set()) == 400


def test_the_documented_check_refuses_replays_and_bad_headers():
    verify = documented_receiver()["verify"]
    body = b'{"id": "x"}'
    now = int(time.time())
    assert verify("s", body, signing.signature_header("s", body, now))
    assert not verify("s", body, signing.signature_header("s", body, now - 301))
    assert not verify("s", body, "")
    assert not verify("s", body, "t=abc,v1=00")
