"""Fixtures for the ops and audit tests: metric readings, a token, clean probes."""

from __future__ import annotations

import socket

import pytest
from prometheus_client.parser import text_string_to_metric_families

METRICS_TOKEN = "metrics-token-for-tests-7f3a9c"


@pytest.fixture
def metrics_token(settings):
    settings.PARLEY_METRICS_TOKEN = METRICS_TOKEN
    return METRICS_TOKEN


@pytest.fixture(autouse=True)
def close_probe_connections():
    """The readiness check's thread keeps a database connection: closed after
    each test, or PostgreSQL refuses to drop the test database."""
    yield
    from ops import health

    health.close_connections()


def parse_metrics(text: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} from Prometheus text, parsed by
    prometheus-client's own parser (which raises on anything malformed)."""
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def sample(samples: dict, name: str, **labels) -> float:
    """The value of one sample (0 when absent: a counter not yet incremented)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: dict, name: str, **labels) -> float:
    """The sum of `name`'s samples whose labels include `labels` (e.g. over pids)."""
    wanted = set(labels.items())
    return sum(
        value
        for (sample_name, sample_labels), value in samples.items()
        if sample_name == name and wanted <= set(sample_labels)
    )


def closed_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
