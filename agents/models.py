"""Agent configurations and agent runs."""

import uuid
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from agents.choices import OVERRIDABLE_FIELDS, PROVIDER_CHOICES, BusyPolicy
from agents.validation import agent_config_errors


def default_allowed_overrides() -> list[str]:
    return list(OVERRIDABLE_FIELDS)


class AgentConfig(models.Model):
    name = models.SlugField(max_length=64, unique=True)
    description = models.CharField(max_length=200, blank=True)
    provider = models.CharField(max_length=20, choices=PROVIDER_CHOICES, default="echo")
    model = models.CharField(max_length=200, blank=True)
    base_url = models.URLField(
        blank=True,
        help_text="OpenAI-compatible or Anthropic endpoint; blank = the provider's default.",
    )
    api_key_env = models.CharField(
        max_length=100,
        blank=True,
        help_text="Name of the environment variable holding the API key (never the key itself).",
    )
    temperature = models.FloatField(
        default=0.7, validators=[MinValueValidator(0.0), MaxValueValidator(2.0)]
    )
    max_tokens = models.PositiveIntegerField(
        default=1024, validators=[MinValueValidator(1), MaxValueValidator(200_000)]
    )
    system_prompt = models.TextField(blank=True)
    persistent = models.BooleanField(
        default=True,
        help_text="Send the thread's history as context (trimmed to a budget).",
    )
    stream = models.BooleanField(
        default=True, help_text="Off: the reply arrives as one chunk."
    )
    chunk_size = models.PositiveIntegerField(
        default=256,
        validators=[MinValueValidator(1), MaxValueValidator(65_536)],
        help_text="Flush buffered tokens once this many characters are waiting.",
    )
    buffer_chunks = models.BooleanField(
        default=True, help_text="Coalesce tokens into chunks; off sends every token."
    )
    busy_policy = models.CharField(
        max_length=10, choices=BusyPolicy.choices, default=BusyPolicy.ENQUEUE
    )
    allowed_overrides = models.JSONField(default=default_allowed_overrides, blank=True)
    extra_params = models.JSONField(default=dict, blank=True)
    # Tools (agents/tools/): names from the registry, or `<server>.<tool>` of
    # an MCP server in `mcp_servers`, or `<server>.*` for all of its tools.
    tools = models.JSONField(
        default=list,
        blank=True,
        help_text='Tool names the agent may call, e.g. ["calculate", "clock"].',
    )
    approval_required = models.JSONField(
        default=list,
        blank=True,
        help_text="Tools that run only after a writer of the thread approves.",
    )
    mcp_servers = models.JSONField(
        default=list,
        blank=True,
        help_text='MCP servers: [{"name": "files", "url": "http://...", '
        '"headers_env": {"Authorization": "FILES_TOKEN"}}].',
    )
    max_tool_steps = models.PositiveIntegerField(
        default=8,
        validators=[MinValueValidator(1), MaxValueValidator(100)],
        help_text="Model calls that may ask for tools in one reply; past it the run fails.",
    )
    tool_timeout_seconds = models.FloatField(
        default=30.0,
        validators=[MinValueValidator(0.1), MaxValueValidator(3600.0)],
        help_text="How long one tool call may take.",
    )
    input_timeout_seconds = models.FloatField(
        default=120.0,
        validators=[MinValueValidator(1.0), MaxValueValidator(86_400.0)],
        help_text="How long an approval or an ask_thread question waits for people.",
    )
    enabled = models.BooleanField(default=True)
    # Prices (usage/): what a million tokens cost, in the deployment's currency.
    input_price_per_million = models.DecimalField(
        max_digits=12,
        decimal_places=6,
        default=Decimal("0"),
        validators=[MinValueValidator(Decimal("0"))],
        help_text="Price of a million input (prompt) tokens; 0 = free.",
    )
    output_price_per_million = models.DecimalField(
        max_digits=12,
        decimal_places=6,
        default=Decimal("0"),
        validators=[MinValueValidator(Decimal("0"))],
        help_text="Price of a million output (reply) tokens; 0 = free.",
    )
    # Bumped by every save that changes what shapes a reply (VERSIONED_FIELDS
    # below); each run records the version that produced it.
    version = models.PositiveIntegerField(default=1, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs) -> None:
        if self.pk is not None and not self._state.adding:
            stored = (
                AgentConfig.objects.filter(pk=self.pk)
                .values("version", *VERSIONED_FIELDS)
                .first()
            )
            if stored is not None and any(
                stored[name] != getattr(self, name) for name in VERSIONED_FIELDS
            ):
                self.version = stored["version"] + 1
                if "update_fields" in kwargs and kwargs["update_fields"] is not None:
                    kwargs["update_fields"] = {*kwargs["update_fields"], "version"}
        super().save(*args, **kwargs)

    def clean(self) -> None:
        errors = agent_config_errors(self)
        if errors:
            raise ValidationError(errors)


# What a version of an agent config covers: every field that shapes a reply
# (not its name, description, switch, prices or timestamps).
VERSIONED_FIELDS = tuple(
    field.attname
    for field in AgentConfig._meta.concrete_fields
    if field.attname
    not in {
        "id",
        "name",
        "description",
        "enabled",
        "input_price_per_million",
        "output_price_per_million",
        "version",
        "created_at",
        "updated_at",
    }
)


class RunStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"


ACTIVE_RUN_STATUSES = (RunStatus.QUEUED, RunStatus.RUNNING)
FINAL_RUN_STATUSES = (RunStatus.COMPLETED, RunStatus.CANCELLED, RunStatus.FAILED)


class Run(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    thread = models.ForeignKey(
        "chat.Thread", on_delete=models.CASCADE, related_name="runs"
    )
    agent = models.ForeignKey(
        AgentConfig, on_delete=models.PROTECT, related_name="runs"
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    prompt = models.ForeignKey(
        "chat.Message",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    status = models.CharField(
        max_length=10,
        choices=RunStatus.choices,
        default=RunStatus.QUEUED,
        db_index=True,
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    usage = models.JSONField(default=dict, blank=True)
    error_code = models.CharField(max_length=40, blank=True)
    error = models.TextField(blank=True)
    # Lease: the worker executing the run renews it; a lapsed lease means the
    # worker died and the sweeper fails the run.
    worker_channel = models.CharField(max_length=200, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    cancel_requested = models.BooleanField(default=False)
    # Why whoever stopped it did (`cancel` frame's `reason`, the API's).
    cancel_reason = models.CharField(max_length=200, blank=True)
    # Checkpoint: the text the worker had published (and how many chunks) when it
    # last wrote it (PARLEY_CHECKPOINT_SECONDS). Where the event log dies with the
    # worker (embedded mode), the sweeper and snapshots fall back to it.
    partial_text = models.TextField(blank=True, default="")
    partial_chunks = models.PositiveIntegerField(default=0)
    # The agent config version that produced the reply (AgentConfig.version).
    agent_version = models.PositiveIntegerField(null=True, blank=True)
    # What the requester's (and the thread's) hard budgets left when the
    # message was admitted, {"tokens": n} and/or {"cost": "x"} (usage/); the
    # worker stops the reply once it has spent that. None: no hard budget.
    budget_allowance = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["created_at"]
        indexes = [models.Index(fields=["thread", "status"])]

    def __str__(self) -> str:
        return f"run {self.id} ({self.status})"

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_RUN_STATUSES


class RunInputStatus(models.TextChoices):
    OPEN = "open"
    ANSWERED = "answered"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"  # the run ended while the question was open


class RunInput(models.Model):
    """A question a run asked the thread (`input_request`), and how it ended.

    Stored so that a page opened later sees the open question, and the history
    keeps what was asked and answered.
    """

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="inputs")
    input_id = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=20, default="question")
    question = models.TextField()
    # For an approval: the pending tool call ({"id", "name", "arguments"}).
    tool_call = models.JSONField(null=True, blank=True)
    asked_at = models.DateTimeField()
    timeout_seconds = models.FloatField()
    expires_at = models.DateTimeField()
    status = models.CharField(
        max_length=10, choices=RunInputStatus.choices, default=RunInputStatus.OPEN
    )
    answer = models.TextField(blank=True)
    answered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    # Kept when the user is deleted: the history still says who answered.
    answered_by_username = models.CharField(max_length=150, blank=True)
    answered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["asked_at", "id"]
        indexes = [models.Index(fields=["run", "status"])]

    def __str__(self) -> str:
        return f"input {self.input_id} ({self.status})"


class ToolStepStatus(models.TextChoices):
    PENDING = "pending"  # asked for; running or waiting for approval
    COMPLETED = "completed"
    FAILED = "failed"  # the tool raised, timed out, was unknown ...
    DENIED = "denied"  # approval refused or not given in time
    CANCELLED = "cancelled"  # the run ended while it ran


class RunToolStep(models.Model):
    """One tool call a run's model made and what it gave back.

    Stored as it happens (a snapshot of a running run shows it; the history
    keeps it) and sent back to the model on later turns. `text_offset` is where
    in the reply's text the call came, which splits the stored reply back into
    the model's turns.
    """

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="tool_steps")
    step = models.PositiveIntegerField()  # the model call that asked, from 0
    position = models.PositiveIntegerField()  # its place among that call's
    call_id = models.CharField(max_length=200)
    name = models.CharField(max_length=200)
    arguments = models.JSONField(default=dict, blank=True)  # object, or raw text
    text_offset = models.PositiveIntegerField(default=0)
    status = models.CharField(
        max_length=10, choices=ToolStepStatus.choices, default=ToolStepStatus.PENDING
    )
    output = models.TextField(blank=True)
    error = models.TextField(blank=True)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["step", "position"]
        indexes = [models.Index(fields=["run", "step", "position"])]

    def __str__(self) -> str:
        return f"{self.name} ({self.status})"
