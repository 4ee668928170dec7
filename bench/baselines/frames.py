"""Frames in Parley's wire shape, shared by the baselines so one load generator
measures every system the same way."""

import json
import time
from datetime import UTC, datetime


def frame(
    kind: str,
    content: object,
    *,
    thread_id: str,
    run_id: str | None = None,
    stream_index: int | None = None,
) -> dict:
    return {
        "type": kind,
        "content": content,
        "thread_id": thread_id,
        "run_id": run_id,
        "stream_index": stream_index,
        "event_id": None,
        "request_id": None,
        "timestamp": datetime.now(UTC).isoformat(),
    }


def stamped(word: str) -> str:
    """The echo agent's benchmark token: `word@<CLOCK_MONOTONIC ns>` + a space."""
    return f"{word}@{time.monotonic_ns()} "


def dumps(value: dict) -> str:
    return json.dumps(value)
