"""`manage.py check --deploy` passes with production settings from the environment."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_check(**env_overrides: str) -> subprocess.CompletedProcess:
    env = {
        key: value
        for key, value in os.environ.items()
        if key
        not in {"DEBUG", "DATABASE_URL", "SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS"}
    }
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        # No connection is made by `check`; the URL only selects production mode.
        REDIS_URL="redis://127.0.0.1:6379/9",
        SECRET_KEY=secrets.token_urlsafe(64),
        ALLOWED_HOSTS="example.com",
    )
    env.update(env_overrides)
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_deploy_check_passes_with_production_settings():
    result = run_check()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout, result.stdout + result.stderr
    assert "WARNING" not in result.stdout + result.stderr


def test_deploy_check_passes_with_postgres_url_too():
    result = run_check(DATABASE_URL="postgres://postgres@127.0.0.1:5432/test")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_mode_refuses_to_start_without_a_secret_key():
    result = run_check(SECRET_KEY="")
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


def test_tls_and_unix_socket_redis_urls_are_accepted():
    for url in (
        "rediss://:secret@redis.example.com:6380/0?ssl_ca_certs=/etc/ssl/ca.pem",
        "unix:///run/redis/redis.sock?db=2",
    ):
        result = run_check(REDIS_URL=url)
        assert result.returncode == 0, (url, result.stderr)


def test_an_unusable_redis_url_stops_start_up_with_the_reason():
    result = run_check(REDIS_URL="redis+sentinel://sentinel.example.com:26379/0")
    assert result.returncode != 0
    assert "REDIS_URL cannot be used" in result.stderr
    assert "redis://, rediss://, unix://" in result.stderr
