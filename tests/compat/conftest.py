"""A live Parley for the OpenAI SDK: a real daphne, users with tokens, agents.

`parley` is one deployment per module: the embedded shape (`make run`: SQLite,
the event log and the agent worker inside daphne) always, and the production
shape (PostgreSQL, Redis, daphne + `runworker agent-runs`: the `Stack` of
tests/integration/conftest.py) when DATABASE_URL and REDIS_URL are set. Its
agents: `echo`, `slow-echo` (five words a second, busy policy `reject`),
`calc` (an openai agent with the `calculate` tool, its model the loopback fake
of tests/fakes/llm_servers.py, `model_server`) and `retired` (disabled).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai
import pytest

from tests.fakes import FakeOpenAIServer
from tests.integration.conftest import DAPHNE, ROOT, Stack, free_port, wait_for_http
from tests.node import node_with_packages

KEY_ENV = "PARLEY_COMPAT_MODEL_KEY"
KEY = "sk-parley-compat-0f1e2d3c4b5a6978"
USERS = ("owner", "participant", "observer", "stranger")

SETUP = """
import json
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from agents.models import AgentConfig
U = get_user_model()
tokens = {}
for name in %(users)r:
    user, _ = U.objects.get_or_create(username=name)
    tokens[name] = Token.objects.get_or_create(user=user)[0].key
AgentConfig.objects.update_or_create(
    name="echo", defaults=dict(provider="echo", extra_params={"tokens_per_second": 50})
)
AgentConfig.objects.update_or_create(
    name="slow-echo",
    defaults=dict(
        provider="echo", busy_policy="reject", extra_params={"tokens_per_second": 5}
    ),
)
calc = AgentConfig(
    name="calc", provider="openai", model="fake-model", base_url=%(base_url)r,
    api_key_env=%(key_env)r, tools=["calculate"],
)
calc.full_clean()
calc.save()
AgentConfig.objects.update_or_create(
    name="retired", defaults=dict(provider="echo", enabled=False)
)
print("RESULT=" + json.dumps(tokens))
"""


@dataclass
class Parley:
    """One running deployment, as a client sees it."""

    url: str
    port: int
    tokens: dict[str, str] = field(default_factory=dict)
    kind: str = "embedded"

    @property
    def openai_base_url(self) -> str:
        return f"{self.url}/api/openai/v1"

    def client(self, user: str = "owner", **options) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=self.openai_base_url, api_key=self.tokens[user], **options
        )

    def async_client(self, user: str = "owner", **options) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=self.openai_base_url, api_key=self.tokens[user], **options
        )

    def api(self, user: str = "owner") -> httpx.Client:
        return httpx.Client(
            base_url=f"{self.url}/api",
            headers={"Authorization": f"Token {self.tokens[user]}"},
            timeout=10,
        )

    def ws_url(self, thread_id: str) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/threads/{thread_id}/"

    def new_thread(self, agent: str = "echo") -> str:
        """A thread of owner's, participant and observer added as their names say."""
        with self.api() as api:
            response = api.post("/threads/", json={"agent": agent, "title": "compat"})
            assert response.status_code == 201, response.text
            thread_id = response.json()["id"]
            for name in ("participant", "observer"):
                added = api.post(
                    f"/threads/{thread_id}/members/",
                    json={"username": name, "role": name},
                )
                assert added.status_code == 201, added.text
        return thread_id

    def history(self, thread_id: str, user: str = "owner") -> list[dict]:
        with self.api(user) as api:
            response = api.get(f"/threads/{thread_id}/messages/")
            assert response.status_code == 200, response.text
            return response.json()["results"]

    def run(self, run_id: str) -> dict:
        with self.api() as api:
            response = api.get(f"/runs/{run_id}/")
            assert response.status_code == 200, response.text
            return response.json()


def _setup_code(model_server: FakeOpenAIServer) -> str:
    return SETUP % {
        "users": USERS,
        "base_url": model_server.base_url,
        "key_env": KEY_ENV,
    }


def _tokens(output: str) -> dict[str, str]:
    line = next(x for x in output.splitlines() if x.startswith("RESULT="))
    return json.loads(line[len("RESULT=") :])


def _embedded(workdir: Path, model_server: FakeOpenAIServer):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("REDIS_URL", "DATABASE_URL") and not k.startswith("PYTEST")
    }
    env.update(
        PARLEY_DATA_DIR=str(workdir),
        DEBUG="1",
        PYTHONUNBUFFERED="1",
        PARLEY_MESSAGES_PER_MINUTE="0",
        PARLEY_MAX_ACTIVE_RUNS_PER_USER="0",
        **{KEY_ENV: KEY},
    )
    manage = [sys.executable, "manage.py"]
    subprocess.run(
        [*manage, "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True
    )
    out = subprocess.run(
        [*manage, "shell", "-c", _setup_code(model_server)],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    port = free_port()
    log = open(workdir / "daphne.log", "w")
    process = subprocess.Popen(
        [DAPHNE, "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    wait_for_http(f"http://127.0.0.1:{port}/healthz")
    return process, Parley(
        url=f"http://127.0.0.1:{port}", port=port, tokens=_tokens(out)
    )


@pytest.fixture(scope="module")
def model_server():
    with FakeOpenAIServer() as server:
        yield server


def _production_shape_available() -> bool:
    return os.environ.get("DATABASE_URL", "").startswith("postgres") and bool(
        os.environ.get("REDIS_URL")
    )


@pytest.fixture(
    scope="module",
    params=["embedded", pytest.param("stack", marks=pytest.mark.integration)],
)
def parley(request, tmp_path_factory, model_server):
    workdir = tmp_path_factory.mktemp(f"compat-{request.param}")
    if request.param == "embedded":
        process, deployment = _embedded(workdir, model_server)
        try:
            yield deployment
        finally:
            process.kill()
            process.wait()
        return
    if not _production_shape_available():
        pytest.skip("needs DATABASE_URL (PostgreSQL) and REDIS_URL")
    stack = Stack(
        workdir,
        PARLEY_MESSAGES_PER_MINUTE="0",
        PARLEY_MAX_ACTIVE_RUNS_PER_USER="0",
        **{KEY_ENV: KEY},
    ).start()
    try:
        tokens = _tokens(stack.manage("shell", "-c", _setup_code(model_server)))
        web = stack.daphne()
        stack.worker()
        yield Parley(
            url=f"http://127.0.0.1:{web.port}",
            port=web.port,
            tokens=tokens,
            kind="stack",
        )
    finally:
        stack.stop()


# --- real JavaScript clients (tests/compat/js) -----------------------------------

JS_DIR = Path(__file__).resolve().parent / "js"


@dataclass
class NodeClients:
    """The npm packages of tests/compat/js, installed from their lock file, and
    the scripts that drive them against a Parley."""

    node: str

    def run(self, script: str, config: dict, timeout: float = 60) -> dict:
        """Run `script` with `config`; the JSON line it prints, parsed."""
        done = subprocess.run(
            [self.node, script, json.dumps(config)],
            cwd=JS_DIR,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert done.returncode == 0, f"{script} failed:\n{done.stderr}\n{done.stdout}"
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        assert lines, f"{script} printed no JSON:\n{done.stdout}\n{done.stderr}"
        return json.loads(lines[-1])

    def run_module_code(self, code: str, env: dict, timeout: float = 60) -> str:
        """Run `code` (an ES module, e.g. a docs example) where the packages
        resolve; what it printed."""
        done = subprocess.run(
            [self.node, "--input-type=module", "-e", code],
            cwd=JS_DIR,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert done.returncode == 0, f"the code failed:\n{done.stderr}"
        return done.stdout


@pytest.fixture(scope="session")
def node_clients() -> NodeClients:
    """`npm ci` once, then the scripts' runner (tests/node.py)."""
    return NodeClients(node=node_with_packages(JS_DIR, needed_for="the npm clients"))
