"""Agents app: agent configs, runs, providers and the agent worker."""

from django.apps import AppConfig
from django.conf import settings
from django.utils.module_loading import autodiscover_modules, import_string


class AgentsConfig(AppConfig):
    name = "agents"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Tools and Python agents register themselves when their modules are
        # imported: Parley's own, every installed app's `tools` and
        # `python_agents` modules, and the classes PARLEY_PYTHON_AGENTS names.
        # Here, not at the top: they use the models, which are ready only now.
        import agents.python_agents.weather  # noqa: F401  the example agent
        import agents.tools.builtin  # noqa: F401
        from agents.python_agents import python_agent

        autodiscover_modules("tools", "python_agents")
        for path in settings.PARLEY_PYTHON_AGENTS:
            python_agent(import_string(path))
