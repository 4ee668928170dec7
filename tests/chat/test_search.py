"""Searching threads by title and message text, on the server: only threads
the caller may read, each with a snippet of what matched. PostgreSQL searches
full text (stemmed, indexed); other databases a substring per word."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test import Client as WebClient
from django.urls import reverse
from rest_framework.test import APIClient

from chat import services
from chat.models import Message, MessageRole, Role, Thread
from chat.selectors import search_snippet, thread_search_for_user

pytestmark = pytest.mark.django_db

postgres_only = pytest.mark.skipif(
    "connection.vendor != 'postgresql'", reason="full-text search is PostgreSQL's"
)


def api_as(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def search(user, query: str) -> list[dict]:
    response = api_as(user).get("/api/threads/", {"q": query})
    assert response.status_code == 200, response.content
    return response.json()["results"]


def say(thread: Thread, author, text: str) -> Message:
    return Message.objects.create(
        thread=thread, author=author, role=MessageRole.USER, text=text
    )


@pytest.fixture
def other_thread(users, echo_agent):
    """A thread of the stranger's, shared with nobody."""
    return Thread.objects.create(
        owner=users["stranger"], agent=echo_agent, title="Stranger things"
    )


def test_a_word_in_a_message_finds_its_thread_with_a_snippet(users, thread):
    say(thread, users[Role.PARTICIPANT], "We ship the migration on Thursday evening.")
    say(thread, users[Role.OWNER], "Unrelated chatter.")
    [found] = search(users[Role.OWNER], "migration")
    assert found["id"] == str(thread.id)
    assert found["match"]["in"] == "message"
    assert "migration" in found["match"]["snippet"]


def test_the_title_finds_its_thread(users, thread):
    Thread.objects.filter(pk=thread.pk).update(title="Quarterly planning")
    [found] = search(users[Role.OBSERVER], "planning")
    assert found["id"] == str(thread.id)
    assert found["match"] == {"in": "title", "snippet": "Quarterly planning"}


def test_another_users_thread_never_appears(users, thread, other_thread):
    say(other_thread, users["stranger"], "the secret launch code")
    say(thread, users[Role.OWNER], "the public launch plan")
    for user in (users[Role.OWNER], users[Role.PARTICIPANT], users[Role.OBSERVER]):
        assert [row["id"] for row in search(user, "launch")] == [str(thread.id)]
    assert search(users[Role.OWNER], "secret") == []
    assert search(users[Role.OWNER], "Stranger") == []  # its title neither
    assert [row["id"] for row in search(users["stranger"], "launch")] == [
        str(other_thread.id)
    ]


def test_staff_search_every_thread(users, thread, other_thread):
    say(other_thread, users["stranger"], "a launch")
    say(thread, users[Role.OWNER], "a launch too")
    found = {row["id"] for row in search(users[Role.STAFF], "launch")}
    assert found == {str(thread.id), str(other_thread.id)}


def test_a_removed_members_thread_disappears_from_their_search(users, thread):
    say(thread, users[Role.OWNER], "budget review notes")
    participant = users[Role.PARTICIPANT]
    assert [row["id"] for row in search(participant, "budget")] == [str(thread.id)]
    services.member_remove(
        actor=users[Role.OWNER], thread=thread, username=participant.username
    )
    assert search(participant, "budget") == []
    web = WebClient()
    web.force_login(participant)
    assert web.get(reverse("thread-list-json"), {"q": "budget"}).json() == {
        "threads": []
    }


def test_every_word_must_match_and_the_last_may_be_a_prefix(users, thread, echo_agent):
    second = Thread.objects.create(
        owner=users[Role.OWNER], agent=echo_agent, title="second"
    )
    say(thread, users[Role.OWNER], "deployment window moved to noon")
    say(second, users[Role.OWNER], "deployment is done")
    owner = users[Role.OWNER]
    assert {row["id"] for row in search(owner, "deployment")} == {
        str(thread.id),
        str(second.id),
    }
    assert [row["id"] for row in search(owner, "deployment window")] == [str(thread.id)]
    assert [row["id"] for row in search(owner, "window deploy")] == [str(thread.id)]
    assert search(owner, "deployment elephant") == []


def test_the_snippet_is_from_the_latest_matching_message(users, thread):
    say(thread, users[Role.OWNER], "first mention of kiwi")
    say(thread, users[Role.OWNER], "second mention of kiwi")
    [found] = search(users[Role.OWNER], "kiwi")
    assert found["match"]["snippet"] == "second mention of kiwi"


def test_the_web_list_searches_too(users, thread):
    say(thread, users[Role.PARTICIPANT], "the retro is at three")
    web = WebClient()
    web.force_login(users[Role.OWNER])
    [found] = web.get(reverse("thread-list-json"), {"q": "retro"}).json()["threads"]
    assert found["id"] == str(thread.id)
    assert found["match"]["in"] == "message"
    assert "retro" in found["match"]["snippet"]
    assert found["url"] == f"/threads/{thread.id}/"


def test_a_blank_query_is_the_whole_list_and_odd_characters_are_text(users, thread):
    say(thread, users[Role.OWNER], "it's 100% done: yes & no | maybe")
    owner = users[Role.OWNER]
    response = api_as(owner).get("/api/threads/", {"q": "  "})
    [row] = response.json()["results"]
    assert row["match"] is None
    for query in ("'; drop table", "100%", "& | ! :*", "yes & no", "\\"):
        assert api_as(owner).get("/api/threads/", {"q": query}).status_code == 200
    assert [row["id"] for row in search(owner, "yes & no")] == [str(thread.id)]


def test_a_long_message_is_cut_around_the_word():
    text = "start " + "filler " * 60 + "the needle is here " + "tail " * 60
    snippet = search_snippet(text, "needle")
    assert "needle" in snippet
    assert snippet.startswith("…") and snippet.endswith("…")
    assert len(snippet) <= 142
    assert search_snippet("short one", "absent") == "short one"


@postgres_only
def test_postgres_search_is_stemmed(users, thread):
    say(thread, users[Role.OWNER], "We deployed the new workers yesterday")
    assert [row["id"] for row in search(users[Role.OWNER], "deploying")] == [
        str(thread.id)
    ]
    assert [row["id"] for row in search(users[Role.OWNER], "worker")] == [
        str(thread.id)
    ]


@postgres_only
def test_postgres_search_uses_the_gin_index(users, thread):
    say(thread, users[Role.OWNER], "indexed words")
    threads = thread_search_for_user(user=users[Role.OWNER], query="indexed")
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        sql, params = threads.query.sql_with_params()
        cursor.execute("EXPLAIN " + sql, params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "message_text_search" in plan, plan
