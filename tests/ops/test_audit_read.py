"""Reading the audit log: the admin (view only, for every staff member) and
`GET /api/audit/` (staff only, filtered, paginated)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from audit.models import AuditAction, AuditEvent
from audit.services import audit_record
from chat.models import Role

pytestmark = pytest.mark.django_db

ADMIN_URL = "/admin/audit/auditevent/"


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def recorded(users, thread):
    """Three events: two by the owner about the thread, one by staff."""
    owner, staff = users[Role.OWNER], users[Role.STAFF]
    first = audit_record(
        action=AuditAction.MEMBER_ADD,
        actor=owner,
        target_type="user",
        target_repr="stranger",
        thread_id=thread.id,
        changes={"role": {"before": None, "after": "observer"}},
    )
    second = audit_record(
        action=AuditAction.RUN_CANCEL, actor=owner, thread_id=thread.id
    )
    third = audit_record(
        action=AuditAction.AGENT_UPDATE, actor=staff, target_repr="echo"
    )
    return first, second, third


# --- admin ------------------------------------------------------------------------


def test_staff_read_the_log_in_the_admin_but_cannot_add_change_or_delete(
    make_user, recorded
):
    clerk = logged_in(make_user("clerk", is_staff=True))  # no permissions granted
    boss = logged_in(make_user("boss", is_staff=True, is_superuser=True))
    event = recorded[0]
    for client in (clerk, boss):
        listing = client.get(ADMIN_URL)
        assert listing.status_code == 200
        assert b"stranger" in listing.content
        assert b"delete_selected" not in listing.content
        assert client.get(f"{ADMIN_URL}add/").status_code == 403
        detail = client.get(f"{ADMIN_URL}{event.pk}/change/")
        assert detail.status_code == 200
        assert b'name="_save"' not in detail.content  # view only
        assert (
            client.post(
                f"{ADMIN_URL}{event.pk}/change/", {"action": "auth.login"}
            ).status_code
            == 403
        )
        assert client.get(f"{ADMIN_URL}{event.pk}/delete/").status_code == 403
        assert (
            client.post(f"{ADMIN_URL}{event.pk}/delete/", {"post": "yes"}).status_code
            == 403
        )
    stored = AuditEvent.objects.get(pk=event.pk)
    assert stored.action == AuditAction.MEMBER_ADD
    assert AuditEvent.objects.count() >= 3


def test_people_who_are_not_staff_do_not_reach_the_log_in_the_admin(users, recorded):
    response = logged_in(users[Role.OWNER]).get(ADMIN_URL)
    assert response.status_code == 302  # to the admin login
    assert "/admin/login/" in response["Location"]


# --- API -----------------------------------------------------------------------------


def test_the_audit_api_is_for_staff_only(users, recorded):
    assert Client().get("/api/audit/").status_code == 401
    member = logged_in(users[Role.OWNER]).get("/api/audit/")
    assert member.status_code == 403
    assert member.json()["error"]["code"] == "forbidden"
    staff = logged_in(users[Role.STAFF]).get("/api/audit/")
    assert staff.status_code == 200


def test_the_audit_api_lists_newest_first_in_pages(users, recorded):
    staff = logged_in(users[Role.STAFF])
    body = staff.get("/api/audit/?limit=2").json()
    assert body["count"] == AuditEvent.objects.count()
    assert len(body["results"]) == 2
    assert body["next"] is not None
    ids = [event["id"] for event in body["results"]]
    assert ids == sorted(ids, reverse=True)
    # The newest is staff's own login to read the log; the next, staff's change.
    assert body["results"][0]["action"] == "auth.login"
    newest = body["results"][1]
    assert newest["id"] == recorded[2].pk
    assert newest["actor"] == "staff" and newest["action"] == "agent.update"
    assert set(newest) == {
        "id",
        "created_at",
        "actor",
        "actor_id",
        "ip",
        "action",
        "target_type",
        "target_id",
        "target_repr",
        "thread_id",
        "changes",
        "details",
    }


def test_the_audit_api_filters_by_actor_action_thread_and_time(users, thread, recorded):
    staff = logged_in(users[Role.STAFF])

    def ids(query: str) -> list[int]:
        response = staff.get(f"/api/audit/?{query}")
        assert response.status_code == 200, response.content
        return [event["id"] for event in response.json()["results"]]

    first, second, third = (event.pk for event in recorded)
    assert set(ids("actor=owner")) >= {first, second}
    assert third not in ids("actor=owner")
    assert ids("action=run.cancel") == [second]
    # The thread fixture's own members were added too (with no actor).
    assert first in ids(f"thread={thread.id}&action=member.add")
    assert third not in ids(f"thread={thread.id}")
    assert ids(f"thread={thread.id}&actor=owner") == [second, first]
    now = timezone.now()
    later = (now + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    earlier = (now - timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    assert ids(f"since={later}") == []
    assert third in ids(f"since={earlier}&until={later}")
    assert ids(f"until={earlier}") == []


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("action=thread.explode", "action"),
        ("thread=not-a-uuid", "thread"),
        ("since=yesterday", "since"),
        ("since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z", "until"),
    ],
)
def test_bad_audit_filters_are_a_clear_validation_error(users, recorded, query, field):
    response = logged_in(users[Role.STAFF]).get(f"/api/audit/?{query}")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert error["message"].startswith(f"{field}:")
