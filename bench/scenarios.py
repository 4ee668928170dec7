"""The scenarios: what load each system gets, and how one point is measured.

``run_loadgen`` runs bench/loadgen.py for one point in a process of its own and
reads the CPU of every process involved over the load window. ``Bench`` holds
the run's results (saved to results.json after every point) and runs the
scenarios of bench/README.md on the systems that started:

- ``light``: K = LIGHT_K, first, since its message -> first response p50 is each
  system's schedule-latency offset;
- ``capacity``: the sweep over K, the systems interleaved, each K repeated,
  a system stopping at its first failing K;
- ``resume``: catch-up after missed events (Parley);
- ``stall``: one observer of a busy thread stops reading;
- ``connections``: idle sockets on one daphne;
- ``scaleout``: the capacity sweep on two daphne and two workers;
- ``toolstep``: the cost of a tool step on parley-openai, runs of an agent that
  calls ``calculate`` once against runs of the same agent without tools.

Before each point ``wait_quiet`` waits for the bench's own servers to go idle and
for the rest of the machine to calm down.
"""

from __future__ import annotations

import json
import os
import platform
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

from bench import criteria
from bench.figures import derive, judge, percentile, summarize, toolstep_summary
from bench.processes import (
    PYTHON,
    ROOT,
    PostgresMeter,
    Services,
    busy_cpu_seconds,
    cpu_seconds,
    log,
    postgres_backends,
    rss_bytes,
    stop,
    track,
)
from bench.systems import ParleyOpenAISystem, ParleySystem, System, make_system

TOKENS_PER_SECOND = 50
SCENARIOS = (
    "capacity",
    "light",
    "connections",
    "resume",
    "stall",
    "scaleout",
    "toolstep",
)
LIGHT_K = 10
CONNECTION_THREADS = 300
STALL_NORMAL_K = 10
# toolstep: short replies (50 words at 50/s), the tool agent's must hold the
# calculate tool's answer to 6*7.
TOOLSTEP_TOKENS = 50
TOOLSTEP_EXPECT = "42"
TOOLSTEP_KINDS = {"echo": "plain", "tools": "tools"}
# At most this long a quiet-machine wait before each toolstep batch (not the
# full --quiet-wait): its figures are ratios of alternating batches, and so the
# scenario stays under a minute in the default set.
TOOLSTEP_QUIET_WAIT_S = 5.0
# Before each point: the rest of the machine must use less than this many cores
# (averaged over QUIET_SAMPLE_S) for up to --quiet-wait seconds.
QUIET_OTHER_CORES = 0.25
QUIET_SAMPLE_S = 2.0


class LoadgenError(RuntimeError):
    pass


def run_loadgen(
    system: System,
    spec: dict,
    workdir: Path,
    timeout: float = 300,
    sample_rss: bool = False,
    before_go=None,
) -> dict:
    spec_path = Path(tempfile.mkstemp(prefix="spec-", suffix=".json", dir=workdir)[1])
    spec_path.write_text(json.dumps(spec))
    env = system.env()
    proc = subprocess.Popen(
        [PYTHON, "-m", "bench.loadgen", str(spec_path)],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=open(workdir / "loadgen.log", "ab"),
        text=True,
        start_new_session=True,
    )
    track(proc)
    lines: queue.Queue = queue.Queue()

    def pump() -> None:
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout

    def expect(tag: str) -> str:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LoadgenError(f"load generator: no {tag} within {timeout:.0f} s")
            try:
                line = lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise LoadgenError(
                    f"load generator exited before {tag} (see loadgen.log)"
                )
            if line.startswith(tag):
                return line[len(tag) :].strip()

    samples: list[tuple[float, int]] = []
    stop_sampling = threading.Event()

    def sample() -> None:
        pid = system.daphne[0].pid
        while not stop_sampling.is_set():
            samples.append((time.monotonic(), rss_bytes(pid)))
            stop_sampling.wait(0.25)

    try:
        ready = json.loads(expect("READY") or "{}")
        extra = before_go(ready) if before_go else {}
        rss_before = rss_bytes(system.daphne[0].pid)
        postgres = PostgresMeter(system.database())
        postgres.start()
        cpu_before = system.cpu()
        loadgen_before = cpu_seconds([proc.pid])
        machine_before = busy_cpu_seconds()
        started = time.monotonic()
        sampler = None
        if sample_rss:
            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
        proc.stdin.write("GO\n")
        proc.stdin.flush()
        expect("DONE")
        elapsed = time.monotonic() - started
        cpu_after = system.cpu()
        loadgen_cpu = cpu_seconds([proc.pid]) - loadgen_before
        machine_cpu = busy_cpu_seconds() - machine_before
        postgres_cpu = postgres.stop()
        stop_sampling.set()
        if sampler:
            sampler.join()
        result = json.loads(expect("RESULT"))
        proc.wait(30)
    finally:
        stop_sampling.set()
        if proc.poll() is None:
            stop([proc], grace=2)
        spec_path.unlink(missing_ok=True)
    result["ready"] = ready
    result.update(extra or {})
    result["cpu_window_seconds"] = round(elapsed, 3)
    result["cpu_seconds"] = {
        k: round(cpu_after[k] - cpu_before[k], 3) for k in cpu_after
    }
    result["cpu_seconds"]["postgres"] = round(postgres_cpu, 3)
    # The load generator's own clock covers GO to DONE only (stream modes); the
    # harness's covers READY to DONE, after the connects as well.
    loadgen_cpu = result.get("load_cpu_seconds", loadgen_cpu)
    result["loadgen_cpu_seconds_window"] = round(loadgen_cpu, 3)
    result["loadgen_cpu_share"] = round(loadgen_cpu / elapsed, 3) if elapsed else None
    # Everything else the machine did meanwhile (other users' jobs): a large
    # share means the point competed for the two cores and is suspect.
    ours = sum(result["cpu_seconds"].values()) + loadgen_cpu
    result["other_cpu_share"] = (
        round(max(0.0, machine_cpu - ours) / elapsed, 3) if elapsed else None
    )
    result["daphne_rss_before"] = rss_before
    if samples:
        result["daphne_rss_samples"] = [(round(t - started, 2), r) for t, r in samples]
    return result


def stream_spec(
    system: System, k: int, tokens: int, kind: str = "echo", **extra
) -> dict:
    return {
        "mode": "stream",
        "threads": system.threads(k, kind),
        "tokens": tokens,
        "tokens_per_second": TOKENS_PER_SECOND,
        "stagger_s": extra.pop("stagger_s", 1.0),
        # A token later than 15 s is as good as lost: stop waiting, save time.
        "timeout_s": extra.pop("timeout_s", tokens / TOKENS_PER_SECOND + 1 + 15),
        "message_extra": system.message_extra(kind),
        "concurrency": 50,
        **extra,
    }


class Bench:
    def __init__(self, args, workdir: Path, services: Services) -> None:
        self.args = args
        self.workdir = workdir
        self.services = services
        self.results: dict = {
            "meta": {
                "started": datetime.now().isoformat(timespec="seconds"),
                "host": platform.node(),
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "quick": args.quick,
                "tokens_per_run": args.tokens,
                "repeats": args.repeats,
                "tokens_per_second": TOKENS_PER_SECOND,
                "criterion": asdict(criteria.LIMITS),
                "quiet_other_cores": QUIET_OTHER_CORES,
                "argv": sys.argv[1:],
            },
            "systems": {},
            "capacity": {},
        }
        self.systems: dict[str, System] = {}

    def run(self) -> None:
        """Every scenario asked for on the systems asked for: the one-daphne
        scenarios on one start of each system, then scale-out on a fresh one."""
        wanted = self.args.scenarios
        if any(
            s in wanted
            for s in ("capacity", "light", "connections", "resume", "stall", "toolstep")
        ):
            systems = self.start_systems(list(self.args.systems), 1, 1)
            by_name = {s.name: s for s in systems}
            # Light load first: the capacity criterion needs each system's
            # light-load first response.
            if ("light" in wanted or "capacity" in wanted) and systems:
                self.light(systems)
            if "capacity" in wanted and systems:
                self.sweep("single", systems, self.args.ks)
            if "toolstep" in wanted and "parley-openai" in by_name:
                self.toolstep(by_name["parley-openai"])
            if "resume" in wanted and "parley" in by_name:
                self.resume(by_name["parley"])
            if "stall" in wanted:
                chosen = [
                    by_name[n]
                    for n in ("parley", "tutorial-shortcut", "tutorial-core")
                    if n in by_name
                ]
                if chosen:
                    self.stall(chosen[:2])
            if "connections" in wanted:
                chosen = [
                    by_name[n]
                    for n in ("parley", "tutorial-core", "ceiling")
                    if n in by_name
                ]
                self.connections(chosen)
            self.stop_systems()
        if "scaleout" in wanted:
            names = [
                n
                for n in self.args.systems
                if n in ("parley", "tutorial-core", "tutorial-shortcut", "ceiling")
            ]
            systems = self.start_systems(names, 2, 2)
            if systems:
                self.sweep("scaleout", systems, self.args.scaleout_ks)
            self.stop_systems()

    def save(self) -> None:
        (self.workdir / "results.json").write_text(json.dumps(self.results, indent=1))

    def mark(self, system: System, ok: bool, reason: str = "") -> None:
        system.available = ok
        system.reason = reason
        self.results["systems"][system.name] = {
            "label": system.label,
            "available": ok,
            "reason": reason,
        }

    def start_systems(
        self, names: list[str], daphnes: int, workers: int
    ) -> list[System]:
        started = []
        for name in names:
            system = self.systems.get(name) or make_system(
                name, self.services, self.workdir
            )
            self.systems[name] = system
            if name in self.results["systems"] and not system.available:
                continue
            try:
                if name not in self.results["systems"]:
                    system.prepare()
                system.start(daphnes, workers)
                spec = stream_spec(system, 2, 20, timeout_s=30)
                warm = run_loadgen(system, spec, self.workdir, timeout=90)
                if warm.get("lost_tokens") or warm.get("timed_out"):
                    raise RuntimeError(
                        f"warm-up lost {warm.get('lost_tokens')} of {warm.get('expected_tokens')} "
                        f"tokens; errors: {warm.get('first_errors')}"
                    )
                self.mark(system, True)
                started.append(system)
                log(
                    f"{name}: up ({daphnes} daphne, {workers} worker) on ports {system.ports}"
                )
            except Exception as exc:  # noqa: BLE001 - a system that cannot run is skipped
                reason = (
                    str(exc).strip().splitlines()[-1] if str(exc).strip() else repr(exc)
                )
                self.mark(system, False, reason[:500])
                log(f"{name}: SKIPPED - {exc}")
                system.stop()
        self.save()
        return started

    def wait_quiet(self, limit: float = 20.0, quiet_wait: float | None = None) -> dict:
        """Wait until the bench's own server processes are idle (< 5 % of a core),
        then, for at most ``--quiet-wait`` seconds, until the rest of the machine
        uses less than QUIET_OTHER_CORES over QUIET_SAMPLE_S (other people's jobs
        share the cores). Returns what it saw, kept with the point."""
        servers = [
            pid
            for s in self.systems.values()
            for role in ("daphne", "worker")
            for pid in s.roles()[role]
        ]
        started = time.monotonic()
        deadline = started + limit
        while True:
            before = cpu_seconds(servers)
            time.sleep(0.5)
            if cpu_seconds(servers) - before < 0.025:
                break
            if time.monotonic() > deadline:
                log("  (servers still busy after waiting; going on)")
                break
        ours = servers + [
            pid for s in self.systems.values() for pid in s.roles()["redis"]
        ]
        ours += postgres_backends(self.services.database_name)
        if quiet_wait is None:
            quiet_wait = self.args.quiet_wait
        deadline = time.monotonic() + quiet_wait
        other, quiet = None, False
        while True:
            machine, own = busy_cpu_seconds(), cpu_seconds(ours)
            time.sleep(QUIET_SAMPLE_S)
            used = (busy_cpu_seconds() - machine) - (cpu_seconds(ours) - own)
            other = max(0.0, used) / QUIET_SAMPLE_S
            quiet = other < QUIET_OTHER_CORES
            if quiet or time.monotonic() >= deadline:
                break
        seen = {
            "waited_seconds": round(time.monotonic() - started, 1),
            "other_cores": round(other, 2),
            "quiet": quiet,
            "load_average_1m": round(os.getloadavg()[0], 2),
        }
        if not quiet:
            log(
                f"  (machine not quiet: {seen['other_cores']} cores of other CPU "
                f"after {seen['waited_seconds']} s; going on)"
            )
        return seen

    def restart(self, system: System) -> None:
        daphnes, workers = len(system.daphne), len(system.workers)
        log(f"  restarting {system.name} (it fell behind)")
        system.stop()
        system.start(daphnes, max(workers, 1) if system.name != "ceiling" else workers)

    def stop_systems(self) -> None:
        for system in self.systems.values():
            system.stop()

    def sweep(self, phase: str, systems: list[System], ks: list[int]) -> None:
        """Capacity sweep; points interleave the systems, each K repeated. A
        point already measured (K = 10 by the light scenario) is reused."""
        store = self.results["capacity"].setdefault(phase, {})
        active = list(systems)
        for k in ks:
            if not active:
                break
            # The ceiling only needs to bound the others: stop it once it is the
            # only system left.
            if all(s.name == "ceiling" for s in active) and len(systems) > 1:
                break
            for rep in range(self.args.repeats):
                order = active[rep % len(active) :] + active[: rep % len(active)]
                for system in order:
                    done = store.get(system.name, {}).get("points", {}).get(str(k), [])
                    if len(done) <= rep:
                        self.point(phase, system, k, rep, store)
            still = []
            for system in active:
                summary = self.judge(phase, system.name, k)
                if summary["passed"]:
                    store[system.name]["capacity"] = k
                    still.append(system)
                else:
                    store[system.name]["first_failing_k"] = k
            active = still
            self.save()

    def light_first_response(self, name: str) -> float | None:
        """The system's light-load message -> first response p50 (median of the
        K = 10 repeats of this run): the offset of its schedule latency."""
        entry = self.results["capacity"].get("single", {}).get(name, {})
        points = entry.get("points", {}).get(str(LIGHT_K), [])
        values = [
            p["figures"]["first_response_p50_ms"]
            for p in points
            if p["figures"].get("first_response_p50_ms") is not None
        ]
        return statistics.median(values) if values else None

    def judge(self, phase: str, name: str, k: int, quiet: bool = False) -> dict:
        """Verdict of every repeat at K, then of K itself (bench/criteria.py)."""
        entry = self.results["capacity"][phase][name]
        offset = self.light_first_response(name)
        entry["light_first_response_ms"] = offset
        points = entry["points"].get(str(k), [])
        for point in points:
            judge(point["figures"], offset)
        summary = summarize(points) if points else {"passed": False, "failures": []}
        entry["summary"][str(k)] = summary
        if quiet:
            return summary
        verdict = (
            "pass" if summary["passed"] else "FAIL " + ", ".join(summary["failures"])
        )
        log(
            f"{phase} K={k} {name}: run median/slowest "
            f"{summary.get('run_median_ratio')}/{summary.get('run_slowest_ratio')} x "
            f"ideal, schedule p99 {summary.get('schedule_p99_ms')} ms, first response "
            f"p99 {summary.get('first_response_p99_ms')} ms, stamp p99 "
            f"{summary.get('stamp_p99_ms')} ms, lost {summary.get('lost')}, doubled "
            f"{summary.get('doubled')} -> {verdict}"
        )
        return summary

    def point(self, phase: str, system: System, k: int, rep: int, store: dict) -> None:
        entry = store.setdefault(
            system.name,
            {"points": {}, "summary": {}, "capacity": 0, "first_failing_k": None},
        )
        quiet = None
        try:
            quiet = self.wait_quiet()
            spec = stream_spec(system, k, self.args.tokens)
            result = run_loadgen(
                system, spec, self.workdir, timeout=spec["timeout_s"] + 180
            )
            result["figures"] = derive(result)
            stamp_p99 = result["figures"].get("stamp_p99_ms") or 0
            if result.get("timed_out") or stamp_p99 > 1000:
                # An overloaded system keeps draining its backlog after the load
                # generator gave up; restart it so the next point starts clean.
                self.restart(system)
        except Exception as exc:  # noqa: BLE001 - a broken point fails, the run goes on
            log(f"{phase} K={k} {system.name} rep {rep}: error {exc}")
            result = {
                "error": str(exc)[:500],
                "figures": {"error": True, "lost": None, "doubled": None},
            }
        result["k"], result["rep"], result["quiet"] = k, rep, quiet
        entry["points"].setdefault(str(k), []).append(result)
        figures = result["figures"]
        log(
            f"  {phase} K={k} rep {rep + 1} {system.name}: run median/slowest "
            f"{figures.get('run_median_ratio')}/{figures.get('run_slowest_ratio')} x, "
            f"schedule p99 (raw) {figures.get('schedule_raw_p99_ms')} ms, first "
            f"response p50/p99 {figures.get('first_response_p50_ms')}/"
            f"{figures.get('first_response_p99_ms')} ms, stamp p99 "
            f"{figures.get('stamp_p99_ms')} ms, lost {figures.get('lost')}, dup "
            f"{figures.get('doubled')}, {figures.get('tokens_per_second')}/"
            f"{figures.get('asked_tokens_per_second')} tok/s, CPU server/loadgen/other "
            f"{figures.get('server_cpu_share')}/{figures.get('loadgen_cpu_share')}/"
            f"{figures.get('other_cpu_share')}"
        )

    def light(self, systems: list[System]) -> None:
        """K = 10, measured before the capacity sweep (which reuses these points):
        its first response is the offset of every point's schedule latency."""
        store = self.results["capacity"].setdefault("single", {})
        for rep in range(self.args.repeats):
            for system in systems[rep % len(systems) :] + systems[: rep % len(systems)]:
                entry = (
                    store.get(system.name, {}).get("points", {}).get(str(LIGHT_K), [])
                )
                if len(entry) > rep:
                    continue
                self.point("single", system, LIGHT_K, rep, store)
        for system in systems:
            if store.get(system.name, {}).get("points", {}).get(str(LIGHT_K)):
                # the capacity sweep logs it with its first K
                capacity_next = "capacity" in self.args.scenarios
                self.judge("single", system.name, LIGHT_K, quiet=capacity_next)
        self.save()

    def connections(self, systems: list[System]) -> None:
        out = self.results.setdefault("connections", {})
        for system in systems:
            try:
                # Sockets spread over 300 threads whatever ran before (with only
                # a few threads, each connect's presence news reaches thousands
                # of sockets and the per-thread client limit caps the count).
                threads = system.threads(CONNECTION_THREADS)
                targets = []
                for thread in threads:
                    for sock in thread["sockets"]:
                        targets.append(
                            {
                                "url": f"ws://127.0.0.1:{system.ports[0]}/ws/threads/{thread['id']}/",
                                "headers": sock.get("headers", []),
                            }
                        )
                rss_before = rss_bytes(system.daphne[0].pid)

                def measure(ready: dict, pid: int = system.daphne[0].pid) -> dict:
                    time.sleep(1.0)
                    return {"daphne_rss_connected": rss_bytes(pid)}

                spec = {
                    "mode": "idle",
                    "targets": targets,
                    "count": self.args.idle_sockets,
                    "concurrency": 100,
                    "settle_s": 2.0,
                }
                result = run_loadgen(
                    system, spec, self.workdir, timeout=900, before_go=measure
                )
                opened = result["ready"]["opened"]
                grown = result["daphne_rss_connected"] - rss_before
                result["daphne_rss_idle_before"] = rss_before
                result["kb_per_socket"] = (
                    round(grown / 1024 / opened, 1) if opened else None
                )
                out[system.name] = result
                log(
                    f"connections {system.name}: {opened}/{spec['count']} open, "
                    f"{result['kb_per_socket']} KB/socket, "
                    f"{result['ready']['connects_per_second']} connects/s, "
                    f"{result['ready'].get('still_open_after_settle')} still open"
                )
            except Exception as exc:  # noqa: BLE001
                log(f"connections {system.name}: error {exc}")
                out[system.name] = {"error": str(exc)[:500]}
            self.save()

    def resume(self, system: System) -> None:
        try:
            thread = system.threads(1, "fast")[0]
            spec = {
                "mode": "resume",
                "participant": thread["sockets"][0],
                "observer": thread["sockets"][1],
                "missed_events": 1000,
                "repeats": self.args.repeats + 2,
            }
            result = run_loadgen(system, spec, self.workdir, timeout=600)
            rounds = [r for r in result["rounds"] if r["catch_up_ms"] is not None]
            result["catch_up_ms_median"] = (
                statistics.median(r["catch_up_ms"] for r in rounds) if rounds else None
            )
            result["catch_up_ms_spread"] = (
                [
                    min(r["catch_up_ms"] for r in rounds),
                    max(r["catch_up_ms"] for r in rounds),
                ]
                if rounds
                else None
            )
            result["exactly_once"] = all(
                r["replayed_events"] == r["replayed_unique"] == r["missed_events"]
                for r in result["rounds"]
            )
            self.results["resume"] = {system.name: result}
            log(
                f"resume {system.name}: missed {[r['missed_events'] for r in result['rounds']]}, "
                f"catch-up median {result['catch_up_ms_median']} ms, exactly once "
                f"{result['exactly_once']}"
            )
        except Exception as exc:  # noqa: BLE001
            log(f"resume {system.name}: error {exc}")
            self.results["resume"] = {system.name: {"error": str(exc)[:500]}}
        self.save()

    def stall(self, systems: list[System]) -> None:
        out = self.results.setdefault("stall", {})
        duration = self.args.stall_seconds
        for system in systems:
            entry = out.setdefault(system.name, {})
            for stalled in (False, True):
                try:
                    normal = system.threads(STALL_NORMAL_K)
                    if isinstance(system, ParleySystem):
                        # A fresh busy thread per run: a reconnect to the previous
                        # one would first replay its megabytes of history.
                        system.pool["busy"].clear()
                    busy = system.threads(1, "busy")[0]
                    busy_spec = {
                        "sockets": [
                            dict(sock, rcvbuf=65536)
                            if sock["role"] == "stalled"
                            else sock
                            for sock in busy["sockets"]
                        ],
                        "tokens": 400,
                        # ~0.6 MB per run in each of message, chunks and the final
                        # frame: under daphne's 1 MiB frame limit, megabytes per run.
                        "pad": 1500,
                        "message_extra": system.message_extra("busy"),
                    }
                    spec = {
                        "mode": "stall",
                        "stall": stalled,
                        "duration_s": duration,
                        "normal": {
                            "threads": normal,
                            "tokens": int(50 * duration),
                            "stagger_s": 1.0,
                            "timeout_s": duration * 3 + 30,
                            "message_extra": system.message_extra("echo"),
                        },
                        "busy": busy_spec,
                    }
                    result = run_loadgen(
                        system,
                        spec,
                        self.workdir,
                        timeout=duration * 4 + 120,
                        sample_rss=True,
                    )
                    samples = [r for _, r in result.get("daphne_rss_samples", [])]
                    before = result["daphne_rss_before"]
                    result["rss_growth_mb"] = (
                        round((max(samples) - before) / 2**20, 1) if samples else None
                    )
                    result["rss_end_growth_mb"] = (
                        round((samples[-1] - before) / 2**20, 1) if samples else None
                    )
                    entry["stalled" if stalled else "control"] = result
                    log(
                        f"stall {system.name} {'stalled' if stalled else 'control'}: daphne RSS "
                        f"+{result['rss_growth_mb']} MB, normal p99 {result['latency']['p99_ms']} ms, "
                        f"lost {result['lost_tokens']}, busy runs {result['busy']['runs_completed']}, "
                        f"stalled socket {result['busy']['stalled_socket']}"
                    )
                except Exception as exc:  # noqa: BLE001
                    log(f"stall {system.name}: error {exc}")
                    entry["stalled" if stalled else "control"] = {
                        "error": str(exc)[:500]
                    }
                self.save()

    def toolstep(self, system: ParleyOpenAISystem) -> None:
        """Batches of N runs of bench-openai-tools (one ``calculate`` step per
        reply) and of bench-openai (no tools), alternating, each repeated: the
        worker's CPU per run, message -> state_complete, and, from the fake
        server's /stats, the model's tool call -> the next model request."""
        runs = self.args.toolstep_runs
        out = self.results["toolstep"] = {
            "system": system.name,
            "runs_per_batch": runs,
            "tokens_per_run": TOOLSTEP_TOKENS,
            "tokens_per_second": TOKENS_PER_SECOND,
            "expect_text": TOOLSTEP_EXPECT,
            "batches": [],
        }
        try:
            # The tool agent's first runs (warm-up, not counted): its tools
            # and request path are loaded before anything is measured.
            out["warm_up"] = self.toolstep_batch(system, "tools", 2, quiet=None)[
                "verdict"
            ]
        except Exception as exc:  # noqa: BLE001 - reported; the batches still run
            out["warm_up"] = {"error": str(exc)[:500]}
        kinds = list(TOOLSTEP_KINDS)
        for rep in range(self.args.toolstep_repeats):
            for kind in kinds if rep % 2 == 0 else kinds[::-1]:
                try:
                    system.threads(runs, kind)  # made before the quiet wait
                    quiet = self.wait_quiet(
                        quiet_wait=min(self.args.quiet_wait, TOOLSTEP_QUIET_WAIT_S)
                    )
                    batch = self.toolstep_batch(system, kind, runs, quiet=quiet)
                except Exception as exc:  # noqa: BLE001 - a broken batch is reported
                    batch = {"kind": kind, "rep": rep, "error": str(exc)[:500]}
                batch["rep"] = rep
                out["batches"].append(batch)
                verdict = batch.get("verdict", {})
                log(
                    f"toolstep rep {rep + 1} {TOOLSTEP_KINDS[kind]}: "
                    f"{verdict.get('right_runs')}/{runs} runs right, worker CPU "
                    f"{batch.get('worker_cpu_ms_per_run')} ms/run, complete p50/p99 "
                    f"{batch.get('complete_p50_ms')}/{batch.get('complete_p99_ms')} ms, "
                    f"tool call -> next request p50 "
                    f"{batch.get('tool_call_latency_p50_ms')} ms"
                    + (f", error {batch['error']}" if "error" in batch else "")
                    + (
                        ""
                        if verdict.get("ok")
                        else f", FAILED {verdict.get('problems')}"
                    )
                )
                self.save()
        out["summary"] = toolstep_summary(out)
        summary = out["summary"]
        log(
            f"toolstep: worker CPU per run tools/plain {summary.get('worker_cpu_ratio')}x, "
            f"beyond ideal p50 tools/plain {summary.get('beyond_ideal_ratio')}x, "
            f"all runs right {summary.get('all_right')}"
        )
        self.save()

    def toolstep_batch(
        self, system: ParleyOpenAISystem, kind: str, runs: int, quiet: dict | None
    ) -> dict:
        """One batch: ``runs`` threads (one socket each) started over a second."""
        spec = stream_spec(system, runs, TOOLSTEP_TOKENS, kind, keep_completions=True)
        spec["threads"] = [
            {**thread, "sockets": thread["sockets"][:1]} for thread in spec["threads"]
        ]
        if kind == "tools":
            spec["expect_text"] = TOOLSTEP_EXPECT
        system.llm_stats(reset=True)
        result = run_loadgen(
            system, spec, self.workdir, timeout=spec["timeout_s"] + 120
        )
        # The follow-up requests are in before the run's state_complete: every
        # pair is known by DONE.
        stats = system.llm_stats()
        if result.get("timed_out"):
            self.restart(system)  # its backlog must not slow the next batch
        latencies = sorted(
            pair["latency_ms"]
            for pair in stats["tool_calls"]
            if pair["latency_ms"] is not None
        )
        completion = result.get("completion", {})
        # message -> the model request (tool runs): the shift of the medians of
        # when the messages went out and when their first requests arrived
        # (the two are not paired run by run; one clock, CLOCK_MONOTONIC).
        requested = sorted(pair["requested_ns"] for pair in stats["tool_calls"])
        sent = completion.get("sent_ns") or []
        first_request_ms = (
            round((statistics.median(requested) - statistics.median(sent)) / 1e6, 2)
            if requested and sent
            else None
        )
        cpu = result["cpu_seconds"]
        started = result.get("threads") or 0

        def per_run(seconds: float) -> float | None:
            return round(seconds * 1000 / started, 3) if started else None

        problems = []
        if completion.get("right_text") != runs:
            problems.append(
                f"{runs - (completion.get('right_text') or 0)} of {runs} runs did not "
                "complete with the right text"
            )
        if result.get("lost_tokens") or result.get("doubled_tokens"):
            problems.append(
                f"tokens lost {result.get('lost_tokens')}, doubled "
                f"{result.get('doubled_tokens')}"
            )
        if result.get("timed_out"):
            problems.append("timed out")
        expected_calls = runs if kind == "tools" else 0
        if len(stats["tool_calls"]) != expected_calls or stats["unanswered"]:
            problems.append(
                f"{len(stats['tool_calls'])} tool calls ({stats['unanswered']} "
                f"unanswered), expected {expected_calls}"
            )
        return {
            "kind": kind,
            "agent": system.AGENTS[kind],
            "quiet": quiet,
            "runs": started,
            "cpu_seconds": cpu,
            "cpu_window_seconds": result.get("cpu_window_seconds"),
            "other_cpu_share": result.get("other_cpu_share"),
            "worker_cpu_ms_per_run": per_run(cpu.get("worker", 0)),
            "server_cpu_ms_per_run": per_run(
                sum(
                    cpu.get(role, 0)
                    for role in ("daphne", "worker", "postgres", "redis")
                )
            ),
            "llm_cpu_ms_per_run": per_run(cpu.get("llm", 0)),
            "complete_p50_ms": completion.get("complete_p50_ms"),
            "complete_p99_ms": completion.get("complete_p99_ms"),
            "complete_ms": completion.get("complete_ms", []),
            "first_response_p50_ms": result.get("first_response", {}).get("p50_ms"),
            "first_model_request_ms": first_request_ms,
            # a word written by the fake -> received by the load generator
            "stamp_p50_ms": result.get("latency", {}).get("p50_ms"),
            "stamp_p99_ms": result.get("latency", {}).get("p99_ms"),
            "tool_call_latency_ms": latencies,
            "tool_call_latency_p50_ms": percentile(latencies, 50),
            "tool_calls_unanswered": stats["unanswered"],
            "lost_tokens": result.get("lost_tokens"),
            "doubled_tokens": result.get("doubled_tokens"),
            "error_frames": result.get("error_frames"),
            "first_errors": result.get("first_errors"),
            "completion": {
                k: v
                for k, v in completion.items()
                if k not in ("complete_ms", "sent_ns")
            },
            "verdict": {
                "ok": not problems,
                "right_runs": completion.get("right_text"),
                "problems": problems,
            },
        }
