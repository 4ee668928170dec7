"""The pass rule of a capacity point: did every run keep its pace?

A point is K threads, each running one reply of ``tokens`` tokens at
``tokens_per_second`` (the full bench: 400 at 50/s, so the ideal run is 8 s).
It passes only when all of these hold:

- every token reached every socket exactly once (nothing lost, nothing doubled);
- run duration (message send -> last token received on any of the thread's
  sockets): the median run <= 1.10 x ideal and the slowest <= 1.25 x ideal,
  ideal = tokens / tokens_per_second;
- schedule latency p99 <= 500 ms. Token i of a run is due at message send +
  i / tokens_per_second (token 0 at once); its schedule latency is receive time
  - due - the system's own light-load first response (the K = 10 message -> first
  response p50 of the same bench run), so a system is not blamed for the fixed
  cost of starting one reply, only for falling behind the schedule;
- message -> first response p99 <= 1 s.

The token's own stamp (receive time - when the agent produced it) cannot see a
late start, so it is reported but not judged. Repeats: a K passes when most of
its repeats pass and none lost or doubled a token; capacity is the largest K
that passed.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    median_run_ratio: float = 1.10
    slowest_run_ratio: float = 1.25
    schedule_p99_ms: float = 500.0
    first_response_p99_ms: float = 1000.0


LIMITS = Limits()


def schedule_p99_ms(
    raw_p99_ms: float | None, light_first_response_ms: float | None
) -> float | None:
    """Schedule latency p99 less the system's light-load first response.

    The load generator measures receive time - due for every token; subtracting
    one constant from every sample moves every percentile by that constant, so
    the offset is applied to the percentile once it is known."""
    if raw_p99_ms is None:
        return None
    return round(raw_p99_ms - (light_first_response_ms or 0.0), 2)


def failures(figures: dict, limits: Limits = LIMITS) -> list[str]:
    """Why one measured point fails, in words; an empty list means it passed.

    ``figures`` holds ``lost``, ``doubled``, ``timed_out``, ``run_median_ratio``,
    ``run_slowest_ratio``, ``schedule_p99_ms`` and ``first_response_p99_ms``; a
    figure that is missing fails the point (it was not measured)."""
    reasons = []
    if figures.get("error"):
        reasons.append("error")
    if figures.get("lost") != 0:
        reasons.append(f"lost {figures.get('lost')}")
    if figures.get("doubled") != 0:
        reasons.append(f"doubled {figures.get('doubled')}")
    if figures.get("timed_out"):
        reasons.append("timed out")
    checks = (
        ("run_median_ratio", limits.median_run_ratio, "median run {:.2f}x"),
        ("run_slowest_ratio", limits.slowest_run_ratio, "slowest run {:.2f}x"),
        ("schedule_p99_ms", limits.schedule_p99_ms, "schedule p99 {:.0f} ms"),
        (
            "first_response_p99_ms",
            limits.first_response_p99_ms,
            "first response p99 {:.0f} ms",
        ),
    )
    for key, limit, text in checks:
        value = figures.get(key)
        if value is None:
            reasons.append(f"no {key}")
        elif value > limit:
            reasons.append(text.format(value))
    return list(dict.fromkeys(reasons))


def repeats_pass(points_passed: list[bool], lost: int, doubled: int) -> bool:
    """A K passes when most repeats passed and no repeat lost or doubled a token."""
    if not points_passed or lost or doubled:
        return False
    return sum(points_passed) * 2 > len(points_passed)


def capacity(passed_by_k: dict[int, bool]) -> int:
    """The largest K that passed (0 when none did)."""
    return max((k for k, passed in passed_by_k.items() if passed), default=0)
