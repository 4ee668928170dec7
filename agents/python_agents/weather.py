"""The example Python agent, in the spirit of AutoGen's two-agent example (an
assistant with a weather function and a user proxy): here the people in the
thread are the user proxy. It finds the city in the message or asks the thread
for it, calls its `get_weather` tool, and, when its config names a model agent
(`extra_params.phrase_with`: another agent config, e.g. an `openai` one),
lets that model phrase the answer.
"""

from __future__ import annotations

import re
import zlib

from agents.python_agents import (
    AgentContext,
    Ask,
    PythonAgent,
    ToolCallFailed,
    python_agent,
)
from agents.tools import tool

CONDITIONS = ("sunny", "cloudy", "rainy", "windy", "snowy", "foggy")


@tool
def get_weather(city: str) -> str:
    """Today's weather in a city (a stand-in that always gives the same answer
    for the same city, so the example works offline).

    Args:
        city: The city's name, e.g. Oslo.
    """
    seed = zlib.crc32(city.strip().lower().encode())
    return f"{city.strip()}: {CONDITIONS[seed % len(CONDITIONS)]}, {seed % 30 - 5} °C"


CITY = re.compile(r"\bin ([A-Z][\w .'-]*?)(?:[?.!,]|$)")


@python_agent
class WeatherAssistant(PythonAgent):
    name = "weather"
    description = "Tells the weather; asks the thread which city when it is unclear."
    tools = ("get_weather",)

    async def run(self, context: AgentContext):
        match = CITY.search(context.prompt)
        city = match.group(1).strip() if match else None
        if city is None:
            city = yield Ask("Which city should I check the weather for?")
            if not city:
                yield "Nobody told me a city, so I cannot check the weather."
                return
        try:
            weather = await context.call_tool("get_weather", city=city)
        except ToolCallFailed as failure:  # denied, timed out, or it raised
            yield f"I could not check the weather: {failure}"
            return
        phrase_with = context.extra_params.get("phrase_with")
        if phrase_with:
            yield await context.complete(
                phrase_with,
                f"Tell the user today's weather in one friendly sentence: {weather}",
            )
            return
        yield f"The weather in {weather}"
