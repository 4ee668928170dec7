"""/api/docs/ (Swagger UI) and /api/redoc/ work with no other host reachable:
every request they make goes to this server, and they show the API."""

from __future__ import annotations

from types import SimpleNamespace
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser


class DocsPageErrors:
    """Console errors of a docs page, except the browser's note that the
    page's policy refused an image from another host (Redoc's credit logo,
    templates/api/redoc.html): that refusal is the point."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.refused: list[str] = []

    def watch(self, page) -> None:
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.errors.append(f"pageerror: {error}"))

    def _console(self, message) -> None:
        if message.type != "error":
            return
        if "Content Security Policy" in message.text and "img-src" in message.text:
            self.refused.append(message.text)
        else:
            self.errors.append(f"console: {message.text}")


@pytest.fixture
def offline_page(browser, server):
    """A page that can reach the server only (an intranet without internet):
    a request to any other host fails and is recorded."""
    page_errors = DocsPageErrors()
    context = browser.new_context(base_url=server)
    context.set_default_timeout(15_000)
    own_host = urlsplit(server).netloc
    requests: list[str] = []
    elsewhere: list[str] = []

    def route(route):
        url = route.request.url
        requests.append(url)
        if urlsplit(url).scheme in ("http", "https", "ws", "wss") and (
            urlsplit(url).netloc != own_host
        ):
            elsewhere.append(url)
            route.abort()
        else:
            route.continue_()

    context.route("**/*", route)
    page = context.new_page()
    page_errors.watch(page)
    yield SimpleNamespace(
        page=page, requests=requests, elsewhere=elsewhere, errors=page_errors
    )
    context.close()
    assert page_errors.errors == [], page_errors.errors


def test_swagger_ui_is_served_from_the_project(offline_page):
    page = offline_page.page
    page.goto("/api/docs/")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Parley API")
    expect(page.locator(".opblock-tag").first).to_be_visible()
    requests = offline_page.requests
    assert offline_page.elsewhere == []
    assert offline_page.errors.refused == []
    assert any("/static/drf_spectacular_sidecar/" in url for url in requests)
    assert any("/api/schema/" in url for url in requests)


def test_redoc_is_served_from_the_project(offline_page):
    page = offline_page.page
    page.goto("/api/redoc/")
    expect(page.get_by_role("heading", name="Parley API").first).to_be_visible()
    assert offline_page.elsewhere == []
    assert any("/redoc/bundles/" in url for url in offline_page.requests)
    # Nothing but the credit's logo was refused, and it never left the browser.
    assert all("redoc" in text for text in offline_page.errors.refused)
