"""The audit log: one event, with who, when, from where and what changed, for
each audited action, done the way people do it (API, login page, socket)."""

from __future__ import annotations

import pytest
from django.test import Client
from rest_framework.authtoken.models import Token

from agents.models import AgentConfig, Run
from audit.models import AuditAction, AuditEvent, AuditEventImmutable
from chat.models import Role, ThreadMember
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


def api_client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def log():
    """The fixtures' own members and agents are recorded too: `log.events()`
    shows what happened after `log.start()`, which a test calls once set up."""
    return Log()


class Log:
    first_id = 0

    def start(self) -> None:
        last = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first()
        self.first_id = (last or 0) + 1

    def events(self, action=None) -> list[AuditEvent]:
        found = AuditEvent.objects.filter(id__gte=self.first_id).order_by("id")
        return list(found.filter(action=action) if action else found)

    def the_event(self, action) -> AuditEvent:
        (event,) = self.events(action)
        return event


# --- membership --------------------------------------------------------------------


def test_sharing_changing_a_role_and_removing_a_member_are_recorded(users, thread, log):
    log.start()
    owner = api_client(users[Role.OWNER])
    members = f"/api/threads/{thread.id}/members/"
    stranger = users["stranger"]

    response = owner.post(
        members, {"username": "stranger", "role": "observer"}, "application/json"
    )
    assert response.status_code == 201
    added = log.the_event(AuditAction.MEMBER_ADD)
    assert added.actor_username == "owner" and added.actor_id == users[Role.OWNER].pk
    assert added.ip == "127.0.0.1"
    assert added.thread_id == thread.id
    assert added.target_id == str(stranger.pk) and added.target_repr == "stranger"
    assert added.changes == {"role": {"before": None, "after": "observer"}}

    # Sharing again with the same role changes nothing: nothing recorded.
    owner.post(
        members, {"username": "stranger", "role": "observer"}, "application/json"
    )
    assert log.events(AuditAction.MEMBER_ROLE_CHANGE) == []

    owner.post(
        members, {"username": "stranger", "role": "participant"}, "application/json"
    )
    changed = log.the_event(AuditAction.MEMBER_ROLE_CHANGE)
    assert changed.changes == {"role": {"before": "observer", "after": "participant"}}
    assert changed.actor_username == "owner"

    assert owner.delete(f"{members}stranger/").status_code == 204
    removed = log.the_event(AuditAction.MEMBER_REMOVE)
    assert removed.changes == {"role": {"before": "participant", "after": None}}
    assert removed.details == {"username": "stranger"}
    assert removed.actor_username == "owner"


def test_a_member_who_leaves_is_the_actor_of_their_removal(users, thread, log):
    log.start()
    participant = api_client(users[Role.PARTICIPANT])
    response = participant.delete(f"/api/threads/{thread.id}/members/participant/")
    assert response.status_code == 204
    removed = log.the_event(AuditAction.MEMBER_REMOVE)
    assert removed.actor_username == "participant"


def test_deleting_a_thread_is_one_event_with_who_was_in_it(users, thread, log):
    log.start()
    owner = api_client(users[Role.OWNER])
    assert owner.delete(f"/api/threads/{thread.id}/").status_code == 204
    deleted = log.the_event(AuditAction.THREAD_DELETE)
    assert deleted.actor_username == "owner"
    assert deleted.thread_id == thread.id and deleted.target_repr == "t"
    assert deleted.details["owner"] == "owner"
    assert deleted.details["members"] == [
        {"username": "participant", "role": "participant"},
        {"username": "observer", "role": "observer"},
    ]
    # The members went with the thread: no removal events of their own.
    assert log.events(AuditAction.MEMBER_REMOVE) == []
    assert not ThreadMember.objects.filter(thread_id=thread.id).exists()


# --- agent configs ---------------------------------------------------------------------


def test_agent_config_changes_record_before_and_after_per_field(users, echo_agent, log):
    log.start()
    staff = api_client(users[Role.STAFF])
    response = staff.post(
        "/api/agents/",
        {"name": "helper", "provider": "echo", "system_prompt": "Be brief."},
        "application/json",
    )
    assert response.status_code == 201, response.content
    created = log.the_event(AuditAction.AGENT_CREATE)
    assert created.actor_username == "staff"
    assert created.target_repr == "helper"
    assert created.changes["system_prompt"] == {"before": None, "after": "Be brief."}
    assert created.changes["provider"] == {"before": None, "after": "echo"}

    response = staff.patch(
        "/api/agents/helper/",
        {"temperature": 0.2, "system_prompt": "Be very brief."},
        "application/json",
    )
    assert response.status_code == 200, response.content
    updated = log.the_event(AuditAction.AGENT_UPDATE)
    assert updated.changes == {
        "temperature": {"before": 0.7, "after": 0.2},
        "system_prompt": {"before": "Be brief.", "after": "Be very brief."},
    }
    assert updated.actor_username == "staff" and updated.ip == "127.0.0.1"

    # A save that changes nothing records nothing.
    AgentConfig.objects.get(name="helper").save()
    assert len(log.events(AuditAction.AGENT_UPDATE)) == 1

    assert staff.delete("/api/agents/helper/").status_code == 204
    deleted = log.the_event(AuditAction.AGENT_DELETE)
    assert deleted.changes["system_prompt"] == {
        "before": "Be very brief.",
        "after": None,
    }


def test_an_agent_in_use_that_cannot_be_deleted_records_no_deletion(users, thread, log):
    log.start()
    staff = api_client(users[Role.STAFF])
    assert staff.delete("/api/agents/echo/").status_code == 409
    assert log.events(AuditAction.AGENT_DELETE) == []


# --- runs -----------------------------------------------------------------------------


def test_cancelling_a_run_through_the_api_is_recorded(users, thread, log):
    log.start()
    run = Run.objects.create(
        thread=thread, agent=thread.agent, requested_by=users[Role.OWNER]
    )
    participant = api_client(users[Role.PARTICIPANT])
    response = participant.post(f"/api/runs/{run.pk}/cancel/")
    assert response.status_code == 200, response.content
    cancelled = log.the_event(AuditAction.RUN_CANCEL)
    assert cancelled.actor_username == "participant"
    assert cancelled.target_type == "run" and cancelled.target_id == str(run.pk)
    assert cancelled.thread_id == thread.id
    assert cancelled.ip == "127.0.0.1"


def test_cancelling_runs_in_the_admin_is_recorded(make_user, thread, log):
    run = Run.objects.create(
        thread=thread, agent=thread.agent, requested_by=thread.owner
    )
    boss = api_client(make_user("boss", is_staff=True, is_superuser=True))
    log.start()
    response = boss.post(
        "/admin/agents/run/",
        {"action": "cancel_runs", "_selected_action": [str(run.pk)]},
    )
    assert response.status_code == 302
    cancelled = log.the_event(AuditAction.RUN_CANCEL)
    assert cancelled.actor_username == "boss"
    assert cancelled.target_id == str(run.pk)


def test_a_refused_cancel_records_nothing(users, thread, log):
    log.start()
    run = Run.objects.create(
        thread=thread, agent=thread.agent, requested_by=users[Role.OWNER]
    )
    observer = api_client(users[Role.OBSERVER])
    assert observer.post(f"/api/runs/{run.pk}/cancel/").status_code == 403
    assert log.events(AuditAction.RUN_CANCEL) == []


# --- tokens and logins -------------------------------------------------------------------


def test_getting_and_revoking_a_token_is_recorded_without_the_key(users, log):
    log.start()
    client = Client()
    response = client.post(
        "/api/auth/token/",
        {"username": "owner", "password": PASSWORD},
        "application/json",
    )
    assert response.status_code == 200
    key = response.json()["token"]
    created = log.the_event(AuditAction.TOKEN_CREATE)
    assert created.actor_username == "owner"
    assert created.details == {"user": "owner"}
    login = log.the_event(AuditAction.LOGIN)
    assert login.details == {"method": "token"} and login.ip == "127.0.0.1"

    # Asking again hands out the same token: a login, no new token.
    client.post(
        "/api/auth/token/",
        {"username": "owner", "password": PASSWORD},
        "application/json",
    )
    assert len(log.events(AuditAction.TOKEN_CREATE)) == 1
    assert len(log.events(AuditAction.LOGIN)) == 2

    response = client.delete(
        "/api/auth/token/", headers={"Authorization": f"Token {key}"}
    )
    assert response.status_code == 204
    revoked = log.the_event(AuditAction.TOKEN_REVOKE)
    assert revoked.actor_username == "owner"
    assert revoked.target_id == created.target_id  # the same token, by fingerprint
    assert revoked.details == {"user": "owner", "reason": "revoked"}
    for event in log.events():
        assert key not in str(event.__dict__)


def test_deleting_a_user_revokes_their_token_on_the_record(users, log):
    log.start()
    Token.objects.create(user=users["stranger"])
    users["stranger"].delete()
    revoked = log.the_event(AuditAction.TOKEN_REVOKE)
    assert revoked.details == {"user": "stranger", "reason": "user_deleted"}


def test_a_session_login_and_logout_are_recorded_with_the_address(users, log):
    log.start()
    client = Client(REMOTE_ADDR="203.0.113.7")
    response = client.post(
        "/accounts/login/", {"username": "owner", "password": PASSWORD}
    )
    assert response.status_code == 302
    login = log.the_event(AuditAction.LOGIN)
    assert login.actor_username == "owner"
    assert login.ip == "203.0.113.7"
    assert login.details == {"method": "session"}
    client.post("/accounts/logout/")
    assert log.the_event(AuditAction.LOGOUT).actor_username == "owner"


def test_failed_logins_record_the_name_tried_and_never_the_password(users, log):
    log.start()
    Client(REMOTE_ADDR="198.51.100.9").post(
        "/accounts/login/", {"username": "owner", "password": "guess-1"}
    )
    Client().post(
        "/api/auth/token/",
        {"username": "nobody", "password": "guess-2"},
        "application/json",
    )
    session_try, token_try = log.events(AuditAction.LOGIN_FAILED)
    assert session_try.details == {"username": "owner"}
    assert session_try.ip == "198.51.100.9"
    assert session_try.actor_id is None and session_try.actor_username == ""
    assert token_try.details == {"username": "nobody"}
    assert token_try.ip == "127.0.0.1"
    for event in log.events():
        assert "guess-" not in str(event.__dict__)
    assert log.events(AuditAction.LOGIN) == []


def test_making_someone_staff_is_recorded(users, log):
    log.start()
    user = users["stranger"]
    user.is_staff = True
    user.save()
    changed = log.the_event(AuditAction.USER_UPDATE)
    assert changed.target_repr == "stranger"
    assert changed.changes == {"is_staff": {"before": False, "after": True}}
    user.last_login = None
    user.save(update_fields=["last_login"])  # every login does this: not audited
    assert len(log.events(AuditAction.USER_UPDATE)) == 1


# --- append-only -----------------------------------------------------------------------


def test_audit_events_cannot_be_changed_or_deleted(users, log):
    log.start()
    Client().post("/accounts/login/", {"username": "owner", "password": "wrong"})
    event = log.the_event(AuditAction.LOGIN_FAILED)
    event.details = {"username": "someone else"}
    with pytest.raises(AuditEventImmutable):
        event.save()
    with pytest.raises(AuditEventImmutable):
        event.delete()
    with pytest.raises(AuditEventImmutable):
        AuditEvent.objects.filter(pk=event.pk).update(action="auth.login")
    with pytest.raises(AuditEventImmutable):
        AuditEvent.objects.all().delete()
    stored = AuditEvent.objects.get(pk=event.pk)
    assert stored.details == {"username": "owner"}
    assert stored.action == AuditAction.LOGIN_FAILED
