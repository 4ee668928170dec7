"""`GET /api/usage/`: totals of tokens and cost with filters and groups;
people see their own usage, staff everyone's. `GET /api/usage/budget/` and
the staff budget endpoints."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from chat.models import Role, Thread
from usage.models import Budget

pytestmark = pytest.mark.django_db


@pytest.fixture
def spread(thread, users, record, echo_agent):
    """Three people's runs in two threads, with two agents, over two days."""
    other = Thread.objects.create(owner=users[Role.PARTICIPANT], agent=echo_agent)
    yesterday = timezone.now() - timedelta(days=1)
    owner, participant = users[Role.OWNER], users[Role.PARTICIPANT]
    record(user=owner, thread=thread, input_tokens=1, output_tokens=2, cost="0.10")
    record(
        user=owner,
        thread=thread,
        input_tokens=10,
        output_tokens=20,
        cost="1.00",
        created_at=yesterday,
    )
    record(user=participant, thread=thread, input_tokens=100, output_tokens=200)
    record(
        user=participant,
        thread=other,
        input_tokens=1000,
        output_tokens=2000,
        cost="3.25",
        agent="claude",
    )
    return {"thread": thread, "other": other, "yesterday": yesterday}


def test_people_see_only_their_own_usage(api_for, users, spread):
    response = api_for(users[Role.OWNER]).get("/api/usage/")
    assert response.status_code == 200
    assert response.json()["totals"] == {
        "runs": 2,
        "input_tokens": 11,
        "output_tokens": 22,
        "total_tokens": 33,
        "cost": "1.1",
    }


def test_people_may_not_ask_for_someone_elses_usage(api_for, users, spread):
    response = api_for(users[Role.OWNER]).get("/api/usage/?user=participant")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"
    mine = api_for(users[Role.OWNER]).get("/api/usage/?user=owner")
    assert mine.json()["totals"]["runs"] == 2


def test_staff_see_everyones_usage_and_filter_by_user(api_for, users, spread):
    staff = api_for(users[Role.STAFF])
    everyone = staff.get("/api/usage/").json()["totals"]
    assert everyone["runs"] == 4 and everyone["total_tokens"] == 3333
    assert everyone["cost"] == "4.35"
    theirs = staff.get("/api/usage/?user=participant").json()["totals"]
    assert theirs["total_tokens"] == 3300


def test_filters_by_thread_agent_and_dates(api_for, users, spread):
    staff = api_for(users[Role.STAFF])
    in_thread = staff.get(f"/api/usage/?thread={spread['thread'].id}").json()
    assert in_thread["totals"]["runs"] == 3
    by_agent = staff.get("/api/usage/?agent=claude").json()
    assert by_agent["totals"]["total_tokens"] == 3000
    day = spread["yesterday"].astimezone(UTC).date().isoformat()
    that_day = staff.get(f"/api/usage/?from={day}&to={day}").json()
    assert that_day["totals"]["runs"] == 1
    assert that_day["totals"]["total_tokens"] == 30
    since_today = staff.get(
        f"/api/usage/?from={datetime.now(UTC).date().isoformat()}"
    ).json()
    assert since_today["totals"]["runs"] == 3


@pytest.mark.parametrize(
    ("group_by", "expected"),
    [
        ("user", {"participant": 3300, "owner": 33}),
        ("agent", {"claude": 3000, "echo": 333}),
    ],
)
def test_groups_by_user_and_agent(api_for, users, spread, group_by, expected):
    body = api_for(users[Role.STAFF]).get(f"/api/usage/?group_by={group_by}").json()
    assert body["group_by"] == group_by
    assert {row["key"]: row["total_tokens"] for row in body["groups"]} == expected


def test_groups_by_day_and_thread(api_for, users, spread):
    staff = api_for(users[Role.STAFF])
    days = staff.get("/api/usage/?group_by=day").json()["groups"]
    today = datetime.now(UTC).date()
    assert [row["key"] for row in days] == [
        str(spread["yesterday"].astimezone(UTC).date()),
        str(today),
    ]
    threads = staff.get("/api/usage/?group_by=thread").json()["groups"]
    assert {row["key"]: row["runs"] for row in threads} == {
        str(spread["thread"].id): 3,
        str(spread["other"].id): 1,
    }


@pytest.mark.parametrize(
    "query",
    ["group_by=week", "from=yesterday", "thread=nope", "from=2026-12-02&to=2026-12-01"],
)
def test_bad_filters_are_validation_errors(api_for, users, query):
    response = api_for(users[Role.OWNER]).get(f"/api/usage/?{query}")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "validation_error"


def test_usage_needs_a_login(client):
    assert client.get("/api/usage/").status_code == 401


def test_the_budget_status_says_what_is_used_and_what_is_left(
    api_for, users, thread, record
):
    owner = users[Role.OWNER]
    Budget.objects.create(user=owner, monthly_tokens=1000, monthly_cost="2.5")
    Budget.objects.create(thread=thread, monthly_tokens=50, hard=True)
    record(user=owner, thread=thread, input_tokens=5, output_tokens=5, cost="0.25")

    mine = api_for(owner).get("/api/usage/budget/").json()
    assert [(row["unit"], row["used"], row["limit"]) for row in mine] == [
        ("tokens", 10, 1000),
        ("cost", "0.25", "2.5"),
    ]
    with_thread = api_for(owner).get(f"/api/usage/budget/?thread={thread.id}").json()
    assert with_thread[-1] == {
        **with_thread[-1],
        "scope": "thread",
        "used": 10,
        "limit": 50,
        "hard": True,
    }
    # A thread the caller cannot read is not found.
    stranger = api_for(users["stranger"])
    assert stranger.get(f"/api/usage/budget/?thread={thread.id}").status_code == 404
    assert stranger.get("/api/usage/budget/").json() == []


def test_staff_set_change_and_delete_budgets(api_for, users, thread):
    staff = api_for(users[Role.STAFF])
    created = staff.post(
        "/api/usage/budgets/",
        {"user": "owner", "monthly_tokens": 1000, "hard": True},
        format="json",
    )
    assert created.status_code == 201, created.content
    budget = created.json()
    assert budget["user"] == "owner" and budget["monthly_tokens"] == 1000
    for_thread = staff.post(
        "/api/usage/budgets/",
        {"thread": str(thread.id), "monthly_cost": "12.50"},
        format="json",
    )
    assert for_thread.status_code == 201, for_thread.content
    assert for_thread.json()["monthly_cost"] == "12.500000"

    changed = staff.patch(
        f"/api/usage/budgets/{budget['id']}/", {"monthly_tokens": 5}, format="json"
    )
    assert changed.status_code == 200, changed.content
    assert Budget.objects.get(user=users[Role.OWNER]).monthly_tokens == 5
    assert len(staff.get("/api/usage/budgets/").json()["results"]) == 2
    assert staff.delete(f"/api/usage/budgets/{budget['id']}/").status_code == 204
    assert not Budget.objects.filter(user=users[Role.OWNER]).exists()


def test_people_cannot_set_budgets(api_for, users):
    owner = api_for(users[Role.OWNER])
    response = owner.post(
        "/api/usage/budgets/",
        {"user": "owner", "monthly_tokens": 10**9},
        format="json",
    )
    assert response.status_code == 403
    assert owner.get("/api/usage/budgets/").status_code == 403


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"user": "owner", "monthly_tokens": -1}, "monthly_tokens"),
        ({"user": "owner", "monthly_tokens": "lots"}, "monthly_tokens"),
        ({"user": "owner", "monthly_cost": "-0.5"}, "monthly_cost"),
        ({"user": "owner", "monthly_cost": "cheap"}, "monthly_cost"),
        ({"user": "owner"}, "monthly_tokens"),
        ({"monthly_tokens": 5}, "user"),
        ({"user": "own\x00er", "monthly_tokens": 5}, "user"),
    ],
)
def test_a_bad_budget_is_a_validation_error(api_for, users, body, field):
    response = api_for(users[Role.STAFF]).post(
        "/api/usage/budgets/", body, format="json"
    )
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert field in error["details"]
    assert not Budget.objects.exists()


def test_a_second_budget_for_the_same_user_is_refused(api_for, users):
    staff = api_for(users[Role.STAFF])
    body = {"user": "owner", "monthly_tokens": 5}
    assert staff.post("/api/usage/budgets/", body, format="json").status_code == 201
    again = staff.post("/api/usage/budgets/", body, format="json")
    assert again.status_code == 400
    assert "user" in again.json()["error"]["details"]


def test_a_bad_budget_is_refused_in_the_admin(client, make_user, users):
    client.force_login(make_user("boss", is_staff=True, is_superuser=True))
    for tokens, cost in (("-5", ""), ("many", ""), ("", "-1"), ("", "x"), ("", "")):
        response = client.post(
            "/admin/usage/budget/add/",
            {
                "user": users[Role.OWNER].pk,
                "monthly_tokens": tokens,
                "monthly_cost": cost,
            },
        )
        assert response.status_code == 200, (tokens, cost)  # the form again
        assert response.context["adminform"].form.errors, (tokens, cost)
    assert not Budget.objects.exists()
    saved = client.post(
        "/admin/usage/budget/add/",
        {"user": users[Role.OWNER].pk, "monthly_tokens": "100", "hard": "on"},
    )
    assert saved.status_code == 302
    assert Budget.objects.get().hard


def test_the_admin_usage_page_charts_the_last_30_days(
    client, make_user, users, thread, record
):
    client.force_login(make_user("boss", is_staff=True, is_superuser=True))
    record(user=users[Role.OWNER], thread=thread, input_tokens=40, output_tokens=60)
    record(
        user=users[Role.OWNER],
        thread=thread,
        input_tokens=10,
        output_tokens=0,
        created_at=timezone.now() - timedelta(days=3),
    )

    page = client.get("/admin/usage/usagerecord/")

    assert page.status_code == 200
    chart = page.context["chart"]
    assert len(chart["bars"]) == 30
    heights = [bar["height"] for bar in chart["bars"]]
    assert heights[-1] == max(heights) > heights[-4] > 0  # today, 3 days ago
    assert heights.count(0) == 28
    html = page.content.decode()
    assert '<svg id="usage-chart"' in html and html.count("<rect ") == 30
    assert "110 tokens" in html
    assert client.get("/admin/usage/usagerecord/?chart=cost").status_code == 200
