"""Real processes: daphne and `runworker agent-runs` on PostgreSQL and Redis.

Each `stack` gets its own PostgreSQL database and its own redis-server on a
free port (so a test may restart Redis without disturbing anything else).
These tests run in the PostgreSQL/Redis pass of `make test` (DATABASE_URL and
REDIS_URL set); they are skipped otherwise.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import urlparse

import psutil
import pytest

from realtime.protocol import parse_server_frame

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
DAPHNE = str(Path(sys.executable).with_name("daphne"))

pytestmark = pytest.mark.integration


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="needs DATABASE_URL (PostgreSQL) and REDIS_URL")
    if not (
        os.environ.get("DATABASE_URL", "").startswith("postgres")
        and os.environ.get("REDIS_URL")
    ):
        for item in items:
            if item.get_closest_marker("integration"):
                item.add_marker(skip)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """A redis-server of the test's own, over plain TCP, TLS (a CA and
    certificate made for the test) or a unix socket (`transport`)."""

    def __init__(self, workdir: Path, transport: str = "tcp") -> None:
        self.port = free_port()
        self.workdir = workdir
        self.transport = transport
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        listen = ["--port", str(self.port)]
        if self.transport == "tls":
            self._make_certificates()
            listen = [
                "--port", "0", "--tls-port", str(self.port),
                "--tls-cert-file", str(self.workdir / "redis.crt"),
                "--tls-key-file", str(self.workdir / "redis.key"),
                "--tls-ca-cert-file", str(self.workdir / "ca.crt"),
                "--tls-auth-clients", "no",
            ]  # fmt: skip
        elif self.transport == "unix":
            listen += ["--unixsocket", str(self.socket_path), "--unixsocketperm", "700"]
        self.process = subprocess.Popen(
            [
                shutil.which("redis-server") or "/usr/bin/redis-server",
                *listen,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)
        if self.transport == "unix":
            deadline = time.monotonic() + 10
            while not self.socket_path.exists() and time.monotonic() < deadline:
                time.sleep(0.05)

    @property
    def socket_path(self) -> Path:
        return self.workdir / "redis.sock"

    def _make_certificates(self) -> None:
        def openssl(*args: str) -> None:
            subprocess.run(
                ["openssl", *args], cwd=self.workdir, check=True, capture_output=True
            )

        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=parley-test-ca")  # fmt: skip
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "redis.key",
                "-out", "redis.csr", "-subj", "/CN=127.0.0.1")  # fmt: skip
        (self.workdir / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
        openssl("x509", "-req", "-in", "redis.csr", "-CA", "ca.crt", "-CAkey",
                "ca.key", "-CAcreateserial", "-out", "redis.crt", "-days", "2",
                "-extfile", "san.cnf")  # fmt: skip

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    @property
    def url(self) -> str:
        if self.transport == "tls":
            ca = self.workdir / "ca.crt"
            return f"rediss://127.0.0.1:{self.port}/0?ssl_ca_certs={ca}"
        if self.transport == "unix":
            return f"unix://{self.socket_path}?db=0"
        return f"redis://127.0.0.1:{self.port}/0"


def wait_for_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {port}")


class Stack:
    """One deployment: a database, a redis-server, any number of daphnes and workers."""

    def __init__(
        self,
        tmp_path: Path,
        *,
        redis_transport: str = "tcp",
        event_log_shards: int = 1,
        **settings: str,
    ) -> None:
        base = urlparse(os.environ["DATABASE_URL"])
        self.db_name = f"parley_it_{uuid.uuid4().hex[:10]}"
        self.admin_url = os.environ["DATABASE_URL"]
        self.redis = RedisServer(tmp_path, redis_transport)
        # Further redis-servers the event log spreads threads over (one each).
        self.event_log_shards = [
            RedisServer(tmp_path / f"shard-{n}", redis_transport)
            for n in range(1, event_log_shards)
        ]
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("PYTEST")},
            "DATABASE_URL": base._replace(path=f"/{self.db_name}").geturl(),
            "SECRET_KEY": "integration-tests-secret-key",
            "DEBUG": "1",
            "PYTHONUNBUFFERED": "1",
            "PARLEY_LEASE_SECONDS": "3",
            "PARLEY_SWEEP_INTERVAL_SECONDS": "1",
            **settings,
        }
        self.processes: list[subprocess.Popen] = []
        self.logs = tmp_path
        self.tokens: dict[str, str] = {}

    def start(self) -> Stack:
        self.redis.start()
        self.env["REDIS_URL"] = self.redis.url
        for shard in self.event_log_shards:
            shard.workdir.mkdir(exist_ok=True)
            shard.start()
        if self.event_log_shards:
            self.env["REDIS_EVENT_LOG_URLS"] = ",".join(
                server.url for server in [self.redis, *self.event_log_shards]
            )
        self._sql(f'CREATE DATABASE "{self.db_name}"')
        self.manage("migrate", "--noinput", "-v0")
        return self

    def _sql(self, statement: str) -> None:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as connection:
            connection.execute(statement)

    def manage(self, *args: str, input_text: str | None = None) -> str:
        result = subprocess.run(
            [PYTHON, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            input=input_text,
            timeout=120,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"manage.py {args[0]} failed:\n{result.stdout}\n{result.stderr}"
            )
        return result.stdout

    def python(self, code: str) -> object:
        """Run Django code in the stack's database; the code sets `result` (JSON)."""
        script = "import json\n" + code + "\nprint('RESULT=' + json.dumps(result))\n"
        out = self.manage("shell", "-c", script)
        line = next(line for line in out.splitlines() if line.startswith("RESULT="))
        return json.loads(line[len("RESULT=") :])

    def setup_thread(self, *, tokens_per_second: float = 50, **agent_fields) -> dict:
        """Users owner/participant/observer with tokens, an echo agent and a thread."""
        fields = {
            "extra_params": {"tokens_per_second": tokens_per_second},
            **agent_fields,
        }
        return self.python(
            "from django.contrib.auth import get_user_model\n"
            "from rest_framework.authtoken.models import Token\n"
            "from agents.models import AgentConfig\n"
            "from chat.models import Thread, ThreadMember\n"
            "U = get_user_model()\n"
            "users = {n: U.objects.get_or_create(username=n)[0] for n in ('owner', 'participant', 'observer')}\n"
            f"agent, _ = AgentConfig.objects.update_or_create(name='echo', defaults=dict(provider='echo', **{fields!r}))\n"
            "thread = Thread.objects.create(owner=users['owner'], agent=agent, title='it')\n"
            "ThreadMember.objects.create(thread=thread, user=users['participant'], role='participant')\n"
            "ThreadMember.objects.create(thread=thread, user=users['observer'], role='observer')\n"
            "result = {'thread': str(thread.id), 'tokens': {n: Token.objects.get_or_create(user=u)[0].key for n, u in users.items()}}\n"
        )

    def daphne(self) -> Process:
        port = free_port()
        process = self._spawn(
            [DAPHNE, "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"],
            f"daphne-{port}",
        )
        wait_for_http(f"http://127.0.0.1:{port}/healthz")
        return Process(process, port)

    def worker(self) -> Process:
        process = self._spawn(
            [PYTHON, "manage.py", "runworker", "agent-runs"], "worker"
        )
        return Process(process, None)

    def _spawn(self, command: list[str], name: str) -> subprocess.Popen:
        log = open(self.logs / f"{name}-{len(self.processes)}.log", "w")
        process = subprocess.Popen(
            command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        self.processes.append(process)
        return process

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        self.redis.kill()
        for shard in self.event_log_shards:
            shard.kill()
        try:
            self._sql(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
        except Exception:
            pass

    def dump_logs(self) -> str:
        return "\n".join(
            f"== {p.name}\n{p.read_text()[-3000:]}"
            for p in sorted(self.logs.glob("*.log"))
        )


class Process:
    def __init__(self, popen: subprocess.Popen, port: int | None) -> None:
        self.popen = popen
        self.port = port

    @property
    def rss(self) -> int:
        return psutil.Process(self.popen.pid).memory_info().rss

    def kill(self, signum: int = signal.SIGKILL) -> None:
        self.popen.send_signal(signum)

    def ws_url(self, thread_id: str, query: str = "") -> str:
        return f"ws://127.0.0.1:{self.port}/ws/threads/{thread_id}/" + (
            f"?{query}" if query else ""
        )


def wait_for_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(url)


@pytest.fixture
def stack(tmp_path, request):
    stack = Stack(tmp_path).start()
    yield stack
    if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
        print(stack.dump_logs())
    stack.stop()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


class Socket:
    """A protocol client over a real WebSocket (the `websockets` library)."""

    def __init__(self, url: str, token: str, **options) -> None:
        self.url = url
        self.token = token
        self.options = options
        self.frames: list[dict] = []

    async def __aenter__(self) -> Socket:
        import websockets

        options = dict(self.options)
        receive_buffer = options.pop("receive_buffer", None)
        if receive_buffer:
            # A small, fixed receive window (no autotuning): a reader that stops
            # reading backs up into the server quickly.
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
            port = int(urlparse(self.url).port)
            sock.connect(("127.0.0.1", port))
            sock.setblocking(False)
            options["sock"] = sock
        self.connection = await websockets.connect(
            self.url,
            additional_headers={"Authorization": f"Token {self.token}"},
            **options,
        )
        return self

    async def __aexit__(self, *exc) -> None:
        await self.connection.close()

    async def send(self, frame: dict) -> None:
        await self.connection.send(json.dumps(frame))

    async def receive(self, timeout: float = 30) -> dict:
        """The next frame, skipping presence news (who joined or left)."""
        while True:
            text = await asyncio.wait_for(self.connection.recv(), timeout)
            parse_server_frame(text)  # every frame the server sends fits its model
            frame = json.loads(text)
            content = frame["content"]
            if not (isinstance(content, dict) and content.get("state") == "presence"):
                self.frames.append(frame)
                return frame

    async def receive_until(self, predicate, timeout: float = 30) -> list[dict]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        seen = []
        while True:
            frame = await self.receive(max(deadline - loop.time(), 0.01))
            seen.append(frame)
            if predicate(frame):
                return seen


class ReplyTracker:
    """Applies frames the way docs/protocol.md tells clients to, and checks that
    no chunk is lost or doubled: the run's text, built from snapshots and
    chunks, must equal the final text."""

    def __init__(self) -> None:
        self.last_event_id: int | None = None
        self.runs: dict[str, dict] = {}
        self.resynced = 0
        self.gaps = 0
        self.allow_gaps = False  # only where the log itself was lost (Redis restarted)

    def apply(self, frame: dict) -> None:
        content = frame["content"]
        if frame["type"] == "status" and content.get("state") in (
            "snapshot",
            "resynced",
        ):
            self.resynced += content["state"] == "resynced"
            self.last_event_id = content["last_event_id"]
            for run in content["runs"]:
                self.runs[run["run_id"]] = {
                    "text": run["text"],
                    "next": run["next_stream_index"],
                    "final": None,
                }
            for message in content["messages"]:
                if message["role"] == "assistant" and message["run_id"]:
                    self.runs[message["run_id"]] = {
                        "text": message["text"],
                        "next": None,
                        "final": message["text"],
                    }
            return
        if frame["event_id"] is not None:
            assert (
                self.last_event_id is None
                or frame["event_id"] == self.last_event_id + 1
            ), f"event {frame['event_id']} after {self.last_event_id}"
            self.last_event_id = frame["event_id"]
        if frame["type"] == "response":
            run = self.runs.setdefault(
                frame["run_id"], {"text": "", "next": 0, "final": None}
            )
            if (
                run["final"] is not None
                or run["next"] is None
                or frame["stream_index"] < run["next"]
            ):
                return
            if frame["stream_index"] > run["next"]:
                # A gap: the documented client rule is to ask for a snapshot.
                assert self.allow_gaps, (frame["stream_index"], run["next"])
                self.gaps += 1
                run["next"] = None
                return "resync"
            run["text"] += frame["content"]
            run["next"] += 1
        elif frame["type"] == "state_complete":
            run = self.runs.setdefault(
                frame["run_id"], {"text": "", "next": 0, "final": None}
            )
            run["final"] = content["text"]
