"""People trying the app never see Django's debug pages.

A chat that does not exist or is not shared with you is Parley's own page, with
DEBUG on too (Django's debug 404 page lists every URL pattern of the site), and
`make run` leaves DEBUG off unless a developer asks for it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from django.urls import reverse

from chat.models import Role

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parent.parent
PRODUCT_PHRASE = b"This chat does not exist, or it is not shared with you."
MISSING_ID = "00000000-0000-0000-0000-000000000000"


def assert_products_not_found_page(response) -> None:
    assert response.status_code == 404
    assert PRODUCT_PHRASE in response.content
    assert b"URLconf" not in response.content
    assert b"Using the URLconf" not in response.content
    assert b"DEBUG = True" not in response.content  # the debug page's footer


@pytest.fixture
def debug_on(settings):
    settings.DEBUG = True


@pytest.mark.parametrize("page", ["thread-detail", "thread-settings"])
def test_a_missing_thread_is_the_products_page_with_debug_on(
    debug_on, client, users, page
):
    client.force_login(users[Role.OWNER])
    assert_products_not_found_page(client.get(reverse(page, args=[MISSING_ID])))


@pytest.mark.parametrize("page", ["thread-detail", "thread-settings"])
def test_someone_elses_thread_is_the_products_page_with_debug_on(
    debug_on, client, users, thread, page
):
    client.force_login(users["stranger"])
    assert_products_not_found_page(client.get(reverse(page, args=[thread.id])))


@pytest.mark.parametrize(
    "path", ["/threads/not-a-uuid/", "/threads/not-a-uuid/settings/"]
)
def test_a_malformed_thread_id_is_the_products_page_with_debug_on(
    debug_on, client, users, path
):
    client.force_login(users[Role.OWNER])
    assert_products_not_found_page(client.get(path))


def test_a_malformed_thread_id_asks_a_stranger_to_log_in_first(client):
    response = client.get("/threads/not-a-uuid/")
    assert response.status_code == 302
    assert response.url.startswith("/accounts/login/")


def test_the_new_chat_page_still_wins_over_the_malformed_id_route(client, users):
    client.force_login(users[Role.OWNER])
    assert client.get("/threads/new/").status_code == 200


def _make_run_daphne_line(**environment: str) -> str:
    """The daphne command `make run` would run (make -n prints, runs nothing)."""
    env = {key: value for key, value in os.environ.items() if key != "DEBUG"}
    env.update(environment)
    printed = subprocess.run(
        ["make", "-n", "-s", "run"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    [line] = [line for line in printed.splitlines() if "bin/daphne" in line]
    return line


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_run_leaves_debug_off_unless_the_developer_sets_it():
    assert "DEBUG=0 " in _make_run_daphne_line()
    assert "DEBUG=1 " in _make_run_daphne_line(DEBUG="1")
