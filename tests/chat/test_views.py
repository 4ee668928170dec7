"""The web UI's pages and JSON views: who sees what, and what the forms change."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from chat.models import Message, MessageRole, Role, Thread, ThreadMember

pytestmark = pytest.mark.django_db


@pytest.fixture
def login(client):
    def as_user(user):
        client.force_login(user)
        return client

    return as_user


def test_pages_require_login(client, thread):
    for url in (
        reverse("thread-list"),
        reverse("thread-list-json"),
        reverse("thread-new"),
        reverse("thread-detail", args=[thread.id]),
        reverse("thread-settings", args=[thread.id]),
    ):
        response = client.get(url)
        assert response.status_code == 302
        assert response.url.startswith("/accounts/login/")


def test_login_page_renders_a_labelled_form(client):
    response = client.get("/accounts/login/")
    assert response.status_code == 200
    assert b'<label for="id_username">Username</label>' in response.content
    assert b'<label for="id_password">Password</label>' in response.content


def test_logout_is_a_post_form(login, users):
    response = login(users[Role.OWNER]).get(reverse("thread-list"))
    assert b'<form method="post" action="/accounts/logout/">' in response.content


def test_thread_list_shows_the_callers_threads_with_a_preview(login, users, thread):
    Message.objects.create(
        thread=thread,
        author=users[Role.PARTICIPANT],
        role=MessageRole.USER,
        text="hello there",
    )
    client = login(users[Role.OBSERVER])
    page = client.get(reverse("thread-list"))
    assert page.status_code == 200
    assert str(thread.id).encode() in page.content
    data = client.get(reverse("thread-list-json")).json()
    [summary] = data["threads"]
    assert summary["id"] == str(thread.id)
    assert summary["title"] == "t"
    assert summary["agent"] == "echo"
    assert summary["preview"] == "hello there"
    assert summary["preview_author"] == "participant"
    assert summary["url"] == f"/threads/{thread.id}/"


def test_strangers_do_not_see_the_thread(login, users, thread):
    client = login(users["stranger"])
    assert client.get(reverse("thread-list-json")).json() == {"threads": []}
    assert client.get(reverse("thread-detail", args=[thread.id])).status_code == 404
    assert client.get(reverse("thread-settings", args=[thread.id])).status_code == 404


def test_new_chat_creates_a_thread_with_the_chosen_agent(login, users, echo_agent):
    client = login(users[Role.OWNER])
    page = client.get(reverse("thread-new"))
    assert b'value="echo"' in page.content
    response = client.post(
        reverse("thread-new"), {"agent": "echo", "title": "Planning"}
    )
    thread = Thread.objects.get(title="Planning")
    assert response.status_code == 302
    assert response.url == reverse("thread-detail", args=[thread.id])
    assert thread.owner == users[Role.OWNER]
    assert thread.agent == echo_agent


def test_new_chat_with_an_unknown_agent_explains_the_problem(login, users, echo_agent):
    response = login(users[Role.OWNER]).post(reverse("thread-new"), {"agent": "nope"})
    assert response.status_code == 400
    assert b"No agent named" in response.content
    assert not Thread.objects.exists()


def test_chat_view_renders_history_with_replies_as_safe_markdown(login, users, thread):
    Message.objects.create(
        thread=thread, author=users[Role.OWNER], role=MessageRole.USER, text="<b>hi</b>"
    )
    Message.objects.create(
        thread=thread,
        agent=thread.agent,
        role=MessageRole.ASSISTANT,
        text="**bold** <img src=x onerror=alert(1)>",
    )
    page = login(users[Role.OWNER]).get(reverse("thread-detail", args=[thread.id]))
    html = page.content.decode()
    assert "&lt;b&gt;hi&lt;/b&gt;" in html
    assert "<strong>bold</strong> &lt;img src=x onerror=alert(1)&gt;" in html
    assert "<img" not in html
    assert 'data-role="owner"' in html


def test_chat_view_puts_each_reply_after_its_question(login, users, thread):
    from agents.models import Run

    first = Message.objects.create(
        thread=thread,
        author=users[Role.OWNER],
        role=MessageRole.USER,
        text="first question",
    )
    second = Message.objects.create(
        thread=thread,
        author=users[Role.OWNER],
        role=MessageRole.USER,
        text="second question",
    )
    for prompt, reply in ((first, "first answer"), (second, "second answer")):
        run = Run.objects.create(
            thread=thread, agent=thread.agent, prompt=prompt, status="completed"
        )
        prompt.run = run
        prompt.save()
        Message.objects.create(
            thread=thread,
            agent=thread.agent,
            role=MessageRole.ASSISTANT,
            text=reply,
            run=run,
        )
    html = (
        login(users[Role.OWNER])
        .get(reverse("thread-detail", args=[thread.id]))
        .content.decode()
    )
    order = [
        html.index(text)
        for text in (
            "first question",
            "first answer",
            "second question",
            "second answer",
        )
    ]
    assert order == sorted(order)


def test_observer_gets_a_disabled_composer_and_a_note(login, users, thread):
    html = (
        login(users[Role.OBSERVER])
        .get(reverse("thread-detail", args=[thread.id]))
        .content.decode()
    )
    assert 'data-role="observer"' in html
    assert "You are observing" in html
    assert 'id="observer-note" class="observer-note" hidden' not in html
    assert 'aria-describedby="composer-hint" disabled' in html
    assert "/settings/" not in html


def test_only_managers_open_settings(login, users, thread):
    assert (
        login(users[Role.PARTICIPANT])
        .get(reverse("thread-settings", args=[thread.id]))
        .status_code
        == 403
    )
    assert (
        login(users[Role.OWNER])
        .get(reverse("thread-settings", args=[thread.id]))
        .status_code
        == 200
    )
    assert (
        login(users[Role.STAFF])
        .get(reverse("thread-settings", args=[thread.id]))
        .status_code
        == 200
    )


def test_participant_cannot_change_settings(login, users, thread):
    response = login(users[Role.PARTICIPANT]).post(
        reverse("thread-settings", args=[thread.id]),
        {"action": "rename", "title": "hijacked"},
    )
    assert response.status_code == 403
    thread.refresh_from_db()
    assert thread.title == "t"


def test_owner_renames_shares_and_unshares(login, users, thread, make_user):
    client = login(users[Role.OWNER])
    url = reverse("thread-settings", args=[thread.id])
    client.post(url, {"action": "rename", "title": "Renamed"})
    thread.refresh_from_db()
    assert thread.title == "Renamed"

    newcomer = make_user("newcomer")
    response = client.post(
        url,
        {"action": "share", "username": "newcomer", "role": "observer"},
        follow=True,
    )
    assert b"Shared with newcomer as observer." in response.content
    assert ThreadMember.objects.get(thread=thread, user=newcomer).role == Role.OBSERVER

    client.post(url, {"action": "unshare", "username": "newcomer"})
    assert not ThreadMember.objects.filter(thread=thread, user=newcomer).exists()


def test_sharing_with_an_unknown_user_shows_an_error(login, users, thread):
    response = login(users[Role.OWNER]).post(
        reverse("thread-settings", args=[thread.id]),
        {"action": "share", "username": "ghost", "role": "participant"},
        follow=True,
    )
    assert b"No user named" in response.content


def test_owner_resets_and_deletes(login, users, thread):
    Message.objects.create(
        thread=thread, author=users[Role.OWNER], role=MessageRole.USER, text="x"
    )
    client = login(users[Role.OWNER])
    url = reverse("thread-settings", args=[thread.id])
    response = client.post(url, {"action": "reset"})
    assert response.url == reverse("thread-detail", args=[thread.id])
    assert not Message.objects.filter(thread=thread).exists()
    response = client.post(url, {"action": "delete"})
    assert response.url == reverse("thread-list")
    assert not Thread.objects.filter(pk=thread.pk).exists()


def test_render_endpoint_returns_sanitized_html(login, users, thread):
    client = login(users[Role.OBSERVER])
    url = reverse("render-markdown")
    one = client.post(
        url,
        json.dumps({"text": "*hi* <script>x</script>"}),
        content_type="application/json",
    )
    assert one.json() == {"html": "<p><em>hi</em> &lt;script&gt;x&lt;/script&gt;</p>\n"}
    many = client.post(
        url, json.dumps({"texts": ["a", "`b`"]}), content_type="application/json"
    )
    assert many.json() == {"html": ["<p>a</p>\n", "<p><code>b</code></p>\n"]}
    bad = client.post(url, json.dumps({"text": 5}), content_type="application/json")
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "validation_error"


def test_render_endpoint_needs_csrf_and_login(client, users):
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    strict.force_login(users[Role.OWNER])
    response = strict.post(
        reverse("render-markdown"), "{}", content_type="application/json"
    )
    assert response.status_code == 403
    anonymous = client.post(
        reverse("render-markdown"), "{}", content_type="application/json"
    )
    assert anonymous.status_code == 302


def test_an_unknown_thread_gets_a_friendly_404(login, users):
    response = login(users[Role.OWNER]).get(
        reverse("thread-detail", args=["00000000-0000-0000-0000-000000000000"])
    )
    assert response.status_code == 404
    assert b"not shared with you" in response.content
