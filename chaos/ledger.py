"""What one socket's client sees, applied by docs/protocol.md's resume rules.

``ThreadView`` takes server frames in order (across reconnects) and keeps, per
run, the text the client built from snapshots and ``response`` chunks, the text
``state_complete`` announced, and when each happened. It counts what a correct
server never does: an event delivered twice (``event_id`` at or below the last
applied one), an ``event_id`` that skips ahead without a snapshot, a chunk whose
``stream_index`` skips ahead. Tokens are numbered (``t<index>``, optionally
``@<stamp>``), so ``compare_tokens`` turns two texts into exact lost/doubled
counts. No I/O here: the chaos client feeds it and tests/chaos/ test it.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

TOKEN = re.compile(r"(?<!\S)t(\d+)(?:@\d+)?(?!\S)")


def token_indices(text: str) -> list[int]:
    """The numbered tokens of ``text`` in order (``t7`` or ``t7@123`` -> 7)."""
    return [int(match.group(1)) for match in TOKEN.finditer(text)]


def numbered_prompt(count: int) -> str:
    return " ".join(f"t{index}" for index in range(count))


@dataclass(frozen=True)
class TokenCount:
    lost: int  # tokens the reference holds more often than the built text
    doubled: int  # tokens the built text holds more often than the reference

    @property
    def exact(self) -> bool:
        return self.lost == 0 and self.doubled == 0


def compare_tokens(built: str, reference: str) -> TokenCount:
    """Lost and doubled tokens of ``built`` against ``reference`` (multisets)."""
    have, want = Counter(token_indices(built)), Counter(token_indices(reference))
    lost = sum(max(0, count - have[token]) for token, count in want.items())
    doubled = sum(max(0, count - want[token]) for token, count in have.items())
    return TokenCount(lost, doubled)


def is_prefix_run(text: str) -> bool:
    """``t0 t1 ... tk`` in order without a hole (what a failed run keeps)."""
    return token_indices(text) == list(range(len(token_indices(text))))


@dataclass
class RunView:
    run_id: str
    text: str = ""
    next_index: int | None = 0  # None: waiting for a snapshot after a gap
    first_seen: float | None = None
    completed_at: float | None = None
    final_text: str | None = None  # state_complete's (or a snapshot message's)
    built_text: str | None = None  # what the client had built when it ended
    status: str | None = None
    error_code: str | None = None
    chunks_applied: int = 0
    from_snapshot: bool = False  # part of its text came from a snapshot
    # how the text was built, for evidence: (kind, event_id, stream_index,
    # tokens so far)
    trace: list[tuple] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.final_text is not None


@dataclass
class ThreadView:
    last_event_id: int | None = None
    runs: dict[str, RunView] = field(default_factory=dict)
    snapshots: int = 0
    resyncs: int = 0  # snapshots with state "resynced"
    duplicate_events: int = 0
    event_gaps: int = 0
    chunk_gaps: int = 0
    stale_chunks: int = 0  # stream_index below the next one (ignored, rule 4)
    last_progress: float | None = None  # an in-order event or a snapshot

    def run(self, run_id: str, now: float) -> RunView:
        view = self.runs.get(run_id)
        if view is None:
            view = self.runs[run_id] = RunView(run_id, first_seen=now)
        return view

    def apply(self, frame: dict, now: float) -> str | None:
        """Apply one server frame; returns ``"resync"`` when the client must
        send ``resume`` with ``last_event_id`` null (a chunk gap)."""
        content = frame.get("content")
        kind = frame.get("type")
        if kind == "status" and isinstance(content, dict):
            state = content.get("state")
            if state in ("snapshot", "resynced"):
                self._apply_snapshot(content, now, resynced=state == "resynced")
                return None
        event_id = frame.get("event_id")
        if event_id is not None:
            if self.last_event_id is not None and event_id <= self.last_event_id:
                self.duplicate_events += 1
                return None
            if self.last_event_id is not None and event_id > self.last_event_id + 1:
                self.event_gaps += 1
            self.last_event_id = event_id
            self.last_progress = now
        if kind == "response" and frame.get("run_id"):
            return self._apply_chunk(frame, now)
        if kind == "state_complete" and frame.get("run_id"):
            run = self.run(frame["run_id"], now)
            if not run.done:
                run.built_text = run.text
                run.final_text = content.get("text", "")
                run.status = content.get("status")
                run.error_code = (content.get("error") or {}).get("code")
                run.completed_at = now
        return None

    def _apply_chunk(self, frame: dict, now: float) -> str | None:
        run = self.run(frame["run_id"], now)
        index = frame.get("stream_index")
        if run.done or run.next_index is None:
            return None
        if index < run.next_index:
            self.stale_chunks += 1
            run.trace.append(("stale", frame.get("event_id"), index, None))
            return None
        if index > run.next_index:
            self.chunk_gaps += 1
            run.trace.append(("gap", frame.get("event_id"), index, None))
            run.next_index = None
            return "resync"
        run.trace.append(("chunk", frame.get("event_id"), index, frame.get("content")))
        run.text += frame.get("content") or ""
        run.next_index += 1
        run.chunks_applied += 1
        return None

    def _apply_snapshot(self, content: dict, now: float, *, resynced: bool) -> None:
        self.snapshots += 1
        self.resyncs += resynced
        self.last_event_id = content.get("last_event_id")
        self.last_progress = now
        for item in content.get("runs") or []:
            run = self.run(item["run_id"], now)
            if run.done:
                continue
            run.text = item.get("text") or ""
            run.next_index = item.get("next_stream_index", 0)
            run.from_snapshot = True
            run.trace.append(
                (
                    "resynced" if resynced else "snapshot",
                    self.last_event_id,
                    run.next_index,
                    len(token_indices(run.text)),
                )
            )
        for message in content.get("messages") or []:
            run_id = message.get("run_id")
            if message.get("role") != "assistant" or not run_id:
                continue
            if message.get("status") not in ("completed", "cancelled", "failed"):
                continue
            run = self.run(run_id, now)
            if run.done:
                continue
            # The run ended while this socket was away: the snapshot is what the
            # client shows from now on, so it is what the client "built".
            run.text = message.get("text") or ""
            run.built_text = run.text
            run.final_text = run.text
            run.status = message.get("status")
            run.error_code = (message.get("error") or {}).get("code")
            run.completed_at = now
            run.from_snapshot = True
