"""Readiness checks: can this process reach its database and (if configured) Redis?

Each check runs in a thread of its own with a deadline (PARLEY_READYZ_TIMEOUT_SECONDS,
2 s by default), both at once, so a hung database or Redis turns into a quick
"timeout" instead of a probe that hangs with it. Each check keeps one thread
(and so one database connection, one Redis connection pool): a probe every
few seconds opens nothing new. Should a check still hang when the next probe
comes, that probe waits behind it and times out too, which is the truth: not
ready. What failed is logged here; the probe's answer says only which part.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor, wait

import redis
from django.conf import settings
from django.db import connections

logger = logging.getLogger(__name__)

OK, ERROR, TIMEOUT, NOT_CONFIGURED = "ok", "error", "timeout", "not_configured"
DEFAULT_TIMEOUT_SECONDS = 2.0

_executors: dict[str, ThreadPoolExecutor] = {}
_redis_clients: dict[tuple[str, float], redis.Redis] = {}


def readiness_timeout() -> float:
    return float(
        getattr(settings, "PARLEY_READYZ_TIMEOUT_SECONDS", DEFAULT_TIMEOUT_SECONDS)
    )


def check_database() -> None:
    """Raise unless the default database answers a query."""
    connection = connections["default"]
    try:
        connection.close_if_unusable_or_obsolete()
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception:
        try:  # the next probe reconnects
            connection.close()
        except Exception:
            pass
        raise


def check_redis(url: str, timeout: float) -> None:
    """Raise unless the Redis at `url` answers PING within `timeout` seconds."""
    client = _redis_clients.get((url, timeout))
    if client is None:
        client = _redis_clients[(url, timeout)] = redis.Redis.from_url(
            url, socket_connect_timeout=timeout, socket_timeout=timeout
        )
    client.ping()


def _executor(name: str) -> ThreadPoolExecutor:
    executor = _executors.get(name)
    if executor is None:
        executor = _executors[name] = ThreadPoolExecutor(
            1, thread_name_prefix=f"parley-readyz-{name}"
        )
    return executor


def readiness() -> dict[str, str]:
    """{"database": "ok" | "error" | "timeout", "redis": ... | "not_configured"}."""
    timeout = readiness_timeout()
    pending = {"database": _executor("database").submit(check_database)}
    if settings.REDIS_URL:
        pending["redis"] = _executor("redis").submit(
            check_redis, settings.REDIS_URL, timeout
        )
    wait(pending.values(), timeout=timeout)  # one deadline for both
    results = {"database": NOT_CONFIGURED, "redis": NOT_CONFIGURED}
    for name, future in pending.items():
        if not future.done():
            logger.warning("readyz: %s did not answer within %.1f s", name, timeout)
            results[name] = TIMEOUT
        elif future.exception() is not None:
            logger.warning("readyz: %s unavailable: %s", name, future.exception())
            results[name] = ERROR
        else:
            results[name] = OK
    return results


def close_connections() -> None:
    """Close the database connection the database check's thread holds (tests,
    before their database is dropped)."""
    executor = _executors.get("database")
    if executor is not None:
        executor.submit(lambda: connections["default"].close()).result(timeout=10)
