"""Runs share one SDK client per endpoint and key on an event loop
(agents/providers/http.py `shared_client`)."""

from __future__ import annotations

import openai

from agents.providers.http import MAX_SHARED_CLIENTS, shared_client


def maker(made: list, key: str = "k"):
    def make():
        client = openai.AsyncOpenAI(api_key=key, base_url="http://127.0.0.1:9/v1")
        made.append(client)
        return client

    return make


async def test_runs_share_one_client_per_endpoint_and_key():
    made: list = []
    first = shared_client(("openai", "http://127.0.0.1:9/v1", "k"), maker(made))
    again = shared_client(("openai", "http://127.0.0.1:9/v1", "k"), maker(made))
    other = shared_client(("openai", "http://127.0.0.1:9/v1", "k2"), maker(made))
    assert first is again and other is not first
    assert len(made) == 2
    # Per-run options do not make a new HTTP client, nor close the shared one.
    per_run = first.with_options(timeout=3, max_retries=0)
    assert per_run.timeout == 3 and not first.is_closed()


async def test_a_closed_client_is_made_again_and_old_ones_are_let_go():
    made: list = []
    key = ("openai", "http://127.0.0.1:9/v1", "closing")
    first = shared_client(key, maker(made))
    await first.close()
    assert shared_client(key, maker(made)) is not first
    for index in range(MAX_SHARED_CLIENTS + 5):
        shared_client(("openai", "u", str(index)), maker(made))
    # The oldest keys were dropped: asking again makes a new client.
    count = len(made)
    shared_client(("openai", "u", "0"), maker(made))
    assert len(made) == count + 1
