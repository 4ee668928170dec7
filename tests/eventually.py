"""Waiting on a condition with a deadline, never on a bare sleep."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable


async def eventually(
    condition: Callable[[], Awaitable[object] | object],
    *,
    timeout: float = 10.0,
    every: float = 0.05,
    what: str = "the condition",
):
    """Call (and await, if need be) `condition()` until it returns something
    truthy; return that. Fails the test when `timeout` seconds pass first."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout:g} s")
        await asyncio.sleep(every)


def eventually_sync(
    condition: Callable[[], object],
    *,
    timeout: float = 30.0,
    every: float = 0.2,
    what: str = "the condition",
):
    """`eventually` for synchronous code (integration tests polling a process)."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout:g} s")
        time.sleep(every)
