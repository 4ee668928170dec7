"""Agent providers, chosen by name in the agent config."""

from importlib import import_module

from agents.providers.base import Provider

PROVIDER_MODULES = {
    "echo": "agents.providers.echo",
    "openai": "agents.providers.openai",
    "anthropic": "agents.providers.anthropic",
    "python": "agents.providers.python",
}

_instances: dict[str, Provider] = {}


def get_provider(name: str) -> Provider:
    """The provider instance registered under `name` (KeyError if unknown)."""
    if name not in _instances:
        module = import_module(PROVIDER_MODULES[name])
        _instances[name] = module.provider
    return _instances[name]
