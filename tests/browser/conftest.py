"""Browser tests: a real daphne serving the app, driven by Debian's Chromium.

The server runs in embedded mode (SQLite in a temporary directory, in-process
channel layer and agent worker) as `make run` would, but on a free port; one
server and one browser serve the whole module. Every page records console
errors and uncaught exceptions, and a test fails if any appear.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
PASSWORD = "browser-test-password"
CHROMIUM = os.environ.get("PARLEY_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-gpu",
]
USERS = ("owner", "participant", "observer", "outsider")

SETUP_SCRIPT = f"""
from django.contrib.auth import get_user_model
from agents.models import AgentConfig
User = get_user_model()
for name in {USERS!r}:
    User.objects.create_user(username=name, password={PASSWORD!r})
AgentConfig.objects.create(
    name="echo", provider="echo", description="Echoes at once.",
    extra_params={{"tokens_per_second": 0}},
)
AgentConfig.objects.create(
    name="slow-echo", provider="echo", description="Echoes ten words a second.",
    extra_params={{"tokens_per_second": 10}},
)
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _server_env(data_dir: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"REDIS_URL", "DATABASE_URL"} and not key.startswith("PYTEST")
    }
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        PARLEY_DATA_DIR=str(data_dir),
        PARLEY_MESSAGES_PER_MINUTE="0",
        PARLEY_MAX_ACTIVE_RUNS_PER_USER="0",
        DEBUG="0",
        LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture(scope="session")
def chromium_path() -> str:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"Chromium not found at {CHROMIUM} (apt-get install -y chromium)")
    return CHROMIUM


@pytest.fixture(scope="module")
def server_setup() -> str:
    """More Django code run in the server's database before it starts (a test
    module overrides this fixture to add its own agents)."""
    return ""


@pytest.fixture(scope="module")
def server(tmp_path_factory, server_setup):
    """The app under daphne; yields its base URL."""
    data_dir = tmp_path_factory.mktemp("parley-browser")
    env = _server_env(data_dir)
    python = sys.executable
    subprocess.run(
        [python, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=env,
        check=True,
    )
    subprocess.run(
        [python, "manage.py", "shell", "-c", SETUP_SCRIPT + server_setup],
        cwd=ROOT,
        env=env,
        check=True,
    )
    port = _free_port()
    log_path = data_dir / "daphne.log"
    log = open(log_path, "w")  # noqa: SIM115 - closed below
    daphne = shutil.which("daphne", path=str(Path(python).parent)) or "daphne"
    process = subprocess.Popen(
        [daphne, "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"daphne exited: {log_path.read_text()}")
            try:
                with urllib.request.urlopen(
                    base_url + "/healthz", timeout=1
                ) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"daphne did not start: {log_path.read_text()}")
            time.sleep(0.1)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        log.close()


@pytest.fixture(scope="module")
def browser(chromium_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


class PageErrors:
    """Console errors and uncaught exceptions seen by the pages of one test."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def watch(self, page) -> None:
        page.on(
            "console",
            lambda message: (
                self.errors.append(f"console: {message.text}")
                if message.type == "error"
                else None
            ),
        )
        page.on("pageerror", lambda error: self.errors.append(f"pageerror: {error}"))


@pytest.fixture
def page_errors():
    errors = PageErrors()
    yield errors
    assert errors.errors == [], errors.errors


@pytest.fixture
def open_as(browser, server, page_errors):
    """open_as(username, viewport=..., **context_options) -> a logged-in page in
    its own browser context (options such as locale, timezone_id, color_scheme
    or permissions go to Playwright's new_context)."""
    contexts = []

    def open_page(username: str, *, viewport=None, **context_options):
        context = browser.new_context(
            base_url=server,
            viewport=viewport or {"width": 1280, "height": 800},
            **context_options,
        )
        context.set_default_timeout(10_000)
        contexts.append(context)
        page = context.new_page()
        page_errors.watch(page)
        page.goto("/accounts/login/")
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(server + "/")
        return page

    yield open_page
    for context in contexts:
        context.close()


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
