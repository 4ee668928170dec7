"""The toolstep scenario's summary (bench/figures.py ``toolstep_summary``):
CPU per run pooled over the batches, the ratios tools / plain, failures kept."""

from __future__ import annotations

from bench.figures import toolstep_summary


def batch(kind: str, worker_s: float, complete_ms: list[float], ok: bool = True):
    return {
        "kind": kind,
        "runs": len(complete_ms),
        "cpu_seconds": {"daphne": 0.1, "worker": worker_s, "postgres": 0.0},
        "worker_cpu_ms_per_run": worker_s * 1000 / len(complete_ms),
        "complete_ms": complete_ms,
        "tool_call_latency_ms": [20.0] * len(complete_ms) if kind == "tools" else [],
        "verdict": {
            "ok": ok,
            "right_runs": len(complete_ms) if ok else 0,
            "problems": [] if ok else ["2 of 2 runs did not complete"],
        },
    }


def scenario(*batches) -> dict:
    return {"tokens_per_run": 50, "tokens_per_second": 50, "batches": list(batches)}


def test_the_tool_runs_are_put_over_the_plain_runs():
    summary = toolstep_summary(
        scenario(
            batch("echo", 0.02, [1080.0, 1080.0]),
            batch("tools", 0.03, [1180.0, 1180.0]),
            batch("tools", 0.05, [1180.0, 1180.0]),
            batch("echo", 0.02, [1080.0, 1080.0]),
        )
    )

    assert summary["ideal_ms"] == 980.0
    assert summary["plain"]["worker_cpu_ms_per_run"] == 10.0
    assert summary["tools"]["worker_cpu_ms_per_run"] == 20.0
    assert summary["tools"]["worker_cpu_ms_per_run_spread"] == [15.0, 25.0]
    assert summary["worker_cpu_ratio"] == 2.0
    assert summary["worker_cpu_ms_per_tool_step"] == 10.0
    assert summary["plain"]["beyond_ideal_p50_ms"] == 100.0
    assert summary["tools"]["beyond_ideal_p50_ms"] == 200.0
    assert summary["beyond_ideal_ratio"] == 2.0
    assert summary["tools"]["tool_call_latency_p50_ms"] == 20.0
    assert summary["all_right"] is True


def test_a_failed_batch_is_reported_not_dropped():
    summary = toolstep_summary(
        scenario(
            batch("echo", 0.02, [1080.0, 1080.0]),
            batch("tools", 0.03, [1180.0, 1180.0], ok=False),
        )
    )

    assert summary["tools"]["failed_batches"] == 1
    assert summary["tools"]["right_runs"] == 0
    assert summary["all_right"] is False


def test_without_tool_batches_there_is_no_ratio():
    summary = toolstep_summary(scenario(batch("echo", 0.02, [1080.0])))

    assert summary["worker_cpu_ratio"] is None
    assert summary["all_right"] is False
