"""Real servers for the client's tests.

`embedded`: one daphne in the embedded mode (SQLite, in-process layer and
worker; `make run`'s shape) per module, with users owner/participant/observer,
their tokens and an `echo` agent. `own_embedded`: the same, for one test that
kills and restarts it. Tests marked `integration` use the PostgreSQL + Redis
`Stack` of tests/integration/conftest.py and are skipped without
DATABASE_URL/REDIS_URL, as there.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import DAPHNE, ROOT, free_port, wait_for_http

PASSWORD = "client-tests-password"

SETUP = """
import json
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from agents.models import AgentConfig
U = get_user_model()
tokens = {}
for name in ("owner", "participant", "observer", "stranger"):
    user, _ = U.objects.get_or_create(username=name)
    user.set_password(%(password)r)
    user.save()
    tokens[name] = Token.objects.get_or_create(user=user)[0].key
AgentConfig.objects.update_or_create(
    name="echo", defaults=dict(provider="echo", extra_params=%(params)r)
)
print("RESULT=" + json.dumps(tokens))
"""


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="needs DATABASE_URL (PostgreSQL) and REDIS_URL")
    if not (
        os.environ.get("DATABASE_URL", "").startswith("postgres")
        and os.environ.get("REDIS_URL")
    ):
        for item in items:
            if item.get_closest_marker("integration") and "client" in str(item.path):
                item.add_marker(skip)


class EmbeddedServer:
    """`daphne config.asgi:application` without DATABASE_URL and REDIS_URL."""

    def __init__(self, workdir: Path, **settings: str) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("REDIS_URL", "DATABASE_URL") and not k.startswith("PYTEST")
        }
        self.env.update(
            PARLEY_DATA_DIR=str(workdir),
            DEBUG="1",
            PYTHONUNBUFFERED="1",
            PARLEY_LEASE_SECONDS="3",
            PARLEY_SWEEP_INTERVAL_SECONDS="1",
            **settings,
        )
        self.process: subprocess.Popen | None = None
        self.tokens: dict[str, str] = {}
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def setup(self, **agent_params) -> None:
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v0"],
            cwd=ROOT,
            env=self.env,
            check=True,
        )
        params = {"tokens_per_second": 100, "input_timeout": 20, **agent_params}
        out = subprocess.run(
            [
                sys.executable,
                "manage.py",
                "shell",
                "-c",
                SETUP % {"password": PASSWORD, "params": params},
            ],
            cwd=ROOT,
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        line = next(x for x in out.splitlines() if x.startswith("RESULT="))
        self.tokens = json.loads(line[len("RESULT=") :])

    def start(self) -> None:
        self.starts += 1
        log = open(self.workdir / f"daphne-{self.starts}.log", "w")
        self.process = subprocess.Popen(
            [
                DAPHNE,
                "-b",
                "127.0.0.1",
                "-p",
                str(self.port),
                "config.asgi:application",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_for_http(f"{self.url}/healthz")

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def api(self, user: str = "owner") -> httpx.Client:
        return httpx.Client(
            base_url=f"{self.url}/api",
            headers={"Authorization": f"Token {self.tokens[user]}"},
            timeout=10,
        )

    def new_thread(self, *, members: bool = True) -> str:
        """A thread of owner's with the echo agent (participant and observer
        added as what their names say)."""
        with self.api() as api:
            response = api.post("/threads/", json={"agent": "echo", "title": "client"})
            assert response.status_code == 201, response.text
            thread_id = response.json()["id"]
            if members:
                for name in ("participant", "observer"):
                    added = api.post(
                        f"/threads/{thread_id}/members/",
                        json={"username": name, "role": name},
                    )
                    assert added.status_code == 201, added.text
        return thread_id

    def logs(self) -> str:
        return "\n".join(
            f"== {p.name}\n{p.read_text()[-3000:]}"
            for p in sorted(self.workdir.glob("daphne-*.log"))
        )


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    server = EmbeddedServer(tmp_path_factory.mktemp("client-embedded"))
    server.setup()
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def own_embedded(tmp_path):
    server = EmbeddedServer(tmp_path)
    server.setup(tokens_per_second=20)
    server.start()
    try:
        yield server
    finally:
        server.kill()


def run_cli(*args: str, timeout: float = 60, stdin: str | None = None):
    """`python -m parley_client ...` as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "parley_client", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        input=stdin,
        cwd=ROOT,
    )


@pytest.fixture
def stack(tmp_path):
    """PostgreSQL + Redis with any number of daphnes and workers (integration)."""
    from tests.integration.conftest import Stack

    stack = Stack(tmp_path).start()
    try:
        yield stack
    finally:
        stack.stop()
