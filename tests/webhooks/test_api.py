"""The webhooks API: who may set and see a webhook, and which URLs are refused."""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit

import pytest

from agents.models import Run, RunStatus
from chat.models import Role, Thread
from tests.webhooks.conftest import api
from webhooks.models import Webhook, WebhookDelivery

pytestmark = pytest.mark.django_db

HOOK = "http://127.0.0.1:9/hooks"


def test_the_owner_sets_the_threads_webhook_and_sees_its_secret_once(users, thread):
    owner = api(users[Role.OWNER])
    created = owner.put(
        f"/api/threads/{thread.id}/webhook/", {"url": HOOK}, format="json"
    )
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["url"] == HOOK and body["thread"] == str(thread.id)
    assert body["secret"].startswith("whsec_") and len(body["secret"]) > 40

    read = owner.get(f"/api/threads/{thread.id}/webhook/")
    assert read.status_code == 200
    assert read.json()["id"] == body["id"] and "secret" not in read.json()

    moved = owner.put(
        f"/api/threads/{thread.id}/webhook/",
        {"url": HOOK + "/v2", "description": "ci"},
        format="json",
    )
    assert moved.status_code == 200, moved.content
    assert moved.json()["id"] == body["id"] and "secret" not in moved.json()
    webhook = Webhook.objects.get()
    assert webhook.secret == body["secret"] and webhook.url == HOOK + "/v2"

    assert owner.delete(f"/api/threads/{thread.id}/webhook/").status_code == 204
    assert not Webhook.objects.exists()
    gone = owner.get(f"/api/threads/{thread.id}/webhook/")
    assert gone.status_code == 404
    assert gone.json()["error"]["code"] == "webhook_not_found"


@pytest.mark.parametrize(
    ("allowed", "url", "code"),
    [
        ([], "https://hooks.example.com/x", "webhook_host_not_allowed"),
        (
            ["hooks.example.com"],
            "https://evil.example.com/x",
            "webhook_host_not_allowed",
        ),
        (
            ["*.example.com"],
            "https://example.com.evil.net/x",
            "webhook_host_not_allowed",
        ),
        (["*.example.com"], "http://hooks.example.com/x", "webhook_https_required"),
        (["*"], "http://anything.example.org/x", "webhook_https_required"),
        (["127.0.0.1"], "ftp://127.0.0.1/x", "webhook_url_invalid"),
        (["127.0.0.1"], "http://user:pw@127.0.0.1/x", "webhook_url_invalid"),
        (["127.0.0.1"], "/relative", "webhook_url_invalid"),
    ],
)
def test_a_url_the_deployment_does_not_allow_is_refused_at_creation(
    settings, users, thread, allowed, url, code
):
    settings.PARLEY_WEBHOOK_ALLOWED_HOSTS = allowed
    owner = api(users[Role.OWNER])
    for path, method in (
        (f"/api/threads/{thread.id}/webhook/", "put"),
        ("/api/webhooks/", "post"),
    ):
        response = getattr(owner, method)(path, {"url": url}, format="json")
        assert response.status_code == 400, response.content
        assert response.json()["error"]["code"] == code
        if code != "webhook_url_invalid":
            assert urlsplit(url).hostname in response.json()["error"]["message"]
    assert not Webhook.objects.exists()


@pytest.mark.parametrize(
    ("allowed", "url"),
    [
        (["*.example.com"], "https://hooks.example.com/x"),
        (["*"], "https://anything.example.org/x"),
        (["hooks.example.com"], "http://hooks.example.com:8080/x"),
        (["[::1]"], "http://[::1]:8080/x"),
    ],
)
def test_allowed_urls_are_taken(settings, users, url, allowed):
    settings.PARLEY_WEBHOOK_ALLOWED_HOSTS = allowed
    response = api(users[Role.OWNER]).post(
        "/api/webhooks/", {"url": url}, format="json"
    )
    assert response.status_code == 201, response.content
    assert response.json()["thread"] is None


@pytest.mark.parametrize(
    ("role", "status", "code"),
    [
        (Role.PARTICIPANT, 403, "forbidden"),
        (Role.OBSERVER, 403, "read_only"),
        (Role.STAFF, 403, "forbidden"),
        ("stranger", 404, "thread_not_found"),
    ],
)
def test_only_the_owner_may_see_or_set_the_threads_webhook(
    users, thread, role, status, code
):
    api(users[Role.OWNER]).put(
        f"/api/threads/{thread.id}/webhook/", {"url": HOOK}, format="json"
    )
    webhook = Webhook.objects.get()
    other = api(users[role])
    path = f"/api/threads/{thread.id}/webhook/"
    for method, body in (
        ("get", None),
        ("put", {"url": HOOK + "/mine"}),
        ("delete", None),
    ):
        response = getattr(other, method)(path, body, format="json")
        assert response.status_code == status, (method, response.content)
        assert response.json()["error"]["code"] == code
    # Nor through the webhook's own resource: it is not theirs.
    for method, suffix in (("get", ""), ("delete", ""), ("get", "deliveries/")):
        response = getattr(other, method)(f"/api/webhooks/{webhook.id}/{suffix}")
        assert response.status_code == 404, response.content
        assert response.json()["error"]["code"] == "webhook_not_found"
    assert other.get("/api/webhooks/").json()["results"] == []
    webhook.refresh_from_db()
    assert webhook.url == HOOK and webhook.owner == users[Role.OWNER]


def test_nobody_else_sees_or_redelivers_a_delivery(users, thread):
    webhook = Webhook.objects.create(
        owner=users[Role.OWNER], thread=thread, url=HOOK, secret="whsec_x"
    )
    run = Run.objects.create(thread=thread, agent=thread.agent, status="completed")
    delivery = WebhookDelivery.objects.create(
        webhook=webhook, run=run, event="run.completed", body="{}", status="failed"
    )
    for role in (Role.PARTICIPANT, Role.STAFF, "stranger"):
        other = api(users[role])
        for method, suffix in (("get", ""), ("post", "redeliver/")):
            response = getattr(other, method)(
                f"/api/webhooks/deliveries/{delivery.id}/{suffix}"
            )
            assert response.status_code == 404, response.content
            assert response.json()["error"]["code"] == "delivery_not_found"
    delivery.refresh_from_db()
    assert delivery.status == "failed"

    mine = api(users[Role.OWNER]).get(f"/api/webhooks/{webhook.id}/deliveries/")
    assert mine.status_code == 200
    assert [item["id"] for item in mine.json()["results"]] == [str(delivery.id)]


def test_a_run_names_only_its_callers_webhook_in_a_thread_it_reads(
    users, thread, make_user
):
    own = api(users[Role.OWNER]).post("/api/webhooks/", {"url": HOOK}, format="json")
    run = Run.objects.create(thread=thread, agent=thread.agent, status=RunStatus.QUEUED)
    # A stranger's own webhook, on a run in a thread they cannot read: no such run.
    stranger = api(users["stranger"])
    theirs = stranger.post("/api/webhooks/", {"url": HOOK}, format="json").json()
    response = stranger.post(
        f"/api/runs/{run.id}/webhook/", {"webhook": theirs["id"]}, format="json"
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "run_not_found"
    # A participant cannot name the owner's webhook.
    response = api(users[Role.PARTICIPANT]).post(
        f"/api/runs/{run.id}/webhook/", {"webhook": own.json()["id"]}, format="json"
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "webhook_not_found"
    # The owner can, once: naming it again changes nothing.
    owner = api(users[Role.OWNER])
    first = owner.post(
        f"/api/runs/{run.id}/webhook/", {"webhook": own.json()["id"]}, format="json"
    )
    again = owner.post(
        f"/api/runs/{run.id}/webhook/", {"webhook": own.json()["id"]}, format="json"
    )
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["run"] == str(run.id)
    assert not WebhookDelivery.objects.exists()  # the run has not ended


def test_deleting_the_thread_deletes_its_webhook(users, thread):
    api(users[Role.OWNER]).put(
        f"/api/threads/{thread.id}/webhook/", {"url": HOOK}, format="json"
    )
    Thread.objects.filter(pk=thread.pk).delete()
    assert not Webhook.objects.exists()


def test_unknown_ids_are_404s(users):
    owner = api(users[Role.OWNER])
    missing = uuid.uuid4()
    assert owner.get(f"/api/webhooks/{missing}/").status_code == 404
    assert owner.get(f"/api/threads/{missing}/webhook/").status_code == 404
    assert owner.get(f"/api/webhooks/deliveries/{missing}/").status_code == 404
