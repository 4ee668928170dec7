"""The bench's processes: starting and stopping them, and what they cost.

Every process the harness starts (daphne, ``runworker``, the fake OpenAI server,
redis-server when none answers, the load generator) goes through ``spawn`` or
``track``, so ``stop_everything`` ends them all, also on failure or Ctrl-C.
``prepare_services`` finds (or starts) Redis and creates the bench's PostgreSQL
database. CPU and memory are read from ``/proc`` with psutil: per process
(``cpu_seconds``, ``rss_bytes``), for the whole machine (``busy_cpu_seconds``)
and for the PostgreSQL backends serving one database (``PostgresMeter``).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
VENV_BIN = ROOT / ".venv" / "bin"
PYTHON = str(VENV_BIN / "python") if (VENV_BIN / "python").exists() else sys.executable
DAPHNE = str(VENV_BIN / "daphne") if (VENV_BIN / "daphne").exists() else "daphne"


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- starting and stopping ----------------------------------------------------

STARTED: list[subprocess.Popen] = []


def track(proc: subprocess.Popen) -> subprocess.Popen:
    """Remember ``proc`` so that ``stop_everything`` ends it."""
    STARTED.append(proc)
    return proc


def spawn(args: list[str], env: dict, logfile: Path) -> subprocess.Popen:
    """Start ``args`` in its own session (so ``stop`` ends its children too),
    its output appended to ``logfile``."""
    handle = open(logfile, "ab")
    proc = subprocess.Popen(
        args,
        cwd=ROOT,
        env=env,
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return track(proc)


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


def start_daphne(
    name: str, app: str, env: dict, count: int, workdir: Path
) -> tuple[list[subprocess.Popen], list[int]]:
    """``count`` daphne processes serving ``app``, each on a free port; returns
    them and their ports once every port answers (on failure they are stopped)."""
    procs, ports = [], []
    for index in range(count):
        port = free_port()
        procs.append(
            spawn(
                [DAPHNE, "-b", "127.0.0.1", "-p", str(port), "-v", "0", app],
                env,
                workdir / f"{name}-daphne-{index}.log",
            )
        )
        ports.append(port)
    try:
        for port, proc in zip(ports, procs, strict=True):
            wait_port(port, proc)
    except RuntimeError:
        stop(procs)
        raise
    return procs, ports


def start_workers(
    name: str, commands: list[list[str]], env: dict, workdir: Path, settle_s: float
) -> list[subprocess.Popen]:
    """One worker process per command (``runworker``); after ``settle_s`` every
    one must still run (on failure they are stopped)."""
    procs = [
        spawn(command, env, workdir / f"{name}-worker-{index}.log")
        for index, command in enumerate(commands)
    ]
    time.sleep(settle_s)
    for proc in procs:
        if proc.poll() is not None:
            stop(procs)
            raise RuntimeError(f"{name} worker exited with {proc.returncode}")
    return procs


def start_fake_openai(env: dict, logfile: Path) -> tuple[subprocess.Popen, int]:
    """bench/fake_openai.py on a free port, once it answers."""
    port = free_port()
    proc = spawn([PYTHON, "-m", "bench.fake_openai", str(port)], env, logfile)
    wait_port(port, proc)
    return proc, port


def start_redis_server(server: str, workdir: Path) -> int:
    """A throwaway ``server`` (redis-server, no persistence) on a free port;
    returns the port once it answers."""
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
    return port


# --- what the processes cost ---------------------------------------------------


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


# --- shared services: Redis and PostgreSQL ---------------------------------------


@dataclass
class Services:
    redis_url_base: str  # redis://host:port
    redis_db: int  # the baselines' db; Parley uses the next one, its openai line the one after
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
    """Redis at ``--redis`` (or a redis-server started here when nothing answers),
    its three bench dbs flushed; the PostgreSQL database ``--database-name``
    dropped and created fresh."""
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
        port = start_redis_server(server, workdir)
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
    return Services(
        redis_base, args.redis_db, args.database, args.database_name, redis_pid
    )
