"""Seed the demo agents and a demo login (idempotent); prints how to log in."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from agents.models import AgentConfig

DEMO_AGENTS = [
    {
        "name": "echo",
        "description": "Offline agent that streams your message back word by word.",
        "provider": "echo",
        "extra_params": {"tokens_per_second": 20},
    },
    {
        "name": "openai",
        "description": "Any OpenAI-compatible endpoint (set OPENAI_API_KEY, or base_url for a local server).",
        "provider": "openai",
        "model": "gpt-4o-mini",
        "api_key_env": "OPENAI_API_KEY",
        "tools": ["calculate", "clock", "ask_thread"],
        "enabled": False,
    },
    {
        "name": "claude",
        "description": "Anthropic Messages API (set ANTHROPIC_API_KEY).",
        "provider": "anthropic",
        "model": "claude-sonnet-4-5",
        "api_key_env": "ANTHROPIC_API_KEY",
        "tools": ["calculate", "clock", "ask_thread"],
        "enabled": False,
    },
    {
        "name": "weather",
        "description": "Offline agent written in Python: asks which city, then calls "
        "its get_weather tool.",
        "provider": "python",
        "model": "weather",
    },
]


class Command(BaseCommand):
    help = "Create the demo agents and the demo login if they do not exist."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="demo")
        parser.add_argument("--password", default="demo-password")

    def handle(self, *args, **options):
        for fields in DEMO_AGENTS:
            AgentConfig.objects.get_or_create(name=fields["name"], defaults=fields)
        User = get_user_model()
        user, created = User.objects.get_or_create(
            username=options["username"],
            defaults={"is_staff": True, "is_superuser": True},
        )
        if created:
            user.set_password(options["password"])
            user.save()
        self.stdout.write(
            self.style.SUCCESS(
                f"Demo login: username {options['username']!r}, password "
                f"{options['password']!r} (staff; admin at /admin/)"
                if created
                else f"Demo login: username {options['username']!r} (password unchanged)"
            )
        )
