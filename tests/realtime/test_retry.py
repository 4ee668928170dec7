"""The one backoff of every retry loop (realtime/retry.py)."""

from realtime.retry import Backoff


def test_waits_double_up_to_the_maximum_with_jitter_and_reset_starts_over():
    backoff = Backoff(0.1, maximum=1.0)
    ceilings = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    for ceiling in ceilings:
        delay = backoff.next_delay()
        assert ceiling / 2 <= delay <= ceiling
    backoff.reset()
    assert backoff.next_delay() <= 0.1


def test_jitter_spreads_processes_that_retry_at_the_same_moment():
    delays = {round(Backoff(1.0).next_delay(), 6) for _ in range(50)}
    assert len(delays) > 40
