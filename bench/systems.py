"""What each system under test is: its processes, its environment, its threads.

A ``System`` knows which app its daphne serves, which workers it runs, with which
settings, which Redis db and PostgreSQL database count as its own (for CPU), and
how to make the thread specs the load generator drives (socket URLs, auth
headers, roles). ``make_system`` builds one by name:

- ``parley``: Parley in production mode (daphne ``config.asgi`` + ``manage.py
  runworker agent-runs``), users and threads made through its REST API;
- ``parley-openai``: the same, its agent on the ``openai`` provider streaming
  from bench/fake_openai.py;
- ``tutorial-core``, ``tutorial-pubsub``, ``tutorial-shortcut``: the
  tutorial-style Channels app of bench/baselines/;
- ``ceiling``: bench/baselines/ceiling.py, a bare ASGI app under daphne.

Starting and stopping the processes is bench/processes.py's.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from bench.processes import (
    PYTHON,
    ROOT,
    Services,
    cpu_seconds,
    log,
    start_daphne,
    start_fake_openai,
    start_workers,
    stop,
)

SYSTEMS = (
    "parley",
    "parley-openai",
    "tutorial-core",
    "tutorial-pubsub",
    "tutorial-shortcut",
    "ceiling",
)
LABELS = {
    "parley": "Parley",
    "parley-openai": "Parley, openai provider (fake server)",
    "tutorial-core": "Tutorial, core layer",
    "tutorial-pubsub": "Tutorial, pub/sub layer",
    "tutorial-shortcut": "Tutorial, pub/sub + dispatch shortcut",
    "ceiling": "Ceiling (bare ASGI, no layer)",
}


def socket_roles(kind: str) -> list[str]:
    """A thread's three sockets: the owner as participant and two observers; on
    the stalled-reader scenario's busy thread, the second observer stalls."""
    return ["participant", "observer", "stalled" if kind == "busy" else "observer"]


@dataclass
class System:
    name: str
    services: Services
    workdir: Path
    daphne: list[subprocess.Popen] = field(default_factory=list)
    workers: list[subprocess.Popen] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)
    available: bool = True
    reason: str = ""
    colocate_thread: bool = False  # all sockets of a thread on one daphne
    # This system's Redis db: Services.redis_db (the baselines') + the offset.
    REDIS_DB_OFFSET = 0

    @property
    def label(self) -> str:
        return LABELS[self.name]

    def env(self) -> dict:
        env = os.environ.copy()
        env["PYTHONPATH"] = str(ROOT)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def redis_url(self) -> str:
        return self.services.redis_url(self.services.redis_db + self.REDIS_DB_OFFSET)

    def roles(self) -> dict[str, list[int]]:
        """PIDs whose CPU counts as this system's, by role (PostgreSQL's backends
        are found by ``database``)."""
        return {
            "daphne": [p.pid for p in self.daphne],
            "worker": [p.pid for p in self.workers],
            "redis": [self.services.redis_pid] if self.services.redis_pid else [],
        }

    def cpu(self) -> dict[str, float]:
        return {role: cpu_seconds(pids) for role, pids in self.roles().items()}

    def database(self) -> str | None:
        """The PostgreSQL database whose backends count as this system's CPU."""
        return self.services.database_name

    def prepare(self) -> None:
        """One-time setup before the first start."""

    def start(self, daphnes: int = 1, workers: int = 1) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        stop(self.daphne + self.workers)
        self.daphne, self.workers, self.ports = [], [], []

    def start_daphne(self, app: str, env: dict, count: int) -> None:
        procs, ports = start_daphne(self.name, app, env, count, self.workdir)
        self.daphne += procs
        self.ports += ports

    def start_workers(
        self, commands: list[list[str]], env: dict, settle_s: float
    ) -> None:
        self.workers += start_workers(self.name, commands, env, self.workdir, settle_s)

    def threads(self, count: int, kind: str = "echo") -> list[dict]:
        """Thread specs: {id, sockets: [{url, headers, role}]}."""
        raise NotImplementedError

    def socket_url(self, thread_index: int, socket_index: int, thread_id: str) -> str:
        if self.colocate_thread:
            port = self.ports[thread_index % len(self.ports)]
        else:
            port = self.ports[(thread_index + socket_index) % len(self.ports)]
        return f"ws://127.0.0.1:{port}/ws/threads/{thread_id}/"

    def message_extra(self, kind: str) -> dict:
        return {}


class TutorialSystem(System):
    LAYERS = {
        "tutorial-core": ("core", False),
        "tutorial-pubsub": ("pubsub", False),
        "tutorial-shortcut": ("pubsub", True),
    }

    def start(self, daphnes: int = 1, workers: int = 1) -> None:
        layer, shortcut = self.LAYERS[self.name]
        tag = uuid.uuid4().hex[:6]
        env = self.env()
        env.update(
            DJANGO_SETTINGS_MODULE="bench.baselines.settings",
            BASELINE_LAYER=layer,
            BASELINE_SHORTCUT="1" if shortcut else "0",
            BASELINE_WORKERS=str(workers),
            BASELINE_PREFIX=f"bench-{self.name}-{tag}",
            BASELINE_RUN_CHANNEL=f"agent-runs-{self.name}-{tag}",
            REDIS_URL=self.redis_url(),
            DATABASE_URL=self.services.database_url,
        )
        self.start_daphne("bench.baselines.asgi:application", env, daphnes)
        self.start_workers(
            [
                [
                    PYTHON,
                    "-m",
                    "django",
                    "runworker",
                    f"agent-runs-{self.name}-{tag}-{index}",
                ]
                for index in range(workers)
            ],
            env,
            settle_s=1.5,
        )

    def threads(self, count: int, kind: str = "echo") -> list[dict]:
        out = []
        for index in range(count):
            thread_id = str(uuid.uuid4())
            out.append(
                {
                    "id": thread_id,
                    "sockets": [
                        {"url": self.socket_url(index, j, thread_id), "role": role}
                        for j, role in enumerate(socket_roles(kind))
                    ],
                }
            )
        return out

    def message_extra(self, kind: str) -> dict:
        return (
            {"tokens_per_second": 200} if kind == "busy" else {"tokens_per_second": 50}
        )


class CeilingSystem(TutorialSystem):
    def start(self, daphnes: int = 1, workers: int = 1) -> None:
        self.colocate_thread = True
        self.start_daphne("bench.baselines.ceiling:application", self.env(), daphnes)

    def roles(self) -> dict[str, list[int]]:
        roles = super().roles()
        roles["redis"] = []  # the ceiling does not use Redis
        return roles

    def database(self) -> str | None:
        return None  # nor PostgreSQL


class ParleySystem(System):
    USERS = ("bench-owner", "bench-observer-1", "bench-observer-2")
    PASSWORD = "bench-password-1234"
    AGENTS = {"echo": "bench-echo", "fast": "bench-fast", "busy": "bench-busy"}
    REDIS_DB_OFFSET = 1

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.tokens: dict[str, str] = {}
        self.pool: dict[str, list[str]] = {"echo": [], "fast": [], "busy": []}

    def env(self) -> dict:
        env = super().env()
        env.pop("DJANGO_SETTINGS_MODULE", None)
        env.update(
            DJANGO_SETTINGS_MODULE="config.settings",
            REDIS_URL=self.redis_url(),
            DATABASE_URL=self.services.database_url,
            SECRET_KEY="bench-secret-key",
            DEBUG="0",
            SECURE_SSL_REDIRECT="0",
            ALLOWED_HOSTS="127.0.0.1,localhost",
            LOG_LEVEL="WARNING",
            # The bench drives hundreds of runs from three accounts: lift the
            # per-user abuse limits, which would otherwise be what it measures.
            PARLEY_MAX_ACTIVE_RUNS_PER_USER="100000",
            PARLEY_MESSAGES_PER_MINUTE="1000000",
            PARLEY_MAX_MESSAGE_CHARS="4000000",
            PARLEY_MAX_FRAME_BYTES=str(8 << 20),
            PARLEY_MAX_CLIENTS_PER_THREAD="1000",
            API_USER_RATE="1000000/min",
            API_ANON_RATE="1000000/min",
        )
        return env

    def python(self, *args: str, timeout: float) -> subprocess.CompletedProcess:
        """``python ARGS`` in Parley's environment, its output captured."""
        return subprocess.run(
            [PYTHON, *args],
            cwd=ROOT,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def prepare(self) -> None:
        """Check that Parley imports, migrate the bench database, seed it."""
        check = self.python(
            "-c", "import config.asgi; import agents.models, chat.models", timeout=120
        )
        if check.returncode != 0:
            tail = (check.stderr.strip().splitlines() or ["?"])[-1]
            raise RuntimeError(f"config.asgi does not import yet ({tail})")
        migrate = self.python("manage.py", "migrate", "--noinput", timeout=300)
        if migrate.returncode != 0:
            raise RuntimeError(
                f"manage.py migrate --noinput failed:\n{migrate.stderr[-2000:]}"
            )
        seed = self.python(
            "-m", "bench.parley_setup", self.PASSWORD, *self.USERS, timeout=120
        )
        if seed.returncode != 0:
            raise RuntimeError(f"bench.parley_setup failed:\n{seed.stderr[-2000:]}")

    def start(self, daphnes: int = 1, workers: int = 1) -> None:
        env = self.env()
        self.start_daphne("config.asgi:application", env, daphnes)
        self.start_workers(
            [[PYTHON, "manage.py", "runworker", "agent-runs"]] * workers,
            env,
            settle_s=2.0,
        )
        if not self.tokens:
            self.tokens = {user: self.api_token(user) for user in self.USERS}

    def api(
        self, method: str, path: str, token: str | None = None, body: dict | None = None
    ):
        import httpx

        headers = {"Authorization": f"Token {token}"} if token else {}
        response = httpx.request(
            method,
            f"http://127.0.0.1:{self.ports[0]}{path}",
            json=body,
            headers=headers,
            timeout=30,
        )
        if response.status_code >= 300:
            raise RuntimeError(
                f"{method} {path} -> {response.status_code}: {response.text[:300]}"
            )
        return response.json()

    def api_token(self, user: str) -> str:
        return self.api(
            "POST",
            "/api/auth/token/",
            body={"username": user, "password": self.PASSWORD},
        )["token"]

    def ensure_threads(self, count: int, kind: str) -> list[str]:
        import asyncio

        import httpx

        pool = self.pool[kind]
        missing = count - len(pool)
        if missing <= 0:
            return pool[:count]
        agent = self.AGENTS[kind]
        owner = self.tokens[self.USERS[0]]
        base = f"http://127.0.0.1:{self.ports[0]}"

        async def create(client, gate) -> str:
            async with gate:
                headers = {"Authorization": f"Token {owner}"}
                response = await client.post(
                    f"{base}/api/threads/",
                    json={"agent": agent, "title": f"bench {kind}"},
                    headers=headers,
                )
                if response.status_code != 201:
                    raise RuntimeError(
                        f"POST /api/threads/ -> {response.status_code}: {response.text[:300]}"
                    )
                thread_id = response.json()["id"]
                for user in self.USERS[1:]:
                    member = await client.post(
                        f"{base}/api/threads/{thread_id}/members/",
                        json={"username": user, "role": "observer"},
                        headers=headers,
                    )
                    if member.status_code >= 300:
                        raise RuntimeError(
                            f"POST members -> {member.status_code}: {member.text[:300]}"
                        )
                return thread_id

        async def create_all() -> list[str]:
            gate = asyncio.Semaphore(4)
            async with httpx.AsyncClient(timeout=60) as client:
                return await asyncio.gather(
                    *(create(client, gate) for _ in range(missing))
                )

        started = time.monotonic()
        pool.extend(asyncio.run(create_all()))
        log(
            f"parley: created {missing} {kind} threads in {time.monotonic() - started:.1f} s"
        )
        return pool[:count]

    def threads(self, count: int, kind: str = "echo") -> list[dict]:
        ids = self.ensure_threads(count, kind)
        out = []
        for index, thread_id in enumerate(ids):
            out.append(
                {
                    "id": thread_id,
                    "sockets": [
                        {
                            "url": self.socket_url(index, j, thread_id),
                            "role": role,
                            "headers": [
                                ["Authorization", f"Token {self.tokens[self.USERS[j]]}"]
                            ],
                        }
                        for j, role in enumerate(socket_roles(kind))
                    ],
                }
            )
        return out


class ParleyOpenAISystem(ParleySystem):
    """Parley on the real provider path: `openai` agents (bench-openai) streaming
    from bench/fake_openai.py, a process of its own at 50 tokens/s. Its own
    daphne, worker and Redis db, so neither Parley line serves the other's runs.
    The fake server's CPU is reported as `llm`, outside server CPU. Threads of
    kind ``tools`` talk to bench-openai-tools, which the fake asks to call
    ``calculate`` once per reply (the toolstep scenario)."""

    AGENTS = {"echo": "bench-openai", "tools": "bench-openai-tools"}
    REDIS_DB_OFFSET = 2

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.pool["tools"] = []
        self.llm: subprocess.Popen | None = None
        self.llm_port = 0

    def llm_stats(self, reset: bool = False) -> dict:
        """The fake server's tool-call pairs (``GET /stats``), or, with
        ``reset``, forget them (``POST /stats/reset``)."""
        import httpx

        url = f"http://127.0.0.1:{self.llm_port}/stats"
        response = (
            httpx.post(f"{url}/reset", timeout=10)
            if reset
            else httpx.get(url, timeout=10)
        )
        response.raise_for_status()
        return response.json()

    def env(self) -> dict:
        env = super().env()
        env["BENCH_FAKE_OPENAI_URL"] = f"http://127.0.0.1:{self.llm_port}/v1"
        return env

    def prepare(self) -> None:
        self.llm, self.llm_port = start_fake_openai(
            System.env(self), self.workdir / f"{self.name}-fake-openai.log"
        )
        super().prepare()

    def roles(self) -> dict[str, list[int]]:
        roles = super().roles()
        roles["llm"] = [self.llm.pid] if self.llm else []
        return roles


def make_system(name: str, services: Services, workdir: Path) -> System:
    if name == "parley":
        return ParleySystem(name, services, workdir)
    if name == "parley-openai":
        return ParleyOpenAISystem(name, services, workdir)
    if name == "ceiling":
        return CeilingSystem(name, services, workdir)
    return TutorialSystem(name, services, workdir)
