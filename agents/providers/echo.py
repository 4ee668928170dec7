"""The offline `echo` provider: streams the user's text back word by word.

extra_params:
  tokens_per_second  pace of the stream (default 20; 0 = as fast as possible)
  timestamp_tokens   append "@<time.monotonic_ns()>" to every word (benchmarks
                     measure latency across processes with it)
  repeat             echo the text this many times (default 1; load tests)

Commands in the user's text, for trying the runtime offline:
  /ask <question>    ask the thread <question> (input_request), then echo the answer;
                     no answer within extra_params.input_timeout (default 60 s)
                     ends the wait and the reply says so
  /fail <text>       stream <text>, then fail with provider_error
"""

import asyncio
import re
import time
from collections.abc import AsyncIterator

from agents.errors import AgentErrorCode
from agents.providers.base import (
    Provider,
    ProviderError,
    ProviderEvent,
    ProviderRequest,
    StateUpdate,
    TextDelta,
    Usage,
)

WORD = re.compile(r"\S+\s*|\s+")


class EchoProvider(Provider):
    name = "echo"
    needs_api_key = False

    async def stream(self, request: ProviderRequest) -> AsyncIterator[ProviderEvent]:
        prompt = request.messages[-1].content if request.messages else ""
        params = request.extra_params
        rate = float(params.get("tokens_per_second", 20))
        stamp = bool(params.get("timestamp_tokens", False))
        fail = prompt.startswith("/fail")
        if fail:
            prompt = prompt[len("/fail") :].lstrip()
        if prompt.startswith("/ask"):
            question = prompt[len("/ask") :].strip() or "Any input?"
            timeout = float(params.get("input_timeout", 60))
            yield StateUpdate(kind="waiting_for_input", data={"question": question})
            answer = await request.ask_human(question, timeout)
            prompt = (
                f"You answered: {answer}"
                if answer is not None
                else f"No answer within {timeout:g} s."
            )
        words = WORD.findall(prompt)
        repeat = int(params.get("repeat", 1))
        if repeat > 1 and words:
            spaced = words[:-1] + [words[-1].rstrip() + " "]
            words = spaced * (repeat - 1) + words
        if not request.stream:
            words = ["".join(words)]
        interval = 1.0 / rate if rate > 0 else 0.0
        next_at = time.monotonic()
        for count, word in enumerate(words, start=1):
            if interval and count > 1:  # the first word comes at once, then the pace
                next_at += interval
                delay = next_at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            if stamp:
                stripped = word.rstrip()
                word = f"{stripped}@{time.monotonic_ns()}{word[len(stripped) :]}"
            yield TextDelta(word)
            if count % 100 == 0:
                yield StateUpdate(kind="usage", data={"output_tokens": count})
        if fail:
            raise ProviderError(
                AgentErrorCode.PROVIDER_ERROR, "The echo agent failed on request."
            )
        yield Usage(input_tokens=len(words), output_tokens=len(words))


provider = EchoProvider()
