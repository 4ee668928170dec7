"""The capacity pass rule (bench/criteria.py): run with
``.venv/bin/python -m pytest bench/test_criteria.py``."""

from bench import criteria

ON_PACE = {
    "lost": 0,
    "doubled": 0,
    "timed_out": False,
    "run_median_ratio": 1.01,
    "run_slowest_ratio": 1.03,
    "schedule_p99_ms": 80.0,
    "first_response_p99_ms": 120.0,
}


def test_a_point_that_keeps_its_pace_passes():
    assert criteria.failures(ON_PACE) == []


def test_a_late_start_fails_even_when_every_token_is_on_time_after_it():
    late = {**ON_PACE, "run_median_ratio": 1.12, "first_response_p99_ms": 1400.0}

    assert criteria.failures(late) == [
        "median run 1.12x",
        "first response p99 1400 ms",
    ]


def test_one_slow_run_fails_the_point():
    assert criteria.failures({**ON_PACE, "run_slowest_ratio": 1.3}) == [
        "slowest run 1.30x"
    ]


def test_the_limits_themselves_pass():
    edge = {
        **ON_PACE,
        "run_median_ratio": 1.10,
        "run_slowest_ratio": 1.25,
        "schedule_p99_ms": 500.0,
        "first_response_p99_ms": 1000.0,
    }

    assert criteria.failures(edge) == []


def test_a_lost_or_doubled_token_fails_whatever_the_latency():
    assert criteria.failures({**ON_PACE, "lost": 3}) == ["lost 3"]
    assert criteria.failures({**ON_PACE, "doubled": 1}) == ["doubled 1"]


def test_a_figure_that_was_not_measured_fails():
    assert criteria.failures({**ON_PACE, "schedule_p99_ms": None}) == [
        "no schedule_p99_ms"
    ]


def test_schedule_latency_is_net_of_the_light_load_first_response():
    assert criteria.schedule_p99_ms(530.0, 40.0) == 490.0
    assert criteria.schedule_p99_ms(530.0, None) == 530.0
    assert criteria.schedule_p99_ms(None, 40.0) is None


def test_a_k_passes_on_most_repeats_and_never_with_a_lost_token():
    assert criteria.repeats_pass([True, False, True], lost=0, doubled=0)
    assert not criteria.repeats_pass([True, False], lost=0, doubled=0)
    assert not criteria.repeats_pass([True, True, True], lost=1, doubled=0)
    assert not criteria.repeats_pass([], lost=0, doubled=0)


def test_capacity_is_the_largest_k_that_passed():
    assert criteria.capacity({10: True, 60: True, 150: False}) == 60
    assert criteria.capacity({10: False}) == 0
