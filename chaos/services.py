"""The harness's own redis-server and PostgreSQL cluster, restartable at will.

Both live in the run's temporary directory on free ports, so restarting them
never touches the machine's shared Redis (6379) or PostgreSQL (5432). Redis has
no persistence (a restart loses the event log, as docs/deploy.md allows);
PostgreSQL is a fresh ``initdb`` cluster with trust auth on 127.0.0.1 and its
unix socket in the temporary directory. When the harness runs as root the
cluster belongs to the ``postgres`` user (initdb refuses root).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import time
from pathlib import Path

from bench.processes import free_port, wait_port


def postgres_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    if not pg_ctl:
        raise SystemExit("chaos: no PostgreSQL binaries (pg_ctl, initdb) found")
    return Path(pg_ctl).parent


class RedisServer:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.server = shutil.which("redis-server") or "/usr/bin/redis-server"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        log = open(self.workdir / "redis.log", "ab")
        self.process = subprocess.Popen(
            [
                self.server,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_port(self.port, self.process)

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def restart(self) -> None:
        """SIGKILL and start again, empty, on the same port."""
        self.kill()
        self.start()


class PostgresServer:
    def __init__(self, workdir: Path) -> None:
        self.bin = postgres_bin()
        self.workdir = workdir
        self.data = workdir / "pgdata"
        self.socket_dir = workdir / "pgsocket"
        self.log = self.socket_dir / "postgres.log"  # the cluster's user writes it
        self.port = free_port()
        self.database = "parley_chaos"
        self.user: str | None = None
        if os.geteuid() == 0:
            self.user = "postgres"

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{self.database}"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        command = [str(self.bin / args[0]), *args[1:]]
        if self.user:
            command = ["runuser", "-u", self.user, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if check and result.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {result.stdout}{result.stderr}")
        return result

    def init(self) -> None:
        self.data.mkdir()
        self.socket_dir.mkdir()
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chmod(self.workdir, 0o755)
            for path in (self.data, self.socket_dir):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        )
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                f"port = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.socket_dir}'\n"
                "fsync = off\nsynchronous_commit = off\nmax_connections = 200\n"
            )
        self.start()
        self.sql(f'CREATE DATABASE "{self.database}"', database="postgres")

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "start")

    def restart(self) -> None:
        """``pg_ctl restart -m fast``: every backend is ended, clients see their
        connections drop, the server is back within a second or two."""
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-m",
            "fast",
            "-w",
            "restart",
            "-l",
            str(self.log),
        )

    def stop(self) -> None:
        if self.data.exists():
            self._run(
                "pg_ctl", "-D", str(self.data), "-m", "immediate", "stop", check=False
            )

    def sql(self, statement: str, database: str | None = None) -> list[tuple]:
        import psycopg

        url = f"postgres://postgres@127.0.0.1:{self.port}/{database or self.database}"
        with psycopg.connect(url, autocommit=True, connect_timeout=5) as connection:
            cursor = connection.execute(statement)
            return cursor.fetchall() if cursor.description else []

    def connections(self) -> int:
        """Client backends connected to Parley's database (this one excluded)."""
        rows = self.sql(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = "
            f"'{self.database}' AND backend_type = 'client backend' "
            "AND pid <> pg_backend_pid()"
        )
        return int(rows[0][0])


def wait_until(predicate, timeout: float, step: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()
