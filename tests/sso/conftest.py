"""Single sign-on end to end: a real OpenID provider on loopback (the
`oidc-provider` npm package, tests/sso/js/provider.mjs) and Parley under daphne
configured for it from the environment, driven by Chromium.

`provider` is one provider for the session with one static client and two
accounts (`alice`, not staff; `bob`, in the staff group). `parley` is Parley
configured for that provider; `parley_expecting_another_issuer` is the same but
with OIDC_ISSUER naming another issuer, so that every ID token the provider
signs has the wrong `iss`. Each Parley has a staff user `auditor` with an API
token, to read the audit log through `GET /api/audit/`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.browser.conftest import (  # noqa: F401  (fixtures used by tests/sso)
    CHROMIUM_ARGS,
    browser,
    chromium_path,
    page_errors,
)
from tests.integration.conftest import DAPHNE, ROOT, free_port, wait_for_http
from tests.node import node_with_packages

JS_DIR = Path(__file__).resolve().parent / "js"
CLIENT_ID = "parley"
CLIENT_SECRET = "parley-sso-test-client-secret-0123456789"
STAFF_GROUP = "parley-staff"
PROVIDER_NAME = "Test IdP"
AUDITOR_TOKEN = "0123456789abcdef0123456789abcdef01234567"
ACCOUNTS = {
    "alice": {
        "password": "alice-provider-password",
        "claims": {
            "email": "alice@example.com",
            "email_verified": True,
            "preferred_username": "alice",
            "given_name": "Alice",
            "family_name": "Liddell",
            "groups": ["engineering"],
        },
    },
    "bob": {
        "password": "bob-provider-password",
        "claims": {
            "email": "bob@example.com",
            "email_verified": True,
            "preferred_username": "bob",
            "groups": ["engineering", STAFF_GROUP],
        },
    },
}

SETUP_SCRIPT = f"""
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
auditor = get_user_model().objects.create_user(
    username="auditor", password="auditor-password", is_staff=True
)
Token.objects.create(user=auditor, key={AUDITOR_TOKEN!r})
"""


@dataclass
class Provider:
    issuer: str
    port: int


@dataclass
class Parley:
    base_url: str
    log_path: Path

    def audit(self, action: str) -> list[dict]:
        """The audit events of this action, newest first (the staff API)."""
        response = httpx.get(
            f"{self.base_url}/api/audit/",
            params={"action": action},
            headers={"Authorization": f"Token {AUDITOR_TOKEN}"},
            timeout=10,
        )
        response.raise_for_status()
        return response.json()["results"]


@pytest.fixture(scope="session")
def node() -> str:
    """`npm ci` once (tests/node.py); skips only without Node.js."""
    return node_with_packages(JS_DIR, needed_for="the OpenID provider")


@pytest.fixture(scope="session")
def parley_ports() -> dict[str, int]:
    """Chosen first: the provider's client lists both callbacks."""
    return {"right_issuer": free_port(), "wrong_issuer": free_port()}


@pytest.fixture(scope="session")
def provider(node, parley_ports, tmp_path_factory):
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    config = {
        "port": port,
        "issuer": issuer,
        "client": {
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "redirect_uris": [
                f"http://127.0.0.1:{parley_port}/oidc/callback/"
                for parley_port in parley_ports.values()
            ],
        },
        "accounts": ACCOUNTS,
    }
    log_path = tmp_path_factory.mktemp("oidc-provider") / "provider.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [node, "provider.mjs", json.dumps(config)],
            cwd=JS_DIR,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            try:
                wait_for_http(f"{issuer}/.well-known/openid-configuration")
            except TimeoutError:
                raise RuntimeError(
                    f"the provider did not start: {log_path.read_text()}"
                ) from None
            yield Provider(issuer=issuer, port=port)
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


def _start_parley(data_dir: Path, port: int, oidc_env: dict[str, str]):
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"REDIS_URL", "DATABASE_URL"}
        and not key.startswith(("PYTEST", "OIDC_"))
    }
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        PARLEY_DATA_DIR=str(data_dir),
        DEBUG="0",
        LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
        **oidc_env,
    )
    python = sys.executable
    subprocess.run(
        [python, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=env,
        check=True,
    )
    subprocess.run(
        [python, "manage.py", "shell", "-c", SETUP_SCRIPT],
        cwd=ROOT,
        env=env,
        check=True,
    )
    log_path = data_dir / "daphne.log"
    log = open(log_path, "w")  # noqa: SIM115 - closed by _stop_parley
    process = subprocess.Popen(
        [DAPHNE, "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz")
    except TimeoutError:
        process.kill()
        raise RuntimeError(f"daphne did not start: {log_path.read_text()}") from None
    return process, log, Parley(f"http://127.0.0.1:{port}", log_path)


def _stop_parley(process, log) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)
    log.close()


def oidc_env(provider: Provider, *, issuer: str | None = None) -> dict[str, str]:
    """The OIDC_* settings for this provider, as an operator would set them."""
    return {
        "OIDC_ISSUER": issuer or provider.issuer,
        "OIDC_PROVIDER_NAME": PROVIDER_NAME,
        "OIDC_CLIENT_ID": CLIENT_ID,
        "OIDC_CLIENT_SECRET": CLIENT_SECRET,
        "OIDC_AUTHORIZATION_ENDPOINT": f"{provider.issuer}/auth",
        "OIDC_TOKEN_ENDPOINT": f"{provider.issuer}/token",
        "OIDC_USERINFO_ENDPOINT": f"{provider.issuer}/me",
        "OIDC_JWKS_ENDPOINT": f"{provider.issuer}/jwks",
        "OIDC_SCOPES": "openid email profile groups",
        "OIDC_STAFF_GROUP": STAFF_GROUP,
    }


@pytest.fixture(scope="module")
def parley(provider, parley_ports, tmp_path_factory):
    process, log, server = _start_parley(
        tmp_path_factory.mktemp("parley-sso"),
        parley_ports["right_issuer"],
        oidc_env(provider),
    )
    yield server
    _stop_parley(process, log)


@pytest.fixture(scope="module")
def parley_expecting_another_issuer(provider, parley_ports, tmp_path_factory):
    process, log, server = _start_parley(
        tmp_path_factory.mktemp("parley-sso-other-issuer"),
        parley_ports["wrong_issuer"],
        oidc_env(provider, issuer=f"{provider.issuer}/realms/another"),
    )
    yield server
    _stop_parley(process, log)


@pytest.fixture
def new_page(browser, page_errors):  # noqa: F811  (fixtures imported above)
    """new_page(base_url) -> a page in a fresh browser context (no cookies)."""
    contexts = []

    def open_page(base_url: str):
        context = browser.new_context(base_url=base_url)
        context.set_default_timeout(15_000)
        # Django's admin pages name no icon: the browser's own request for
        # /favicon.ico would be a 404 in the console, which fails the test.
        context.route("**/favicon.ico", lambda route: route.fulfill(status=204))
        contexts.append(context)
        page = context.new_page()
        page_errors.watch(page)
        return page

    yield open_page
    for context in contexts:
        context.close()
