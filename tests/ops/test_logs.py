"""JSON logs (LOG_FORMAT=json): every line a JSON object, with the request,
thread, run and user ids where known, and never the message text or a key.

The end-to-end test runs daphne in the embedded mode (its agent worker inside)
with LOG_FORMAT=json, sends requests and a message whose reply comes from a
loopback OpenAI server, and parses everything daphne wrote.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys

import httpx
import pytest

from ops.logs import (
    JsonFormatter,
    LogContextFilter,
    log_context_end,
    log_context_start,
)
from tests.eventually import eventually_sync
from tests.fakes import FakeOpenAIServer
from tests.integration.conftest import DAPHNE, ROOT, free_port, wait_for_http

KEY_ENV = "PARLEY_LOGS_TEST_KEY"
KEY = "sk-parley-logs-test-5a4b3c2d1e0f9a8b"
TOKEN = "7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b"
SECRET_TEXT = "purple elephants dance at midnight"


def json_lines(text: str) -> list[dict]:
    """Every non-empty line parsed; a line that is not JSON fails the test."""
    lines = []
    for line in text.splitlines():
        if line.strip():
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError:
                pytest.fail(f"a log line is not JSON: {line!r}")
    return lines


@pytest.fixture
def json_logging_parley(tmp_path):
    """daphne with LOG_FORMAT=json, a user with a token and an openai agent."""
    with FakeOpenAIServer() as model:
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in {"REDIS_URL", "DATABASE_URL"}
            and not key.startswith(("PYTEST", "LOG_", "OIDC_"))
        }
        env.update(
            DJANGO_SETTINGS_MODULE="config.settings",
            PARLEY_DATA_DIR=str(tmp_path),
            LOG_FORMAT="json",
            # DEBUG: the SDKs would log the request (the prompt) at this level.
            LOG_LEVEL="DEBUG",
            PYTHONUNBUFFERED="1",
            **{KEY_ENV: KEY},
        )
        setup = f"""
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from agents.models import AgentConfig
user = get_user_model().objects.create_user(username="writer", password="x" * 12)
Token.objects.create(user=user, key={TOKEN!r})
AgentConfig.objects.create(
    name="gpt", provider="openai", model="gpt-test",
    base_url={model.base_url!r}, api_key_env={KEY_ENV!r},
)
print(user.pk)
"""
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=ROOT,
            env=env,
            check=True,
        )
        user_id = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", setup],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()[-1]
        port = free_port()
        log_path = tmp_path / "daphne.log"
        with open(log_path, "w") as log:
            process = subprocess.Popen(
                # -v 0: daphne's own access lines are plain text (docs/deploy.md)
                [DAPHNE, "-v", "0", "-b", "127.0.0.1", "-p", str(port)]
                + ["config.asgi:application"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                wait_for_http(f"http://127.0.0.1:{port}/healthz")
                yield f"http://127.0.0.1:{port}", user_id, log_path
            finally:
                process.terminate()
                process.wait(timeout=15)


@pytest.mark.embedded_process
def test_json_lines_carry_request_thread_run_and_user_ids_and_no_text(
    json_logging_parley,
):
    base_url, user_id, log_path = json_logging_parley
    api = httpx.Client(
        base_url=base_url, headers={"Authorization": f"Token {TOKEN}"}, timeout=15
    )
    listed = api.get("/api/threads/", headers={"X-Request-ID": "req-logs-1"})
    assert listed.status_code == 200
    assert listed.headers["X-Request-ID"] == "req-logs-1"
    thread_id = api.post("/api/threads/", json={"agent": "gpt", "title": "t"}).json()[
        "id"
    ]
    posted = api.post(f"/api/threads/{thread_id}/runs/", json={"content": SECRET_TEXT})
    assert posted.status_code == 202, posted.text
    run_id = posted.json()["id"]
    run = eventually_sync(
        lambda: (
            (
                (found := api.get(f"/api/runs/{run_id}/").json())["status"]
                in ("completed", "failed")
            )
            and found
        ),
        what="the run to end",
    )
    assert run["status"] == "completed", run
    # The model was asked (echo: the reply is the message itself).
    lines = eventually_sync(
        lambda: [
            line for line in json_lines(log_path.read_text()) if line.get("run_id")
        ],
        what="a log line of the run",
    )

    everything = json_lines(log_path.read_text())
    request = [line for line in everything if line.get("request_id") == "req-logs-1"]
    assert request == [
        {
            **request[0],
            "level": "INFO",
            "logger": "parley.requests",
            "message": "GET /api/threads/ 200",
            "method": "GET",
            "path": "/api/threads/",
            "status": 200,
            "user_id": user_id,
        }
    ]
    posts = [line for line in everything if line.get("path", "").endswith("/runs/")]
    assert [line["user_id"] for line in posts] == [user_id]
    assert posts[0]["request_id"] != "req-logs-1"  # a new id for each request
    # The worker's lines (the HTTP client's call to the model) carry the run.
    assert {(line["thread_id"], line["user_id"]) for line in lines} == {
        (thread_id, user_id)
    }
    assert {line["run_id"] for line in lines} == {run_id}
    assert all("request_id" not in line for line in lines)
    text = log_path.read_text()
    assert SECRET_TEXT not in text and "elephants" not in text
    assert KEY not in text and TOKEN not in text


def test_a_record_gets_the_ids_of_its_context_and_keys_are_redacted():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(LogContextFilter())
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("tests.ops.logs")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        token = log_context_start(run_id="r1", thread_id="t1", user_id=7)
        try:
            logger.warning(
                "provider said %s",
                "Authorization: Bearer abcdefghijklmnop sk-abc123456789",
            )
        finally:
            log_context_end(token)
        logger.warning("outside any context")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True

    inside, outside = json_lines(stream.getvalue())
    assert inside["run_id"] == "r1" and inside["thread_id"] == "t1"
    assert inside["user_id"] == "7"
    assert inside["message"] == (
        "provider said Authorization: Bearer [redacted] sk-[redacted]"
    )
    assert not {"run_id", "thread_id", "user_id", "request_id"} & set(outside)


def test_the_default_format_stays_the_plain_message(settings):
    assert settings.LOG_FORMAT == "text"
    assert "formatter" not in settings.LOGGING["handlers"]["console"]
