"""bench/CHAOS.md and its plots (bench/chaos/<scenario>.png), from the results
document alone: one table row per check (scenario, trials, target, measured,
pass/fail, why), the failures listed, then each scenario's figures and plot.
"""

from __future__ import annotations

import json
from pathlib import Path

TITLES = {
    "disconnects": "Random disconnect / resume",
    "redis_restarts": "Redis restarted mid-stream",
    "worker_kills": "Worker SIGKILLed mid-run",
    "daphne_restarts": "daphne restarted (SIGKILL)",
    "postgres_restarts": "PostgreSQL restarted mid-run",
}

METHODS = {
    "disconnects": "A random socket's TCP connection is cut (no close handshake) "
    "every 0.1-0.4 s; the client stays away 0-1.5 s, then reconnects with "
    "`?last_event_id=N` to its home daphne. Plot: connect → the last event missed "
    "while away applied (or `connected`, when nothing was missed); red: the "
    "server answered with `resynced` instead of a replay.",
    "redis_restarts": "The harness's redis-server is SIGKILLed and started again, "
    "empty, on the same port, 2-4 s into the streams. Each socket must either "
    "stay exact or get a `resynced` snapshot, and its text must stay right "
    "(a socket whose text went wrong, or that saw a gap without a snapshot, is a "
    "silent gap). Plot: kill → every socket has its snapshot.",
    "worker_kills": "Once both workers run runs (400 tokens, 8 s), one is "
    "SIGKILLed (alternately) and replaced after its runs ended. Its runs must end "
    "`failed` (`worker_lost`) within 30 s keeping the text streamed (a hole-free "
    "prefix holding every token the sockets saw); the other worker's runs must "
    "complete exactly. Default lease (15 s) and sweep interval (5 s). Plot: kill "
    "→ the last of its runs ended on every socket.",
    "daphne_restarts": "One daphne (alternately) is SIGKILLed and started again on "
    "its port; its sockets reconnect (home first, else the other daphne) with "
    "their last event id and must replay exactly (no `resynced`, nothing lost "
    "or doubled). Plot: kill → the last of its sockets back.",
    "postgres_restarts": "`pg_ctl restart -m fast` on the harness's cluster "
    "mid-run. Runs in flight must finish or fail explicitly (none stuck after "
    "60 s); the database's client connections afterwards must not exceed those "
    "before (+4, one per process). Plot: restart → its runs ended.",
}


def table(document: dict) -> str:
    lines = [
        "| scenario | trials | target | measured | result | why |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for result in document["scenarios"]:
        trials = len(result["trials"])
        for check in result["checks"]:
            lines.append(
                f"| {TITLES.get(result['name'], result['name'])} | {trials} | "
                f"{check['target']} | {check['measured']} | "
                f"{'pass' if check['passed'] else '**FAIL**'} | {check['why']} |"
            )
    return "\n".join(lines)


def plot(result: dict, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return False
    spec = result["plot"]
    values = [trial.get(spec["y"]) for trial in result["trials"]]
    marker = spec.get("marker")
    figure, axes = plt.subplots(figsize=(7, 3.2))
    good = [(i, v) for i, v in enumerate(values) if v is not None]
    flagged = {i for i, t in enumerate(result["trials"]) if marker and t.get(marker)}
    plain = [(i, v) for i, v in good if i not in flagged]
    marked = [(i, v) for i, v in good if i in flagged]
    if plain:
        axes.scatter(
            *zip(*plain, strict=True), s=12, label="exact" if marker else spec["y"]
        )
    if marked:
        axes.scatter(*zip(*marked, strict=True), s=14, color="tab:red", label=marker)
    missing = [i for i, v in enumerate(values) if v is None]
    if missing:
        top = max([v for _, v in good] + [1.0])
        axes.scatter(
            missing,
            [top] * len(missing),
            marker="x",
            color="black",
            label="never recovered",
        )
    if spec.get("line"):
        axes.axhline(spec["line"], color="grey", linestyle="--", label="target")
    axes.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axes.set_xlabel("trial")
    axes.set_ylabel(spec["label"])
    axes.set_title(TITLES.get(result["name"], result["name"]))
    axes.set_ylim(bottom=0)
    axes.legend(loc="upper right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return True


def write(document: dict, bench: Path) -> Path:
    figures = bench / "chaos"
    figures.mkdir(exist_ok=True)
    failed = [
        (result["name"], check)
        for result in document["scenarios"]
        for check in result["checks"]
        if not check["passed"]
    ]
    machine = document["machine"]
    parts = [
        "# Chaos results (`make chaos`)",
        "",
        f"Written by `python -m chaos` ({document['mode']} mode, seed "
        f"{document['seed']}, run {document['stamp']}, {document['seconds']} s). "
        "Two daphne processes and two `runworker agent-runs` workers on the "
        "harness's own PostgreSQL and redis-server, under a steady load of "
        "echo runs at 50 tokens/s (6 threads, an owner and an observer socket "
        "each, on different daphnes). Every token is numbered, so lost and "
        "doubled counts are exact; the REST history is checked against what "
        "the sockets were told.",
        "",
        f"The machine is shared ({machine['cpus']} CPUs, load average "
        f"{', '.join(f'{x:.1f}' for x in machine['load_average'])} at the end): "
        "timings are indicative, counts are exact. Raw data: "
        f"`var/chaos/{document['stamp']}/results.json` (with the processes' logs).",
        "",
        "Run it with `make chaos` (quick: 200 disconnects, 3 of each restart, "
        "1 PostgreSQL restart; under 10 minutes) or `make chaos CHAOS=full` "
        "(1,000 / 10 / 3); `CHAOS_SCENARIOS=disconnects,worker_kills` for a "
        "subset, `CHAOS_SEED` to repeat the random choices.",
        "",
        table(document),
        "",
        "## Failed",
        "",
    ]
    if failed:
        parts += [
            f"- {TITLES.get(name, name)}: {c['target']}: measured {c['measured']} "
            f"({c['why']})"
            for name, c in failed
        ]
    else:
        parts.append("Nothing failed.")
    for result in document["scenarios"]:
        image = figures / f"{result['name']}.png"
        parts += ["", f"## {TITLES.get(result['name'], result['name'])}", ""]
        if result["name"] in METHODS:
            parts += [METHODS[result["name"]], ""]
        if plot(result, image):
            parts += [f"![{result['name']}](chaos/{image.name})", ""]
        parts += [
            f"{len(result['trials'])} trials, {result.get('seconds', '?')} s.",
            "",
            "```json",
            json.dumps(result["summary"], indent=1, default=str),
            "```",
        ]
    path = bench / "CHAOS.md"
    path.write_text("\n".join(parts) + "\n")
    return path


if __name__ == "__main__":  # rebuild bench/CHAOS.md from a results.json
    import sys

    from bench.processes import ROOT

    print(write(json.loads(Path(sys.argv[1]).read_text()), ROOT / "bench"))
