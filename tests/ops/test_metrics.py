"""`/metrics`: who may read it, that Prometheus can parse it, and that the
numbers move when runs, messages and sockets do (embedded: worker in process)."""

from __future__ import annotations

import pytest
from django.test import AsyncClient, Client
from prometheus_client import CONTENT_TYPE_LATEST

from agents.models import Run, RunStatus
from chat import services
from chat.models import Role
from tests.eventually import eventually
from tests.ops.conftest import METRICS_TOKEN, parse_metrics, sample, total


def bearer(token: str) -> dict:
    return {"headers": {"Authorization": f"Bearer {token}"}}


def scrape(client=None) -> dict:
    response = (client or Client()).get("/metrics", **bearer(METRICS_TOKEN))
    assert response.status_code == 200, response.content
    return parse_metrics(response.content.decode())


# --- access ---------------------------------------------------------------------------


def test_metrics_without_a_token_are_401(db, metrics_token):
    response = Client().get("/metrics")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert response.json()["error"]["code"] == "not_authenticated"


@pytest.mark.parametrize(
    "header",
    ["Bearer wrong-token", "Token " + METRICS_TOKEN, "Bearer", METRICS_TOKEN],
)
def test_metrics_with_a_wrong_token_are_401(db, metrics_token, header):
    response = Client().get("/metrics", headers={"Authorization": header})
    assert response.status_code == 401


def test_metrics_refuse_everyone_but_staff_when_no_token_is_set(db, settings, users):
    settings.PARLEY_METRICS_TOKEN = ""
    assert Client().get("/metrics", **bearer("")).status_code == 401
    member = Client()
    member.force_login(users[Role.OWNER])
    assert member.get("/metrics").status_code == 401


def test_staff_may_read_metrics_with_their_login(db, users):
    staff = Client()
    staff.force_login(users[Role.STAFF])
    response = staff.get("/metrics")
    assert response.status_code == 200
    parse_metrics(response.content.decode())


def test_metrics_with_the_token_are_prometheus_text(db, metrics_token, thread):
    response = Client().get("/metrics", **bearer(METRICS_TOKEN))
    assert response.status_code == 200
    assert response["Content-Type"] == CONTENT_TYPE_LATEST
    names = {name for name, _ in parse_metrics(response.content.decode())}
    for expected in (
        "parley_run_queue_depth",
        "parley_open_websockets",
        "parley_worker_runs_in_flight",
        "parley_messages_posted_total",
        "parley_events_published_total",
        "parley_metrics_database_up",
    ):
        assert expected in names, expected


def test_metrics_answer_get_only(db, metrics_token):
    response = Client().post("/metrics", **bearer(METRICS_TOKEN))
    assert response.status_code == 405


# --- gauges read from the database ---------------------------------------------------


def test_queue_depth_counts_the_runs_waiting_for_a_worker(db, metrics_token, thread):
    owner = thread.owner
    for status in (RunStatus.QUEUED, RunStatus.QUEUED, RunStatus.RUNNING):
        Run.objects.create(
            thread=thread, agent=thread.agent, requested_by=owner, status=status
        )
    Run.objects.create(
        thread=thread, agent=thread.agent, requested_by=owner, status="completed"
    )
    samples = scrape()
    assert sample(samples, "parley_run_queue_depth") == 2
    labels = {"agent": "echo", "provider": "echo"}
    assert sample(samples, "parley_runs_active", status="queued", **labels) == 2
    assert sample(samples, "parley_runs_active", status="running", **labels) == 1
    assert sample(samples, "parley_metrics_database_up") == 1


def test_a_queued_run_cancelled_counts_as_cancelled(db, metrics_token, thread):
    run = Run.objects.create(
        thread=thread, agent=thread.agent, requested_by=thread.owner
    )
    labels = {"agent": "echo", "provider": "echo", "status": "cancelled"}
    before = sample(scrape(), "parley_runs_finished_total", **labels)
    services.thread_run_cancel(actor=thread.owner, thread_id=thread.id, run_id=run.pk)
    assert sample(scrape(), "parley_runs_finished_total", **labels) == before + 1


# --- counters that move with a real run ------------------------------------------------

transactional = pytest.mark.django_db(transaction=True)


async def ascrape() -> dict:
    response = await AsyncClient().get("/metrics", **bearer(METRICS_TOKEN))
    assert response.status_code == 200, response.content
    return parse_metrics(response.content.decode())


@transactional
async def test_counters_move_when_an_echo_run_completes(
    metrics_token, thread, users, worker, client_for
):
    agent = {"agent": "echo", "provider": "echo"}
    before = await ascrape()
    client = client_for(thread.id, users[Role.OWNER])
    await client.join()
    during = await ascrape()
    assert total(during, "parley_open_websockets") == (
        total(before, "parley_open_websockets") + 1
    )
    await client.send({"type": "message", "content": "one two three four"})
    complete = await client.receive_type("state_complete")
    assert complete["content"]["status"] == "completed"

    def delta(samples, name, **labels):
        return sample(samples, name, **labels) - sample(before, name, **labels)

    after = await eventually(
        lambda: _when(
            ascrape(),
            lambda s: (
                delta(s, "parley_runs_finished_total", status="completed", **agent) == 1
            ),
        ),
        what="the completed run counted",
    )
    assert delta(after, "parley_runs_started_total", **agent) == 1
    assert delta(after, "parley_messages_posted_total") == 1
    assert delta(after, "parley_tokens_total", direction="output", **agent) == 4
    assert delta(after, "parley_tokens_total", direction="input", **agent) == 4
    assert delta(after, "parley_first_response_seconds_count", **agent) == 1
    assert delta(after, "parley_run_queue_wait_seconds_count", **agent) == 1
    # message, status queued/running, chunks, state usage, state_complete at least
    assert delta(after, "parley_events_published_total") >= 5
    assert sample(after, "parley_run_queue_depth") == 0
    await client.close()
    closed = await ascrape()
    assert total(closed, "parley_open_websockets") == total(
        before, "parley_open_websockets"
    )


@transactional
async def test_a_failed_run_counts_its_error_code(
    metrics_token, thread, users, worker, client_for
):
    labels = {"agent": "echo", "provider": "echo"}
    before = await ascrape()
    client = client_for(thread.id, users[Role.OWNER])
    await client.join()
    await client.send({"type": "message", "content": "/fail half a reply"})
    complete = await client.receive_type("state_complete")
    assert complete["content"]["status"] == "failed"

    def counted(samples):
        return (
            sample(samples, "parley_runs_finished_total", status="failed", **labels)
            - sample(before, "parley_runs_finished_total", status="failed", **labels)
            == 1
        )

    after = await eventually(
        lambda: _when(ascrape(), counted), what="the failed run counted"
    )
    assert (
        sample(after, "parley_run_errors_total", code="provider_error", **labels)
        - sample(before, "parley_run_errors_total", code="provider_error", **labels)
        == 1
    )


async def _when(scraping, condition):
    samples = await scraping
    return samples if condition(samples) else None
