"""The openai provider's fast path (agents/providers/openai_stream.py): the
stream's Server-Sent Events read as plain JSON give the chunks the SDK's models
give, and the SDK's path stays as the fallback. (The provider's contract tests
in test_providers.py run every failure shape through it too.)"""

from __future__ import annotations

import logging

import openai
import pytest

from agents.providers import openai_stream
from agents.providers.openai_stream import chunk_dicts, fast_stream_available, sse_data
from tests.fakes.fixtures import fake_openai_server  # noqa: F401
from tests.fakes.llm_servers import FakeOpenAIServer, Scenario


async def events_of(*parts: bytes) -> list[bytes]:
    async def chunks():
        for part in parts:
            yield part

    return [data async for data in sse_data(chunks())]


async def test_events_end_at_a_blank_line_whatever_the_line_ends():
    assert await events_of(b'data: {"a":1}\n\ndata: [DONE]\n\n') == [
        b'{"a":1}',
        b"[DONE]",
    ]
    assert await events_of(b"data: a\r\n\r\ndata: b\r\rdata: c\n\n") == [
        b"a",
        b"b",
        b"c",
    ]


async def test_a_crlf_cut_between_two_reads_is_one_line_end():
    assert await events_of(b"data: x\r", b"\n\r", b"\ndata: y\r\n\r\n") == [
        b"x",
        b"y",
    ]


async def test_data_lines_join_and_other_fields_and_comments_are_passed_over():
    stream = b": keep-alive\nevent: message\nid: 7\ndata: first\ndata:second\n\n"
    assert await events_of(stream) == [b"first\nsecond"]


async def test_a_line_separator_inside_the_json_is_not_a_line_end():
    # str.splitlines() would cut here (U+2028), SSE does not.
    payload = '{"t":"a\u2028b"}'.encode()
    assert await events_of(b"data: " + payload + b"\n\n") == [payload]


async def test_an_event_the_stream_ends_in_still_counts():
    assert await events_of(b"data: one", b" two\n\ndata: last") == [
        b"one two",
        b"last",
    ]


@pytest.fixture
def client(fake_openai_server: FakeOpenAIServer):  # noqa: F811
    return openai.AsyncOpenAI(api_key="sk-test", base_url=fake_openai_server.base_url)


ARGUMENTS = {
    "model": "m",
    "messages": [{"role": "user", "content": "hi"}],
    "stream_options": {"include_usage": True},
}


async def test_both_paths_read_the_same_chunks(settings, client, fake_openai_server):  # noqa: F811
    reply = Scenario.reply(["Hello", ", ", "world"], usage=(3, 4))
    fake_openai_server.script(reply, reply)

    settings.PARLEY_OPENAI_FAST_STREAM = True
    fast = [chunk async for chunk in chunk_dicts(client, ARGUMENTS)]
    settings.PARLEY_OPENAI_FAST_STREAM = False
    through_models = [chunk async for chunk in chunk_dicts(client, ARGUMENTS)]

    def without_ids(chunks):  # each request gets its own completion id
        return [{**chunk, "id": None} for chunk in chunks]

    assert without_ids(fast) == without_ids(through_models)
    texts = [c["choices"][0]["delta"].get("content") for c in fast if c["choices"]]
    assert "".join(text or "" for text in texts) == "Hello, world"
    assert fast[-1]["usage"]["completion_tokens"] == 4


async def test_an_error_event_in_the_stream_raises_the_sdks_error(
    settings,
    client,
    fake_openai_server,  # noqa: F811
):
    settings.PARLEY_OPENAI_FAST_STREAM = True
    fake_openai_server.script(Scenario.error_event(1))
    with pytest.raises(openai.APIError):
        async for _ in chunk_dicts(client, ARGUMENTS):
            pass


def test_an_sdk_without_streaming_responses_falls_back_loudly(
    settings, caplog, monkeypatch
):
    class Completions:  # an SDK client whose completions lack the attribute
        pass

    class OldClient:
        class chat:
            completions = Completions()

    settings.PARLEY_OPENAI_FAST_STREAM = True
    monkeypatch.setattr(openai_stream, "_warned", False)
    with caplog.at_level(logging.WARNING, logger="agents.providers.openai_stream"):
        assert fast_stream_available(OldClient()) is False
        assert fast_stream_available(OldClient()) is False
    warnings = [r for r in caplog.records if "with_streaming_response" in r.message]
    assert len(warnings) == 1
