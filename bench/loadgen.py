"""Load generator: drives one system over WebSockets and measures what arrives.

Runs as its own process (``python -m bench.loadgen SPEC.json``) so its CPU is not
the server's. Protocol with the harness on stdin/stdout, one line each:

    loadgen -> READY {json}     every socket is open (connect figures inside)
    harness -> GO               start the load
    loadgen -> DONE             the load is over (the harness stops CPU clocks)
    loadgen -> RESULT {json}    the measurements

The data path uses websockets' sans-I/O protocol under a plain asyncio.Protocol:
it parses frames without a coroutine, queue or future per frame, so one process
can take tens of thousands of frames per second without becoming the bottleneck
it is measuring. Every token is ``t<index>@<CLOCK_MONOTONIC ns>``. Two latencies
per token, both from the receive time (taken when the bytes reach this process):
the stamp latency (minus the stamp: what the agent saw) and the schedule latency
(minus when the token was due: message send + index / tokens_per_second, which
also sees a late start). bench/criteria.py judges the point.

Modes (``spec["mode"]``): ``stream`` (capacity, light load), ``idle``
(connections), ``resume`` (catch-up after missed events), ``stall`` (a socket
that stops reading).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import resource
import socket
import sys
import time
from array import array
from urllib.parse import urlsplit

from websockets.client import ClientProtocol
from websockets.frames import Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

TOKEN = re.compile(r"t(\d+)[^@\s]*@(\d+)")


def now_ns() -> int:
    return time.monotonic_ns()


def emit(tag: str, payload: object | None = None) -> None:
    line = tag if payload is None else f"{tag} {json.dumps(payload)}"
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class Socket(asyncio.Protocol):
    """One WebSocket client connection; calls ``on_frame(socket, dict, recv_ns)``."""

    def __init__(self, url: str, headers: list, subprotocols: list, on_frame) -> None:
        self.url = url
        self.protocol = ClientProtocol(
            parse_uri(url), subprotocols=subprotocols or None, max_size=None
        )
        self.request = self.protocol.connect()
        for name, value in headers:
            self.request.headers[name] = value
        self.on_frame = on_frame
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future = loop.create_future()
        self.closed: asyncio.Future = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.fragments: list[bytes] = []
        self.close_code: int | None = None
        self.frames = 0
        self.bytes = 0
        # per-socket bookkeeping filled in by the modes
        self.role = ""
        self.thread: dict | None = None
        self.done = False

    # asyncio.Protocol
    def connection_made(self, transport) -> None:
        self.transport = transport
        self.protocol.send_request(self.request)
        self._flush()

    def data_received(self, data: bytes) -> None:
        received = now_ns()
        self.bytes += len(data)
        self.protocol.receive_data(data)
        for event in self.protocol.events_received():
            if isinstance(event, Response):
                if self.protocol.handshake_exc is not None:
                    if not self.opened.done():
                        self.opened.set_exception(
                            ConnectionError(
                                f"{self.url}: {self.protocol.handshake_exc}"
                            )
                        )
                elif not self.opened.done():
                    self.opened.set_result(True)
                continue
            opcode = event.opcode
            if opcode is Opcode.TEXT or opcode is Opcode.CONT:
                if not event.fin:
                    self.fragments.append(event.data)
                    continue
                payload = event.data
                if self.fragments:
                    payload = b"".join(self.fragments) + payload
                    self.fragments = []
                self.frames += 1
                self.on_frame(self, json.loads(payload), received)
            elif opcode is Opcode.CLOSE:
                self.close_code = self.protocol.close_code
        self._flush()

    def eof_received(self):
        self.protocol.receive_eof()
        self._flush()
        return False

    def connection_lost(self, exc) -> None:
        if self.close_code is None:
            self.close_code = self.protocol.close_code
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"{self.url}: connection lost"))
        if not self.closed.done():
            self.closed.set_result(self.close_code)

    def _flush(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        for data in self.protocol.data_to_send():
            if data:
                self.transport.write(data)
            elif self.transport.can_write_eof():
                self.transport.write_eof()
        if self.protocol.close_expected() and not self.closed.done():
            self.transport.close()

    def send_json(self, value: dict) -> None:
        self.protocol.send_text(json.dumps(value).encode())
        self._flush()

    def close(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        try:
            self.protocol.send_close(1000)
            self._flush()
        except Exception:
            pass
        self.transport.close()


async def open_socket(
    url: str, headers=(), subprotocols=(), on_frame=None, rcvbuf: int | None = None
) -> Socket:
    parts = urlsplit(url)
    loop = asyncio.get_running_loop()
    raw = None
    if rcvbuf:
        # A small fixed receive buffer (it also turns off autotuning), so a
        # socket that stops reading pushes back on the server within kilobytes.
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        raw.setblocking(False)
        await loop.sock_connect(raw, (parts.hostname, parts.port))
    factory = lambda: Socket(url, list(headers), list(subprotocols), on_frame or ignore)  # noqa: E731
    if raw is not None:
        _, sock = await loop.create_connection(factory, sock=raw)
    else:
        _, sock = await loop.create_connection(factory, parts.hostname, parts.port)
    await sock.opened
    return sock


def ignore(sock: Socket, frame: dict, received: int) -> None:
    return None


async def wait_go() -> None:
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    if line.strip() != "GO":
        raise SystemExit(f"expected GO, got {line!r}")


def words(count: int, pad: int = 0, offset: int = 0) -> str:
    filler = "x" * pad
    return " ".join(f"t{i}{filler}" for i in range(offset, offset + count))


def percentile(sorted_values, q: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


def latency_stats(samples_us: array) -> dict:
    values = sorted(samples_us)
    ms = lambda v: None if v is None else round(v / 1000, 2)  # noqa: E731
    return {
        "samples": len(values),
        "p50_ms": ms(percentile(values, 50)),
        "p90_ms": ms(percentile(values, 90)),
        "p99_ms": ms(percentile(values, 99)),
        "p999_ms": ms(percentile(values, 99.9)),
        "max_ms": ms(values[-1] if values else None),
    }


async def connect_all(
    specs: list[dict], on_frame, concurrency: int
) -> tuple[list, dict]:
    """Open sockets for ``specs`` ({url, headers, subprotocols}); return them and
    connect figures. A failed connect is recorded, not raised."""
    gate = asyncio.Semaphore(concurrency)
    failures: list[str] = []
    started = now_ns()

    async def one(spec: dict):
        async with gate:
            for attempt in range(3):
                try:
                    return await asyncio.wait_for(
                        open_socket(
                            spec["url"],
                            spec.get("headers", ()),
                            spec.get("subprotocols", ()),
                            on_frame,
                            spec.get("rcvbuf"),
                        ),
                        30,
                    )
                except Exception as exc:  # noqa: BLE001 - recorded and reported
                    if attempt == 2:
                        failures.append(repr(exc)[:300])
                        return None
                    await asyncio.sleep(0.2 * (attempt + 1))

    sockets = await asyncio.gather(*(one(spec) for spec in specs))
    elapsed = (now_ns() - started) / 1e9
    opened = sum(1 for s in sockets if s is not None)
    figures = {
        "sockets": len(specs),
        "opened": opened,
        "connect_seconds": round(elapsed, 3),
        "connects_per_second": round(opened / elapsed, 1) if elapsed else None,
        "connect_failures": len(failures),
        "first_failures": failures[:3],
    }
    return sockets, figures


# --- stream: capacity and light load ---------------------------------------


class StreamLoad:
    """K threads, each with sockets; the participant starts one run per thread and
    every socket must receive every token exactly once."""

    def __init__(self, spec: dict) -> None:
        self.spec = spec
        self.tokens = spec["tokens"]
        self.interval_ns = int(1e9 / spec.get("tokens_per_second", 50))
        self.latencies = array("q")
        # receive time - due (message send + index x interval), microseconds
        self.schedule = array("q")
        # tokens received per TICK_NS since the first message: the delivered
        # rate is counted over the part of the point when every run should stream
        self.received_by_tick: dict[int, int] = {}
        self.last_frame_ns = 0
        # p99 per second of the point: shows whether latency is a burst (start,
        # end of the runs) or steady.
        self.by_second: dict[int, array] = {}
        self.started_ns = 0
        self.counts: dict[int, bytearray] = {}
        self.first_response: array = array("q")
        self.errors: list = []
        self.error_count = 0
        self.response_frames = 0
        self.pending = 0
        self.all_done: asyncio.Future | None = None
        self.measure = True
        self.wrong_runs: list[dict] = []

    def on_frame(self, sock: Socket, frame: dict, received: int) -> None:
        self.last_frame_ns = received
        kind = frame.get("type")
        if kind == "response":
            if sock.done:
                return
            self.response_frames += 1
            content = frame.get("content") or ""
            counts = self.counts.get(id(sock))
            if counts is None:
                return
            thread = sock.thread
            if (
                sock.role == "participant"
                and thread.get("sent_ns")
                and not thread.get("first_ns")
            ):
                thread["first_ns"] = received
                self.first_response.append((received - thread["sent_ns"]) // 1000)
            sent = thread.get("sent_ns")
            tokens = 0
            for index, stamp in TOKEN.findall(content):
                index = int(index)
                tokens += 1
                if 0 <= index < len(counts):
                    if counts[index] < 255:
                        counts[index] += 1
                if self.measure:
                    latency = (received - int(stamp)) // 1000
                    self.latencies.append(latency)
                    second = (received - self.started_ns) // 1_000_000_000
                    self.by_second.setdefault(second, array("q")).append(latency)
                    if sent:
                        due = sent + index * self.interval_ns
                        self.schedule.append((received - due) // 1000)
            if tokens and sent:
                thread["last_ns"] = received
                tick = (received - self.started_ns) // TICK_NS
                self.received_by_tick[tick] = (
                    self.received_by_tick.get(tick, 0) + tokens
                )
        elif kind == "state_complete":
            if sock.thread is not None and sock.thread.get("sent_ns") and not sock.done:
                if sock.role == "participant":
                    self.on_complete(sock.thread, frame.get("content"), received)
                sock.done = True
                self.pending -= 1
                if self.pending == 0 and self.all_done and not self.all_done.done():
                    self.all_done.set_result(True)
        elif kind == "error":
            self.error_count += 1
            if len(self.errors) < 5:
                self.errors.append(frame.get("content"))

    def on_complete(self, thread: dict, content, received: int) -> None:
        """The run's end as its participant saw it: when, its status, and
        whether its final text holds ``spec["expect_text"]`` (when given)."""
        content = content if isinstance(content, dict) else {}
        thread["complete_ns"] = received
        thread["status"] = content.get("status")
        expected = self.spec.get("expect_text")
        thread["text_ok"] = expected is None or expected in str(
            content.get("text") or ""
        )
        if thread["status"] != "completed" or not thread["text_ok"]:
            if len(self.wrong_runs) < 5:
                error = content.get("error") or {}
                self.wrong_runs.append(
                    {
                        "status": thread["status"],
                        "error": error.get("code") if isinstance(error, dict) else None,
                        "text_tail": str(content.get("text") or "")[-80:],
                    }
                )

    def completion_figures(self, threads: list[dict]) -> dict:
        """Message sent -> the participant's state_complete, and how the runs
        ended: completed with the expected text, or not (or never)."""
        durations = sorted(
            (t["complete_ns"] - t["sent_ns"]) / 1e6
            for t in threads
            if "complete_ns" in t
        )
        figures = {
            "runs": len(threads),
            "completed": sum(1 for t in threads if t.get("status") == "completed"),
            "right_text": sum(
                1 for t in threads if t.get("status") == "completed" and t["text_ok"]
            ),
            "never_completed": sum(1 for t in threads if "complete_ns" not in t),
            "expect_text": self.spec.get("expect_text"),
            "first_wrong": self.wrong_runs,
            "complete_p50_ms": None
            if not durations
            else round(percentile(durations, 50), 2),
            "complete_p99_ms": None
            if not durations
            else round(percentile(durations, 99), 2),
        }
        if self.spec.get("keep_completions"):
            figures["complete_ms"] = [round(d, 2) for d in durations]
            figures["sent_ns"] = sorted(t["sent_ns"] for t in threads)
        return figures

    async def run(self) -> dict:
        loop = asyncio.get_running_loop()
        threads = self.spec["threads"]
        specs, owners = [], []
        for thread in threads:
            for sock_spec in thread["sockets"]:
                specs.append(sock_spec)
                owners.append((thread, sock_spec.get("role", "observer")))
        sockets, connect = await connect_all(
            specs, self.on_frame, self.spec.get("concurrency", 50)
        )
        live = []
        for sock, (thread, role) in zip(sockets, owners, strict=False):
            if sock is None:
                continue
            sock.thread, sock.role = thread, role
            self.counts[id(sock)] = bytearray(self.tokens)
            thread.setdefault("live", []).append(sock)
            live.append(sock)
        # Let the connect phase end (snapshots, presence news to the other
        # sockets) before READY, so the load window's CPU is the load's own.
        connect["settle_seconds"] = await settle(lambda: self.last_frame_ns)
        emit("READY", connect)
        await wait_go()
        cpu_at_go = process_cpu_seconds()
        self.all_done = loop.create_future()
        runnable = [
            t
            for t in threads
            if any(s.role == "participant" for s in t.get("live", []))
        ]
        self.pending = sum(len(t["live"]) for t in runnable)
        message = words(self.tokens, self.spec.get("pad", 0))
        stagger = self.spec.get("stagger_s", 1.0)
        started = self.started_ns = now_ns()
        rng = random.Random(7)
        order = list(runnable)
        rng.shuffle(order)
        for position, thread in enumerate(order):
            due = started + int(stagger * 1e9 * position / max(1, len(order)))
            delay = (due - now_ns()) / 1e9
            if delay > 0:
                await asyncio.sleep(delay)
            participant = next(s for s in thread["live"] if s.role == "participant")
            frame = {"type": "message", "content": message}
            frame.update(self.spec.get("message_extra", {}))
            thread["sent_ns"] = now_ns()
            participant.send_json(frame)
        timeout = self.spec.get("timeout_s", 60)
        timed_out = False
        if self.pending > 0:
            try:
                await asyncio.wait_for(asyncio.shield(self.all_done), timeout)
            except TimeoutError:
                timed_out = True
        finished = now_ns()
        load_cpu = process_cpu_seconds() - cpu_at_go
        emit("DONE")
        window = (finished - started) / 1e9
        lost = doubled = delivered = 0
        incomplete_sockets = 0
        for sock in live:
            counts = self.counts[id(sock)]
            if sock.thread.get("sent_ns") is None:
                continue
            zeros = counts.count(0)
            lost += zeros
            delivered += self.tokens - zeros
            doubled += sum(c - 1 for c in counts if c > 1)
            if not sock.done:
                incomplete_sockets += 1
        for sock in live:
            sock.close()
        first = sorted(self.first_response)
        streamed = [t for t in runnable if t.get("sent_ns")]
        runs = self.run_figures(streamed, finished)
        rate = self.delivered_rate(streamed, runs["ideal_seconds"], finished)
        rate["asked_tokens_per_second"] = round(
            sum(len(t["live"]) for t in streamed) * 1e9 / self.interval_ns, 1
        )
        result = {
            "connect": connect,
            "threads": len(runnable),
            "sockets": len(live),
            "tokens_per_run": self.tokens,
            "window_seconds": round(window, 3),
            "window_started_monotonic": round(started / 1e9, 3),
            "timed_out": timed_out,
            "incomplete_sockets": incomplete_sockets,
            "expected_tokens": len(live) * self.tokens if runnable else 0,
            "delivered_tokens": delivered,
            "lost_tokens": lost
            + (connect["sockets"] - connect["opened"]) * self.tokens,
            "doubled_tokens": doubled,
            "response_frames": self.response_frames,
            **rate,
            "runs": runs,
            "load_cpu_seconds": round(load_cpu, 3),
            "latency": latency_stats(self.latencies),
            # raw: the harness subtracts the system's light-load first response
            "schedule_latency_raw": latency_stats(self.schedule),
            "p99_ms_by_second": {
                second: round(percentile(sorted(values), 99) / 1000, 1)
                for second, values in sorted(self.by_second.items())
            },
            "first_response": {
                "samples": len(first),
                "p50_ms": None if not first else round(percentile(first, 50) / 1000, 2),
                "p99_ms": None if not first else round(percentile(first, 99) / 1000, 2),
            },
            "error_frames": self.error_count,
            "first_errors": self.errors,
            "completion": self.completion_figures(streamed),
        }
        await asyncio.sleep(0.2)
        return result

    def run_figures(self, threads: list[dict], finished: int) -> dict:
        """Run duration = message send -> last token received on any socket of
        the thread, against the ideal tokens / tokens_per_second. A run that got
        no token at all counts as lasting until the point ended."""
        ideal = self.tokens * self.interval_ns / 1e9
        durations = sorted(
            (t.get("last_ns") or finished) - t["sent_ns"] for t in threads
        )
        if not durations:
            return {"ideal_seconds": ideal, "runs": 0}
        median = durations[len(durations) // 2] / 1e9
        slowest = durations[-1] / 1e9
        return {
            "ideal_seconds": ideal,
            "runs": len(durations),
            "median_seconds": round(median, 3),
            "p90_seconds": round(percentile(durations, 90) / 1e9, 3),
            "slowest_seconds": round(slowest, 3),
            "median_ratio": round(median / ideal, 3) if ideal else None,
            "slowest_ratio": round(slowest / ideal, 3) if ideal else None,
        }

    def delivered_rate(self, threads: list[dict], ideal: float, finished: int) -> dict:
        """Tokens delivered per second over the full-load window: from the last
        message sent (every run has started by the schedule) to the first run's
        ideal end (none should have finished yet). There the schedule asks for
        sockets x tokens_per_second; a system that starts late or lags delivers
        less. Without such a window (runs shorter than the stagger): from the
        first message to the last token received."""
        if not threads:
            return {"delivered_tokens_per_second": None}
        first = min(t["sent_ns"] for t in threads)
        last = max(t["sent_ns"] for t in threads)
        begin, end = last, first + int(ideal * 1e9)
        if end - begin < 10 * TICK_NS:
            begin = first
            end = max([t.get("last_ns") or finished for t in threads])
        low = -(-(begin - self.started_ns) // TICK_NS)  # first whole tick
        high = (end - self.started_ns) // TICK_NS  # ticks before this one
        count = sum(self.received_by_tick.get(tick, 0) for tick in range(low, high))
        seconds = (high - low) * TICK_NS / 1e9
        return {
            "delivered_tokens_per_second": round(count / seconds, 1)
            if seconds > 0
            else None,
            "rate_window_seconds": round(seconds, 3),
            "rate_window_offset_seconds": round(low * TICK_NS / 1e9, 3),
        }


TICK_NS = 10_000_000


def process_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def settle(last_frame_ns, quiet_s: float = 0.5, limit_s: float = 15.0) -> float:
    """Wait until no frame arrived for ``quiet_s`` (at most ``limit_s``)."""
    started = now_ns()
    while now_ns() - started < limit_s * 1e9:
        idle = (now_ns() - max(last_frame_ns(), started)) / 1e9
        if idle >= quiet_s:
            break
        await asyncio.sleep(quiet_s - idle)
    return round((now_ns() - started) / 1e9, 3)


# --- idle: connection capacity --------------------------------------------


async def idle_mode(spec: dict) -> dict:
    targets = spec["targets"]
    count = spec["count"]
    specs = [targets[i % len(targets)] for i in range(count)]
    sockets, connect = await connect_all(specs, ignore, spec.get("concurrency", 100))
    await asyncio.sleep(spec.get("settle_s", 2.0))
    still_open = sum(1 for s in sockets if s is not None and not s.closed.done())
    connect["still_open_after_settle"] = still_open
    emit("READY", connect)
    await wait_go()
    emit("DONE")
    still_open = sum(1 for s in sockets if s is not None and not s.closed.done())
    # Why the others closed (close code; None: the connection just dropped).
    close_codes: dict[str, int] = {}
    for sock in sockets:
        if sock is not None and sock.closed.done():
            code = str(sock.closed.result())
            close_codes[code] = close_codes.get(code, 0) + 1
    for sock in sockets:
        if sock is not None:
            sock.close()
    await asyncio.sleep(0.5)
    connect["still_open_at_end"] = still_open
    connect["close_codes"] = close_codes
    return connect


# --- resume: catch-up after missed events -----------------------------------


async def resume_mode(spec: dict) -> dict:
    participant_spec, observer_spec = spec["participant"], spec["observer"]
    target = spec.get("missed_events", 1000)
    loop = asyncio.get_running_loop()
    state: dict = {"waiter": None, "until": None, "events": [], "max_event": 0}

    def on_frame(sock: Socket, frame: dict, received: int) -> None:
        event_id = frame.get("event_id")
        if sock.role == "observer" and event_id is not None:
            state["events"].append(event_id)
            state["max_event"] = max(state["max_event"], event_id)
        if frame.get("type") == "state_complete" and sock.role == state.get(
            "wait_role"
        ):
            state["last_complete_event"] = event_id
            waiter = state["waiter"]
            if waiter is not None and not waiter.done():
                if state["until"] is None or (
                    event_id is not None and event_id >= state["until"]
                ):
                    waiter.set_result(received)
        elif (
            sock.role == state.get("wait_role")
            and state["until"] is not None
            and event_id is not None
            and event_id >= state["until"]
        ):
            waiter = state["waiter"]
            if waiter is not None and not waiter.done():
                waiter.set_result(received)

    async def run_message(participant: Socket, text: str, wait_role: str) -> None:
        state["wait_role"], state["until"] = wait_role, None
        state["waiter"] = loop.create_future()
        participant.send_json({"type": "message", "content": text})
        await asyncio.wait_for(state["waiter"], 120)

    participant = await open_socket(
        participant_spec["url"],
        participant_spec.get("headers", ()),
        participant_spec.get("subprotocols", ()),
        on_frame,
    )
    participant.role = "participant"
    emit("READY", {})
    await wait_go()
    rounds = []
    for _ in range(spec.get("repeats", 3)):
        observer = await open_socket(
            observer_spec["url"],
            observer_spec.get("headers", ()),
            observer_spec.get("subprotocols", ()),
            on_frame,
        )
        observer.role = "observer"
        state["events"], state["max_event"] = [], 0
        # Calibrate: how many events does a one-word reply make, beside its word?
        await run_message(participant, "t0", "observer")
        await asyncio.sleep(0.2)
        seen_before = state["max_event"]
        overhead = max(0, len([e for e in state["events"]]) - 1)
        observer.close()
        await observer.closed
        # While the observer is away, a reply of ~`target` events streams.
        words_needed = max(1, target - overhead - target // 100)
        await run_message(participant, words(words_needed), "participant")
        final_event = state["last_complete_event"]
        missed = (final_event or 0) - seen_before
        # Reconnect with last_event_id and time the catch-up.
        state["events"], state["max_event"] = [], 0
        state["wait_role"], state["until"] = "observer", final_event
        state["waiter"] = loop.create_future()
        sep = "&" if "?" in observer_spec["url"] else "?"
        started = now_ns()
        observer = await open_socket(
            f"{observer_spec['url']}{sep}last_event_id={seen_before}",
            observer_spec.get("headers", ()),
            observer_spec.get("subprotocols", ()),
            on_frame,
        )
        observer.role = "observer"
        opened = now_ns()
        try:
            caught_up = await asyncio.wait_for(state["waiter"], 30)
        except TimeoutError:
            caught_up = None
        replayed = [e for e in state["events"] if seen_before < e <= (final_event or 0)]
        rounds.append(
            {
                "missed_events": missed,
                "replayed_events": len(replayed),
                "replayed_unique": len(set(replayed)),
                "catch_up_ms": None
                if caught_up is None
                else round((caught_up - started) / 1e6, 2),
                "catch_up_after_open_ms": None
                if caught_up is None
                else round((caught_up - opened) / 1e6, 2),
            }
        )
        observer.close()
        await asyncio.sleep(0.3)
    emit("DONE")
    participant.close()
    return {"rounds": rounds}


# --- stall: a socket that stops reading ---------------------------------------


async def stall_mode(spec: dict) -> dict:
    """Normal threads stream at the usual pace while a busy thread streams large
    tokens fast; one observer of the busy thread stops reading (when ``stall``)."""
    normal = StreamLoad({**spec["normal"], "tokens": spec["normal"]["tokens"]})
    busy_thread = spec["busy"]
    busy_lat = array("q")
    busy_state = {"complete": None, "runs": 0}
    loop = asyncio.get_running_loop()

    def on_busy(sock: Socket, frame: dict, received: int) -> None:
        kind = frame.get("type")
        if kind == "response" and sock.role == "observer":
            for _, stamp in TOKEN.findall(frame.get("content") or ""):
                busy_lat.append((received - int(stamp)) // 1000)
        elif kind == "state_complete" and sock.role == "participant":
            waiter = busy_state["complete"]
            if waiter is not None and not waiter.done():
                waiter.set_result(True)

    busy_sockets = {}
    for sock_spec in busy_thread["sockets"]:
        role = sock_spec["role"]
        sock = await open_socket(
            sock_spec["url"],
            sock_spec.get("headers", ()),
            sock_spec.get("subprotocols", ()),
            on_busy,
            sock_spec.get("rcvbuf"),
        )
        sock.role = role if role in ("participant", "stalled") else "observer"
        busy_sockets[role] = sock
    stalled = busy_sockets.get("stalled")

    async def busy_loop(deadline: float) -> None:
        participant = busy_sockets["participant"]
        text = words(busy_thread["tokens"], busy_thread.get("pad", 0))
        while loop.time() < deadline:
            busy_state["complete"] = loop.create_future()
            frame = {"type": "message", "content": text}
            frame.update(busy_thread.get("message_extra", {}))
            if participant.closed.done():
                busy_state["participant_closed"] = participant.close_code
                break
            participant.send_json(frame)
            try:
                await asyncio.wait_for(
                    busy_state["complete"], max(1, deadline - loop.time() + 30)
                )
            except TimeoutError:
                break
            busy_state["runs"] += 1

    # StreamLoad does the normal threads' READY/GO/DONE; start the busy thread
    # and the stall when GO arrives (the on-GO hook below).
    original_wait = globals()["wait_go"]

    async def wait_go_and_start() -> None:
        await original_wait()
        if spec.get("stall") and stalled is not None and stalled.transport is not None:
            stalled.transport.pause_reading()
        busy_state["task"] = asyncio.create_task(
            busy_loop(loop.time() + spec["duration_s"])
        )

    globals()["wait_go"] = wait_go_and_start
    try:
        result = await normal.run()
    finally:
        globals()["wait_go"] = original_wait
    task = busy_state.get("task")
    if task is not None:
        await task
    stalled_outcome = None
    if stalled is not None:
        closed_by_server = stalled.closed.done()
        buffered = stalled.transport.get_write_buffer_size() if stalled.transport else 0
        if stalled.transport is not None and not stalled.transport.is_closing():
            stalled.transport.resume_reading()
        try:
            await asyncio.wait_for(asyncio.shield(stalled.closed), 3)
        except TimeoutError:
            pass
        stalled_outcome = {
            "closed_by_server_during_stall": closed_by_server,
            "close_code": stalled.close_code,
            "bytes_received": stalled.bytes,
            "client_write_buffer": buffered,
        }
    close_codes = {
        role: sock.close_code
        for role, sock in busy_sockets.items()
        if sock.closed.done()
    }
    for sock in busy_sockets.values():
        sock.close()
    result["busy"] = {
        "runs_completed": busy_state["runs"],
        "closed_during_run": close_codes,
        "observer_bytes": busy_sockets["observer"].bytes
        if "observer" in busy_sockets
        else None,
        "observer_latency": latency_stats(busy_lat),
        "stalled_socket": stalled_outcome,
    }
    return result


async def main(spec: dict) -> dict:
    mode = spec["mode"]
    if mode == "stream":
        return await StreamLoad(spec).run()
    if mode == "idle":
        return await idle_mode(spec)
    if mode == "resume":
        return await resume_mode(spec)
    if mode == "stall":
        return await stall_mode(spec)
    raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    with open(sys.argv[1]) as handle:
        spec = json.load(handle)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    result = asyncio.run(main(spec))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    # the whole process, connects included; the load window's own share is
    # load_cpu_seconds (stream modes)
    result["loadgen_cpu_seconds_total"] = round(usage.ru_utime + usage.ru_stime, 3)
    result["loadgen_pid"] = os.getpid()
    emit("RESULT", result)
