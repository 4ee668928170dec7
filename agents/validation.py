"""Validation of agent configs and of per-thread overrides, shared by admin, API and socket."""

from __future__ import annotations

import math
import os
import re
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings

from agents.choices import OVERRIDABLE_FIELDS, PROVIDER_CHOICES, BusyPolicy
from agents.providers import get_provider
from agents.teams import team_config_problem
from agents.tools import tool_names

PROVIDER_NAMES = {name for name, _ in PROVIDER_CHOICES}
ENV_VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def agent_config_errors(agent) -> dict[str, str]:
    """Field -> problem for an AgentConfig (unsaved or saved).

    Used by `AgentConfig.clean()` (admin, `full_clean`) and by the API's
    serializer, so both accept exactly the same configs.
    """
    errors: dict[str, str] = {}
    if agent.provider not in PROVIDER_NAMES:
        errors["provider"] = (
            f"Unknown provider; choose one of {', '.join(sorted(PROVIDER_NAMES))}."
        )
        return errors
    temperature = agent.temperature
    if (
        not isinstance(temperature, int | float)
        or isinstance(temperature, bool)
        or not math.isfinite(temperature)
        or not 0.0 <= float(temperature) <= 2.0
    ):
        errors["temperature"] = "Temperature must be between 0 and 2."
    if not isinstance(agent.extra_params, dict):
        errors["extra_params"] = "extra_params must be a JSON object."
    if not isinstance(agent.allowed_overrides, list) or any(
        field not in OVERRIDABLE_FIELDS for field in agent.allowed_overrides
    ):
        errors["allowed_overrides"] = (
            f"A list drawn from: {', '.join(OVERRIDABLE_FIELDS)}."
        )
    if agent.busy_policy not in BusyPolicy.values:
        errors["busy_policy"] = f"One of {', '.join(BusyPolicy.values)}."
    if agent.api_key_env and not ENV_VAR_NAME.match(agent.api_key_env):
        errors["api_key_env"] = (
            "The name of an environment variable, e.g. OPENAI_API_KEY."
        )
    if agent.base_url and urlsplit(agent.base_url).scheme not in ("http", "https"):
        errors["base_url"] = "An http:// or https:// URL."
    if _contains_nul(agent.extra_params) or _contains_nul(agent.allowed_overrides):
        # PostgreSQL cannot store NUL in text or JSON.
        errors.setdefault(
            "extra_params", "Text may not contain NUL (\\u0000) characters."
        )
    errors.update(tool_config_errors(agent))
    for field in PRICE_FIELDS:
        if not _is_price(getattr(agent, field, 0)):
            errors[field] = "A price: a number >= 0 (per million tokens)."
    if agent.provider == "echo" and isinstance(agent.extra_params, dict):
        problem = _echo_params_problem(agent.extra_params)
        if problem:
            errors["extra_params"] = problem
    if not errors:
        errors.update(get_provider(agent.provider).config_problems(agent))
    return errors


MCP_SERVER_NAME = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
MCP_SERVER_KEYS = {"name", "url", "headers_env", "command", "args", "env"}


def _number_between(value: Any, low: float, high: float) -> bool:
    return _is_number(value) and low <= value <= high


def tool_config_errors(agent) -> dict[str, str]:
    """Problems of the tool fields: unknown tool names, bad MCP server entries."""
    errors: dict[str, str] = {}
    servers = getattr(agent, "mcp_servers", None)
    server_names: set[str] = set()
    if not isinstance(servers, list):
        errors["mcp_servers"] = "A list of server objects."
    else:
        for position, server in enumerate(servers):
            problem = _mcp_server_problem(
                server,
                allow_stdio=settings.PARLEY_MCP_ALLOW_STDIO,
            )
            if problem is None and server["name"] in server_names:
                problem = f"the name {server['name']!r} is used twice"
            if problem:
                errors["mcp_servers"] = f"Server {position + 1}: {problem}."
                break
            server_names.add(server["name"])
    known = set(tool_names())
    for field in ("tools", "approval_required"):
        names = getattr(agent, field, None)
        if not isinstance(names, list) or not all(
            isinstance(name, str) for name in names
        ):
            errors[field] = "A list of tool names."
            continue
        unknown = [
            name
            for name in names
            if name not in known
            and not (
                "." in name
                and name.split(".", 1)[0] in server_names
                and name.split(".", 1)[1]
            )
        ]
        if unknown:
            errors[field] = (
                f"Unknown tools: {', '.join(unknown)}. Choose from "
                f"{', '.join(sorted(known))}, or <server>.<tool> (<server>.* for "
                "all) of a server in mcp_servers."
            )
    approvals = getattr(agent, "approval_required", None)
    tools = getattr(agent, "tools", None)
    if "approval_required" not in errors and isinstance(tools, list):
        missing = [
            name
            for name in approvals or []
            if name not in tools and f"{name.split('.', 1)[0]}.*" not in tools
        ]
        if missing:
            errors["approval_required"] = (
                f"Not among the agent's tools: {', '.join(missing)}."
            )
    if not _number_between(getattr(agent, "max_tool_steps", 8), 1, 100) or not (
        isinstance(getattr(agent, "max_tool_steps", 8), int)
    ):
        errors["max_tool_steps"] = "An integer between 1 and 100."
    if not _number_between(getattr(agent, "tool_timeout_seconds", 30), 0.1, 3600):
        errors["tool_timeout_seconds"] = "Seconds between 0.1 and 3600."
    if not _number_between(getattr(agent, "input_timeout_seconds", 120), 1, 86_400):
        errors["input_timeout_seconds"] = "Seconds between 1 and 86400."
    return errors


def _mcp_server_problem(server: Any, *, allow_stdio: bool) -> str | None:
    if not isinstance(server, dict):
        return "an object with name and url"
    unknown = sorted(set(server) - MCP_SERVER_KEYS)
    if unknown:
        return f"unknown keys {', '.join(unknown)}"
    name = server.get("name")
    if not isinstance(name, str) or not MCP_SERVER_NAME.match(name):
        return "name: letters, digits, _ and -, at most 32 (no dots)"
    url, command = server.get("url"), server.get("command")
    if (url is None) == (command is None):
        return "give either url (Streamable HTTP) or command (stdio)"
    if url is not None and (
        not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https")
    ):
        return "url: an http:// or https:// URL"
    if command is not None:
        if not allow_stdio:
            return (
                "stdio servers start processes on the worker; the setting "
                "PARLEY_MCP_ALLOW_STDIO is off"
            )
        args = server.get("args", [])
        if (
            not isinstance(command, str)
            or not command
            or not (
                isinstance(args, list) and all(isinstance(arg, str) for arg in args)
            )
        ):
            return "command: a program name; args: a list of strings"
    for key in ("headers_env", "env"):
        mapping = server.get(key, {})
        if not isinstance(mapping, dict) or not all(
            isinstance(header, str)
            and isinstance(variable, str)
            and ENV_VAR_NAME.match(variable)
            for header, variable in mapping.items()
        ):
            return (
                f"{key}: an object of name -> environment variable name (the "
                "secret stays in the environment)"
            )
    return None


def _contains_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(
            _contains_nul(key) or _contains_nul(item) for key, item in value.items()
        )
    if isinstance(value, list | tuple):
        return any(_contains_nul(item) for item in value)
    return False


PRICE_FIELDS = ("input_price_per_million", "output_price_per_million")
# AgentConfig's DecimalField: 12 digits, 6 of them after the point.
MAX_PRICE = Decimal("999999.999999")


def _is_price(value: Any) -> bool:
    """A price per million tokens: a finite number from 0 to MAX_PRICE (text
    that reads as one too, as a form posts it); never a bool."""
    if isinstance(value, bool) or value is None:
        return False
    try:
        price = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        return False
    return price.is_finite() and Decimal(0) <= price <= MAX_PRICE


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def _echo_params_problem(params: dict) -> str | None:
    rate = params.get("tokens_per_second", 20)
    if not _is_number(rate) or rate < 0:
        return "tokens_per_second must be a number >= 0."
    timeout = params.get("input_timeout", 60)
    if not _is_number(timeout) or timeout < 0:
        return "input_timeout must be a number of seconds >= 0."
    if not isinstance(params.get("timestamp_tokens", False), bool):
        return "timestamp_tokens must be true or false."
    return None


def agent_config_warnings(agent) -> list[str]:
    """Problems that do not block saving but will fail runs (e.g. a key not set here)."""
    if agent.api_key_env and not os.environ.get(agent.api_key_env):
        return [
            f"The environment variable {agent.api_key_env} is not set in this process."
        ]
    return []


# Thread settings of how a reply is delivered, open to every thread (the
# agent's `allowed_overrides` is about what the model is asked).
DELIVERY_SETTINGS = {
    "progressive_updates": (True, False),  # state frames during the run, or not
    "stream_format": ("markdown", "text"),  # how the web UI shows replies
    "stream_mode": ("tokens", "sentences", "message"),  # how chunks are cut
}


def thread_config_errors(agent, overrides: Any) -> dict[str, str]:
    if not isinstance(overrides, dict):
        return {"config": "Overrides must be a JSON object."}
    errors = {}
    for key, value in overrides.items():
        if key == "team":  # the thread's agent team (agents/teams.py), any agent's
            problem = team_config_problem(value)
            if problem:
                errors[key] = problem
        elif key in DELIVERY_SETTINGS:
            allowed = DELIVERY_SETTINGS[key]
            if isinstance(value, bool) != isinstance(allowed[0], bool) or (
                value not in allowed
            ):
                errors[key] = (
                    "One of "
                    + ", ".join(
                        str(choice).lower() if isinstance(choice, bool) else choice
                        for choice in allowed
                    )
                    + "."
                )
        elif key not in agent.allowed_overrides:
            errors[key] = f"This agent does not allow overriding {key!r}."
        elif key == "temperature" and (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or not 0 <= value <= 2
        ):
            errors[key] = "A number between 0 and 2."
        elif key == "max_tokens" and (
            not isinstance(value, int)
            or isinstance(value, bool)
            or not 1 <= value <= 200_000
        ):
            errors[key] = "An integer between 1 and 200000."
        elif key == "stream" and not isinstance(value, bool):
            errors[key] = "true or false."
        elif key in ("model", "system_prompt") and not isinstance(value, str):
            errors[key] = "A string."
        elif _contains_nul(value):
            errors[key] = "Text may not contain NUL (\\u0000) characters."
    return errors


def effective_config(agent, overrides: dict) -> dict[str, Any]:
    """The agent's settings with the thread's allowed overrides applied."""
    config = {field: getattr(agent, field) for field in OVERRIDABLE_FIELDS}
    for key, value in (overrides or {}).items():
        if key in agent.allowed_overrides:
            config[key] = value
    return config
