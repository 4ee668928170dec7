"""The choices an agent config is made of: its providers, its busy policies and
the fields a thread may override. The model (agents/models.py) and the rules
that check a config (agents/validation.py) both read them from here."""

from django.db import models

PROVIDER_CHOICES = [
    ("echo", "Echo (offline)"),
    ("openai", "OpenAI-compatible Chat Completions"),
    ("anthropic", "Anthropic Messages"),
    ("python", "Agent written in Python (model = its registered name)"),
]

# Fields a thread may override through a `config` frame or PATCH, when the agent
# lists them in `allowed_overrides`.
OVERRIDABLE_FIELDS = ("model", "temperature", "system_prompt", "stream", "max_tokens")


class BusyPolicy(models.TextChoices):
    ENQUEUE = "enqueue", "Queue the new message"
    REJECT = "reject", "Reject the new message"
    INTERRUPT = "interrupt", "Cancel the running reply, then answer"
