"""Parley as production runs it, on the harness's own Redis and PostgreSQL.

Two daphne processes on free ports and two ``runworker agent-runs`` workers,
migrated and seeded like the bench (bench/parley_setup.py: users, the
``bench-echo`` agent at 50 tokens/s), with the bench's per-user abuse limits
lifted. Every process is started through bench.processes (so
``stop_everything`` ends them); a daphne restarts on its own port, a killed
worker is replaced by a new one. A worker's channel name (the ``worker_channel``
of the runs it claims) is read from its log line "agent worker <name> started".
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from bench.processes import DAPHNE, PYTHON, ROOT, spawn, stop, wait_port
from chaos.services import PostgresServer, RedisServer, wait_until

PASSWORD = "chaos-password"
OWNER, WATCHER = "chaos-owner", "chaos-watcher"
AGENT = "bench-echo"
WORKER_STARTED = re.compile(r"agent worker (\S+) started")


class Daphne:
    def __init__(self, stack: Stack, index: int, port: int) -> None:
        self.stack, self.index, self.port = stack, index, port
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = spawn(
            [
                DAPHNE,
                "-b",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-v",
                "0",
                "config.asgi:application",
            ],
            self.stack.env(),
            self.stack.workdir / f"daphne-{self.index}.log",
        )
        wait_port(self.port, self.process, timeout=60)

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)


class Worker:
    def __init__(self, stack: Stack, slot: int, generation: int) -> None:
        self.log = stack.workdir / f"worker-{slot}-{generation}.log"
        env = stack.env() | {"LOG_LEVEL": "INFO"}
        self.process = spawn(
            [PYTHON, "manage.py", "runworker", "agent-runs"], env, self.log
        )
        self.channel: str | None = None

    def wait_started(self, timeout: float = 60) -> str:
        def started() -> bool:
            match = WORKER_STARTED.search(self.log.read_text(errors="replace"))
            if match:
                self.channel = match.group(1)
            return match is not None or self.process.poll() is not None

        wait_until(started, timeout)
        if self.channel is None:
            raise RuntimeError(f"worker did not start: {self.log}")
        return self.channel

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)


class Stack:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.redis = RedisServer(workdir)
        self.postgres = PostgresServer(workdir)
        self.daphnes: list[Daphne] = []
        self.workers: list[Worker] = []
        self.generation = 0
        self.tokens: dict[str, str] = {}

    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
        env.pop("DJANGO_SETTINGS_MODULE", None)
        return env | {
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
            "REDIS_URL": self.redis.url,
            "DATABASE_URL": self.postgres.url,
            "SECRET_KEY": "chaos-secret-key",
            "DEBUG": "0",
            "SECURE_SSL_REDIRECT": "0",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "LOG_LEVEL": "WARNING",
            # A few accounts drive every run: lift the per-user abuse limits,
            # as the bench does, so they are not what the faults run into.
            "PARLEY_MAX_ACTIVE_RUNS_PER_USER": "100000",
            "PARLEY_MESSAGES_PER_MINUTE": "1000000",
            "PARLEY_MAX_CLIENTS_PER_THREAD": "1000",
            "API_USER_RATE": "1000000/min",
            "API_ANON_RATE": "1000000/min",
        }

    @property
    def ports(self) -> list[int]:
        return [daphne.port for daphne in self.daphnes]

    def start(self, daphnes: int = 2, workers: int = 2) -> None:
        self.redis.start()
        self.postgres.init()
        for args in (
            ["manage.py", "migrate", "--noinput", "-v0"],
            ["-m", "bench.parley_setup", PASSWORD, OWNER, WATCHER],
        ):
            result = subprocess.run(
                [PYTHON, *args],
                cwd=ROOT,
                env=self.env(),
                capture_output=True,
                text=True,
                timeout=300,
            )
            if result.returncode != 0:
                raise RuntimeError(f"{args}: {result.stdout}{result.stderr}")
        from bench.processes import free_port

        for index in range(daphnes):
            daphne = Daphne(self, index, free_port())
            daphne.start()
            self.daphnes.append(daphne)
        for slot in range(workers):
            self.workers.append(self.new_worker(slot))
        for worker in self.workers:
            worker.wait_started()
        for user in (OWNER, WATCHER):
            self.tokens[user] = self.api(
                "POST",
                "/api/auth/token/",
                body={"username": user, "password": PASSWORD},
                token=None,
            )["token"]

    def new_worker(self, slot: int) -> Worker:
        self.generation += 1
        return Worker(self, slot, self.generation)

    def replace_worker(self, slot: int) -> Worker:
        worker = self.new_worker(slot)
        self.workers[slot] = worker
        worker.wait_started()
        return worker

    def api(self, method: str, path: str, body=None, token: str | None = "owner"):
        headers = {}
        if token == "owner":
            token = self.tokens[OWNER]
        if token:
            headers["Authorization"] = f"Token {token}"
        last_error = None
        for attempt in range(20):  # a restarting service answers again soon
            port = self.ports[attempt % len(self.ports)]
            try:
                response = httpx.request(
                    method,
                    f"http://127.0.0.1:{port}{path}",
                    json=body,
                    headers=headers,
                    timeout=30,
                )
            except httpx.HTTPError as error:
                last_error = error
                time.sleep(0.5)
                continue
            if response.status_code >= 500:
                last_error = RuntimeError(f"{response.status_code} {response.text}")
                time.sleep(0.5)
                continue
            if response.status_code >= 300:
                raise RuntimeError(
                    f"{method} {path} -> {response.status_code}: {response.text[:300]}"
                )
            return response.json()
        raise RuntimeError(f"{method} {path}: {last_error}")

    def create_thread(self) -> str:
        thread = self.api("POST", "/api/threads/", {"agent": AGENT, "title": "chaos"})
        self.api(
            "POST",
            f"/api/threads/{thread['id']}/members/",
            {"username": WATCHER, "role": "observer"},
        )
        return thread["id"]

    def history(self, thread_id: str) -> list[dict]:
        """Every message of the thread (REST, all pages), oldest first."""
        out, path = [], f"/api/threads/{thread_id}/messages/"
        while path:
            page = self.api("GET", path)
            if isinstance(page, list):
                return page
            out.extend(page.get("results", []))
            following = urlsplit(page["next"]) if page.get("next") else None
            path = f"{following.path}?{following.query}" if following else None
        return out

    def running_runs(self) -> dict[str, str]:
        """run id -> worker channel of the runs running now (the database)."""
        rows = self.postgres.sql(
            "SELECT id::text, worker_channel FROM agents_run WHERE status = 'running'"
        )
        return dict(rows)

    def stop(self) -> None:
        processes = [d.process for d in self.daphnes if d.process]
        processes += [w.process for w in self.workers]
        stop([p for p in processes if p.poll() is None], grace=5)
        self.redis.kill()
        self.postgres.stop()
