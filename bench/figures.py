"""A capacity point's figures and verdict, from what the load generator measured.

``derive`` turns one load-generator result into the figures the tables show
(run duration against ideal, schedule / first-response / stamp latency, lost and
doubled tokens, delivered tokens/s, server CPU per 1,000 tokens and frames by
role); ``judge`` adds the verdict of bench/criteria.py, which needs the system's
light-load first response; ``summarize`` takes the median over a K's repeats and
decides the K by ``criteria.repeats_pass``. ``toolstep_summary`` puts the
toolstep scenario's batches together: per run CPU and latencies of the tool
agent against the plain one, and their ratios.
"""

from __future__ import annotations

import statistics

from bench import criteria

# The roles whose CPU is server CPU (bench/systems.py ``System.roles``).
SERVER_ROLES = ("daphne", "worker", "postgres", "redis")
# A point whose window saw more than this many cores of other CPU (other
# people's jobs) is marked contended: its figures are pessimistic.
CONTENDED_CORES = 0.3


def derive(result: dict) -> dict:
    """Per-point figures the tables use (the verdict comes later, in ``judge``:
    it needs the system's light-load first response)."""
    cpu = result["cpu_seconds"]
    delivered = result.get("delivered_tokens") or 0
    frames = result.get("response_frames") or 0
    # Server CPU: everything the system runs on, PostgreSQL and Redis included.
    server = sum(cpu.get(role, 0) for role in SERVER_ROLES)
    per_k = lambda seconds, n: round(seconds / (n / 1000), 4) if n else None  # noqa: E731
    stamp = result.get("latency", {})
    schedule = result.get("schedule_latency_raw", {})
    runs = result.get("runs", {})
    first = result.get("first_response", {})
    figures = {
        "lost": result.get("lost_tokens"),
        "doubled": result.get("doubled_tokens"),
        "timed_out": bool(result.get("timed_out")),
        "run_median_ratio": runs.get("median_ratio"),
        "run_slowest_ratio": runs.get("slowest_ratio"),
        "schedule_raw_p50_ms": schedule.get("p50_ms"),
        "schedule_raw_p99_ms": schedule.get("p99_ms"),
        "first_response_p50_ms": first.get("p50_ms"),
        "first_response_p99_ms": first.get("p99_ms"),
        "stamp_p50_ms": stamp.get("p50_ms"),
        "stamp_p99_ms": stamp.get("p99_ms"),
        "tokens_per_second": result.get("delivered_tokens_per_second"),
        "asked_tokens_per_second": result.get("asked_tokens_per_second"),
        "frames": frames,
        "tokens_per_frame": round(delivered / frames, 2) if frames else None,
        "server_cpu_per_1k_tokens": per_k(server, delivered),
        "server_cpu_per_1k_frames": per_k(server, frames),
        "server_cpu_share": round(server / result["cpu_window_seconds"], 3),
        "loadgen_cpu_share": result.get("loadgen_cpu_share"),
        "other_cpu_share": result.get("other_cpu_share"),
        "contended": (result.get("other_cpu_share") or 0) > CONTENDED_CORES,
    }
    for role in (*SERVER_ROLES, "llm"):
        figures[f"{role}_cpu_per_1k_tokens"] = per_k(cpu.get(role, 0), delivered)
    return figures


def judge(figures: dict, light_first_response_ms: float | None) -> dict:
    """The point's verdict by bench/criteria.py, in place."""
    figures["light_first_response_ms"] = light_first_response_ms
    for q in ("p50", "p99"):
        figures[f"schedule_{q}_ms"] = criteria.schedule_p99_ms(
            figures.get(f"schedule_raw_{q}_ms"), light_first_response_ms
        )
    figures["failures"] = criteria.failures(figures)
    figures["passed"] = not figures["failures"]
    return figures


def median_of(points: list[dict], key: str):
    values = [p["figures"][key] for p in points if p["figures"].get(key) is not None]
    return statistics.median(values) if values else None


def spread_of(points: list[dict], key: str):
    values = [p["figures"][key] for p in points if p["figures"].get(key) is not None]
    return [min(values), max(values)] if values else None


def summarize(points: list[dict]) -> dict:
    """Median of each figure over the repeats; the K passes by
    ``criteria.repeats_pass``."""
    keys = {
        key
        for p in points
        for key, value in p["figures"].items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }
    summary = {key: median_of(points, key) for key in sorted(keys)}
    for key in ("schedule_p99_ms", "stamp_p99_ms", "run_slowest_ratio"):
        summary[f"{key}_spread"] = spread_of(points, key)
    summary["lost"] = max((p["figures"].get("lost") or 0) for p in points)
    summary["doubled"] = max((p["figures"].get("doubled") or 0) for p in points)
    summary["repeats"] = len(points)
    summary["contended"] = sum(bool(p["figures"].get("contended")) for p in points)
    summary["passed"] = criteria.repeats_pass(
        [bool(p["figures"].get("passed")) for p in points],
        summary["lost"],
        summary["doubled"],
    )
    # Why it failed, read on the medians (what the table shows).
    summary["failures"] = (
        []
        if summary["passed"]
        else criteria.failures(summary) or ["most repeats failed"]
    )
    return summary


def percentile(sorted_values: list, q: float):
    """Nearest-rank percentile (bench/loadgen.py's), None without values."""
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


def median_or_none(batches: list[dict], key: str):
    """The median over the batches of a per-batch figure."""
    values = [b[key] for b in batches if b.get(key) is not None]
    return statistics.median(values) if values else None


def _toolstep_kind(batches: list[dict], ideal_ms: float) -> dict:
    """One agent's batches pooled: CPU per run over all of its runs, latency
    percentiles over all of its samples, the per-batch spread of worker CPU."""
    measured = [b for b in batches if "error" not in b]
    runs = sum(b["runs"] for b in measured)

    def per_run(roles) -> float | None:
        seconds = sum(b["cpu_seconds"].get(role, 0) for b in measured for role in roles)
        return round(seconds * 1000 / runs, 3) if runs else None

    complete = sorted(ms for b in measured for ms in b["complete_ms"])
    tool = sorted(ms for b in measured for ms in b["tool_call_latency_ms"])
    worker_by_batch = [
        b["worker_cpu_ms_per_run"]
        for b in measured
        if b.get("worker_cpu_ms_per_run") is not None
    ]
    beyond = lambda ms: None if ms is None else round(ms - ideal_ms, 2)  # noqa: E731
    return {
        "batches": len(batches),
        "failed_batches": sum(
            1 for b in batches if "error" in b or not b["verdict"]["ok"]
        ),
        "runs": runs,
        "right_runs": sum(b["verdict"]["right_runs"] or 0 for b in measured),
        "worker_cpu_ms_per_run": per_run(("worker",)),
        "worker_cpu_ms_per_run_spread": [min(worker_by_batch), max(worker_by_batch)]
        if worker_by_batch
        else None,
        "server_cpu_ms_per_run": per_run(SERVER_ROLES),
        "llm_cpu_ms_per_run": per_run(("llm",)),
        # message -> first text: for the tool agent, after its tool step
        "first_text_p50_ms": median_or_none(measured, "first_response_p50_ms"),
        "first_model_request_ms": median_or_none(measured, "first_model_request_ms"),
        "stamp_p50_ms": median_or_none(measured, "stamp_p50_ms"),
        "stamp_p99_ms": median_or_none(measured, "stamp_p99_ms"),
        "complete_samples": len(complete),
        "complete_p50_ms": percentile(complete, 50),
        "complete_p99_ms": percentile(complete, 99),
        "beyond_ideal_p50_ms": beyond(percentile(complete, 50)),
        "beyond_ideal_p99_ms": beyond(percentile(complete, 99)),
        "tool_call_samples": len(tool),
        "tool_call_latency_p50_ms": percentile(tool, 50),
        "tool_call_latency_p99_ms": percentile(tool, 99),
        "contended": sum(
            1 for b in measured if (b.get("other_cpu_share") or 0) > CONTENDED_CORES
        ),
    }


def toolstep_summary(toolstep: dict) -> dict:
    """The toolstep scenario's figures: plain and tool runs side by side, the
    ratios tools / plain of worker CPU per run and of the time beyond ideal
    (message -> state_complete minus when the last word is due: (tokens - 1)
    / rate), and what one tool step adds in each."""
    ideal_ms = (toolstep["tokens_per_run"] - 1) * 1000 / toolstep["tokens_per_second"]
    batches = toolstep.get("batches", [])
    plain = _toolstep_kind([b for b in batches if b.get("kind") == "echo"], ideal_ms)
    tools = _toolstep_kind([b for b in batches if b.get("kind") == "tools"], ideal_ms)

    def ratio(key: str) -> float | None:
        a, b = tools.get(key), plain.get(key)
        return round(a / b, 2) if a is not None and b else None

    def extra(key: str) -> float | None:
        a, b = tools.get(key), plain.get(key)
        return round(a - b, 2) if a is not None and b is not None else None

    return {
        "ideal_ms": ideal_ms,
        "plain": plain,
        "tools": tools,
        "worker_cpu_ratio": ratio("worker_cpu_ms_per_run"),
        "server_cpu_ratio": ratio("server_cpu_ms_per_run"),
        "beyond_ideal_ratio": ratio("beyond_ideal_p50_ms"),
        "worker_cpu_ms_per_tool_step": extra("worker_cpu_ms_per_run"),
        "server_cpu_ms_per_tool_step": extra("server_cpu_ms_per_run"),
        "beyond_ideal_ms_per_tool_step": extra("beyond_ideal_p50_ms"),
        "all_right": bool(plain["batches"] and tools["batches"])
        and not plain["failed_batches"]
        and not tools["failed_batches"],
    }
