"""The `python` provider: agents written in Python (agents/python_agents/).

The agent config's `model` is the registered agent's name. The agent's
generator is driven here: text becomes `TextDelta`s, state updates pass
through, an `Ask` goes to the thread (request.ask_human) and its answer back
into the generator; its tool calls go through the runtime (request.call_tool),
so they show as `tool_call`/`tool_result` frames like a model's. Cancelling the
iterating task closes the generator.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

from agents.errors import AgentErrorCode
from agents.models import AgentConfig
from agents.providers import get_provider
from agents.providers.base import (
    ChatMessage,
    Provider,
    ProviderError,
    ProviderEvent,
    ProviderRequest,
    StateUpdate,
    TextDelta,
)
from agents.python_agents import (
    AgentContext,
    Ask,
    get_python_agent,
    python_agent_names,
)


class PythonAgentProvider(Provider):
    name = "python"
    needs_api_key = False

    async def stream(self, request: ProviderRequest) -> AsyncIterator[ProviderEvent]:
        agent_class = get_python_agent(request.model)
        if agent_class is None:
            raise ProviderError(
                AgentErrorCode.PROVIDER_ERROR,
                f"No Python agent is registered as {request.model!r}.",
            )
        context = AgentContext(
            messages=list(request.messages),
            input_timeout=request.input_timeout,
            extra_params=dict(request.extra_params),
            _call_tool=request.call_tool,
            _complete=lambda agent_name, prompt: _complete(request, agent_name, prompt),
        )
        generator = agent_class().run(context)
        answer: Any = None
        try:
            while True:
                try:
                    item = await generator.asend(answer)
                except StopAsyncIteration:
                    return
                answer = None
                if isinstance(item, str):
                    if item:
                        yield TextDelta(item)
                elif isinstance(item, StateUpdate):
                    yield item
                elif isinstance(item, Ask):
                    answer = await request.ask_human(
                        item.question, item.timeout or request.input_timeout
                    )
                else:
                    raise ProviderError(
                        AgentErrorCode.PROVIDER_BAD_RESPONSE,
                        f"The Python agent yielded a {type(item).__name__}; yield "
                        "text, StateUpdate or Ask.",
                    )
        finally:
            await generator.aclose()

    def config_problems(self, agent: Any) -> dict[str, str]:
        names = python_agent_names()
        if getattr(agent, "model", "") not in names:
            return {
                "model": "The name of a registered Python agent: "
                + (", ".join(names) or "none are registered")
                + "."
            }
        return {}


async def _complete(request: ProviderRequest, agent_name: str, prompt: str) -> str:
    """The whole reply of another agent config's model to `prompt`."""
    config = await AgentConfig.objects.filter(name=agent_name, enabled=True).afirst()
    if config is None or config.provider == "python":
        raise ProviderError(
            AgentErrorCode.AGENT_NOT_FOUND,
            f"No enabled model agent named {agent_name!r} to complete with.",
        )
    api_key = os.environ.get(config.api_key_env) if config.api_key_env else None
    model_request = ProviderRequest(
        model=config.model,
        messages=[ChatMessage("user", prompt)],
        system_prompt=config.system_prompt,
        temperature=config.temperature,
        max_tokens=config.max_tokens,
        stream=True,
        extra_params=dict(config.extra_params or {}),
        api_key=api_key or None,
        base_url=config.base_url or None,
        timeout=request.timeout,
        max_retries=request.max_retries,
    )
    parts = []
    async for event in get_provider(config.provider).stream(model_request):
        if isinstance(event, TextDelta):
            parts.append(event.text)
    return "".join(parts)


provider = PythonAgentProvider()
