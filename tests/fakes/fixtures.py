"""Pytest fixtures for the fake LLM servers: a fresh server per test.

Make them available everywhere with this line in `tests/conftest.py`:

    from tests.fakes.fixtures import fake_anthropic_server, fake_openai_server  # noqa: F401

Each yields a started server that echoes by default; script it, point an
agent's `base_url` at `server.base_url`, and read `server.requests` afterwards.
"""

from collections.abc import Iterator

import pytest

from tests.fakes.llm_servers import FakeAnthropicServer, FakeOpenAIServer


@pytest.fixture
def fake_openai_server() -> Iterator[FakeOpenAIServer]:
    """An OpenAI-compatible server on 127.0.0.1; `base_url` ends in `/v1`."""
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture
def fake_anthropic_server() -> Iterator[FakeAnthropicServer]:
    """An Anthropic Messages server on 127.0.0.1."""
    with FakeAnthropicServer() as server:
        yield server
