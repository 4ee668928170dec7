"""Parley's Prometheus metrics: the one module other code calls to count things.

Every hook here is an increment or an observation of a number already in hand:
no database query, no I/O, safe from any thread and from async code. The one
exception is `run_finished` for a run whose agent is not loaded, which reads
the agent's name once a minute per agent (a cache below); it is called once per
reply, in the database thread that finishes it.

Processes: daphne and `runworker agent-runs` are separate processes, and the
worker is where runs start and end. With `PROMETHEUS_MULTIPROC_DIR` set (before
the process starts; prometheus-client reads it at import) every process writes
its samples to files in that directory and `/metrics`, served by any daphne,
adds up the files of all processes on the host: counters summed, per-process
gauges labelled with `pid` (docs/deploy.md). Without it, `/metrics` reports the
process that serves it, which is the whole story in the embedded mode (worker
inside daphne) only.

Gauges that describe the system rather than a process (runs queued and running)
are read from the database when `/metrics` is scraped (`DatabaseCollector`),
so they are right however many processes there are.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

logger = logging.getLogger(__name__)

CONTENT_TYPE = CONTENT_TYPE_LATEST

_AGENT = ["agent", "provider"]

RUNS_STARTED = Counter(
    "parley_runs_started",
    "Runs a worker claimed and started, by agent and provider.",
    _AGENT,
)
RUNS_FINISHED = Counter(
    "parley_runs_finished",
    "Runs that ended, by agent, provider and status (completed, failed, cancelled).",
    [*_AGENT, "status"],
)
TOKENS = Counter(
    "parley_tokens",
    "Tokens the providers reported, by agent, provider and direction (input, output).",
    [*_AGENT, "direction"],
)
PROVIDER_ERRORS = Counter(
    "parley_run_errors",
    "Failed runs by agent, provider and error code (provider_error, "
    "provider_timeout, worker_lost, ...).",
    [*_AGENT, "code"],
)
MESSAGES_POSTED = Counter(
    "parley_messages_posted", "User messages that entered a thread (socket and API)."
)
EVENTS_PUBLISHED = Counter(
    "parley_events_published",
    "Thread events published (every frame with an event_id: chunks, states, ...); "
    "rate() gives frames per second.",
)
OPEN_SOCKETS = Gauge(
    "parley_open_websockets",
    "Thread WebSockets open in this process.",
    multiprocess_mode="liveall",
)
WORKER_RUNS_IN_FLIGHT = Gauge(
    "parley_worker_runs_in_flight",
    "Runs this worker process is executing now (its PARLEY_WORKER_CONCURRENCY "
    "slots in use).",
    multiprocess_mode="liveall",
)
FIRST_RESPONSE = Histogram(
    "parley_first_response_seconds",
    "From the user's message being stored to the first chunk of the reply being "
    "published.",
    _AGENT,
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
QUEUE_WAIT = Histogram(
    "parley_run_queue_wait_seconds",
    "From a run being queued to a worker claiming it.",
    _AGENT,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)

# --- hooks (one line at each call site) ----------------------------------------


def run_started(run) -> None:
    """A worker claimed `run` (agents.services.run_claim; its agent loaded)."""
    agent, provider = _agent_labels(run)
    RUNS_STARTED.labels(agent, provider).inc()
    if run.created_at is not None and run.started_at is not None:
        waited = (run.started_at - run.created_at).total_seconds()
        QUEUE_WAIT.labels(agent, provider).observe(max(waited, 0.0))


def run_finished(run) -> None:
    """`run` ended (its status, usage and error_code set): count it, its tokens
    and, for a failure, its error code. Call once per run, where it ends."""
    agent, provider = _agent_labels(run)
    status = str(run.status)
    RUNS_FINISHED.labels(agent, provider, status).inc()
    usage = run.usage or {}
    for direction in ("input", "output"):
        count = usage.get(f"{direction}_tokens")
        if isinstance(count, int) and count > 0:
            TOKENS.labels(agent, provider, direction).inc(count)
    if status == "failed":
        PROVIDER_ERRORS.labels(agent, provider, run.error_code or "unknown").inc()


def first_response(run) -> None:
    """The first chunk of `run`'s reply was published (worker)."""
    if run.created_at is None:
        return
    agent, provider = _agent_labels(run)
    waited = time.time() - run.created_at.timestamp()
    FIRST_RESPONSE.labels(agent, provider).observe(max(waited, 0.0))


def messages_posted(count: int = 1) -> None:
    if count > 0:
        MESSAGES_POSTED.inc(count)


def event_published() -> None:
    EVENTS_PUBLISHED.inc()


def socket_opened() -> None:
    OPEN_SOCKETS.inc()


def socket_closed() -> None:
    OPEN_SOCKETS.dec()


def worker_run_began() -> None:
    WORKER_RUNS_IN_FLIGHT.inc()


def worker_run_ended() -> None:
    WORKER_RUNS_IN_FLIGHT.dec()


# --- agent labels --------------------------------------------------------------

AGENT_LABELS_SECONDS = 60.0
_agent_labels_cache: dict[int, tuple[float, tuple[str, str]]] = {}


def _agent_labels(run) -> tuple[str, str]:
    """(name, provider) of the run's agent: from the run when its agent is loaded,
    else from a per-process cache (a minute; ops.receivers drops an entry when
    the agent is saved here) filled from the database."""
    from agents.models import AgentConfig, Run

    if Run._meta.get_field("agent").is_cached(run):
        agent = run.agent
        labels = (agent.name, agent.provider)
        _agent_labels_cache[agent.pk] = (time.monotonic(), labels)
        return labels
    cached = _agent_labels_cache.get(run.agent_id)
    if cached is not None and time.monotonic() - cached[0] < AGENT_LABELS_SECONDS:
        return cached[1]
    row = (
        AgentConfig.objects.filter(pk=run.agent_id)
        .values_list("name", "provider")
        .first()
    )
    labels = tuple(row) if row else ("unknown", "unknown")
    _agent_labels_cache[run.agent_id] = (time.monotonic(), labels)
    return labels


def forget_agent(agent_id) -> None:
    _agent_labels_cache.pop(agent_id, None)


# --- exposition ----------------------------------------------------------------


def multiprocess_directory() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class DatabaseCollector:
    """Scrape-time gauges read from the database, right across all processes."""

    def collect(self):
        from django.db.models import Count

        from agents.models import ACTIVE_RUN_STATUSES, Run

        active = GaugeMetricFamily(
            "parley_runs_active",
            "Runs queued or running now, by agent, provider and status (database).",
            labels=[*_AGENT, "status"],
        )
        depth = GaugeMetricFamily(
            "parley_run_queue_depth",
            "Runs waiting for a worker now (status queued, database).",
        )
        up = GaugeMetricFamily(
            "parley_metrics_database_up",
            "1 when the database answered this scrape's queries, else 0.",
        )
        try:
            rows = list(
                Run.objects.filter(status__in=ACTIVE_RUN_STATUSES)
                .values("agent__name", "agent__provider", "status")
                .annotate(count=Count("id"))
                .order_by()
            )
        except Exception as error:  # the process metrics are still worth serving
            logger.warning("metrics: database gauges unavailable: %s", error)
            up.add_metric([], 0)
            yield up
            return
        queued = 0
        for row in rows:
            active.add_metric(
                [row["agent__name"], row["agent__provider"], row["status"]],
                row["count"],
            )
            if row["status"] == "queued":
                queued += row["count"]
        depth.add_metric([], queued)
        up.add_metric([], 1)
        yield from (active, depth, up)


_database_registry = CollectorRegistry(auto_describe=False)
_database_registry.register(DatabaseCollector())

_LIVE_GAUGE_FILE = re.compile(r"gauge_live\w+?_(\d+)\.db$")


def forget_dead_processes(directory: str) -> None:
    """Drop the per-process gauge files of processes that are gone (a worker that
    was killed never says so), so `live*` gauges show only running processes.
    Processes share the host in multiprocess mode, so their pids can be checked."""
    dead = set()
    for path in glob.glob(os.path.join(directory, "gauge_live*.db")):
        match = _LIVE_GAUGE_FILE.search(os.path.basename(path))
        if match and not _alive(int(match.group(1))):
            dead.add(int(match.group(1)))
    for pid in dead:
        mark_process_dead(pid, directory)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def exposition() -> bytes:
    """Every metric in the Prometheus text format: this process's (or, in
    multiprocess mode, every process's on the host) and the database gauges."""
    directory = multiprocess_directory()
    if directory:
        forget_dead_processes(directory)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=directory)
    else:
        registry = REGISTRY
    return generate_latest(registry) + generate_latest(_database_registry)
