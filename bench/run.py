"""`make bench`: Parley's live-stream capacity, side by side with the baselines.

Starts every process itself (daphne, workers; Redis and PostgreSQL are used where
they run, Redis is started when it is not), drives each system with
``bench/loadgen.py`` in a separate process, and writes
``bench/results/<timestamp>/{results.json,table.md,latency.png}``. See
bench/README.md for the scenarios and how to read the table.

This module is the command line; the work is in bench/processes.py (starting,
stopping and metering processes), bench/systems.py (the systems under test),
bench/scenarios.py (the load and the points), bench/figures.py (a point's
figures and verdict) and bench/report.py (tables and plot).

    python -m bench.run              # full run (~20-25 min on 2 cores)
    python -m bench.run --quick      # smoke run (~4 min)
    python -m bench.run --scenarios capacity,resume --systems parley,ceiling
    python -m bench.run --scenarios toolstep --systems parley-openai
"""

from __future__ import annotations

import argparse
import atexit
import os
import signal
import sys
import time
import traceback
from datetime import datetime
from pathlib import Path

from bench import report
from bench.processes import BENCH, log, prepare_services, stop_everything
from bench.scenarios import QUIET_OTHER_CORES, SCENARIOS, Bench
from bench.systems import SYSTEMS


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: few points, 1 repeat (~4 min)"
    )
    parser.add_argument(
        "--scenarios", default=",".join(SCENARIOS), help=f"comma list of {SCENARIOS}"
    )
    parser.add_argument(
        "--systems", default=",".join(SYSTEMS), help=f"comma list of {SYSTEMS}"
    )
    parser.add_argument("--ks", help="capacity sweep K values, e.g. 10,20,40")
    parser.add_argument("--scaleout-ks", help="scale-out sweep K values")
    parser.add_argument(
        "--repeats", type=int, help="repeats per point (default 3, quick 1)"
    )
    parser.add_argument(
        "--tokens", type=int, help="tokens per run (default 400, quick 200)"
    )
    parser.add_argument(
        "--idle-sockets", type=int, help="idle sockets (default 10000, quick 1000)"
    )
    parser.add_argument(
        "--stall-seconds",
        type=float,
        help="stall scenario length (default 16, quick 8)",
    )
    parser.add_argument(
        "--toolstep-runs",
        type=int,
        default=50,
        help="toolstep: runs per batch, started over a second (default 50)",
    )
    parser.add_argument(
        "--toolstep-repeats",
        type=int,
        default=2,
        help="toolstep: repeats of the plain and the tool batch (default 2)",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        help="seconds to wait before each point for other jobs on the machine to "
        f"calm down below {QUIET_OTHER_CORES} cores (default 30, quick 10)",
    )
    parser.add_argument(
        "--redis", default=os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379")
    )
    parser.add_argument(
        "--redis-db",
        type=int,
        default=int(os.environ.get("BENCH_REDIS_DB", "13")),
        help="Redis db for baselines; Parley uses the next one, Parley's openai "
        "line the one after. All three are flushed.",
    )
    parser.add_argument(
        "--database",
        default=os.environ.get(
            "BENCH_DATABASE", "postgres://postgres@127.0.0.1:5432/test"
        ),
        help="an existing PostgreSQL database to connect to for CREATE DATABASE",
    )
    parser.add_argument(
        "--database-name", default="parley_bench", help="created fresh (dropped first)"
    )
    parser.add_argument("--out", type=Path, default=BENCH / "results")
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.idle_sockets is None:
        args.idle_sockets = 1000 if args.quick else 10_000
    if args.tokens is None:
        args.tokens = 200 if args.quick else 400
    if args.quiet_wait is None:
        args.quiet_wait = 10.0 if args.quick else 30.0
    if args.stall_seconds is None:
        args.stall_seconds = 8.0 if args.quick else 16.0
    default_ks = "10,60" if args.quick else "10,20,40,80,150,300,450,500,600"
    default_scale = "60" if args.quick else "80,150,300,450"
    args.ks = [int(k) for k in (args.ks or default_ks).split(",")]
    args.scaleout_ks = [int(k) for k in (args.scaleout_ks or default_scale).split(",")]
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    args.systems = [s for s in args.systems.split(",") if s]
    for s in args.scenarios:
        if s not in SCENARIOS:
            parser.error(f"unknown scenario {s}")
    for s in args.systems:
        if s not in SYSTEMS:
            parser.error(f"unknown system {s}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    workdir = args.out / stamp
    workdir.mkdir(parents=True, exist_ok=True)
    atexit.register(stop_everything)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: sys.exit(130))
    started = time.monotonic()
    log(f"results in {workdir}")
    bench = None
    try:
        services = prepare_services(args, workdir)
        bench = Bench(args, workdir, services)
        bench.run()
    except Exception:
        traceback.print_exc()
        log("run aborted; partial results are kept")
    finally:
        stop_everything()
        if bench is not None:
            bench.results["meta"]["duration_seconds"] = round(
                time.monotonic() - started, 1
            )
            bench.save()
            table = report.write(bench.results, workdir)
            print()
            print(table)
            log(
                f"wrote {workdir}/results.json, table.md, latency.png in {time.monotonic() - started:.0f} s"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
