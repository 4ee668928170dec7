"""`make bench`: Parley's live-stream capacity, side by side with the baselines.

Starts every process itself (daphne, workers; Redis and PostgreSQL are used where
they run, Redis is started when it is not), drives each system with
``bench/loadgen.py`` in a separate process, and writes
``bench/results/<timestamp>/{results.json,table.md,latency.png}``. See
bench/README.md for the scenarios and how to read the table.

    python -m bench.run              # full run (~20-25 min on 2 cores)
    python -m bench.run --quick      # smoke run (~4 min)
    python -m bench.run --scenarios capacity,resume --systems parley,ceiling
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import platform
import queue
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import psutil

from bench import criteria

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
VENV_BIN = ROOT / ".venv" / "bin"
PYTHON = str(VENV_BIN / "python") if (VENV_BIN / "python").exists() else sys.executable
DAPHNE = str(VENV_BIN / "daphne") if (VENV_BIN / "daphne").exists() else "daphne"

TOKENS_PER_SECOND = 50
SCENARIOS = ("capacity", "light", "connections", "resume", "stall", "scaleout")
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
# Issue 24's goals (honest capacity) beside the earlier ones still held.
GOALS = {
    "capacity": 300,
    "capacity_openai": 200,
    "tutorial_multiple": 10,
    "burst_k": 300,
    "burst_first_response_p50_ms": 300,
    "burst_first_response_p99_ms": 1000,
    "big_burst_k": 500,
    "big_burst_first_response_p99_ms": 2000,
    "light_first_response_p50_ms": 25,
    "light_p50_ms": 30,
    "light_p99_ms": 60,
    "idle_kb_per_socket": 50,
    "resume_ms": 50,
}
# Before each point: the rest of the machine must use less than this many cores
# (averaged over QUIET_SAMPLE_S) for up to --quiet-wait seconds; a point whose
# window still saw more than CONTENDED_CORES of other CPU is marked contended.
QUIET_OTHER_CORES = 0.25
QUIET_SAMPLE_S = 2.0
CONTENDED_CORES = 0.3


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- processes ----------------------------------------------------------------

STARTED: list[subprocess.Popen] = []


def spawn(args: list[str], env: dict, logfile: Path, **kwargs) -> subprocess.Popen:
    handle = open(logfile, "ab")
    proc = subprocess.Popen(
        args,
        cwd=ROOT,
        env=env,
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        **kwargs,
    )
    STARTED.append(proc)
    return proc


def stop(procs: list[subprocess.Popen], grace: float = 5.0) -> None:
    for proc in procs:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(5)


def stop_everything() -> None:
    stop([p for p in STARTED if p.poll() is None], grace=3.0)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process {proc.args[:3]} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"nothing listens on port {port} after {timeout:.0f} s")


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine spent busy (all processes, all cores)."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def postgres_backends(database: str) -> list[int]:
    """PIDs of the PostgreSQL backends serving ``database``: a backend's process
    title is "postgres: <cluster>: <user> <database> <client> <state>"."""
    pids = []
    for proc in psutil.process_iter(["cmdline"]):
        title = " ".join(proc.info.get("cmdline") or [])
        if title.startswith("postgres:") and f" {database} " in title:
            pids.append(proc.pid)
    return pids


class PostgresMeter:
    """CPU seconds the backends of one database used over a window. Backends
    come and go, so they are sampled every second; a backend that exits keeps
    what it had used at the last sample, one that appears counts from zero."""

    def __init__(self, database: str | None) -> None:
        self.database = database
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.done = threading.Event()
        self.thread: threading.Thread | None = None

    def sample(self) -> dict[int, float]:
        out = {}
        for pid in postgres_backends(self.database) if self.database else ():
            try:
                times = psutil.Process(pid).cpu_times()
            except psutil.Error:  # exited meanwhile: keep its last sample
                continue
            out[pid] = times.user + times.system
        return out

    def start(self) -> None:
        self.first = self.sample()
        self.last = dict(self.first)
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def loop(self) -> None:
        while not self.done.wait(1.0):
            self.last.update(self.sample())

    def stop(self) -> float:
        self.done.set()
        if self.thread:
            self.thread.join()
        self.last.update(self.sample())
        return sum(cpu - self.first.get(pid, 0.0) for pid, cpu in self.last.items())


def rss_bytes(pid: int) -> int:
    try:
        return psutil.Process(pid).memory_info().rss
    except psutil.Error:
        return 0


# --- shared services --------------------------------------------------------------


@dataclass
class Services:
    redis_url_base: str  # redis://host:port
    database_admin_url: str  # a database to connect to for CREATE DATABASE
    database_name: str
    redis_pid: int | None = None

    @property
    def database_url(self) -> str:
        base = self.database_admin_url.rsplit("/", 1)[0]
        return f"{base}/{self.database_name}"

    def redis_url(self, db: int) -> str:
        return f"{self.redis_url_base}/{db}"


def prepare_services(args, workdir: Path) -> Services:
    import psycopg
    import redis

    redis_base = args.redis.rstrip("/")
    client = redis.Redis.from_url(redis_base + "/0", socket_timeout=3)
    try:
        client.ping()
        log(f"Redis at {redis_base} answers")
    except redis.RedisError:
        server = shutil.which("redis-server")
        if not server:
            raise SystemExit(
                f"Redis at {redis_base} does not answer and redis-server is not installed"
            ) from None
        port = free_port()
        proc = spawn(
            [
                server,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            os.environ.copy(),
            workdir / "redis.log",
        )
        wait_port(port, proc)
        redis_base = f"redis://127.0.0.1:{port}"
        log(f"started redis-server on port {port}")
    for db in (args.redis_db, args.redis_db + 1, args.redis_db + 2):
        redis.Redis.from_url(f"{redis_base}/{db}").flushdb()
    redis_pid = None
    for proc in psutil.process_iter(["name", "cmdline"]):
        name = proc.info.get("name") or ""
        port = redis_base.rsplit(":", 1)[-1]
        if name.startswith("redis-server") and port in " ".join(
            proc.info.get("cmdline") or []
        ):
            redis_pid = proc.pid
    try:
        with psycopg.connect(args.database, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{args.database_name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{args.database_name}"')
    except psycopg.Error as exc:
        raise SystemExit(f"PostgreSQL at {args.database} is not usable: {exc}") from exc
    log(f"fresh PostgreSQL database {args.database_name}")
    return Services(redis_base, args.database, args.database_name, redis_pid)


# --- systems ------------------------------------------------------------------------


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

    @property
    def label(self) -> str:
        return LABELS[self.name]

    def env(self) -> dict:
        env = os.environ.copy()
        env["PYTHONPATH"] = str(ROOT)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def roles(self) -> dict[str, list[int]]:
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
        for index in range(count):
            port = free_port()
            proc = spawn(
                [DAPHNE, "-b", "127.0.0.1", "-p", str(port), "-v", "0", app],
                env,
                self.workdir / f"{self.name}-daphne-{index}.log",
            )
            self.daphne.append(proc)
            self.ports.append(port)
        for port, proc in zip(self.ports, self.daphne, strict=False):
            wait_port(port, proc)

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
            REDIS_URL=self.services.redis_url(BENCH_REDIS_DB),
            DATABASE_URL=self.services.database_url,
        )
        self.start_daphne("bench.baselines.asgi:application", env, daphnes)
        for index in range(workers):
            self.workers.append(
                spawn(
                    [
                        PYTHON,
                        "-m",
                        "django",
                        "runworker",
                        f"agent-runs-{self.name}-{tag}-{index}",
                    ],
                    env,
                    self.workdir / f"{self.name}-worker-{index}.log",
                )
            )
        time.sleep(1.5)
        for proc in self.workers:
            if proc.poll() is not None:
                raise RuntimeError(f"{self.name} worker exited with {proc.returncode}")

    def threads(self, count: int, kind: str = "echo") -> list[dict]:
        out = []
        for index in range(count):
            thread_id = str(uuid.uuid4())
            roles = [
                "participant",
                "observer",
                "stalled" if kind == "busy" else "observer",
            ]
            out.append(
                {
                    "id": thread_id,
                    "sockets": [
                        {"url": self.socket_url(index, j, thread_id), "role": role}
                        for j, role in enumerate(roles)
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
    REDIS_DB_OFFSET = 1  # after the baselines' db

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.tokens: dict[str, str] = {}
        self.pool: dict[str, list[str]] = {"echo": [], "fast": [], "busy": []}

    def env(self) -> dict:
        env = super().env()
        env.pop("DJANGO_SETTINGS_MODULE", None)
        env.update(
            DJANGO_SETTINGS_MODULE="config.settings",
            REDIS_URL=self.services.redis_url(BENCH_REDIS_DB + self.REDIS_DB_OFFSET),
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

    def manage(self, *args: str, timeout: float = 300) -> str:
        proc = subprocess.run(
            [PYTHON, "manage.py", *args],
            cwd=ROOT,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"manage.py {' '.join(args)} failed:\n{proc.stderr[-2000:]}"
            )
        return proc.stdout

    def prepare(self) -> None:
        check = subprocess.run(
            [PYTHON, "-c", "import config.asgi; import agents.models, chat.models"],
            cwd=ROOT,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check.returncode != 0:
            tail = (check.stderr.strip().splitlines() or ["?"])[-1]
            raise RuntimeError(f"config.asgi does not import yet ({tail})")
        self.manage("migrate", "--noinput")
        out = subprocess.run(
            [PYTHON, "-m", "bench.parley_setup", self.PASSWORD, *self.USERS],
            cwd=ROOT,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        if out.returncode != 0:
            raise RuntimeError(f"bench.parley_setup failed:\n{out.stderr[-2000:]}")

    def start(self, daphnes: int = 1, workers: int = 1) -> None:
        env = self.env()
        self.start_daphne("config.asgi:application", env, daphnes)
        for index in range(workers):
            self.workers.append(
                spawn(
                    [PYTHON, "manage.py", "runworker", "agent-runs"],
                    env,
                    self.workdir / f"{self.name}-worker-{index}.log",
                )
            )
        time.sleep(2.0)
        for proc in self.workers:
            if proc.poll() is not None:
                raise RuntimeError(f"parley worker exited with {proc.returncode}")
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
        roles = ["participant", "observer", "stalled" if kind == "busy" else "observer"]
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
                        for j, role in enumerate(roles)
                    ],
                }
            )
        return out


class ParleyOpenAISystem(ParleySystem):
    """Parley on the real provider path: `openai` agents (bench-openai) streaming
    from bench/fake_openai.py, a process of its own at 50 tokens/s. Its own
    daphne, worker and Redis db, so neither Parley line serves the other's runs.
    The fake server's CPU is reported as `llm`, outside server CPU."""

    AGENTS = {"echo": "bench-openai"}
    REDIS_DB_OFFSET = 2

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.llm: subprocess.Popen | None = None
        self.llm_port = 0

    def env(self) -> dict:
        env = super().env()
        env["BENCH_FAKE_OPENAI_URL"] = f"http://127.0.0.1:{self.llm_port}/v1"
        return env

    def prepare(self) -> None:
        self.llm_port = free_port()
        self.llm = spawn(
            [PYTHON, "-m", "bench.fake_openai", str(self.llm_port)],
            System.env(self),
            self.workdir / f"{self.name}-fake-openai.log",
        )
        wait_port(self.llm_port, self.llm)
        super().prepare()

    def roles(self) -> dict[str, list[int]]:
        roles = super().roles()
        roles["llm"] = [self.llm.pid] if self.llm else []
        return roles


BENCH_REDIS_DB = 13


def make_system(name: str, services: Services, workdir: Path) -> System:
    if name == "parley":
        return ParleySystem(name, services, workdir)
    if name == "parley-openai":
        return ParleyOpenAISystem(name, services, workdir)
    if name == "ceiling":
        return CeilingSystem(name, services, workdir)
    return TutorialSystem(name, services, workdir)


# --- running the load generator ----------------------------------------------------


class LoadgenError(RuntimeError):
    pass


def run_loadgen(
    system: System,
    spec: dict,
    workdir: Path,
    timeout: float = 300,
    sample_rss: bool = False,
    before_go=None,
) -> dict:
    spec_path = Path(tempfile.mkstemp(prefix="spec-", suffix=".json", dir=workdir)[1])
    spec_path.write_text(json.dumps(spec))
    env = system.env()
    proc = subprocess.Popen(
        [PYTHON, "-m", "bench.loadgen", str(spec_path)],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=open(workdir / "loadgen.log", "ab"),
        text=True,
        start_new_session=True,
    )
    STARTED.append(proc)
    lines: queue.Queue = queue.Queue()

    def pump() -> None:
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout

    def expect(tag: str) -> str:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LoadgenError(f"load generator: no {tag} within {timeout:.0f} s")
            try:
                line = lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise LoadgenError(
                    f"load generator exited before {tag} (see loadgen.log)"
                )
            if line.startswith(tag):
                return line[len(tag) :].strip()

    samples: list[tuple[float, int]] = []
    stop_sampling = threading.Event()

    def sample() -> None:
        pid = system.daphne[0].pid
        while not stop_sampling.is_set():
            samples.append((time.monotonic(), rss_bytes(pid)))
            stop_sampling.wait(0.25)

    try:
        ready = json.loads(expect("READY") or "{}")
        extra = before_go(ready) if before_go else {}
        rss_before = rss_bytes(system.daphne[0].pid)
        postgres = PostgresMeter(system.database())
        postgres.start()
        cpu_before = system.cpu()
        loadgen_before = cpu_seconds([proc.pid])
        machine_before = busy_cpu_seconds()
        started = time.monotonic()
        sampler = None
        if sample_rss:
            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
        proc.stdin.write("GO\n")
        proc.stdin.flush()
        expect("DONE")
        elapsed = time.monotonic() - started
        cpu_after = system.cpu()
        loadgen_cpu = cpu_seconds([proc.pid]) - loadgen_before
        machine_cpu = busy_cpu_seconds() - machine_before
        postgres_cpu = postgres.stop()
        stop_sampling.set()
        if sampler:
            sampler.join()
        result = json.loads(expect("RESULT"))
        proc.wait(30)
    finally:
        stop_sampling.set()
        if proc.poll() is None:
            stop([proc], grace=2)
        spec_path.unlink(missing_ok=True)
    result["ready"] = ready
    result.update(extra or {})
    result["cpu_window_seconds"] = round(elapsed, 3)
    result["cpu_seconds"] = {
        k: round(cpu_after[k] - cpu_before[k], 3) for k in cpu_after
    }
    result["cpu_seconds"]["postgres"] = round(postgres_cpu, 3)
    # The load generator's own clock covers GO to DONE only (stream modes); the
    # harness's covers READY to DONE, after the connects as well.
    loadgen_cpu = result.get("load_cpu_seconds", loadgen_cpu)
    result["loadgen_cpu_seconds_window"] = round(loadgen_cpu, 3)
    result["loadgen_cpu_share"] = round(loadgen_cpu / elapsed, 3) if elapsed else None
    # Everything else the machine did meanwhile (other users' jobs): a large
    # share means the point competed for the two cores and is suspect.
    ours = sum(result["cpu_seconds"].values()) + loadgen_cpu
    result["other_cpu_share"] = (
        round(max(0.0, machine_cpu - ours) / elapsed, 3) if elapsed else None
    )
    result["daphne_rss_before"] = rss_before
    if samples:
        result["daphne_rss_samples"] = [(round(t - started, 2), r) for t, r in samples]
    return result


def stream_spec(
    system: System, k: int, tokens: int, kind: str = "echo", **extra
) -> dict:
    return {
        "mode": "stream",
        "threads": system.threads(k, kind),
        "tokens": tokens,
        "tokens_per_second": TOKENS_PER_SECOND,
        "stagger_s": extra.pop("stagger_s", 1.0),
        # A token later than 15 s is as good as lost: stop waiting, save time.
        "timeout_s": extra.pop("timeout_s", tokens / TOKENS_PER_SECOND + 1 + 15),
        "message_extra": system.message_extra(kind),
        "concurrency": 50,
        **extra,
    }


SERVER_ROLES = ("daphne", "worker", "postgres", "redis")


def derive(result: dict) -> dict:
    """Per-point figures the tables use (the verdict comes later, in ``judge``:
    it needs the system's light-load first response)."""
    cpu = result["cpu_seconds"]
    delivered = result.get("delivered_tokens") or 0
    frames = result.get("response_frames") or 0
    # Server CPU: everything the system runs on, PostgreSQL and Redis included.
    server = sum(cpu.get(role, 0) for role in SERVER_ROLES)
    per_k = lambda seconds, n: round(seconds / (n / 1000), 4) if n else None  # noqa: E731
    stamp = result.get("latency", {})
    schedule = result.get("schedule_latency_raw", {})
    runs = result.get("runs", {})
    first = result.get("first_response", {})
    figures = {
        "lost": result.get("lost_tokens"),
        "doubled": result.get("doubled_tokens"),
        "timed_out": bool(result.get("timed_out")),
        "run_median_ratio": runs.get("median_ratio"),
        "run_slowest_ratio": runs.get("slowest_ratio"),
        "schedule_raw_p50_ms": schedule.get("p50_ms"),
        "schedule_raw_p99_ms": schedule.get("p99_ms"),
        "first_response_p50_ms": first.get("p50_ms"),
        "first_response_p99_ms": first.get("p99_ms"),
        "stamp_p50_ms": stamp.get("p50_ms"),
        "stamp_p99_ms": stamp.get("p99_ms"),
        "tokens_per_second": result.get("delivered_tokens_per_second"),
        "asked_tokens_per_second": result.get("asked_tokens_per_second"),
        "frames": frames,
        "tokens_per_frame": round(delivered / frames, 2) if frames else None,
        "server_cpu_per_1k_tokens": per_k(server, delivered),
        "server_cpu_per_1k_frames": per_k(server, frames),
        "server_cpu_share": round(server / result["cpu_window_seconds"], 3),
        "loadgen_cpu_share": result.get("loadgen_cpu_share"),
        "other_cpu_share": result.get("other_cpu_share"),
        "contended": (result.get("other_cpu_share") or 0) > CONTENDED_CORES,
    }
    for role in (*SERVER_ROLES, "llm"):
        figures[f"{role}_cpu_per_1k_tokens"] = per_k(cpu.get(role, 0), delivered)
    return figures


def judge(figures: dict, light_first_response_ms: float | None) -> dict:
    """The point's verdict by bench/criteria.py, in place."""
    figures["light_first_response_ms"] = light_first_response_ms
    for q in ("p50", "p99"):
        figures[f"schedule_{q}_ms"] = criteria.schedule_p99_ms(
            figures.get(f"schedule_raw_{q}_ms"), light_first_response_ms
        )
    figures["failures"] = criteria.failures(figures)
    figures["passed"] = not figures["failures"]
    return figures


def median_of(points: list[dict], key: str):
    values = [p["figures"][key] for p in points if p["figures"].get(key) is not None]
    return statistics.median(values) if values else None


def spread_of(points: list[dict], key: str):
    values = [p["figures"][key] for p in points if p["figures"].get(key) is not None]
    return [min(values), max(values)] if values else None


def summarize(points: list[dict]) -> dict:
    """Median of each figure over the repeats; the K passes by
    ``criteria.repeats_pass``."""
    keys = {
        key
        for p in points
        for key, value in p["figures"].items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }
    summary = {key: median_of(points, key) for key in sorted(keys)}
    for key in ("schedule_p99_ms", "stamp_p99_ms", "run_slowest_ratio"):
        summary[f"{key}_spread"] = spread_of(points, key)
    summary["lost"] = max((p["figures"].get("lost") or 0) for p in points)
    summary["doubled"] = max((p["figures"].get("doubled") or 0) for p in points)
    summary["repeats"] = len(points)
    summary["contended"] = sum(bool(p["figures"].get("contended")) for p in points)
    summary["passed"] = criteria.repeats_pass(
        [bool(p["figures"].get("passed")) for p in points],
        summary["lost"],
        summary["doubled"],
    )
    # Why it failed, read on the medians (what the table shows).
    summary["failures"] = (
        []
        if summary["passed"]
        else criteria.failures(summary) or ["most repeats failed"]
    )
    return summary


# --- scenarios -------------------------------------------------------------------------


class Bench:
    def __init__(self, args, workdir: Path, services: Services) -> None:
        self.args = args
        self.workdir = workdir
        self.services = services
        self.results: dict = {
            "meta": {
                "started": datetime.now().isoformat(timespec="seconds"),
                "host": platform.node(),
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "quick": args.quick,
                "tokens_per_run": args.tokens,
                "repeats": args.repeats,
                "tokens_per_second": TOKENS_PER_SECOND,
                "criterion": asdict(criteria.LIMITS),
                "quiet_other_cores": QUIET_OTHER_CORES,
                "argv": sys.argv[1:],
            },
            "systems": {},
            "capacity": {},
        }
        self.systems: dict[str, System] = {}

    def save(self) -> None:
        (self.workdir / "results.json").write_text(json.dumps(self.results, indent=1))

    def mark(self, system: System, ok: bool, reason: str = "") -> None:
        system.available = ok
        system.reason = reason
        self.results["systems"][system.name] = {
            "label": system.label,
            "available": ok,
            "reason": reason,
        }

    def start_systems(
        self, names: list[str], daphnes: int, workers: int
    ) -> list[System]:
        started = []
        for name in names:
            system = self.systems.get(name) or make_system(
                name, self.services, self.workdir
            )
            self.systems[name] = system
            if name in self.results["systems"] and not system.available:
                continue
            try:
                if name not in self.results["systems"]:
                    system.prepare()
                system.start(daphnes, workers)
                spec = stream_spec(system, 2, 20, timeout_s=30)
                warm = run_loadgen(system, spec, self.workdir, timeout=90)
                if warm.get("lost_tokens") or warm.get("timed_out"):
                    raise RuntimeError(
                        f"warm-up lost {warm.get('lost_tokens')} of {warm.get('expected_tokens')} "
                        f"tokens; errors: {warm.get('first_errors')}"
                    )
                self.mark(system, True)
                started.append(system)
                log(
                    f"{name}: up ({daphnes} daphne, {workers} worker) on ports {system.ports}"
                )
            except Exception as exc:  # noqa: BLE001 - a system that cannot run is skipped
                reason = (
                    str(exc).strip().splitlines()[-1] if str(exc).strip() else repr(exc)
                )
                self.mark(system, False, reason[:500])
                log(f"{name}: SKIPPED - {exc}")
                system.stop()
        self.save()
        return started

    def wait_quiet(self, limit: float = 20.0) -> dict:
        """Wait until the bench's own server processes are idle (< 5 % of a core),
        then, for at most ``--quiet-wait`` seconds, until the rest of the machine
        uses less than QUIET_OTHER_CORES over QUIET_SAMPLE_S (other people's jobs
        share the cores). Returns what it saw, kept with the point."""
        servers = [
            pid
            for s in self.systems.values()
            for role in ("daphne", "worker")
            for pid in s.roles()[role]
        ]
        started = time.monotonic()
        deadline = started + limit
        while True:
            before = cpu_seconds(servers)
            time.sleep(0.5)
            if cpu_seconds(servers) - before < 0.025:
                break
            if time.monotonic() > deadline:
                log("  (servers still busy after waiting; going on)")
                break
        ours = servers + [
            pid for s in self.systems.values() for pid in s.roles()["redis"]
        ]
        ours += postgres_backends(self.services.database_name)
        deadline = time.monotonic() + self.args.quiet_wait
        other, quiet = None, False
        while True:
            machine, own = busy_cpu_seconds(), cpu_seconds(ours)
            time.sleep(QUIET_SAMPLE_S)
            used = (busy_cpu_seconds() - machine) - (cpu_seconds(ours) - own)
            other = max(0.0, used) / QUIET_SAMPLE_S
            quiet = other < QUIET_OTHER_CORES
            if quiet or time.monotonic() >= deadline:
                break
        seen = {
            "waited_seconds": round(time.monotonic() - started, 1),
            "other_cores": round(other, 2),
            "quiet": quiet,
            "load_average_1m": round(os.getloadavg()[0], 2),
        }
        if not quiet:
            log(
                f"  (machine not quiet: {seen['other_cores']} cores of other CPU "
                f"after {seen['waited_seconds']} s; going on)"
            )
        return seen

    def restart(self, system: System) -> None:
        daphnes, workers = len(system.daphne), len(system.workers)
        log(f"  restarting {system.name} (it fell behind)")
        system.stop()
        system.start(daphnes, max(workers, 1) if system.name != "ceiling" else workers)

    def stop_systems(self) -> None:
        for system in self.systems.values():
            system.stop()

    def sweep(self, phase: str, systems: list[System], ks: list[int]) -> None:
        """Capacity sweep; points interleave the systems, each K repeated. A
        point already measured (K = 10 by the light scenario) is reused."""
        store = self.results["capacity"].setdefault(phase, {})
        active = list(systems)
        for k in ks:
            if not active:
                break
            # The ceiling only needs to bound the others: stop it once it is the
            # only system left.
            if all(s.name == "ceiling" for s in active) and len(systems) > 1:
                break
            for rep in range(self.args.repeats):
                order = active[rep % len(active) :] + active[: rep % len(active)]
                for system in order:
                    done = store.get(system.name, {}).get("points", {}).get(str(k), [])
                    if len(done) <= rep:
                        self.point(phase, system, k, rep, store)
            still = []
            for system in active:
                summary = self.judge(phase, system.name, k)
                if summary["passed"]:
                    store[system.name]["capacity"] = k
                    still.append(system)
                else:
                    store[system.name]["first_failing_k"] = k
            active = still
            self.save()

    def light_first_response(self, name: str) -> float | None:
        """The system's light-load message -> first response p50 (median of the
        K = 10 repeats of this run): the offset of its schedule latency."""
        entry = self.results["capacity"].get("single", {}).get(name, {})
        points = entry.get("points", {}).get(str(LIGHT_K), [])
        values = [
            p["figures"]["first_response_p50_ms"]
            for p in points
            if p["figures"].get("first_response_p50_ms") is not None
        ]
        return statistics.median(values) if values else None

    def judge(self, phase: str, name: str, k: int, quiet: bool = False) -> dict:
        """Verdict of every repeat at K, then of K itself (bench/criteria.py)."""
        entry = self.results["capacity"][phase][name]
        offset = self.light_first_response(name)
        entry["light_first_response_ms"] = offset
        points = entry["points"].get(str(k), [])
        for point in points:
            judge(point["figures"], offset)
        summary = summarize(points) if points else {"passed": False, "failures": []}
        entry["summary"][str(k)] = summary
        if quiet:
            return summary
        verdict = (
            "pass" if summary["passed"] else "FAIL " + ", ".join(summary["failures"])
        )
        log(
            f"{phase} K={k} {name}: run median/slowest "
            f"{summary.get('run_median_ratio')}/{summary.get('run_slowest_ratio')} x "
            f"ideal, schedule p99 {summary.get('schedule_p99_ms')} ms, first response "
            f"p99 {summary.get('first_response_p99_ms')} ms, stamp p99 "
            f"{summary.get('stamp_p99_ms')} ms, lost {summary.get('lost')}, doubled "
            f"{summary.get('doubled')} -> {verdict}"
        )
        return summary

    def point(self, phase: str, system: System, k: int, rep: int, store: dict) -> None:
        entry = store.setdefault(
            system.name,
            {"points": {}, "summary": {}, "capacity": 0, "first_failing_k": None},
        )
        quiet = None
        try:
            quiet = self.wait_quiet()
            spec = stream_spec(system, k, self.args.tokens)
            result = run_loadgen(
                system, spec, self.workdir, timeout=spec["timeout_s"] + 180
            )
            result["figures"] = derive(result)
            stamp_p99 = result["figures"].get("stamp_p99_ms") or 0
            if result.get("timed_out") or stamp_p99 > 1000:
                # An overloaded system keeps draining its backlog after the load
                # generator gave up; restart it so the next point starts clean.
                self.restart(system)
        except Exception as exc:  # noqa: BLE001 - a broken point fails, the run goes on
            log(f"{phase} K={k} {system.name} rep {rep}: error {exc}")
            result = {
                "error": str(exc)[:500],
                "figures": {"error": True, "lost": None, "doubled": None},
            }
        result["k"], result["rep"], result["quiet"] = k, rep, quiet
        entry["points"].setdefault(str(k), []).append(result)
        figures = result["figures"]
        log(
            f"  {phase} K={k} rep {rep + 1} {system.name}: run median/slowest "
            f"{figures.get('run_median_ratio')}/{figures.get('run_slowest_ratio')} x, "
            f"schedule p99 (raw) {figures.get('schedule_raw_p99_ms')} ms, first "
            f"response p50/p99 {figures.get('first_response_p50_ms')}/"
            f"{figures.get('first_response_p99_ms')} ms, stamp p99 "
            f"{figures.get('stamp_p99_ms')} ms, lost {figures.get('lost')}, dup "
            f"{figures.get('doubled')}, {figures.get('tokens_per_second')}/"
            f"{figures.get('asked_tokens_per_second')} tok/s, CPU server/loadgen/other "
            f"{figures.get('server_cpu_share')}/{figures.get('loadgen_cpu_share')}/"
            f"{figures.get('other_cpu_share')}"
        )

    def light(self, systems: list[System]) -> None:
        """K = 10, measured before the capacity sweep (which reuses these points):
        its first response is the offset of every point's schedule latency."""
        store = self.results["capacity"].setdefault("single", {})
        for rep in range(self.args.repeats):
            for system in systems[rep % len(systems) :] + systems[: rep % len(systems)]:
                entry = (
                    store.get(system.name, {}).get("points", {}).get(str(LIGHT_K), [])
                )
                if len(entry) > rep:
                    continue
                self.point("single", system, LIGHT_K, rep, store)
        for system in systems:
            if store.get(system.name, {}).get("points", {}).get(str(LIGHT_K)):
                # the capacity sweep logs it with its first K
                capacity_next = "capacity" in self.args.scenarios
                self.judge("single", system.name, LIGHT_K, quiet=capacity_next)
        self.save()

    def connections(self, systems: list[System]) -> None:
        out = self.results.setdefault("connections", {})
        for system in systems:
            try:
                # Sockets spread over 300 threads whatever ran before (with only
                # a few threads, each connect's presence news reaches thousands
                # of sockets and the per-thread client limit caps the count).
                threads = system.threads(CONNECTION_THREADS)
                targets = []
                for thread in threads:
                    for sock in thread["sockets"]:
                        targets.append(
                            {
                                "url": f"ws://127.0.0.1:{system.ports[0]}/ws/threads/{thread['id']}/",
                                "headers": sock.get("headers", []),
                            }
                        )
                rss_before = rss_bytes(system.daphne[0].pid)

                def measure(ready: dict, pid: int = system.daphne[0].pid) -> dict:
                    time.sleep(1.0)
                    return {"daphne_rss_connected": rss_bytes(pid)}

                spec = {
                    "mode": "idle",
                    "targets": targets,
                    "count": self.args.idle_sockets,
                    "concurrency": 100,
                    "settle_s": 2.0,
                }
                result = run_loadgen(
                    system, spec, self.workdir, timeout=900, before_go=measure
                )
                opened = result["ready"]["opened"]
                grown = result["daphne_rss_connected"] - rss_before
                result["daphne_rss_idle_before"] = rss_before
                result["kb_per_socket"] = (
                    round(grown / 1024 / opened, 1) if opened else None
                )
                out[system.name] = result
                log(
                    f"connections {system.name}: {opened}/{spec['count']} open, "
                    f"{result['kb_per_socket']} KB/socket, "
                    f"{result['ready']['connects_per_second']} connects/s, "
                    f"{result['ready'].get('still_open_after_settle')} still open"
                )
            except Exception as exc:  # noqa: BLE001
                log(f"connections {system.name}: error {exc}")
                out[system.name] = {"error": str(exc)[:500]}
            self.save()

    def resume(self, system: System) -> None:
        try:
            thread = system.threads(1, "fast")[0]
            spec = {
                "mode": "resume",
                "participant": thread["sockets"][0],
                "observer": thread["sockets"][1],
                "missed_events": 1000,
                "repeats": self.args.repeats + 2,
            }
            result = run_loadgen(system, spec, self.workdir, timeout=600)
            rounds = [r for r in result["rounds"] if r["catch_up_ms"] is not None]
            result["catch_up_ms_median"] = (
                statistics.median(r["catch_up_ms"] for r in rounds) if rounds else None
            )
            result["catch_up_ms_spread"] = (
                [
                    min(r["catch_up_ms"] for r in rounds),
                    max(r["catch_up_ms"] for r in rounds),
                ]
                if rounds
                else None
            )
            result["exactly_once"] = all(
                r["replayed_events"] == r["replayed_unique"] == r["missed_events"]
                for r in result["rounds"]
            )
            self.results["resume"] = {system.name: result}
            log(
                f"resume {system.name}: missed {[r['missed_events'] for r in result['rounds']]}, "
                f"catch-up median {result['catch_up_ms_median']} ms, exactly once "
                f"{result['exactly_once']}"
            )
        except Exception as exc:  # noqa: BLE001
            log(f"resume {system.name}: error {exc}")
            self.results["resume"] = {system.name: {"error": str(exc)[:500]}}
        self.save()

    def stall(self, systems: list[System]) -> None:
        out = self.results.setdefault("stall", {})
        duration = self.args.stall_seconds
        for system in systems:
            entry = out.setdefault(system.name, {})
            for stalled in (False, True):
                try:
                    normal = system.threads(STALL_NORMAL_K)
                    if isinstance(system, ParleySystem):
                        # A fresh busy thread per run: a reconnect to the previous
                        # one would first replay its megabytes of history.
                        system.pool["busy"].clear()
                    busy = system.threads(1, "busy")[0]
                    busy_spec = {
                        "sockets": [
                            dict(sock, rcvbuf=65536)
                            if sock["role"] == "stalled"
                            else sock
                            for sock in busy["sockets"]
                        ],
                        "tokens": 400,
                        # ~0.6 MB per run in each of message, chunks and the final
                        # frame: under daphne's 1 MiB frame limit, megabytes per run.
                        "pad": 1500,
                        "message_extra": system.message_extra("busy"),
                    }
                    spec = {
                        "mode": "stall",
                        "stall": stalled,
                        "duration_s": duration,
                        "normal": {
                            "threads": normal,
                            "tokens": int(50 * duration),
                            "stagger_s": 1.0,
                            "timeout_s": duration * 3 + 30,
                            "message_extra": system.message_extra("echo"),
                        },
                        "busy": busy_spec,
                    }
                    result = run_loadgen(
                        system,
                        spec,
                        self.workdir,
                        timeout=duration * 4 + 120,
                        sample_rss=True,
                    )
                    samples = [r for _, r in result.get("daphne_rss_samples", [])]
                    before = result["daphne_rss_before"]
                    result["rss_growth_mb"] = (
                        round((max(samples) - before) / 2**20, 1) if samples else None
                    )
                    result["rss_end_growth_mb"] = (
                        round((samples[-1] - before) / 2**20, 1) if samples else None
                    )
                    entry["stalled" if stalled else "control"] = result
                    log(
                        f"stall {system.name} {'stalled' if stalled else 'control'}: daphne RSS "
                        f"+{result['rss_growth_mb']} MB, normal p99 {result['latency']['p99_ms']} ms, "
                        f"lost {result['lost_tokens']}, busy runs {result['busy']['runs_completed']}, "
                        f"stalled socket {result['busy']['stalled_socket']}"
                    )
                except Exception as exc:  # noqa: BLE001
                    log(f"stall {system.name}: error {exc}")
                    entry["stalled" if stalled else "control"] = {
                        "error": str(exc)[:500]
                    }
                self.save()


LIGHT_K = 10
CONNECTION_THREADS = 300
STALL_NORMAL_K = 10


# --- report -------------------------------------------------------------------------


def fmt(value, digits: int = 1, suffix: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}{suffix}"
    return f"{value}{suffix}"


def span(pair) -> str:
    digits = 0 if pair[1] >= 100 else 1
    return f"{pair[0]:.{digits}f}–{pair[1]:.{digits}f}"


def ratio(a, b) -> str:
    if a is None or b in (None, 0):
        return "–"
    return f"{a / b:.2f}×"


CRITERION = (
    "**Criterion** (bench/criteria.py). A point passes only if every token reached "
    "every socket exactly once; run duration (message sent → last token received) "
    "is ≤ 1.10 × ideal at the median and ≤ 1.25 × for the slowest run (ideal = "
    "tokens / 50 per s); **schedule latency** p99 ≤ 500 ms, where token i is due "
    "at message sent + i × 20 ms and the system's own light-load first response "
    "(K = 10, p50, this run) is subtracted; and message → first response p99 ≤ 1 s. "
    "Stamp latency (receive − when the agent produced the token) cannot see a late "
    "start: shown, not judged. **Delivered tokens/s** is counted from the last "
    "message sent to the first run's ideal end, when the schedule asks for "
    "sockets × 50 (the asked figure). **Server CPU** is daphne + worker + the "
    "PostgreSQL backends serving the bench database + redis-server."
)


def capacity_text(entry: dict) -> str:
    cap = entry.get("capacity") or 0
    tested = sorted(int(k) for k in entry["points"])
    if not cap:
        return f"< {tested[0]}" if tested else "–"
    return f"{cap}" if entry.get("first_failing_k") else f"≥ {cap}"


def pair(a, b, digits: int = 1, suffix: str = "") -> str:
    return f"{fmt(a, digits)} / {fmt(b, digits)}{suffix}"


def with_spread(value, spread, digits: int = 1) -> str:
    text = fmt(value, digits)
    return text + (f" ({span(spread)})" if spread and value is not None else "")


def cpu_breakdown(s: dict) -> str:
    parts = " / ".join(
        fmt(s.get(f"{role}_cpu_per_1k_tokens"), 3) for role in SERVER_ROLES
    )
    return f"{parts} = {fmt(s.get('server_cpu_per_1k_tokens'), 3)}"


def capacity_rows(results: dict, phase: str) -> list[str]:
    store = results["capacity"].get(phase, {})
    if not store:
        return []
    lines = [
        "| system | honest capacity (runs) | run median / slowest (× ideal) | "
        "schedule p99 ms | first response p50 / p99 ms | stamp p99 ms | server CPU s "
        "/ 1k tokens: daphne / worker / PostgreSQL / Redis = total | delivered / "
        "asked tokens/s | tokens per frame |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, entry in store.items():
        cap = entry.get("capacity") or 0
        s = entry["summary"].get(str(cap), {}) if cap else {}
        lines.append(
            f"| {LABELS[name]} | {capacity_text(entry)} | "
            f"{pair(s.get('run_median_ratio'), s.get('run_slowest_ratio'), 2)} | "
            f"{with_spread(s.get('schedule_p99_ms'), s.get('schedule_p99_ms_spread'))} | "
            f"{pair(s.get('first_response_p50_ms'), s.get('first_response_p99_ms'))} | "
            f"{fmt(s.get('stamp_p99_ms'))} | {cpu_breakdown(s)} | "
            f"{pair(s.get('tokens_per_second'), s.get('asked_tokens_per_second'), 0)} | "
            f"{fmt(s.get('tokens_per_frame'), 2)} |"
        )
    return lines


def sweep_rows(results: dict, phase: str) -> list[str]:
    store = results["capacity"].get(phase, {})
    if not store:
        return []
    lines = [
        "| K | system | run median / slowest (× ideal) | schedule p99 ms (min–max) | "
        "first response p50 / p99 ms | stamp p50 / p99 ms | lost / doubled | "
        "delivered / asked tokens/s | server CPU s / 1k tokens: daphne / worker / "
        "PostgreSQL / Redis = total | server / loadgen / other CPU (cores) | verdict |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    ks = sorted({int(k) for entry in store.values() for k in entry["summary"]})
    for k in ks:
        for name, entry in store.items():
            s = entry["summary"].get(str(k))
            if not s:
                continue
            verdict = (
                "pass"
                if s.get("passed")
                else "FAIL: " + ", ".join(s.get("failures") or [])
            )
            if s.get("contended"):
                verdict += f" (contended {s['contended']}/{s.get('repeats')})"
            lines.append(
                f"| {k} | {LABELS[name]} | "
                f"{pair(s.get('run_median_ratio'), s.get('run_slowest_ratio'), 2)} | "
                f"{with_spread(s.get('schedule_p99_ms'), s.get('schedule_p99_ms_spread'))} | "
                f"{pair(s.get('first_response_p50_ms'), s.get('first_response_p99_ms'))} | "
                f"{pair(s.get('stamp_p50_ms'), s.get('stamp_p99_ms'))} | "
                f"{fmt(s.get('lost'))} / {fmt(s.get('doubled'))} | "
                f"{pair(s.get('tokens_per_second'), s.get('asked_tokens_per_second'), 0)} | "
                f"{cpu_breakdown(s)} | {fmt(s.get('server_cpu_share'), 2)} / "
                f"{fmt(s.get('loadgen_cpu_share'), 2)} / {fmt(s.get('other_cpu_share'), 2)} | "
                f"{verdict} |"
            )
    return lines


def quiet_line(results: dict) -> str:
    """What the quiet-machine wait saw before the capacity points."""
    seen = [
        point["quiet"]
        for phase in results["capacity"].values()
        for entry in phase.values()
        for points in entry["points"].values()
        for point in points
        if point.get("quiet")
    ]
    if not seen:
        return ""
    noisy = [q for q in seen if not q["quiet"]]
    waited = statistics.median(q["waited_seconds"] for q in seen)
    text = (
        f"Quiet machine: {len(seen) - len(noisy)} of {len(seen)} points started with "
        f"other CPU < {QUIET_OTHER_CORES} cores (median wait {waited:.0f} s)"
    )
    if noisy:
        worst = max(q["other_cores"] for q in noisy)
        text += f"; the others went on at up to {worst:.2f} cores of other CPU"
    return (
        text + f". A row marked contended had > {CONTENDED_CORES} cores of other "
        "CPU during its window: its figures are pessimistic."
    )


def report(results: dict) -> str:
    out = [f"# Parley benchmark — {results['meta']['started']}", ""]
    meta = results["meta"]
    out.append(
        f"{meta['cpus']} CPUs, Python {meta['python']}, {meta['tokens_per_run']} tokens per run at 50 tokens/s, "
        f"3 sockets per thread, {meta['repeats']} repeats per point (median shown, spread in brackets)"
        f"{', QUICK mode' if meta['quick'] else ''}."
    )
    out.append("")
    skipped = [
        f"- {v['label']}: skipped — {v['reason']}"
        for v in results["systems"].values()
        if not v["available"]
    ]
    if skipped:
        out += ["**Not measured:**", *skipped, ""]
    single = results["capacity"].get("single", {})
    parley = single.get("parley", {})

    def cap_of(store: dict, name: str):
        entry = store.get(name)
        return entry.get("capacity") if entry else None

    def summary_at_cap(store: dict, name: str) -> dict:
        entry = store.get(name) or {}
        cap = entry.get("capacity")
        return entry.get("summary", {}).get(str(cap), {}) if cap else {}

    def light_of(name: str) -> dict:
        return single.get(name, {}).get("summary", {}).get(str(LIGHT_K), {})

    if single:
        out += [
            "## 1. Capacity (one daphne, one worker)",
            "",
            CRITERION,
            "",
            *capacity_rows(results, "single"),
            "",
            quiet_line(results),
            "",
        ]
        if parley:
            out += [
                "**Parley as a ratio of each baseline** (capacity: higher is better; "
                "CPU and first response: lower is better)",
                "",
                "| baseline | capacity ratio | server CPU / 1k frames ratio | "
                "server CPU / 1k tokens ratio | light-load first response p50 ratio |",
                "| --- | --- | --- | --- | --- |",
            ]
            pc, ps = cap_of(single, "parley"), summary_at_cap(single, "parley")
            for name in single:
                if name.startswith("parley"):
                    continue
                bs = summary_at_cap(single, name)
                out.append(
                    f"| {LABELS[name]} | {ratio(pc, cap_of(single, name))} | "
                    f"{ratio(ps.get('server_cpu_per_1k_frames'), bs.get('server_cpu_per_1k_frames'))} | "
                    f"{ratio(ps.get('server_cpu_per_1k_tokens'), bs.get('server_cpu_per_1k_tokens'))} | "
                    f"{ratio(light_of('parley').get('first_response_p50_ms'), light_of(name).get('first_response_p50_ms'))} |"
                )
            out.append("")
        out += ["### Sweep", "", *sweep_rows(results, "single"), ""]
        out += [f"## 2. Light load (K = {LIGHT_K})", ""]
        out += [
            "| system | message → first response p50 / p99 | schedule p99 | "
            "stamp p50 / p99 |",
            "| --- | --- | --- | --- |",
        ]
        for name in single:
            s = light_of(name)
            if s:
                out.append(
                    f"| {LABELS[name]} | "
                    f"{pair(s.get('first_response_p50_ms'), s.get('first_response_p99_ms'), 1, ' ms')} | "
                    f"{fmt(s.get('schedule_p99_ms'), 1, ' ms')} | "
                    f"{pair(s.get('stamp_p50_ms'), s.get('stamp_p99_ms'), 1, ' ms')} |"
                )
        out.append("")
    conns = results.get("connections")
    if conns:
        out += ["## 3. Idle connections (one daphne)", ""]
        out += [
            "| system | sockets open / asked | RSS per socket | connects/s | still open at end |",
            "| --- | --- | --- | --- | --- |",
        ]
        for name, r in conns.items():
            if "error" in r:
                out.append(f"| {LABELS[name]} | error: {r['error'][:120]} | | | |")
                continue
            out.append(
                f"| {LABELS[name]} | {r['ready']['opened']} / {r['ready']['sockets']} | "
                f"{fmt(r.get('kb_per_socket'), 1, ' KB')} | {fmt(r['ready'].get('connects_per_second'), 0)} | "
                f"{r.get('still_open_at_end')} |"
            )
        out.append("")
    resume = results.get("resume")
    if resume:
        out += ["## 4. Resume after missed events", ""]
        for name, r in resume.items():
            if "error" in r:
                out.append(f"- {LABELS[name]}: error: {r['error']}")
                continue
            missed = [x["missed_events"] for x in r["rounds"]]
            spread = r.get("catch_up_ms_spread")
            out.append(
                f"- {LABELS[name]}: missed {min(missed)}–{max(missed)} events; caught up in "
                f"**{fmt(r.get('catch_up_ms_median'), 1, ' ms')}** median"
                f"{f' ({spread[0]:.1f}–{spread[1]:.1f})' if spread else ''} from reconnect to the last event; "
                f"every missed event exactly once: {r.get('exactly_once')}."
            )
        out.append(
            "- Baselines: the tutorial design has no event log; a reconnecting client cannot catch up."
        )
        out.append("")
    scale = results["capacity"].get("scaleout")
    if scale:
        out += [
            "## 5. Scale-out (two daphne, two workers, one Redis)",
            "",
            *capacity_rows(results, "scaleout"),
            "",
        ]
        out += ["### Sweep", "", *sweep_rows(results, "scaleout"), ""]
    stall = results.get("stall")
    if stall:
        out += [
            "## 6. Stalled reader (one observer of a busy thread stops reading)",
            "",
        ]
        out += [
            "| system | run | daphne RSS growth (max / end) | other threads p99 | busy thread's healthy observer p99 | lost | stalled socket |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for name, runs in stall.items():
            for run_name, r in runs.items():
                if "error" in r:
                    out.append(
                        f"| {LABELS[name]} | {run_name} | error: {r['error'][:100]} | | | | |"
                    )
                    continue
                st = r["busy"].get("stalled_socket") or {}
                outcome = (
                    f"closed by server (code {st.get('close_code')})"
                    if st.get("closed_by_server_during_stall")
                    else ("open" if st else "–")
                )
                got = st.get("bytes_received")
                sent = r["busy"].get("observer_bytes")
                if run_name == "stalled" and got is not None and sent:
                    outcome += f"; got {got / 2**20:.1f} of {sent / 2**20:.1f} MB"
                out.append(
                    f"| {LABELS[name]} | {run_name} | +{fmt(r.get('rss_growth_mb'))} / +{fmt(r.get('rss_end_growth_mb'))} MB | "
                    f"{fmt(r['latency'].get('p99_ms'), 1, ' ms')} | {fmt(r['busy']['observer_latency'].get('p99_ms'), 1, ' ms')} | "
                    f"{r.get('lost_tokens')} | {outcome if run_name == 'stalled' else '–'} |"
                )
        out.append("")
    if results["systems"].get("parley", {}).get("available"):
        out += [
            "## Goals (Parley, measured)",
            "",
            "| goal | target | measured | met |",
            "| --- | --- | --- | --- |",
        ]
        rows = []
        cap = cap_of(single, "parley") if parley else None
        # A capacity that never failed within the sweep is only a lower bound.
        open_ended = bool(parley) and not parley.get("first_failing_k")
        shown = f"≥ {cap}" if open_ended and cap else cap
        rows.append(
            (
                "honest capacity, echo (runs)",
                f"≥ {GOALS['capacity']}",
                shown,
                cap is not None and cap >= GOALS["capacity"],
            )
        )
        if "parley-openai" in single:
            openai_cap = cap_of(single, "parley-openai")
            rows.append(
                (
                    "honest capacity, openai path (runs)",
                    f"≥ {GOALS['capacity_openai']}",
                    openai_cap,
                    openai_cap is not None and openai_cap >= GOALS["capacity_openai"],
                )
            )
        if "ceiling" in single:
            ceiling = cap_of(single, "ceiling")
            rows.append(
                (
                    "honest capacity, echo vs ceiling's",
                    f"≥ {ceiling}",
                    shown,
                    cap is not None and ceiling is not None and cap >= ceiling,
                )
            )
        tutorials = [cap_of(single, n) or 0 for n in single if n.startswith("tutorial")]
        if tutorials:
            best = max(tutorials)
            rows.append(
                (
                    "honest capacity vs best tutorial variant",
                    f"≥ {GOALS['tutorial_multiple']} × {best}",
                    shown,
                    cap is not None and cap >= GOALS["tutorial_multiple"] * best,
                )
            )
        for k, key, limit in (
            (GOALS["burst_k"], "first_response_p50_ms", "burst_first_response_p50_ms"),
            (GOALS["burst_k"], "first_response_p99_ms", "burst_first_response_p99_ms"),
            (
                GOALS["big_burst_k"],
                "first_response_p99_ms",
                "big_burst_first_response_p99_ms",
            ),
        ):
            value = parley.get("summary", {}).get(str(k), {}).get(key)
            rows.append(
                (
                    f"K = {k}: message → first response {key.split('_')[2]}"
                    + ("" if value is not None else " (K not reached)"),
                    f"≤ {GOALS[limit]} ms",
                    value,
                    value is not None and value <= GOALS[limit],
                )
            )
        light = light_of("parley")
        rows.append(
            (
                f"light load (K = {LIGHT_K}): message → first response p50",
                f"≤ {GOALS['light_first_response_p50_ms']} ms",
                light.get("first_response_p50_ms"),
                (light.get("first_response_p50_ms") or 1e9)
                <= GOALS["light_first_response_p50_ms"],
            )
        )
        at_cap = summary_at_cap(single, "parley")
        rows.append(
            (
                "server CPU s / 1k tokens at capacity (PostgreSQL, Redis included)",
                "≤ the same-day figure before a change",
                at_cap.get("server_cpu_per_1k_tokens"),
                None,
            )
        )
        for label, key, goal in (
            ("light load stamp p50", "stamp_p50_ms", "light_p50_ms"),
            ("light load stamp p99", "stamp_p99_ms", "light_p99_ms"),
        ):
            rows.append(
                (
                    label,
                    f"≤ {GOALS[goal]} ms",
                    light.get(key),
                    (light.get(key) or 1e9) <= GOALS[goal],
                )
            )
        c = (conns or {}).get("parley", {})
        kb = c.get("kb_per_socket")
        n = c.get("ready", {}).get("opened")
        if c:
            rows.append(
                (
                    f"idle sockets ({n})",
                    f"10,000 at ≤ {GOALS['idle_kb_per_socket']} KB",
                    kb,
                    kb is not None
                    and kb <= GOALS["idle_kb_per_socket"]
                    and (n or 0) >= 10_000,
                )
            )
        r = (resume or {}).get("parley", {})
        if r:
            rows.append(
                (
                    "resume 1,000 missed events",
                    f"≤ {GOALS['resume_ms']} ms",
                    r.get("catch_up_ms_median"),
                    (r.get("catch_up_ms_median") or 1e9) <= GOALS["resume_ms"],
                )
            )
        for name, target, value, met in rows:
            verdict = (
                "–" if met is None else ("yes" if met and value is not None else "no")
            )
            shown = fmt(value, 3) if "CPU" in name else fmt(value)
            out.append(f"| {name} | {target} | {shown} | {verdict} |")
        out.append("")
    return "\n".join(out)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    phases = [p for p in ("single", "scaleout") if results["capacity"].get(p)]
    if not phases:
        return
    fig, axes = plt.subplots(
        1, len(phases), figsize=(7 * len(phases), 5), squeeze=False
    )
    for axis, phase in zip(axes[0], phases, strict=False):
        for name, entry in results["capacity"][phase].items():
            ks = sorted(int(k) for k in entry["summary"])
            # schedule p99 (the judged latency); floored at 1 ms for the log axis
            pts = []
            for k in ks:
                summary = entry["summary"][str(k)]
                value = summary.get("schedule_p99_ms")
                if value is None:
                    continue
                low, high = summary.get("schedule_p99_ms_spread") or [value, value]
                pts.append((k, max(1.0, value), [max(1.0, low), max(1.0, high)]))
            if not pts:
                continue
            xs = [p[0] for p in pts]
            ys = [p[1] for p in pts]
            lo = [p[1] - p[2][0] for p in pts]
            hi = [p[2][1] - p[1] for p in pts]
            axis.errorbar(
                xs,
                ys,
                yerr=[lo, hi],
                marker="o",
                capsize=3,
                label=LABELS[name],
                color=f"C{SYSTEMS.index(name)}",  # one colour per system, both panels
            )
        axis.axhline(
            criteria.LIMITS.schedule_p99_ms,
            color="grey",
            linestyle="--",
            linewidth=1,
            label="500 ms limit",
        )
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("concurrent runs K (3 sockets each, 50 tokens/s)")
        axis.set_ylabel("p99 schedule latency (ms), median of repeats, bars = min–max")
        axis.set_title(
            "one daphne + one worker"
            if phase == "single"
            else "two daphne + two workers"
        )
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# --- main -------------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: few points, 1 repeat (~4 min)"
    )
    parser.add_argument(
        "--scenarios", default=",".join(SCENARIOS), help=f"comma list of {SCENARIOS}"
    )
    parser.add_argument(
        "--systems", default=",".join(SYSTEMS), help=f"comma list of {SYSTEMS}"
    )
    parser.add_argument("--ks", help="capacity sweep K values, e.g. 10,20,40")
    parser.add_argument("--scaleout-ks", help="scale-out sweep K values")
    parser.add_argument(
        "--repeats", type=int, help="repeats per point (default 3, quick 1)"
    )
    parser.add_argument(
        "--tokens", type=int, help="tokens per run (default 400, quick 200)"
    )
    parser.add_argument(
        "--idle-sockets", type=int, help="idle sockets (default 10000, quick 1000)"
    )
    parser.add_argument(
        "--stall-seconds",
        type=float,
        help="stall scenario length (default 16, quick 8)",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        help="seconds to wait before each point for other jobs on the machine to "
        f"calm down below {QUIET_OTHER_CORES} cores (default 30, quick 10)",
    )
    parser.add_argument(
        "--redis", default=os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379")
    )
    parser.add_argument(
        "--redis-db",
        type=int,
        default=int(os.environ.get("BENCH_REDIS_DB", "13")),
        help="Redis db for baselines; Parley uses the next one, Parley's openai "
        "line the one after. All three are flushed.",
    )
    parser.add_argument(
        "--database",
        default=os.environ.get(
            "BENCH_DATABASE", "postgres://postgres@127.0.0.1:5432/test"
        ),
        help="an existing PostgreSQL database to connect to for CREATE DATABASE",
    )
    parser.add_argument(
        "--database-name", default="parley_bench", help="created fresh (dropped first)"
    )
    parser.add_argument("--out", type=Path, default=BENCH / "results")
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.idle_sockets is None:
        args.idle_sockets = 1000 if args.quick else 10_000
    if args.tokens is None:
        args.tokens = 200 if args.quick else 400
    if args.quiet_wait is None:
        args.quiet_wait = 10.0 if args.quick else 30.0
    if args.stall_seconds is None:
        args.stall_seconds = 8.0 if args.quick else 16.0
    default_ks = "10,60" if args.quick else "10,20,40,80,150,300,450,500,600"
    default_scale = "60" if args.quick else "80,150,300,450"
    args.ks = [int(k) for k in (args.ks or default_ks).split(",")]
    args.scaleout_ks = [int(k) for k in (args.scaleout_ks or default_scale).split(",")]
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    args.systems = [s for s in args.systems.split(",") if s]
    for s in args.scenarios:
        if s not in SCENARIOS:
            parser.error(f"unknown scenario {s}")
    for s in args.systems:
        if s not in SYSTEMS:
            parser.error(f"unknown system {s}")
    return args


def main(argv=None) -> int:
    global BENCH_REDIS_DB
    args = parse_args(argv)
    BENCH_REDIS_DB = args.redis_db
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    workdir = args.out / stamp
    workdir.mkdir(parents=True, exist_ok=True)
    atexit.register(stop_everything)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: sys.exit(130))
    started = time.monotonic()
    log(f"results in {workdir}")
    bench = None
    try:
        services = prepare_services(args, workdir)
        bench = Bench(args, workdir, services)
        wanted = args.scenarios
        single_names = list(args.systems)
        if any(
            s in wanted for s in ("capacity", "light", "connections", "resume", "stall")
        ):
            systems = bench.start_systems(single_names, 1, 1)
            by_name = {s.name: s for s in systems}
            # Light load first: the capacity criterion needs each system's
            # light-load first response.
            if ("light" in wanted or "capacity" in wanted) and systems:
                bench.light(systems)
            if "capacity" in wanted and systems:
                bench.sweep("single", systems, args.ks)
            if "resume" in wanted and "parley" in by_name:
                bench.resume(by_name["parley"])
            if "stall" in wanted:
                chosen = [
                    by_name[n]
                    for n in ("parley", "tutorial-shortcut", "tutorial-core")
                    if n in by_name
                ]
                if chosen:
                    bench.stall(chosen[:2])
            if "connections" in wanted:
                chosen = [
                    by_name[n]
                    for n in ("parley", "tutorial-core", "ceiling")
                    if n in by_name
                ]
                bench.connections(chosen)
            bench.stop_systems()
        if "scaleout" in wanted:
            names = [
                n
                for n in args.systems
                if n in ("parley", "tutorial-core", "tutorial-shortcut", "ceiling")
            ]
            systems = bench.start_systems(names, 2, 2)
            if systems:
                bench.sweep("scaleout", systems, args.scaleout_ks)
            bench.stop_systems()
    except Exception:
        traceback.print_exc()
        log("run aborted; partial results are kept")
    finally:
        stop_everything()
        if bench is not None:
            bench.results["meta"]["duration_seconds"] = round(
                time.monotonic() - started, 1
            )
            bench.save()
            table = report(bench.results)
            (workdir / "table.md").write_text(table + "\n")
            try:
                plot(bench.results, workdir / "latency.png")
            except Exception as exc:  # noqa: BLE001
                log(f"plot failed: {exc}")
            print()
            print(table)
            log(
                f"wrote {workdir}/results.json, table.md, latency.png in {time.monotonic() - started:.0f} s"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
