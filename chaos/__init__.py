"""`make chaos`: Parley under faults (roadmap issue 25).

The harness starts its own redis-server and PostgreSQL cluster (so restarting
them touches nothing shared), two daphne processes and two workers, drives a
steady streaming load through resuming WebSocket clients and injects faults:
random disconnects, Redis restarts, worker SIGKILLs, daphne restarts and a
PostgreSQL restart. ``python -m chaos`` (quick) or ``CHAOS=full``; results go to
var/chaos/<stamp>/results.json and bench/CHAOS.md with a plot per scenario.

Modules: ``ledger`` (what a client following docs/protocol.md sees, and the
lost/doubled counts: pure, unit-tested), ``services`` (the private Redis and
PostgreSQL), ``stack`` (Parley's processes), ``client`` (resuming sockets and the
load), ``scenarios``, ``report``.
"""
