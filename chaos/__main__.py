"""``python -m chaos`` (``make chaos``): quick mode, or ``CHAOS=full``.

Starts the private services and Parley (chaos/stack.py), runs the scenarios in
order, writes var/chaos/<stamp>/results.json (the processes' logs beside it) and
bench/CHAOS.md with its plots. ``CHAOS_SCENARIOS=disconnects,worker_kills``
runs a subset; ``CHAOS_SEED`` fixes the random choices. Exits 1 when a check
failed.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench.processes import ROOT, stop_everything
from chaos import report
from chaos.scenarios import FULL, QUICK, SCENARIOS
from chaos.stack import Stack


def log(message: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", flush=True)


async def run_all(stack: Stack, plan: dict[str, int], seed: int) -> list[dict]:
    results = []
    for name, trials in plan.items():
        log(f"{name}: {trials} trials")
        started = time.monotonic()
        result = await SCENARIOS[name](stack, trials, random.Random(f"{seed}-{name}"))
        result["seconds"] = round(time.monotonic() - started, 1)
        failed = [c["target"] for c in result["checks"] if not c["passed"]]
        log(
            f"{name}: {result['seconds']} s, "
            + (f"FAILED {failed}" if failed else "pass")
        )
        results.append(result)
    return results


def main() -> int:
    mode = "full" if os.environ.get("CHAOS", "").strip().lower() == "full" else "quick"
    plan = dict(FULL if mode == "full" else QUICK)
    only = [n for n in os.environ.get("CHAOS_SCENARIOS", "").split(",") if n]
    if only:
        unknown = set(only) - set(SCENARIOS)
        if unknown:
            raise SystemExit(
                f"unknown scenarios {sorted(unknown)}; known: {list(SCENARIOS)}"
            )
        plan = {name: plan[name] for name in only}
    seed = int(os.environ.get("CHAOS_SEED", str(int(time.time()))))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    outdir = ROOT / "var" / "chaos" / stamp
    outdir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="parley-chaos-"))
    stack = Stack(workdir)
    started = time.monotonic()
    try:
        log(f"mode {mode}, seed {seed}, work dir {workdir}")
        stack.start()
        log(
            f"Redis :{stack.redis.port}, PostgreSQL :{stack.postgres.port}, "
            f"daphne {stack.ports}, 2 workers"
        )
        results = asyncio.run(run_all(stack, plan, seed))
    finally:
        stack.stop()
        stop_everything()
        for path in workdir.glob("*.log"):
            shutil.copy(path, outdir / path.name)
        if stack.postgres.log.exists():
            shutil.copy(stack.postgres.log, outdir / "postgres.log")
        shutil.rmtree(workdir, ignore_errors=True)
    document = {
        "mode": mode,
        "seed": seed,
        "stamp": stamp,
        "plan": plan,
        "seconds": round(time.monotonic() - started, 1),
        "machine": {"cpus": os.cpu_count(), "load_average": os.getloadavg()},
        "scenarios": results,
    }
    (outdir / "results.json").write_text(json.dumps(document, indent=1, default=str))
    markdown = report.write(document, ROOT / "bench")
    log(f"results: {outdir / 'results.json'}; report: {markdown}")
    print(report.table(document))
    return 0 if all(c["passed"] for r in results for c in r["checks"]) else 1


if __name__ == "__main__":
    sys.exit(main())
