"""The report: the markdown tables of a run and its latency plot.

``report(results)`` turns results.json (as ``scenarios.Bench`` writes it) into
the tables printed at the end of a run and saved as table.md, one section per
scenario that ran, then Parley's goals; ``plot`` draws latency.png, the p99
schedule latency against K for every system. ``write`` does both into the run's
folder. Nothing here measures: a report can be made again from any results.json.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from bench import criteria
from bench.figures import CONTENDED_CORES, SERVER_ROLES, toolstep_summary
from bench.processes import log
from bench.scenarios import LIGHT_K, QUIET_OTHER_CORES
from bench.systems import LABELS, SYSTEMS

# Issue 24's goals (honest capacity) beside the earlier ones still held.
GOALS = {
    "capacity": 300,
    "capacity_openai": 200,
    "tutorial_multiple": 10,
    "burst_k": 300,
    "burst_first_response_p50_ms": 300,
    "burst_first_response_p99_ms": 1000,
    "big_burst_k": 500,
    "big_burst_first_response_p99_ms": 2000,
    "light_first_response_p50_ms": 25,
    "light_p50_ms": 30,
    "light_p99_ms": 60,
    "idle_kb_per_socket": 50,
    "resume_ms": 50,
}


def fmt(value, digits: int = 1, suffix: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}{suffix}"
    return f"{value}{suffix}"


def span(pair) -> str:
    digits = 0 if pair[1] >= 100 else 1
    return f"{pair[0]:.{digits}f}–{pair[1]:.{digits}f}"


def ratio(a, b) -> str:
    if a is None or b in (None, 0):
        return "–"
    return f"{a / b:.2f}×"


CRITERION = (
    "**Criterion** (bench/criteria.py). A point passes only if every token reached "
    "every socket exactly once; run duration (message sent → last token received) "
    "is ≤ 1.10 × ideal at the median and ≤ 1.25 × for the slowest run (ideal = "
    "tokens / 50 per s); **schedule latency** p99 ≤ 500 ms, where token i is due "
    "at message sent + i × 20 ms and the system's own light-load first response "
    "(K = 10, p50, this run) is subtracted; and message → first response p99 ≤ 1 s. "
    "Stamp latency (receive − when the agent produced the token) cannot see a late "
    "start: shown, not judged. **Delivered tokens/s** is counted from the last "
    "message sent to the first run's ideal end, when the schedule asks for "
    "sockets × 50 (the asked figure). **Server CPU** is daphne + worker + the "
    "PostgreSQL backends serving the bench database + redis-server."
)


def capacity_text(entry: dict) -> str:
    cap = entry.get("capacity") or 0
    tested = sorted(int(k) for k in entry["points"])
    if not cap:
        return f"< {tested[0]}" if tested else "–"
    return f"{cap}" if entry.get("first_failing_k") else f"≥ {cap}"


def pair(a, b, digits: int = 1, suffix: str = "") -> str:
    return f"{fmt(a, digits)} / {fmt(b, digits)}{suffix}"


def with_spread(value, spread, digits: int = 1) -> str:
    text = fmt(value, digits)
    return text + (f" ({span(spread)})" if spread and value is not None else "")


def cpu_breakdown(s: dict) -> str:
    parts = " / ".join(
        fmt(s.get(f"{role}_cpu_per_1k_tokens"), 3) for role in SERVER_ROLES
    )
    return f"{parts} = {fmt(s.get('server_cpu_per_1k_tokens'), 3)}"


def capacity_rows(results: dict, phase: str) -> list[str]:
    store = results["capacity"].get(phase, {})
    if not store:
        return []
    lines = [
        "| system | honest capacity (runs) | run median / slowest (× ideal) | "
        "schedule p99 ms | first response p50 / p99 ms | stamp p99 ms | server CPU s "
        "/ 1k tokens: daphne / worker / PostgreSQL / Redis = total | delivered / "
        "asked tokens/s | tokens per frame |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, entry in store.items():
        cap = entry.get("capacity") or 0
        s = entry["summary"].get(str(cap), {}) if cap else {}
        lines.append(
            f"| {LABELS[name]} | {capacity_text(entry)} | "
            f"{pair(s.get('run_median_ratio'), s.get('run_slowest_ratio'), 2)} | "
            f"{with_spread(s.get('schedule_p99_ms'), s.get('schedule_p99_ms_spread'))} | "
            f"{pair(s.get('first_response_p50_ms'), s.get('first_response_p99_ms'))} | "
            f"{fmt(s.get('stamp_p99_ms'))} | {cpu_breakdown(s)} | "
            f"{pair(s.get('tokens_per_second'), s.get('asked_tokens_per_second'), 0)} | "
            f"{fmt(s.get('tokens_per_frame'), 2)} |"
        )
    return lines


def sweep_rows(results: dict, phase: str) -> list[str]:
    store = results["capacity"].get(phase, {})
    if not store:
        return []
    lines = [
        "| K | system | run median / slowest (× ideal) | schedule p99 ms (min–max) | "
        "first response p50 / p99 ms | stamp p50 / p99 ms | lost / doubled | "
        "delivered / asked tokens/s | server CPU s / 1k tokens: daphne / worker / "
        "PostgreSQL / Redis = total | server / loadgen / other CPU (cores) | verdict |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    ks = sorted({int(k) for entry in store.values() for k in entry["summary"]})
    for k in ks:
        for name, entry in store.items():
            s = entry["summary"].get(str(k))
            if not s:
                continue
            verdict = (
                "pass"
                if s.get("passed")
                else "FAIL: " + ", ".join(s.get("failures") or [])
            )
            if s.get("contended"):
                verdict += f" (contended {s['contended']}/{s.get('repeats')})"
            lines.append(
                f"| {k} | {LABELS[name]} | "
                f"{pair(s.get('run_median_ratio'), s.get('run_slowest_ratio'), 2)} | "
                f"{with_spread(s.get('schedule_p99_ms'), s.get('schedule_p99_ms_spread'))} | "
                f"{pair(s.get('first_response_p50_ms'), s.get('first_response_p99_ms'))} | "
                f"{pair(s.get('stamp_p50_ms'), s.get('stamp_p99_ms'))} | "
                f"{fmt(s.get('lost'))} / {fmt(s.get('doubled'))} | "
                f"{pair(s.get('tokens_per_second'), s.get('asked_tokens_per_second'), 0)} | "
                f"{cpu_breakdown(s)} | {fmt(s.get('server_cpu_share'), 2)} / "
                f"{fmt(s.get('loadgen_cpu_share'), 2)} / {fmt(s.get('other_cpu_share'), 2)} | "
                f"{verdict} |"
            )
    return lines


def quiet_line(results: dict) -> str:
    """What the quiet-machine wait saw before the capacity points."""
    seen = [
        point["quiet"]
        for phase in results["capacity"].values()
        for entry in phase.values()
        for points in entry["points"].values()
        for point in points
        if point.get("quiet")
    ]
    if not seen:
        return ""
    noisy = [q for q in seen if not q["quiet"]]
    waited = statistics.median(q["waited_seconds"] for q in seen)
    text = (
        f"Quiet machine: {len(seen) - len(noisy)} of {len(seen)} points started with "
        f"other CPU < {QUIET_OTHER_CORES} cores (median wait {waited:.0f} s)"
    )
    if noisy:
        worst = max(q["other_cores"] for q in noisy)
        text += f"; the others went on at up to {worst:.2f} cores of other CPU"
    return (
        text + f". A row marked contended had > {CONTENDED_CORES} cores of other "
        "CPU during its window: its figures are pessimistic."
    )


def cap_of(store: dict, name: str):
    entry = store.get(name)
    return entry.get("capacity") if entry else None


def summary_at_cap(store: dict, name: str) -> dict:
    entry = store.get(name) or {}
    cap = entry.get("capacity")
    return entry.get("summary", {}).get(str(cap), {}) if cap else {}


def light_of(single: dict, name: str) -> dict:
    return single.get(name, {}).get("summary", {}).get(str(LIGHT_K), {})


def report(results: dict) -> str:
    out = [f"# Parley benchmark — {results['meta']['started']}", ""]
    meta = results["meta"]
    out.append(
        f"{meta['cpus']} CPUs, Python {meta['python']}, {meta['tokens_per_run']} tokens per run at 50 tokens/s, "
        f"3 sockets per thread, {meta['repeats']} repeats per point (median shown, spread in brackets)"
        f"{', QUICK mode' if meta['quick'] else ''}."
    )
    out.append("")
    skipped = [
        f"- {v['label']}: skipped — {v['reason']}"
        for v in results["systems"].values()
        if not v["available"]
    ]
    if skipped:
        out += ["**Not measured:**", *skipped, ""]
    out += capacity_section(results)
    out += connections_section(results.get("connections"))
    out += resume_section(results.get("resume"))
    out += scaleout_section(results)
    out += stall_section(results.get("stall"))
    out += toolstep_section(results.get("toolstep"))
    if results["systems"].get("parley", {}).get("available"):
        out += goals_section(results)
    return "\n".join(out)


def capacity_section(results: dict) -> list[str]:
    """1. Capacity, Parley's ratios, the sweep, and 2. Light load."""
    single = results["capacity"].get("single", {})
    if not single:
        return []
    out = [
        "## 1. Capacity (one daphne, one worker)",
        "",
        CRITERION,
        "",
        *capacity_rows(results, "single"),
        "",
        quiet_line(results),
        "",
    ]
    if single.get("parley", {}):
        out += [
            "**Parley as a ratio of each baseline** (capacity: higher is better; "
            "CPU and first response: lower is better)",
            "",
            "| baseline | capacity ratio | server CPU / 1k frames ratio | "
            "server CPU / 1k tokens ratio | light-load first response p50 ratio |",
            "| --- | --- | --- | --- | --- |",
        ]
        pc, ps = cap_of(single, "parley"), summary_at_cap(single, "parley")
        parley_light = light_of(single, "parley")
        for name in single:
            if name.startswith("parley"):
                continue
            bs = summary_at_cap(single, name)
            out.append(
                f"| {LABELS[name]} | {ratio(pc, cap_of(single, name))} | "
                f"{ratio(ps.get('server_cpu_per_1k_frames'), bs.get('server_cpu_per_1k_frames'))} | "
                f"{ratio(ps.get('server_cpu_per_1k_tokens'), bs.get('server_cpu_per_1k_tokens'))} | "
                f"{ratio(parley_light.get('first_response_p50_ms'), light_of(single, name).get('first_response_p50_ms'))} |"
            )
        out.append("")
    out += ["### Sweep", "", *sweep_rows(results, "single"), ""]
    out += [f"## 2. Light load (K = {LIGHT_K})", ""]
    out += [
        "| system | message → first response p50 / p99 | schedule p99 | "
        "stamp p50 / p99 |",
        "| --- | --- | --- | --- |",
    ]
    for name in single:
        s = light_of(single, name)
        if s:
            out.append(
                f"| {LABELS[name]} | "
                f"{pair(s.get('first_response_p50_ms'), s.get('first_response_p99_ms'), 1, ' ms')} | "
                f"{fmt(s.get('schedule_p99_ms'), 1, ' ms')} | "
                f"{pair(s.get('stamp_p50_ms'), s.get('stamp_p99_ms'), 1, ' ms')} |"
            )
    out.append("")
    return out


def connections_section(conns: dict | None) -> list[str]:
    if not conns:
        return []
    out = ["## 3. Idle connections (one daphne)", ""]
    out += [
        "| system | sockets open / asked | RSS per socket | connects/s | still open at end |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, r in conns.items():
        if "error" in r:
            out.append(f"| {LABELS[name]} | error: {r['error'][:120]} | | | |")
            continue
        out.append(
            f"| {LABELS[name]} | {r['ready']['opened']} / {r['ready']['sockets']} | "
            f"{fmt(r.get('kb_per_socket'), 1, ' KB')} | {fmt(r['ready'].get('connects_per_second'), 0)} | "
            f"{r.get('still_open_at_end')} |"
        )
    out.append("")
    return out


def resume_section(resume: dict | None) -> list[str]:
    if not resume:
        return []
    out = ["## 4. Resume after missed events", ""]
    for name, r in resume.items():
        if "error" in r:
            out.append(f"- {LABELS[name]}: error: {r['error']}")
            continue
        missed = [x["missed_events"] for x in r["rounds"]]
        spread = r.get("catch_up_ms_spread")
        out.append(
            f"- {LABELS[name]}: missed {min(missed)}–{max(missed)} events; caught up in "
            f"**{fmt(r.get('catch_up_ms_median'), 1, ' ms')}** median"
            f"{f' ({spread[0]:.1f}–{spread[1]:.1f})' if spread else ''} from reconnect to the last event; "
            f"every missed event exactly once: {r.get('exactly_once')}."
        )
    out.append(
        "- Baselines: the tutorial design has no event log; a reconnecting client cannot catch up."
    )
    out.append("")
    return out


def scaleout_section(results: dict) -> list[str]:
    if not results["capacity"].get("scaleout"):
        return []
    return [
        "## 5. Scale-out (two daphne, two workers, one Redis)",
        "",
        *capacity_rows(results, "scaleout"),
        "",
        "### Sweep",
        "",
        *sweep_rows(results, "scaleout"),
        "",
    ]


def stall_section(stall: dict | None) -> list[str]:
    if not stall:
        return []
    out = [
        "## 6. Stalled reader (one observer of a busy thread stops reading)",
        "",
        "| system | run | daphne RSS growth (max / end) | other threads p99 | busy thread's healthy observer p99 | lost | stalled socket |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, runs in stall.items():
        for run_name, r in runs.items():
            if "error" in r:
                out.append(
                    f"| {LABELS[name]} | {run_name} | error: {r['error'][:100]} | | | | |"
                )
                continue
            st = r["busy"].get("stalled_socket") or {}
            outcome = (
                f"closed by server (code {st.get('close_code')})"
                if st.get("closed_by_server_during_stall")
                else ("open" if st else "–")
            )
            got = st.get("bytes_received")
            sent = r["busy"].get("observer_bytes")
            if run_name == "stalled" and got is not None and sent:
                outcome += f"; got {got / 2**20:.1f} of {sent / 2**20:.1f} MB"
            out.append(
                f"| {LABELS[name]} | {run_name} | +{fmt(r.get('rss_growth_mb'))} / +{fmt(r.get('rss_end_growth_mb'))} MB | "
                f"{fmt(r['latency'].get('p99_ms'), 1, ' ms')} | {fmt(r['busy']['observer_latency'].get('p99_ms'), 1, ' ms')} | "
                f"{r.get('lost_tokens')} | {outcome if run_name == 'stalled' else '–'} |"
            )
    out.append("")
    return out


def toolstep_section(toolstep: dict | None) -> list[str]:
    """7. Tool steps: the tool agent's runs against the plain agent's."""
    if not toolstep:
        return []
    # A run stopped mid-scenario has batches but no summary yet.
    summary = toolstep.get("summary") or toolstep_summary(toolstep)
    plain, tools = summary.get("plain") or {}, summary.get("tools") or {}
    tokens = toolstep["tokens_per_run"]
    out = [
        "## 7. Tool steps",
        "",
        f"{LABELS[toolstep['system']]}: batches of {toolstep['runs_per_batch']} runs "
        f"started over 1 s, one socket each, {tokens}-word replies at "
        f"{toolstep['tokens_per_second']} words/s (ideal: the last word is due "
        f"{fmt(summary.get('ideal_ms'), 0)} ms after the message). **tools** = "
        "bench-openai-tools: the fake model streams a `calculate` call (6*7), the "
        "worker runs it and asks again with its result, the reply ends with "
        f"“= {toolstep['expect_text']}”; **plain** = bench-openai, no tools. The "
        "batches alternate; figures are pooled over them. Worker CPU is the "
        "worker process's (from /proc) over the batch; *beyond ideal* = message → "
        "state_complete minus the ideal; *first text* is the median of the "
        "batches' p50 (the tool agent's first text comes after its tool step); "
        "*tool call → next request* is the fake "
        "server's, from the end of its tool-call stream to the arrival of the "
        "request carrying the result.",
        "",
        "| | runs right | worker CPU ms / run (batches) | server CPU ms / run | "
        "message → first text p50 ms | message → complete p50 / p99 ms | "
        "beyond ideal p50 / p99 ms | tool call → next request p50 / p99 ms |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, k in (("plain", plain), ("tools", tools)):
        if not k:
            continue
        spread = k.get("worker_cpu_ms_per_run_spread")
        out.append(
            f"| {label} | {k.get('right_runs')} / {k.get('runs')} | "
            f"{with_spread(k.get('worker_cpu_ms_per_run'), spread, 2)} | "
            f"{fmt(k.get('server_cpu_ms_per_run'), 2)} | "
            f"{fmt(k.get('first_text_p50_ms'))} | "
            f"{pair(k.get('complete_p50_ms'), k.get('complete_p99_ms'))} | "
            f"{pair(k.get('beyond_ideal_p50_ms'), k.get('beyond_ideal_p99_ms'))} | "
            + (
                pair(
                    k.get("tool_call_latency_p50_ms"),
                    k.get("tool_call_latency_p99_ms"),
                    2,
                )
                if k.get("tool_call_samples")
                else "–"
            )
            + " |"
        )
    times = lambda v: "–" if v is None else f"{v:.2f}×"  # noqa: E731
    plus = lambda v, d=2: "–" if v is None else f"{v:+.{d}f}"  # noqa: E731
    if plain and tools:
        out.append(
            f"| tools / plain | – | {times(summary.get('worker_cpu_ratio'))} | "
            f"{times(summary.get('server_cpu_ratio'))} | – | – | "
            f"{times(summary.get('beyond_ideal_ratio'))} (p50) | – |"
        )
        out.append(
            f"| one tool step adds | – | {plus(summary.get('worker_cpu_ms_per_tool_step'))} | "
            f"{plus(summary.get('server_cpu_ms_per_tool_step'))} | – | – | "
            f"{plus(summary.get('beyond_ideal_ms_per_tool_step'), 1)} (p50) | – |"
        )
    out += [
        "",
        f"**Ratio tools / plain: worker CPU per run "
        f"{times(summary.get('worker_cpu_ratio'))}, end-to-end time beyond ideal "
        f"{times(summary.get('beyond_ideal_ratio'))}** (p50).",
        "",
    ]
    if tools:
        out += [
            "Where the tool runs' time goes (medians of the batches): message → "
            "first model request "
            f"{fmt(tools.get('first_model_request_ms'), 1, ' ms')} (median request "
            "arrival at the fake − median message sent; not paired run by run), "
            "tool call → next request "
            f"{fmt(tools.get('tool_call_latency_p50_ms'), 1, ' ms')} (p50), a word "
            "written by the fake → received by the load generator (stamp latency) "
            f"p50 / p99 {pair(tools.get('stamp_p50_ms'), tools.get('stamp_p99_ms'))} "
            f"ms (plain {pair(plain.get('stamp_p50_ms'), plain.get('stamp_p99_ms'))} ms).",
            "",
        ]
    warm = toolstep.get("warm_up") or {}
    if warm and not warm.get("ok", False):
        out.append(f"- Warm-up (2 tool runs, not counted) failed: {warm}")
    failures = [
        f"- {'tools' if b.get('kind') == 'tools' else 'plain'} batch, repeat "
        f"{b.get('rep', 0) + 1}: "
        + (
            f"error: {b['error']}"
            if "error" in b
            else "; ".join(b["verdict"]["problems"])
            + (
                f" (e.g. {b['completion']['first_wrong'][:2]})"
                if b.get("completion", {}).get("first_wrong")
                else ""
            )
        )
        for b in toolstep.get("batches", [])
        if "error" in b or not b["verdict"]["ok"]
    ]
    if failures:
        out += ["**Failed batches** (their figures are still in the table):", *failures]
    elif summary.get("all_right"):
        out.append(
            f"Every run completed with the right text (tools: “{toolstep['expect_text']}” "
            "in the final text), no token lost or doubled, one tool call per tool run."
        )
    contended = (plain.get("contended") or 0) + (tools.get("contended") or 0)
    if contended:
        out.append(
            f"{contended} of {plain.get('batches', 0) + tools.get('batches', 0)} "
            f"batches were contended (> {CONTENDED_CORES} cores of other CPU): "
            "their figures are pessimistic."
        )
    out.append("")
    return out


def goals_section(results: dict) -> list[str]:
    """Parley's goals (issue 24's and the earlier ones) next to what it measured."""
    single = results["capacity"].get("single", {})
    parley = single.get("parley", {})
    conns = results.get("connections")
    resume = results.get("resume")
    out = [
        "## Goals (Parley, measured)",
        "",
        "| goal | target | measured | met |",
        "| --- | --- | --- | --- |",
    ]
    rows = []
    cap = cap_of(single, "parley") if parley else None
    # A capacity that never failed within the sweep is only a lower bound.
    open_ended = bool(parley) and not parley.get("first_failing_k")
    shown = f"≥ {cap}" if open_ended and cap else cap
    rows.append(
        (
            "honest capacity, echo (runs)",
            f"≥ {GOALS['capacity']}",
            shown,
            cap is not None and cap >= GOALS["capacity"],
        )
    )
    if "parley-openai" in single:
        openai_cap = cap_of(single, "parley-openai")
        rows.append(
            (
                "honest capacity, openai path (runs)",
                f"≥ {GOALS['capacity_openai']}",
                openai_cap,
                openai_cap is not None and openai_cap >= GOALS["capacity_openai"],
            )
        )
    if "ceiling" in single:
        ceiling = cap_of(single, "ceiling")
        rows.append(
            (
                "honest capacity, echo vs ceiling's",
                f"≥ {ceiling}",
                shown,
                cap is not None and ceiling is not None and cap >= ceiling,
            )
        )
    tutorials = [cap_of(single, n) or 0 for n in single if n.startswith("tutorial")]
    if tutorials:
        best = max(tutorials)
        rows.append(
            (
                "honest capacity vs best tutorial variant",
                f"≥ {GOALS['tutorial_multiple']} × {best}",
                shown,
                cap is not None and cap >= GOALS["tutorial_multiple"] * best,
            )
        )
    for k, key, limit in (
        (GOALS["burst_k"], "first_response_p50_ms", "burst_first_response_p50_ms"),
        (GOALS["burst_k"], "first_response_p99_ms", "burst_first_response_p99_ms"),
        (
            GOALS["big_burst_k"],
            "first_response_p99_ms",
            "big_burst_first_response_p99_ms",
        ),
    ):
        value = parley.get("summary", {}).get(str(k), {}).get(key)
        rows.append(
            (
                f"K = {k}: message → first response {key.split('_')[2]}"
                + ("" if value is not None else " (K not reached)"),
                f"≤ {GOALS[limit]} ms",
                value,
                value is not None and value <= GOALS[limit],
            )
        )
    light = light_of(single, "parley")
    rows.append(
        (
            f"light load (K = {LIGHT_K}): message → first response p50",
            f"≤ {GOALS['light_first_response_p50_ms']} ms",
            light.get("first_response_p50_ms"),
            (light.get("first_response_p50_ms") or 1e9)
            <= GOALS["light_first_response_p50_ms"],
        )
    )
    at_cap = summary_at_cap(single, "parley")
    rows.append(
        (
            "server CPU s / 1k tokens at capacity (PostgreSQL, Redis included)",
            "≤ the same-day figure before a change",
            at_cap.get("server_cpu_per_1k_tokens"),
            None,
        )
    )
    for label, key, goal in (
        ("light load stamp p50", "stamp_p50_ms", "light_p50_ms"),
        ("light load stamp p99", "stamp_p99_ms", "light_p99_ms"),
    ):
        rows.append(
            (
                label,
                f"≤ {GOALS[goal]} ms",
                light.get(key),
                (light.get(key) or 1e9) <= GOALS[goal],
            )
        )
    c = (conns or {}).get("parley", {})
    kb = c.get("kb_per_socket")
    n = c.get("ready", {}).get("opened")
    if c:
        rows.append(
            (
                f"idle sockets ({n})",
                f"10,000 at ≤ {GOALS['idle_kb_per_socket']} KB",
                kb,
                kb is not None
                and kb <= GOALS["idle_kb_per_socket"]
                and (n or 0) >= 10_000,
            )
        )
    r = (resume or {}).get("parley", {})
    if r:
        rows.append(
            (
                "resume 1,000 missed events",
                f"≤ {GOALS['resume_ms']} ms",
                r.get("catch_up_ms_median"),
                (r.get("catch_up_ms_median") or 1e9) <= GOALS["resume_ms"],
            )
        )
    for name, target, value, met in rows:
        verdict = "–" if met is None else ("yes" if met and value is not None else "no")
        shown = fmt(value, 3) if "CPU" in name else fmt(value)
        out.append(f"| {name} | {target} | {shown} | {verdict} |")
    out.append("")
    return out


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    phases = [p for p in ("single", "scaleout") if results["capacity"].get(p)]
    if not phases:
        return
    fig, axes = plt.subplots(
        1, len(phases), figsize=(7 * len(phases), 5), squeeze=False
    )
    for axis, phase in zip(axes[0], phases, strict=False):
        for name, entry in results["capacity"][phase].items():
            ks = sorted(int(k) for k in entry["summary"])
            # schedule p99 (the judged latency); floored at 1 ms for the log axis
            pts = []
            for k in ks:
                summary = entry["summary"][str(k)]
                value = summary.get("schedule_p99_ms")
                if value is None:
                    continue
                low, high = summary.get("schedule_p99_ms_spread") or [value, value]
                pts.append((k, max(1.0, value), [max(1.0, low), max(1.0, high)]))
            if not pts:
                continue
            xs = [p[0] for p in pts]
            ys = [p[1] for p in pts]
            lo = [p[1] - p[2][0] for p in pts]
            hi = [p[2][1] - p[1] for p in pts]
            axis.errorbar(
                xs,
                ys,
                yerr=[lo, hi],
                marker="o",
                capsize=3,
                label=LABELS[name],
                color=f"C{SYSTEMS.index(name)}",  # one colour per system, both panels
            )
        axis.axhline(
            criteria.LIMITS.schedule_p99_ms,
            color="grey",
            linestyle="--",
            linewidth=1,
            label="500 ms limit",
        )
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("concurrent runs K (3 sockets each, 50 tokens/s)")
        axis.set_ylabel("p99 schedule latency (ms), median of repeats, bars = min–max")
        axis.set_title(
            "one daphne + one worker"
            if phase == "single"
            else "two daphne + two workers"
        )
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write(results: dict, workdir: Path) -> str:
    """table.md and latency.png into ``workdir``; returns the table."""
    table = report(results)
    (workdir / "table.md").write_text(table + "\n")
    try:
        plot(results, workdir / "latency.png")
    except Exception as exc:  # noqa: BLE001 - a plot that fails leaves the table
        log(f"plot failed: {exc}")
    return table
