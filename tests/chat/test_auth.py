"""chat/auth.py: who opens a thread socket (docs/protocol.md, "Connecting").

A browser by its session cookie, a program by `Authorization: Token <key>` or,
when it cannot set headers, by the subprotocols `["parley", "token.<key>"]`.
Tokens never go in the URL. Not authenticated: close 4401. A browser page of
another site (its `Origin`) is refused at the handshake.
"""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.test import Client as HttpClient
from rest_framework.authtoken.models import Token

from chat.auth import origin_allowed
from chat.models import Role

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "correct-horse-battery"  # tests/conftest.py's


async def close_code(client) -> int:
    output = await client.communicator.receive_output(timeout=5)
    frames = []
    while output["type"] == "websocket.send":
        frames.append(output)
        output = await client.communicator.receive_output(timeout=5)
    assert output["type"] == "websocket.close", output
    return output["code"]


def token_header(key: str) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Token {key}".encode())]


@pytest.fixture
def token(users):
    return Token.objects.create(user=users[Role.PARTICIPANT])


@pytest.fixture
def log_in(users):
    """A browser logged in as the user: its session cookie header and the
    browser itself (to log out with)."""

    def log_in_as(username: str):
        browser = HttpClient()
        assert browser.login(username=username, password=PASSWORD)
        cookie = browser.cookies[settings.SESSION_COOKIE_NAME].value
        return [(b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode())], (
            browser
        )

    return log_in_as


async def test_a_token_in_the_authorization_header_opens_the_socket(
    thread, token, client_for
):
    status, _ = await client_for(thread.id, headers=token_header(token.key)).join()
    assert status["content"] == {
        "state": "connected",
        "role": "participant",
        "user": "participant",
    }


async def test_a_token_subprotocol_is_never_answered_with_the_token(
    thread, token, client_for
):
    alone = client_for(thread.id, subprotocols=[f"token.{token.key}"])
    connected, subprotocol = await alone.connect()
    assert connected and subprotocol is None
    assert (await alone.receive())["content"]["user"] == "participant"
    beside = client_for(thread.id, subprotocols=[f"token.{token.key}", "parley"])
    connected, subprotocol = await beside.connect()
    assert connected and subprotocol == "parley"


@pytest.mark.parametrize("name", ["token", "auth_token", "access_token", "key"])
async def test_a_token_in_the_url_opens_nothing(thread, token, client_for, name):
    client = client_for(thread.id, query=f"{name}={token.key}")
    assert (await client.connect())[0]
    assert await close_code(client) == 4401


async def test_a_browsers_session_opens_the_socket_as_its_user(
    thread, client_for, log_in
):
    cookie, _ = await sync_to_async(log_in)("observer")
    status, _ = await client_for(thread.id, headers=cookie).join()
    assert (status["content"]["user"], status["content"]["role"]) == (
        "observer",
        "observer",
    )


async def test_logging_out_closes_that_sessions_sockets_and_no_others(
    thread, client_for, log_in
):
    cookie, browser = await sync_to_async(log_in)("owner")
    other_cookie, _ = await sync_to_async(log_in)("owner")  # another browser
    this_one = client_for(thread.id, headers=cookie)
    other_one = client_for(thread.id, headers=other_cookie)
    await this_one.join()
    await other_one.join()

    response = await sync_to_async(browser.post)("/accounts/logout/")
    assert response.status_code in (200, 302)

    error = await this_one.receive_type("error")
    assert error["content"]["code"] == "not_authenticated"
    assert await close_code(this_one) == 4401
    await other_one.send({"type": "ping", "request_id": "still-here"})
    assert (await other_one.receive_type("pong"))["request_id"] == "still-here"
    # and the logged-out session opens no new socket
    again = client_for(thread.id, headers=cookie)
    assert (await again.connect())[0]
    assert await close_code(again) == 4401


def deactivate(user) -> None:
    user.is_active = False
    user.save()


@pytest.mark.parametrize(
    "credential",
    [
        "nothing",
        "unknown token header",
        "empty token header",
        "unknown token subprotocol",
        "token of a deactivated user",
        "session of a deactivated user",
        "unknown session",
    ],
)
async def test_missing_bad_or_inactive_credentials_are_closed_4401(
    thread, users, token, client_for, log_in, credential
):
    kwargs = {}
    if credential == "unknown token header":
        kwargs["headers"] = token_header("0" * 40)
    elif credential == "empty token header":
        kwargs["headers"] = [(b"authorization", b"Token ")]
    elif credential == "unknown token subprotocol":
        kwargs["subprotocols"] = ["parley", "token." + "0" * 40]
    elif credential == "token of a deactivated user":
        await sync_to_async(deactivate)(users[Role.PARTICIPANT])
        kwargs["headers"] = token_header(token.key)
    elif credential == "session of a deactivated user":
        kwargs["headers"], _ = await sync_to_async(log_in)("owner")
        await sync_to_async(deactivate)(users[Role.OWNER])
    elif credential == "unknown session":
        kwargs["headers"] = [
            (b"cookie", f"{settings.SESSION_COOKIE_NAME}=nope".encode())
        ]
    client = client_for(thread.id, **kwargs)
    assert (await client.connect())[0]
    assert await close_code(client) == 4401


# --- Origin ------------------------------------------------------------------------


def scope_from(origin: str | None, host: str = "localhost:8000") -> dict:
    headers = [(b"host", host.encode())]
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    return {"type": "websocket", "headers": headers}


@pytest.mark.parametrize(
    "origin, host, allowed",
    [
        (None, "localhost:8000", True),  # a program, not a browser page
        ("http://localhost:8000", "localhost:8000", True),
        ("https://chat.example", "10.0.0.7:8000", True),  # CSRF_TRUSTED_ORIGINS
        ("https://evil.example", "localhost:8000", False),
        ("http://localhost:8001", "localhost:8000", False),  # another port
        ("https://chat.example.evil", "10.0.0.7:8000", False),
        ("null", "localhost:8000", False),  # a sandboxed page or file://
        ("localhost:8000", "localhost:8000", False),  # no scheme
    ],
)
def test_only_pages_of_this_site_may_open_sockets(settings, origin, host, allowed):
    settings.CSRF_TRUSTED_ORIGINS = ["https://chat.example"]
    assert origin_allowed(scope_from(origin, host)) is allowed


async def test_a_foreign_page_is_refused_at_the_handshake_even_with_a_token(
    thread, token, client_for
):
    client = client_for(
        thread.id,
        headers=[(b"origin", b"https://evil.example"), *token_header(token.key)],
    )
    connected, _ = await client.connect()
    assert not connected  # refused before the handshake completes: daphne says 403
