"""Runs share one SDK client per endpoint and key on an event loop
(agents/providers/http.py `shared_client`), made on the SDK's aiohttp transport
(`sdk_http_client`)."""

from __future__ import annotations

import asyncio
import logging
import types

import anthropic
import openai
import pytest

from agents.providers import http
from agents.providers.http import MAX_SHARED_CLIENTS, sdk_http_client, shared_client
from tests.eventually import eventually


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
    # The oldest keys were dropped, their clients closed: asking again makes a
    # new client.
    dropped = made[2]
    await eventually(dropped.is_closed, what="the dropped client closing")
    count = len(made)
    shared_client(("openai", "u", "0"), maker(made))
    assert len(made) == count + 1


def test_a_loops_clients_are_closed_when_it_ends():
    made: list = []

    async def use_one():
        shared_client(("openai", "http://127.0.0.1:9/v1", "k"), maker(made))

    asyncio.run(use_one())
    assert made and made[0].is_closed()


@pytest.mark.parametrize("sdk", [openai, anthropic], ids=lambda sdk: sdk.__name__)
async def test_the_sdks_stream_over_their_aiohttp_transport(settings, sdk):
    settings.PARLEY_PROVIDER_AIOHTTP = True
    client = sdk_http_client(sdk)
    assert isinstance(client, sdk.DefaultAioHttpClient)
    await client.aclose()

    settings.PARLEY_PROVIDER_AIOHTTP = False
    assert sdk_http_client(sdk) is None  # the SDK's default transport


async def test_an_sdk_without_the_aiohttp_extra_falls_back_loudly_once(
    settings, caplog, monkeypatch
):
    def no_extra():
        raise RuntimeError("install the aiohttp extra")

    # What an SDK installed without its `aiohttp` extra does.
    without_extra = types.ModuleType("some_sdk")
    without_extra.DefaultAioHttpClient = no_extra

    settings.PARLEY_PROVIDER_AIOHTTP = True
    monkeypatch.setattr(http, "_warned_no_aiohttp", False)
    with caplog.at_level(logging.WARNING, logger="agents.providers.http"):
        assert sdk_http_client(without_extra) is None
        assert sdk_http_client(without_extra) is None
    warnings = [r for r in caplog.records if "no aiohttp transport" in r.message]
    assert len(warnings) == 1 and "some_sdk" in warnings[0].message
