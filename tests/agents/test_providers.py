"""The provider contract: the same behavioural tests run on every agent provider.

`ProviderContract` holds the tests; each `Test<Name>Provider` class supplies a
harness that knows how to make its provider produce a given reply. The openai
and anthropic providers talk to real HTTP servers on loopback
(`tests/fakes/llm_servers.py`) through their official SDKs; nothing is patched.
Tests about an upstream server (failures, retries, what was sent) skip for
`echo`, which has none.
"""

from __future__ import annotations

import asyncio
import socket
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from agents.errors import AgentErrorCode
from agents.providers import get_provider
from agents.providers.base import (
    ChatMessage,
    Provider,
    ProviderError,
    ProviderEvent,
    ProviderRequest,
    StateUpdate,
    TextDelta,
    ToolCall,
    Usage,
)
from tests.fakes.fixtures import fake_anthropic_server, fake_openai_server  # noqa: F401
from tests.fakes.llm_servers import (
    FakeAnthropicServer,
    FakeLLMServer,
    FakeOpenAIServer,
    FakeToolCall,
    Scenario,
)

API_KEY = "sk-parley-test-9f8e7d6c5b4a3210"
REPLY = ("The ", "quick ", "brown ", "fox ", "jumps.")
Code = AgentErrorCode


@dataclass
class Outcome:
    """What a caller saw from one `provider.stream()` call."""

    events: list[ProviderEvent] = field(default_factory=list)
    error: ProviderError | None = None

    @property
    def texts(self) -> list[str]:
        return [event.text for event in self.events if isinstance(event, TextDelta)]

    @property
    def text(self) -> str:
        return "".join(self.texts)


async def run(provider: Provider, request: ProviderRequest) -> Outcome:
    outcome = Outcome()
    try:
        async for event in provider.stream(request):
            outcome.events.append(event)
    except ProviderError as error:
        outcome.error = error
    return outcome


def assert_key_not_revealed(error: ProviderError) -> None:
    # The full traceback is what a log would show, causes included.
    for shown in (
        error.message,
        str(error),
        "".join(traceback.format_exception(error)),
    ):
        assert API_KEY not in shown
        assert API_KEY[-8:] not in shown


@dataclass
class SentRequest:
    """The request an upstream server received, in provider-neutral terms."""

    model: str
    system: str | None
    messages: list[tuple[str, str]]
    body: dict[str, Any]
    api_key: str | None


class Harness:
    """How the contract tests drive one provider."""

    provider_name: str
    server: FakeLLMServer | None = None
    sends_temperature = True
    # extra_params of a request-shape test, known and unknown to the SDK alike.
    sample_extra_params: dict[str, Any] = {}

    @property
    def provider(self) -> Provider:
        return get_provider(self.provider_name)

    def reply_request(
        self, tokens: Sequence[str], *, delay: float = 0.0, **fields: Any
    ) -> ProviderRequest:
        """A request the provider will answer with exactly `tokens`."""
        raise NotImplementedError

    def failing_request(self, tokens: Sequence[str], after: int) -> ProviderRequest:
        """A request whose reply fails after the first `after` tokens."""
        raise NotImplementedError

    failing_code: AgentErrorCode

    def valid_config(self) -> SimpleNamespace:
        raise NotImplementedError

    async def upstream_closed(self, timeout: float) -> bool:
        """Whether the upstream saw the client hang up, within `timeout` s."""
        if self.server is None:
            return True  # nothing upstream to close
        request = self.server.last_request
        return await asyncio.to_thread(request.wait_client_closed, timeout)

    def sent_request(self) -> SentRequest:
        raise NotImplementedError


class EchoHarness(Harness):
    provider_name = "echo"
    failing_code = Code.PROVIDER_ERROR

    def reply_request(
        self, tokens: Sequence[str], *, delay: float = 0.0, **fields: Any
    ) -> ProviderRequest:
        # Echo streams the prompt back word by word at tokens_per_second.
        rate = 1 / delay if delay else 0
        return ProviderRequest(
            model="",
            messages=[ChatMessage("user", "".join(tokens))],
            **{"extra_params": {"tokens_per_second": rate}, **fields},
        )

    def failing_request(self, tokens: Sequence[str], after: int) -> ProviderRequest:
        prompt = "/fail " + "".join(tokens[:after])
        return ProviderRequest(
            model="",
            messages=[ChatMessage("user", prompt)],
            extra_params={"tokens_per_second": 0},
        )

    def valid_config(self) -> SimpleNamespace:
        return SimpleNamespace(model="", base_url="", api_key_env="", extra_params={})


class ServerHarness(Harness):
    failing_code = Code.PROVIDER_CONNECTION_LOST
    server: FakeLLMServer

    def __init__(self, server: FakeLLMServer) -> None:
        self.server = server

    def request(self, **fields: Any) -> ProviderRequest:
        values: dict[str, Any] = {
            "model": "model-under-test",
            "messages": [ChatMessage("user", "Say something.")],
            "api_key": API_KEY,
            "base_url": self.server.base_url,
            "timeout": 5.0,
            "max_retries": 0,
        }
        return ProviderRequest(**{**values, **fields})

    def reply_request(
        self, tokens: Sequence[str], *, delay: float = 0.0, **fields: Any
    ) -> ProviderRequest:
        self.server.script(Scenario.reply(tokens, delay=delay))
        return self.request(**fields)

    def failing_request(self, tokens: Sequence[str], after: int) -> ProviderRequest:
        self.server.script(Scenario.dropped(after, tokens))
        return self.request()


class OpenAIHarness(ServerHarness):
    provider_name = "openai"
    sample_extra_params = {"top_p": 0.5, "seed": 7, "num_ctx": 4096}

    def valid_config(self) -> SimpleNamespace:
        return SimpleNamespace(
            model="gpt-4o-mini",
            base_url="",
            api_key_env="OPENAI_API_KEY",
            extra_params={"top_p": 0.9},
        )

    def sent_request(self) -> SentRequest:
        recorded = self.server.last_request
        messages = [(m["role"], m["content"]) for m in recorded.body["messages"]]
        system = messages.pop(0)[1] if messages and messages[0][0] == "system" else None
        return SentRequest(
            model=recorded.body["model"],
            system=system,
            messages=messages,
            body=recorded.body,
            api_key=recorded.api_key,
        )


class AnthropicHarness(ServerHarness):
    provider_name = "anthropic"
    # SDK 2.x dropped sampling parameters; API version 2026-10-21 rejects them.
    sends_temperature = False
    sample_extra_params = {
        "stop_sequences": ["###"],
        "metadata": {"user_id": "user-1"},
        "custom_flag": True,
    }

    def valid_config(self) -> SimpleNamespace:
        return SimpleNamespace(
            model="claude-sonnet-4-5",
            base_url="",
            api_key_env="ANTHROPIC_API_KEY",
            extra_params={"stop_sequences": ["###"]},
        )

    def sent_request(self) -> SentRequest:
        recorded = self.server.last_request
        return SentRequest(
            model=recorded.body["model"],
            system=recorded.body.get("system"),
            messages=[(m["role"], m["content"]) for m in recorded.body["messages"]],
            body=recorded.body,
            api_key=recorded.api_key,
        )


# scenario, code, text tokens streamed before the failure, request overrides
FAILURES = {
    "401 unauthorized": (Scenario.error(401), Code.PROVIDER_AUTH_FAILED, 0, {}),
    "403 forbidden": (Scenario.error(403), Code.PROVIDER_AUTH_FAILED, 0, {}),
    "429 rate limited": (
        Scenario.error(429, retry_after="0"),
        Code.PROVIDER_RATE_LIMITED,
        0,
        {},
    ),
    "500 server error": (Scenario.error(500), Code.PROVIDER_UNAVAILABLE, 0, {}),
    "503 unavailable": (Scenario.error(503), Code.PROVIDER_UNAVAILABLE, 0, {}),
    "529 overloaded": (Scenario.error(529), Code.PROVIDER_UNAVAILABLE, 0, {}),
    "408 request timeout": (Scenario.error(408), Code.PROVIDER_TIMEOUT, 0, {}),
    "400 bad request": (Scenario.error(400), Code.PROVIDER_ERROR, 0, {}),
    "malformed SSE data": (Scenario.malformed(2), Code.PROVIDER_BAD_RESPONSE, 2, {}),
    "unexpected event": (Scenario.unexpected(2), Code.PROVIDER_BAD_RESPONSE, 2, {}),
    "in-stream server error": (
        Scenario.error_event(2),
        Code.PROVIDER_UNAVAILABLE,
        2,
        {},
    ),
    "connection dropped": (Scenario.dropped(3), Code.PROVIDER_CONNECTION_LOST, 3, {}),
    "stream cut short": (Scenario.truncated(2), Code.PROVIDER_CONNECTION_LOST, 2, {}),
    "stall mid-stream": (
        Scenario.stalled(2),
        Code.PROVIDER_TIMEOUT,
        2,
        {"timeout": 0.3},
    ),
    "no answer at all": (
        Scenario.hanging(),
        Code.PROVIDER_TIMEOUT,
        0,
        {"timeout": 0.3},
    ),
}


class ProviderContract:
    """What every provider promises its caller (the agent runtime)."""

    @pytest.fixture
    def harness(self) -> Harness:
        raise NotImplementedError  # each Test<Name>Provider class provides one

    @pytest.fixture
    def upstream(self, harness: Harness) -> ServerHarness:
        if not isinstance(harness, ServerHarness):
            pytest.skip(f"{harness.provider_name} has no upstream server")
        return harness

    # -- every provider ----------------------------------------------------------

    async def test_streams_the_reply_in_order(self, harness: Harness) -> None:
        outcome = await run(harness.provider, harness.reply_request(REPLY))

        assert outcome.error is None
        assert outcome.texts == list(REPLY)
        assert outcome.text == "The quick brown fox jumps."

    async def test_reports_usage_once_after_the_text(self, harness: Harness) -> None:
        outcome = await run(harness.provider, harness.reply_request(REPLY))

        usages = [event for event in outcome.events if isinstance(event, Usage)]
        assert len(usages) == 1
        assert outcome.events[-1] is usages[0]
        assert usages[0].output_tokens == len(REPLY)
        assert usages[0].input_tokens and usages[0].input_tokens > 0

    async def test_stream_off_gives_the_whole_text_as_one_chunk(
        self, harness: Harness
    ) -> None:
        outcome = await run(
            harness.provider, harness.reply_request(REPLY, stream=False)
        )

        assert outcome.error is None
        assert outcome.texts == ["The quick brown fox jumps."]

    async def test_cancelling_closes_the_upstream_stream_within_a_second(
        self, harness: Harness
    ) -> None:
        tokens = [f"word{number} " for number in range(200)]
        request = harness.reply_request(tokens, delay=0.05)
        received: list[str] = []
        two_arrived = asyncio.Event()

        async def consume() -> None:
            async for event in harness.provider.stream(request):
                if isinstance(event, TextDelta):
                    received.append(event.text)
                    if len(received) == 2:
                        two_arrived.set()

        task = asyncio.create_task(consume())
        await asyncio.wait_for(two_arrived.wait(), 5)
        task.cancel()
        done, _pending = await asyncio.wait({task}, timeout=1.0)

        assert task in done and task.cancelled()
        assert await harness.upstream_closed(timeout=1.0)
        assert received == tokens[: len(received)]
        assert len(received) < len(tokens)

    async def test_text_streamed_before_a_failure_is_kept(
        self, harness: Harness
    ) -> None:
        outcome = await run(harness.provider, harness.failing_request(REPLY, after=2))

        assert outcome.error is not None
        assert outcome.error.code == harness.failing_code
        assert outcome.text == "The quick "

    async def test_a_missing_key_fails_before_any_network_call(
        self, harness: Harness
    ) -> None:
        request = harness.reply_request(REPLY, api_key=None, base_url=None)
        started = time.monotonic()
        outcome = await run(harness.provider, request)

        if harness.provider.needs_api_key:
            assert outcome.error is not None
            assert outcome.error.code == Code.PROVIDER_KEY_MISSING
            assert outcome.events == []
            assert time.monotonic() - started < 0.5
            assert harness.server is None or harness.server.requests == []
        else:
            assert outcome.error is None
            assert outcome.text == "The quick brown fox jumps."

    def test_a_complete_config_has_no_problems(self, harness: Harness) -> None:
        assert harness.provider.config_problems(harness.valid_config()) == {}

    # -- providers with an upstream server ---------------------------------------

    @pytest.mark.parametrize("failure", FAILURES.keys())
    async def test_failures_end_with_the_right_code_and_keep_the_text(
        self, upstream: ServerHarness, failure: str
    ) -> None:
        scenario, code, streamed, overrides = FAILURES[failure]
        upstream.server.script(scenario)

        outcome = await run(upstream.provider, upstream.request(**overrides))

        assert outcome.error is not None, outcome.events
        assert outcome.error.code == code
        assert outcome.error.message
        assert outcome.text == "".join(REPLY[:streamed])
        assert not any(isinstance(event, Usage) for event in outcome.events)
        assert_key_not_revealed(outcome.error)

    async def test_a_rate_limit_with_retry_after_is_retried_then_succeeds(
        self, upstream: ServerHarness
    ) -> None:
        upstream.server.script(
            Scenario.error(429, retry_after="0"), Scenario.reply(REPLY)
        )

        outcome = await run(upstream.provider, upstream.request(max_retries=2))

        assert outcome.error is None
        assert outcome.text == "The quick brown fox jumps."
        assert len(upstream.server.requests) == 2

    async def test_a_persistent_rate_limit_fails_after_bounded_retries(
        self, upstream: ServerHarness
    ) -> None:
        upstream.server.script(Scenario.error(429, retry_after="0"))

        outcome = await run(upstream.provider, upstream.request(max_retries=2))

        assert outcome.error is not None
        assert outcome.error.code == Code.PROVIDER_RATE_LIMITED
        assert len(upstream.server.requests) == 3  # the first try and two retries

    async def test_the_request_reaches_the_server_as_configured(
        self, upstream: ServerHarness
    ) -> None:
        history = [
            ChatMessage("user", "First question?"),
            ChatMessage("assistant", "First answer."),
            ChatMessage("user", "Second question?"),
        ]
        request = upstream.reply_request(
            REPLY,
            model="model-xyz",
            messages=history,
            system_prompt="Answer briefly.",
            temperature=0.25,
            max_tokens=321,
            extra_params=upstream.sample_extra_params,
        )

        outcome = await run(upstream.provider, request)

        assert outcome.error is None
        sent = upstream.sent_request()
        assert sent.model == "model-xyz"
        assert sent.system == "Answer briefly."
        assert sent.messages == [
            ("user", "First question?"),
            ("assistant", "First answer."),
            ("user", "Second question?"),
        ]
        assert sent.body["max_tokens"] == 321
        if upstream.sends_temperature:
            assert sent.body["temperature"] == 0.25
        else:
            assert "temperature" not in sent.body
        for key, value in upstream.sample_extra_params.items():
            assert sent.body[key] == value
        assert sent.body["stream"] is True
        assert sent.api_key == API_KEY
        # A reply read to the end is not a hang-up (the cancel test relies on it).
        # The server thread marks the request finished just after its last write,
        # which the client may have read already: wait for it.
        recorded = upstream.server.last_request
        assert recorded.finished.wait(5) and not recorded.client_closed.is_set()

    async def test_stream_off_asks_the_server_for_a_whole_reply(
        self, upstream: ServerHarness
    ) -> None:
        await run(upstream.provider, upstream.reply_request(REPLY, stream=False))

        assert upstream.server.last_request.body.get("stream") in (False, None)

    @pytest.mark.parametrize("stream", [True, False])
    async def test_tool_calls_arrive_complete_once_each(
        self, upstream: ServerHarness, stream: bool
    ) -> None:
        calls = [
            FakeToolCall("get_weather", ('{"city": ', '"Oslo"}'), id="call_7"),
            FakeToolCall("clock", ("{}",), id="call_8"),
        ]
        upstream.server.script(Scenario.reply(["Checking."], tool_calls=calls))

        outcome = await run(upstream.provider, upstream.request(stream=stream))

        assert outcome.error is None
        assert outcome.text == "Checking."
        made = [event for event in outcome.events if isinstance(event, ToolCall)]
        assert made == [
            ToolCall("call_7", "get_weather", '{"city": "Oslo"}'),
            ToolCall("call_8", "clock", "{}"),
        ]
        assert not [e for e in outcome.events if isinstance(e, StateUpdate)]

    async def test_an_unreachable_server_is_reported_unavailable(
        self, upstream: ServerHarness
    ) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            closed_port = probe.getsockname()[1]
        base_url = upstream.server.base_url.replace(
            str(upstream.server.port), str(closed_port)
        )

        outcome = await run(upstream.provider, upstream.request(base_url=base_url))

        assert outcome.error is not None
        assert outcome.error.code == Code.PROVIDER_UNAVAILABLE

    async def test_a_keyless_local_server_gets_a_placeholder_key(
        self, upstream: ServerHarness
    ) -> None:
        upstream.server.script(Scenario.reply(REPLY))

        outcome = await run(upstream.provider, upstream.request(api_key=None))

        assert outcome.text == "The quick brown fox jumps."
        assert upstream.server.last_request.api_key == "not-needed"

    async def test_a_local_server_that_wants_a_key_says_to_set_one(
        self, upstream: ServerHarness
    ) -> None:
        upstream.server.script(Scenario.error(401))

        outcome = await run(upstream.provider, upstream.request(api_key=""))

        assert outcome.error is not None
        assert outcome.error.code == Code.PROVIDER_AUTH_FAILED
        assert "api_key_env" in outcome.error.message

    async def test_the_server_explanation_of_a_refusal_is_shown(
        self, upstream: ServerHarness
    ) -> None:
        upstream.server.script(
            Scenario.error(404, message="The model `model-xyz` does not exist.")
        )

        outcome = await run(upstream.provider, upstream.request())

        assert outcome.error is not None
        assert outcome.error.code == Code.PROVIDER_ERROR
        assert "The model `model-xyz` does not exist." in outcome.error.message

    async def test_a_server_explanation_quoting_the_key_is_withheld(
        self, upstream: ServerHarness
    ) -> None:
        upstream.server.script(Scenario.error(400, message=f"Bad key {API_KEY}!"))

        outcome = await run(upstream.provider, upstream.request())

        assert outcome.error is not None
        assert outcome.error.code == Code.PROVIDER_ERROR
        assert_key_not_revealed(outcome.error)

    def test_config_problems_name_the_field_to_fix(
        self, upstream: ServerHarness
    ) -> None:
        def problems(**changes: Any) -> dict[str, str]:
            config = upstream.valid_config()
            vars(config).update(changes)
            return upstream.provider.config_problems(config)

        assert set(problems(model="")) == {"model"}
        assert set(problems(base_url="ftp://models.example")) == {"base_url"}
        assert set(problems(api_key_env="")) == {"api_key_env"}
        assert problems(api_key_env="", base_url="http://localhost:11434/v1") == {}
        assert set(problems(extra_params={"model": "other"})) == {"extra_params"}
        assert set(problems(extra_params=["not", "a", "dict"])) == {"extra_params"}
        pasted_key = problems(api_key_env=API_KEY)
        assert set(pasted_key) == {"api_key_env"}
        assert API_KEY not in pasted_key["api_key_env"]


class TestEchoProvider(ProviderContract):
    @pytest.fixture
    def harness(self) -> Harness:
        return EchoHarness()


class TestOpenAIProvider(ProviderContract):
    @pytest.fixture
    def harness(self, fake_openai_server: FakeOpenAIServer) -> Harness:  # noqa: F811
        return OpenAIHarness(fake_openai_server)

    async def test_reasoning_models_can_leave_out_temperature_and_max_tokens(
        self, harness: OpenAIHarness
    ) -> None:
        request = harness.reply_request(
            REPLY, extra_params={"temperature": None, "max_completion_tokens": 500}
        )

        outcome = await run(harness.provider, request)

        assert outcome.error is None
        body = harness.server.last_request.body
        assert "temperature" not in body and "max_tokens" not in body
        assert body["max_completion_tokens"] == 500

    async def test_usage_is_asked_for_in_the_stream(
        self, harness: OpenAIHarness
    ) -> None:
        await run(harness.provider, harness.reply_request(REPLY))

        assert harness.server.last_request.body["stream_options"] == {
            "include_usage": True
        }


class TestOpenAIProviderOnHttpx(TestOpenAIProvider):
    """The same contract on the SDK's default transport (PARLEY_PROVIDER_AIOHTTP=0,
    or aiohttp missing)."""

    @pytest.fixture(autouse=True)
    def default_transport(self, settings) -> None:
        settings.PARLEY_PROVIDER_AIOHTTP = False


class TestAnthropicProvider(ProviderContract):
    @pytest.fixture
    def harness(
        self,
        fake_anthropic_server: FakeAnthropicServer,  # noqa: F811
    ) -> Harness:
        return AnthropicHarness(fake_anthropic_server)

    async def test_blank_messages_are_not_sent(self, harness: AnthropicHarness) -> None:
        history = [
            ChatMessage("user", "Hello?"),
            ChatMessage("assistant", "  "),
            ChatMessage("user", "Anyone?"),
        ]

        await run(harness.provider, harness.reply_request(REPLY, messages=history))

        assert harness.sent_request().messages == [
            ("user", "Hello?"),
            ("user", "Anyone?"),
        ]


class TestAnthropicProviderOnHttpx(TestAnthropicProvider):
    """The same contract on the SDK's default transport."""

    @pytest.fixture(autouse=True)
    def default_transport(self, settings) -> None:
        settings.PARLEY_PROVIDER_AIOHTTP = False
