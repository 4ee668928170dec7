"""`/healthz` and `/readyz`: what a load balancer sees."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from django.test import Client

from tests.ops.conftest import closed_port

ROOT = Path(__file__).resolve().parents[2]


def test_healthz_answers_without_database_or_session():
    # No `db` fixture: pytest-django fails any database access in this test.
    response = Client().get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert "Set-Cookie" not in response.headers
    assert "Cookie" not in response.get("Vary", "")


def test_probes_answer_a_load_balancer_that_uses_the_ip_as_host(db):
    # Orchestrators probe with the pod's address as Host, which ALLOWED_HOSTS
    # does not list: the probes answer anyway (ops.middleware.ProbeMiddleware).
    client = Client(HTTP_HOST="10.1.2.3:8000")
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    assert client.get("/api/agents/").status_code == 400  # the rest still checks


def test_probes_over_plain_http_are_not_redirected_to_https(db, settings):
    settings.SECURE_SSL_REDIRECT = True
    client = Client()
    assert client.get("/healthz").status_code == 200
    assert client.head("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    assert client.get("/api/agents/").status_code == 301  # the rest still is


def test_probes_refuse_writes(db):
    assert Client().post("/healthz").status_code == 405
    assert Client().post("/readyz").status_code == 405


def test_readyz_is_ready_when_database_and_redis_answer(db, settings):
    response = Client().get("/readyz")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ready"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["redis"] == ("ok" if settings.REDIS_URL else "not_configured")


def test_readyz_is_unavailable_when_redis_refuses(db, settings):
    settings.REDIS_URL = f"redis://127.0.0.1:{closed_port()}/0"
    response = Client().get("/readyz")
    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "checks": {"database": "ok", "redis": "error"},
    }


@pytest.fixture
def silent_server():
    """A TCP server that accepts connections and never says a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted = []
    stop = threading.Event()

    def accept():
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    listener.close()


def test_readyz_gives_up_on_a_redis_that_hangs_within_its_timeout(
    db, settings, silent_server
):
    settings.REDIS_URL = f"redis://127.0.0.1:{silent_server}/0"
    settings.PARLEY_READYZ_TIMEOUT_SECONDS = 0.5
    started = time.monotonic()
    response = Client().get("/readyz")
    elapsed = time.monotonic() - started
    assert response.status_code == 503
    assert response.json()["checks"]["redis"] in ("timeout", "error")
    assert elapsed < 2.0, f"the probe hung for {elapsed:.1f} s"


def test_readyz_is_unavailable_when_the_database_is_unreachable(tmp_path):
    # A process of its own whose DATABASE_URL points at a closed port.
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("REDIS_URL", "DATABASE_URL") and not key.startswith("PYTEST")
    }
    env.update(
        DATABASE_URL=f"postgres://postgres@127.0.0.1:{closed_port()}/nothing",
        PARLEY_DATA_DIR=str(tmp_path),
        DJANGO_SETTINGS_MODULE="config.settings",
    )
    script = (
        "from django.test import Client\n"
        "response = Client().get('/readyz')\n"
        "print('RESULT=' + str(response.status_code) + ' ' + response.content.decode())\n"
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    line = next(
        (line for line in result.stdout.splitlines() if line.startswith("RESULT=")),
        None,
    )
    assert line is not None, result.stdout + result.stderr
    status, body = line[len("RESULT=") :].split(" ", 1)
    assert status == "503"
    assert json.loads(body)["checks"]["database"] in ("error", "timeout")
    assert "password" not in body and "postgres://" not in body
