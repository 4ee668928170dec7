"""Test doubles that are real network services: fake LLM servers on loopback.

Import the servers from :mod:`tests.fakes.llm_servers` and the pytest fixtures
from :mod:`tests.fakes.fixtures`.
"""

from tests.fakes.llm_servers import (
    FakeAnthropicServer,
    FakeLLMServer,
    FakeOpenAIServer,
    FakeToolCall,
    RecordedRequest,
    Scenario,
)

__all__ = [
    "FakeAnthropicServer",
    "FakeLLMServer",
    "FakeOpenAIServer",
    "FakeToolCall",
    "RecordedRequest",
    "Scenario",
]
