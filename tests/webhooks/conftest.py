"""A real webhook receiver on loopback, fast retry settings, and the dispatcher
stopped at the end of each test."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from channels.db import database_sync_to_async
from rest_framework.test import APIClient

from webhooks import dispatch, signing


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    signed: bool  # the signature verified with the receiver's secret

    @property
    def payload(self) -> dict:
        return json.loads(self.body)


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 that answers each POST with the next of
    `statuses` (the last repeats), checking every signature with `secret`."""

    server: ThreadingHTTPServer
    statuses: list[int] = field(default_factory=lambda: [200])
    secret: str = ""
    received: list[Received] = field(default_factory=list)
    # While set, requests wait here until it is cleared (a receiver that hangs).
    hang: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/parley"

    def answer(self, headers: dict, body: bytes) -> int:
        header = headers.get(signing.SIGNATURE_HEADER.lower(), "")
        self.received.append(
            Received(
                headers=headers,
                body=body,
                signed=bool(self.secret) and signing.verify(self.secret, body, header),
            )
        )
        index = min(len(self.received), len(self.statuses)) - 1
        return self.statuses[index]


@pytest.fixture
def receiver():
    holder: dict[str, Receiver] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            headers = {name.lower(): value for name, value in self.headers.items()}
            hook = holder["receiver"]
            status = hook.answer(headers, body)
            if hook.hang.is_set():
                hook.release.wait(timeout=30)
            answer = json.dumps({"ok": 200 <= status < 300}).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
            except OSError:
                pass  # the caller hung up while this one hung

        def log_message(self, format, *args):  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    holder["receiver"] = hook = Receiver(server=server)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield hook
    hook.release.set()
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def webhook_settings(settings):
    settings.PARLEY_WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    settings.PARLEY_WEBHOOK_RETRY_FIRST_SECONDS = 0.05
    settings.PARLEY_WEBHOOK_RETRY_MAX_SECONDS = 0.2
    settings.PARLEY_WEBHOOK_SWEEP_SECONDS = 0.2
    settings.PARLEY_WEBHOOK_TIMEOUT_SECONDS = 5.0
    settings.PARLEY_WEBHOOK_MAX_ATTEMPTS = 5


@pytest.fixture
async def dispatcher():
    """Stops the test loop's dispatcher (however it was started) at the end."""
    yield dispatch
    await dispatch.stop()


def api(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@database_sync_to_async
def call_api(user, method: str, path: str, body=None):
    response = getattr(api(user), method)(path, body, format="json")
    return response.status_code, (response.json() if response.content else None)
