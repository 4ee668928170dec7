"""The fault scenarios: each drives a fresh ``Load`` on the running stack,
injects its fault ``trials`` times, drains the load and judges the result.

Every scenario returns ``{"name", "trials": [...], "summary": {...},
"checks": [...], "plot": {...}}``; a check is a target, the measured value and
whether it passed (with why not), which report.py turns into bench/CHAOS.md.
``settle`` is the common end: every run each socket saw, token for token, the
REST history against what the sockets were told, runs that never ended.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter

from chaos.client import ChaosSocket, Load, now
from chaos.ledger import (
    RunView,
    compare_tokens,
    is_prefix_run,
    numbered_prompt,
    token_indices,
)


def check(target: str, measured, passed: bool, why: str = "") -> dict:
    return {
        "target": target,
        "measured": measured,
        "passed": bool(passed),
        "why": "" if passed else why,
    }


def overlapping(sock: ChaosSocket, start: float, end: float) -> list[RunView]:
    """The socket's runs alive at some moment of [start, end]."""
    return [
        run
        for run in sock.view.runs.values()
        if (run.first_seen or 0) <= end and (run.completed_at or float("inf")) >= start
    ]


def window_tokens(sock: ChaosSocket, start: float, end: float) -> tuple[int, int]:
    lost = doubled = 0
    for run in overlapping(sock, start, end):
        if run.done:
            count = compare_tokens(run.built_text or "", run.final_text or "")
            lost, doubled = lost + count.lost, doubled + count.doubled
    return lost, doubled


def violations(sock: ChaosSocket) -> int:
    view = sock.view
    return view.duplicate_events + view.event_gaps + view.chunk_gaps


async def settle(stack, load: Load) -> dict:
    """Token counts over every (socket, run), stuck runs, the history check."""
    loop = asyncio.get_running_loop()
    lost = doubled = unfinished = server_bad = 0
    statuses: Counter = Counter()
    mismatches, wrong = [], []
    for thread in load.threads:
        history = await loop.run_in_executor(None, stack.history, thread.thread_id)
        stored = {m["run_id"]: m for m in history if m.get("role") == "assistant"}
        for sent in thread.sent:
            if sent.run_id is None:
                continue
            message = stored.get(sent.run_id)
            for sock in thread.sockets:
                run = sock.view.runs.get(sent.run_id)
                if run is None or not run.done:
                    unfinished += 1
                    continue
                count = compare_tokens(run.built_text or "", run.final_text or "")
                lost, doubled = lost + count.lost, doubled + count.doubled
                if not count.exact:
                    wrong.append(wrong_run(sock, run, count))
                if message is None or message.get("text") != run.final_text:
                    mismatches.append(
                        {
                            "run": sent.run_id,
                            "socket": sock.name,
                            "stored": None
                            if message is None
                            else message.get("status"),
                        }
                    )
            owner_run = thread.owner.view.runs.get(sent.run_id)
            if owner_run is not None and owner_run.done:
                statuses[owner_run.status] += 1
                if (
                    owner_run.status == "completed"
                    and not compare_tokens(
                        owner_run.final_text or "", numbered_prompt(sent.tokens)
                    ).exact
                ):
                    server_bad += 1
    return {
        "runs": len([r for r in load.runs if r.run_id]),
        "statuses": dict(statuses),
        "never_acknowledged": sum(1 for r in load.runs if r.run_id is None),
        "stuck": sum(1 for r in load.runs if r.stuck),
        "unfinished_on_sockets": unfinished,
        "tokens_lost": lost,
        "tokens_doubled": doubled,
        "completed_with_wrong_text": server_bad,
        "history_mismatches": len(mismatches),
        "history_mismatch_examples": mismatches[:5],
        "wrong_text_examples": wrong[:10],
        "events_delivered_twice": sum(s.view.duplicate_events for s in load.sockets),
        "event_id_gaps": sum(s.view.event_gaps for s in load.sockets),
        "chunk_gaps": sum(s.view.chunk_gaps for s in load.sockets),
        "resynced": sum(s.view.resyncs for s in load.sockets),
        "reconnects": sum(max(0, len(s.connections) - 1) for s in load.sockets),
    }


def wrong_run(sock: ChaosSocket, run: RunView, count) -> dict:
    """Evidence for a (socket, run) whose streamed text was not the final one."""
    have, want = token_indices(run.built_text or ""), token_indices(run.final_text)
    missing = sorted(set(want) - set(have))
    doubled = sorted({t for t in have if have.count(t) > 1})
    return {
        "socket": sock.name,
        "run": run.run_id,
        "status": run.status,
        "lost": count.lost,
        "doubled": count.doubled,
        "missing_tokens": missing[:20],
        "doubled_tokens": doubled[:20],
        "text_from_snapshot": run.from_snapshot,
        "socket_resyncs": sock.view.resyncs,
        "socket_chunk_gaps": sock.view.chunk_gaps,
        "socket_duplicates": sock.view.duplicate_events,
        "first_seen": run.first_seen,
        "completed_at": run.completed_at,
        "trace": run.trace[-60:],
    }


def common_checks(summary: dict) -> list[dict]:
    stuck = summary["stuck"] + summary["unfinished_on_sockets"]
    return [
        check(
            "tokens lost 0, doubled 0 (every socket, every run)",
            f"{summary['tokens_lost']} / {summary['tokens_doubled']}",
            summary["tokens_lost"] == 0 and summary["tokens_doubled"] == 0,
            "a socket's streamed text differs from the run's final text",
        ),
        check(
            "runs stuck 0",
            stuck,
            stuck == 0,
            "runs that never ended (or never reached a socket)",
        ),
        check(
            "history = what the sockets were told",
            summary["history_mismatches"],
            summary["history_mismatches"] == 0,
            "REST history text differs from state_complete",
        ),
        check(
            "completed runs hold every token once",
            summary["completed_with_wrong_text"],
            summary["completed_with_wrong_text"] == 0,
            "server-side text wrong",
        ),
    ]


# --- 1. random disconnects and resumes -------------------------------------------


async def disconnects(stack, trials: int, rng: random.Random) -> dict:
    load = Load(stack, threads=6, tokens=150)
    await load.start()
    dropped = []
    for _ in range(trials):
        await asyncio.sleep(rng.uniform(0.1, 0.4))
        ready = [
            s
            for s in load.sockets
            if s.ws is not None and s.current.connected_at and now() >= s.away_until
        ]
        if not ready:
            continue
        sock = rng.choice(ready)
        away = rng.uniform(0.0, 1.5)
        index = len(sock.connections)
        at = now()
        if sock.drop(away):
            dropped.append((sock, at, away, index))
    await load.drain(120)
    summary = await settle(stack, load)
    await load.stop()
    records = []
    for sock, at, away, index in dropped:
        after = sock.connections[index] if len(sock.connections) > index else None
        back = after.connected_at if after else None
        lost, doubled = window_tokens(sock, at, (back or now()) + 1.0)
        records.append(
            {
                "socket": sock.name,
                "away_s": round(away, 3),
                "back": back is not None,
                "outage_s": round(back - at, 3) if back else None,
                "reconnect_s": round(back - after.asked_at, 3) if back else None,
                "resynced": bool(after and after.resynced),
                "missed_events": after.missed if after else None,
                "catch_up_s": round(after.caught_up_at - after.asked_at, 3)
                if after and after.caught_up_at
                else None,
                "lost": lost,
                "doubled": doubled,
            }
        )
    inexact = [r for r in records if not r["back"] or r["resynced"]]
    summary["trials_run"] = len(records)
    missed = [r["missed_events"] for r in records if r["missed_events"] is not None]
    summary["events_missed_while_away"] = {
        "total": sum(missed),
        "trials_with_some": sum(1 for m in missed if m > 0),
        "max": max(missed, default=0),
    }
    catch_up = sorted(r["catch_up_s"] for r in records if r["catch_up_s"] is not None)
    if catch_up:
        summary["catch_up_s"] = {
            "p50": catch_up[len(catch_up) // 2],
            "p95": catch_up[min(len(catch_up) - 1, int(len(catch_up) * 0.95))],
            "max": catch_up[-1],
        }
    checks = [
        check(
            f"{trials} disconnect/resume trials run",
            len(records),
            len(records) >= trials,
            "fewer trials than asked (no socket ready)",
        ),
        check(
            "every trial resumed exactly (no resynced)",
            f"{len(records) - len(inexact)}/{len(records)}",
            not inexact,
            f"{len(inexact)} trials not back or resynced",
        ),
        check(
            "events delivered twice / id gaps / chunk gaps 0",
            f"{summary['events_delivered_twice']} / {summary['event_id_gaps']}"
            f" / {summary['chunk_gaps']}",
            violations_total(summary) == 0,
            "the server broke exactly-once",
        ),
        *common_checks(summary),
    ]
    return {
        "name": "disconnects",
        "trials": records,
        "summary": summary,
        "checks": checks,
        "plot": {
            "y": "catch_up_s",
            "label": "connect → caught up (s)",
            "marker": "resynced",
        },
    }


def violations_total(summary: dict) -> int:
    return (
        summary["events_delivered_twice"]
        + summary["event_id_gaps"]
        + summary["chunk_gaps"]
    )


# --- 2. Redis restarted mid-stream ------------------------------------------------


async def redis_restarts(stack, trials: int, rng: random.Random) -> dict:
    load = Load(stack, threads=6, tokens=250)
    await load.start()
    loop = asyncio.get_running_loop()
    records = []
    for _ in range(trials):
        await asyncio.sleep(rng.uniform(2.0, 4.0))
        before = {s.name: (violations(s), s.view.snapshots) for s in load.sockets}
        at = now()
        await loop.run_in_executor(None, stack.redis.restart)
        restarted = now() - at

        def resynced_all(before=before) -> bool:
            return all(s.view.snapshots > before[s.name][1] for s in load.sockets)

        deadline = at + 30
        while not resynced_all() and now() < deadline:
            await asyncio.sleep(0.1)
        recovered = now() - at if resynced_all() else None
        await asyncio.sleep(3.0)  # streams go on after the snapshot
        marks = {
            sock.name: (
                sock.view.snapshots > before[sock.name][1],
                violations(sock) > before[sock.name][0],
            )
            for sock in load.sockets
        }
        records.append(
            {
                "restart_s": round(restarted, 3),
                "recovery_s": round(recovered, 3) if recovered else None,
                "window": (at, now()),
                "marks": marks,
            }
        )
    await load.drain(120)
    summary = await settle(stack, load)
    await load.stop()
    for record in records:  # judged once the runs the restart met have ended
        start, end = record.pop("window")
        sockets = {}
        for sock in load.sockets:
            resynced, broke = record["marks"][sock.name]
            lost, doubled = window_tokens(sock, start, end)
            if lost or doubled or (broke and not resynced):
                sockets[sock.name] = "silent_gap"
            else:
                sockets[sock.name] = "resynced" if resynced else "exact"
        del record["marks"]
        record["sockets"] = dict(Counter(sockets.values()))
        record["silent_gaps"] = [n for n, k in sockets.items() if k == "silent_gap"]
    gaps = sum(len(r["silent_gaps"]) for r in records)
    slow = [r for r in records if r["recovery_s"] is None]
    checks = [
        check(
            "0 silent gaps (each socket exact or resynced)",
            gaps,
            gaps == 0,
            "sockets whose streamed text went wrong across a restart (resynced "
            "or not), or that saw a gap without a snapshot",
        ),
        check(
            "every socket resynced within 30 s",
            f"{len(records) - len(slow)}/{len(records)}",
            not slow,
            "a restart left sockets without a snapshot for 30 s",
        ),
        *common_checks(summary),
    ]
    return {
        "name": "redis_restarts",
        "trials": records,
        "summary": summary,
        "checks": checks,
        "plot": {"y": "recovery_s", "label": "kill → every socket resynced (s)"},
    }


# --- 3. a worker SIGKILLed mid-run ------------------------------------------------


async def worker_kills(stack, trials: int, rng: random.Random) -> dict:
    load = Load(stack, threads=6, tokens=400, stuck_after=60)
    await load.start()
    loop = asyncio.get_running_loop()
    by_run = {}
    records = []
    for trial in range(trials):
        slot = trial % len(stack.workers)
        victim = stack.workers[slot]
        running: dict[str, str] = {}
        deadline = now() + 30
        while now() < deadline:  # both workers busy, runs 1-5 s in
            await asyncio.sleep(rng.uniform(1.0, 2.0))
            running = await loop.run_in_executor(None, stack.running_runs)
            channels = set(running.values())
            if victim.channel in channels and len(channels) > 1:
                break
        for thread in load.threads:
            for sent in thread.sent:
                if sent.run_id:
                    by_run[sent.run_id] = thread
        at = now()
        await loop.run_in_executor(None, victim.kill)
        mine = [r for r, c in running.items() if c == victim.channel]
        others = [r for r, c in running.items() if c != victim.channel]

        def ended(run_ids) -> bool:
            for thread in load.threads:
                by_run.update({s.run_id: thread for s in thread.sent if s.run_id})
            return all(r in by_run for r in run_ids) and all(
                all((s.view.runs.get(r) or RunView(r)).done for s in by_run[r].sockets)
                for r in run_ids
                if r in by_run
            )

        while not ended(mine + others) and now() < at + 45:
            await asyncio.sleep(0.2)
        await loop.run_in_executor(None, stack.replace_worker, slot)
        for thread in load.threads:  # runs acknowledged since the kill
            for sent in thread.sent:
                if sent.run_id:
                    by_run[sent.run_id] = thread
        mine = [r for r in mine if r in by_run]
        others = [r for r in others if r in by_run]
        killed, unaffected = [], []
        for run_id in mine:
            views = [s.view.runs.get(run_id) for s in by_run[run_id].sockets]
            done = [v for v in views if v and v.done]
            killed.append(
                {
                    "run": run_id,
                    "ended_s": round(max(v.completed_at for v in done) - at, 2)
                    if len(done) == len(views)
                    else None,
                    "status": {v.status for v in done} == {"failed"},
                    "error": sorted({v.error_code or "" for v in done}),
                    "kept_text": all(
                        is_prefix_run(v.final_text or "")
                        and compare_tokens(v.built_text or "", v.final_text).doubled
                        == 0
                        for v in done
                    ),
                    "kept_tokens": len((done[0].final_text or "").split())
                    if done
                    else 0,
                }
            )
        for run_id in others:
            views = [s.view.runs.get(run_id) for s in by_run[run_id].sockets]
            unaffected.append(
                all(
                    v
                    and v.done
                    and v.status == "completed"
                    and compare_tokens(v.final_text, numbered_prompt(400)).exact
                    and compare_tokens(v.built_text or "", v.final_text).exact
                    for v in views
                )
            )
        records.append(
            {
                "victim_slot": slot,
                "killed_runs": killed,
                "other_runs": len(others),
                "other_runs_ok": sum(unaffected),
                "ended_s": max(k["ended_s"] for k in killed)
                if killed and None not in [k["ended_s"] for k in killed]
                else None,
            }
        )
    await load.drain(120)
    summary = await settle(stack, load)
    await load.stop()
    killed = [k for r in records for k in r["killed_runs"]]
    late = [k for k in killed if k["ended_s"] is None or k["ended_s"] > 30]
    wrong = [k for k in killed if not k["status"] or not k["kept_text"]]
    others_bad = sum(r["other_runs"] - r["other_runs_ok"] for r in records)
    no_runs = [r for r in records if not r["killed_runs"]]
    checks = [
        check(
            "killed runs end `failed` within 30 s",
            f"{len(killed) - len(late)}/{len(killed)}",
            killed and not late,
            f"{len(late)} ended late or never" if killed else "no run was hit",
        ),
        check(
            "killed runs keep their streamed text",
            f"{len(killed) - len(wrong)}/{len(killed)}",
            not wrong,
            "status not failed or text not kept",
        ),
        check(
            "other worker's runs unaffected",
            f"{others_bad} affected",
            others_bad == 0,
            "runs of the surviving worker failed or lost text",
        ),
        check(
            "every kill hit a running run",
            f"{len(records) - len(no_runs)}/{len(records)}",
            not no_runs,
            "the victim had no run",
        ),
        *common_checks(summary),
    ]
    for record in records:
        record["y"] = record["ended_s"]
    return {
        "name": "worker_kills",
        "trials": records,
        "summary": summary,
        "checks": checks,
        "plot": {
            "y": "ended_s",
            "label": "SIGKILL → its runs ended failed (s)",
            "line": 30,
        },
    }


# --- 4. a daphne restarted ---------------------------------------------------------


async def daphne_restarts(stack, trials: int, rng: random.Random) -> dict:
    load = Load(stack, threads=6, tokens=250)
    await load.start()
    loop = asyncio.get_running_loop()
    records, windows = [], []
    for trial in range(trials):
        await asyncio.sleep(rng.uniform(2.0, 4.0))
        daphne = stack.daphnes[trial % len(stack.daphnes)]
        affected = [s for s in load.sockets if s.port == daphne.port]
        marks = {s.name: len(s.connections) for s in affected}
        at = now()
        await loop.run_in_executor(None, daphne.kill)
        await loop.run_in_executor(None, daphne.start)
        restarted = now() - at

        def back(sock, marks=marks) -> bool:
            later = sock.connections[marks[sock.name] :]
            return any(c.connected_at for c in later)

        while not all(back(s) for s in affected) and now() < at + 30:
            await asyncio.sleep(0.1)
        await asyncio.sleep(2.0)
        sockets = []
        for sock in affected:
            later = sock.connections[marks[sock.name] :]
            first = next((c for c in later if c.connected_at), None)
            windows.append((sock, at, now()))  # counted once the runs ended
            sockets.append(
                {
                    "socket": sock.name,
                    "port": first.port if first else None,
                    "back_s": round(first.connected_at - at, 3) if first else None,
                    "resynced": any(c.resynced for c in later),
                }
            )
        worst = [s["back_s"] for s in sockets]
        records.append(
            {
                "daphne": daphne.index,
                "restart_s": round(restarted, 3),
                "sockets": sockets,
                "recovery_s": max(worst) if worst and None not in worst else None,
            }
        )
    await load.drain(120)
    summary = await settle(stack, load)
    await load.stop()
    counts = iter(window_tokens(sock, start, end) for sock, start, end in windows)
    for record in records:
        for item in record["sockets"]:
            item["lost"], item["doubled"] = next(counts)
        record["exact"] = all(
            not s["resynced"]
            and not s["lost"]
            and not s["doubled"]
            and s["back_s"] is not None
            for s in record["sockets"]
        )
    sockets = [s for r in records for s in r["sockets"]]
    not_back = [s for s in sockets if s["back_s"] is None]
    inexact = [s for s in sockets if s["resynced"] or s["lost"] or s["doubled"]]
    checks = [
        check(
            "every socket back within 30 s",
            f"{len(sockets) - len(not_back)}/{len(sockets)}",
            not not_back,
            "sockets did not reconnect",
        ),
        check(
            "every socket exact (replay, no resynced)",
            f"{len(sockets) - len(inexact)}/{len(sockets)}",
            not inexact,
            "sockets resynced or lost/doubled tokens",
        ),
        *common_checks(summary),
    ]
    return {
        "name": "daphne_restarts",
        "trials": records,
        "summary": summary,
        "checks": checks,
        "plot": {"y": "recovery_s", "label": "SIGKILL → its sockets back (s)"},
    }


# --- 5. PostgreSQL restarted mid-run ---------------------------------------------


async def postgres_restarts(stack, trials: int, rng: random.Random) -> dict:
    load = Load(stack, threads=6, tokens=250, stuck_after=60)
    await load.start()
    loop = asyncio.get_running_loop()
    # The baseline is the most connections seen over 4 s of load: processes
    # open pooled connections as their threads get work, one sample is low.
    connections_before = 0
    for _ in range(8):
        await asyncio.sleep(0.5)
        count = await loop.run_in_executor(None, stack.postgres.connections)
        connections_before = max(connections_before, count)
    records = []
    for _ in range(trials):
        await asyncio.sleep(rng.uniform(1.0, 3.0))
        running = await loop.run_in_executor(None, stack.running_runs)
        at = now()
        await loop.run_in_executor(None, stack.postgres.restart)
        restarted = now() - at
        owner_of = {s.run_id: t for t in load.threads for s in t.sent if s.run_id}

        def ended(running=running, owner_of=owner_of) -> bool:
            return all(
                (owner_of[r].owner.view.runs.get(r) or RunView(r)).done
                for r in running
                if r in owner_of
            )

        while not ended() and now() < at + 60:
            await asyncio.sleep(0.2)
        views = [
            owner_of[r].owner.view.runs.get(r) or RunView(r)
            for r in running
            if r in owner_of
        ]
        statuses = Counter(v.status or "not ended" for v in views)
        errors = Counter(v.error_code for v in views if v.error_code)
        records.append(
            {
                "restart_s": round(restarted, 3),
                "running_at_restart": len(running),
                "recovery_s": round(now() - at, 3) if ended() else None,
                "statuses": dict(statuses),
                "errors": dict(errors),
                # tokens each failed run kept (its reply had `tokens` in all)
                "failed_kept_tokens": [
                    len(token_indices(v.final_text or ""))
                    for v in views
                    if v.status == "failed"
                ],
                "ended_s": [
                    round(v.completed_at - at, 2) for v in views if v.completed_at
                ],
            }
        )
        await asyncio.sleep(3.0)
    await load.drain(120)
    summary = await settle(stack, load)
    await load.stop()
    await asyncio.sleep(5.0)
    connections_after = await loop.run_in_executor(None, stack.postgres.connections)
    summary["connections_before"] = connections_before
    summary["connections_after"] = connections_after
    stuck = [r for r in records if r["recovery_s"] is None]
    explicit = all(
        set(r["statuses"]) <= {"completed", "failed", "cancelled"} for r in records
    )
    # Beyond the wording: a reply that had streamed all of its text when
    # the database went away should still end `completed` once it is back.
    whole = [
        kept
        for record in records
        for kept in record["failed_kept_tokens"]
        if kept >= load.tokens
    ]
    # Each process keeps one connection per thread-pool thread it used; after
    # the restart there should be no more than before (+ the four processes).
    leak_bound = connections_before + 4
    checks = [
        check(
            "runs in flight finish or fail explicitly",
            f"{len(records) - len(stuck)}/{len(records)} restarts; in flight: "
            + ", ".join(f"{n} {k}" for k, n in sum_counts(records, "statuses").items())
            + "".join(f" ({n} {k})" for k, n in sum_counts(records, "errors").items()),
            explicit and not stuck,
            "runs still not ended 60 s after the restart",
        ),
        check(
            f"no connection leak (≤ {leak_bound} after)",
            f"{connections_before} → {connections_after}",
            connections_after <= leak_bound,
            "more connections than before",
        ),
        check(
            "fully streamed runs end `completed`",
            f"{len(whole)} failed with every token",
            not whole,
            "the run's finishing write met the restart and was not retried: "
            "the sweeper failed it (`worker_lost`) after the lease",
        ),
        *common_checks(summary),
    ]
    return {
        "name": "postgres_restarts",
        "trials": records,
        "summary": summary,
        "checks": checks,
        "plot": {"y": "recovery_s", "label": "restart → its runs ended (s)"},
    }


def sum_counts(records: list[dict], key: str) -> dict:
    total: Counter = Counter()
    for record in records:
        total.update(record[key])
    return dict(total)


SCENARIOS = {
    "disconnects": disconnects,
    "redis_restarts": redis_restarts,
    "worker_kills": worker_kills,
    "daphne_restarts": daphne_restarts,
    "postgres_restarts": postgres_restarts,
}
QUICK = {
    "disconnects": 200,
    "redis_restarts": 3,
    "worker_kills": 3,
    "daphne_restarts": 3,
    "postgres_restarts": 1,
}
FULL = {
    "disconnects": 1000,
    "redis_restarts": 10,
    "worker_kills": 10,
    "daphne_restarts": 10,
    "postgres_restarts": 3,
}
