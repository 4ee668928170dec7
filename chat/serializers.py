"""Request and response bodies of the chat API (threads, members, messages, auth).

Serializers only validate and shape JSON; writes go through chat/services.py.
Every body the API sends or accepts has a serializer here or in
agents/serializers.py, so the OpenAPI schema (docs/api.md) types all of them.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from agents.selectors import tool_steps_by_run
from agents.serializers import RunSerializer
from chat.models import Message, Role, Thread, ThreadMember
from chat.selectors import (
    message_error,
    message_inputs_by_run,
    search_snippet,
    thread_agents,
)

MEMBER_ROLE_CHOICES = [Role.PARTICIPANT.value, Role.OBSERVER.value]
CALLER_ROLE_CHOICES = [role.value for role in Role]


# --- Auth ---------------------------------------------------------------------


class TokenRequestSerializer(serializers.Serializer):
    username = serializers.CharField()
    password = serializers.CharField(
        style={"input_type": "password"}, trim_whitespace=False
    )


class TokenSerializer(serializers.Serializer):
    token = serializers.CharField(help_text="Send as `Authorization: Token <token>`.")


# --- Threads ------------------------------------------------------------------


class UserRefSerializer(serializers.Serializer):
    username = serializers.CharField()


class SearchMatchSerializer(serializers.Serializer):
    """Where a thread matched a search (`GET /api/threads/?q=`)."""

    # `in` is a Python keyword: declared through the fields mapping.
    snippet = serializers.CharField(
        help_text="About 140 characters of the latest matching message around "
        "the first word found, or the title."
    )

    def get_fields(self):
        fields = super().get_fields()
        fields["in"] = serializers.ChoiceField(choices=["message", "title"])
        return fields


class ReadMarkSerializer(serializers.Serializer):
    """The caller's read mark on a thread after `POST .../read/`."""

    thread = serializers.UUIDField()
    last_read_at = serializers.DateTimeField()
    unread = serializers.BooleanField()


class ThreadSerializer(serializers.ModelSerializer):
    """A thread as the caller sees it, with the caller's role in it."""

    agent = serializers.SlugRelatedField(
        slug_field="name", read_only=True, help_text="The default agent."
    )
    agents = serializers.SerializerMethodField(
        help_text="The thread's agents by name, the default (`agent`) first. "
        "A message starting with `@<name>` goes to that agent."
    )
    owner = serializers.SlugRelatedField(slug_field="username", read_only=True)
    role = serializers.SerializerMethodField(
        help_text="The caller's role: owner, participant, observer or staff."
    )
    config = serializers.DictField(
        child=serializers.JSONField(),
        read_only=True,
        help_text="Per-thread overrides of the agent config.",
    )
    unread = serializers.SerializerMethodField(
        help_text="Someone else (a person or an agent) wrote in the thread since "
        "the caller last read it (`POST /api/threads/{id}/read/`), on any device; "
        "also true for a thread shared with the caller they never opened."
    )
    last_read_at = serializers.SerializerMethodField(
        help_text="When the caller last read the thread; null before the first time."
    )
    running = serializers.SerializerMethodField(
        help_text="An agent reply is queued or in progress."
    )
    match = serializers.SerializerMethodField(
        help_text="With `?q=`: where the search matched and a snippet of it "
        "(`in` is `message` or `title`); null otherwise."
    )

    class Meta:
        model = Thread
        fields = [
            "id",
            "title",
            "agent",
            "agents",
            "owner",
            "role",
            "config",
            "created_at",
            "updated_at",
            "unread",
            "last_read_at",
            "running",
            "match",
        ]
        read_only_fields = fields

    # The read state is annotated by chat/selectors.py (`with_read_state`,
    # `thread_read_state`); a thread read without it shows as read.
    @extend_schema_field(serializers.BooleanField())
    def get_unread(self, thread: Thread) -> bool:
        return bool(getattr(thread, "unread", False))

    @extend_schema_field(serializers.DateTimeField(allow_null=True))
    def get_last_read_at(self, thread: Thread):
        moment = getattr(thread, "last_read_at", None)
        return serializers.DateTimeField().to_representation(moment) if moment else None

    @extend_schema_field(serializers.BooleanField())
    def get_running(self, thread: Thread) -> bool:
        return bool(getattr(thread, "running", False))

    @extend_schema_field(SearchMatchSerializer(allow_null=True))
    def get_match(self, thread: Thread) -> dict | None:
        query = self.context.get("query")
        if not query:
            return None
        text = getattr(thread, "match_text", None)
        if text is not None:
            return {"in": "message", "snippet": search_snippet(text, query)}
        return {"in": "title", "snippet": thread.title}

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_agents(self, thread: Thread) -> list[str]:
        return [agent.name for agent in thread_agents(thread=thread)]

    @extend_schema_field(serializers.ChoiceField(choices=CALLER_ROLE_CHOICES))
    def get_role(self, thread: Thread) -> str | None:
        roles = self.context.get("roles") or {}
        role = roles.get(thread.pk)
        return getattr(role, "value", role)


class PresenceSerializer(serializers.Serializer):
    username = serializers.CharField()
    role = serializers.CharField()
    connections = serializers.IntegerField(help_text="Open sockets of this user.")


class ThreadDetailSerializer(ThreadSerializer):
    """One thread, with who is connected to it now (all web processes)."""

    presence = PresenceSerializer(many=True, read_only=True)

    class Meta(ThreadSerializer.Meta):
        fields = [*ThreadSerializer.Meta.fields, "presence"]
        read_only_fields = fields


AGENTS_HELP = (
    "The thread's agents by name, the first the default (it answers messages "
    "that name no agent); 1 to 16, each once."
)


class ThreadCreateSerializer(serializers.Serializer):
    """`agent` (one agent), `agents` (several, the first the default), or both
    when `agent` is the first of `agents`."""

    agent = serializers.CharField(
        max_length=64, required=False, help_text="The (default) agent's name."
    )
    agents = serializers.ListField(
        child=serializers.CharField(max_length=64),
        required=False,
        help_text=AGENTS_HELP,
    )
    title = serializers.CharField(
        max_length=200, required=False, allow_blank=True, default=""
    )
    config = serializers.DictField(
        child=serializers.JSONField(),
        required=False,
        help_text="Overrides of the agent config the agent allows (model, temperature, ...).",
    )

    def to_internal_value(self, data):
        # Named with the other fields' errors: one of the two is required.
        missing = hasattr(data, "get") and not (data.get("agent") or data.get("agents"))
        problem = ["Name an agent (`agent`) or several (`agents`)."]
        try:
            value = super().to_internal_value(data)
        except serializers.ValidationError as error:
            if missing and isinstance(error.detail, dict):
                error.detail.setdefault("agent", problem)
            raise
        if missing:
            raise serializers.ValidationError({"agent": problem})
        return value


class ThreadFilterSerializer(serializers.Serializer):
    """Query parameters of the thread list."""

    agent = serializers.SlugField(max_length=64, required=False)
    q = serializers.CharField(
        max_length=200,
        required=False,
        allow_blank=True,
        help_text="Search titles and message text (every word; the last one "
        "may be the start of a word).",
    )


class ThreadUpdateSerializer(serializers.Serializer):
    """PATCH body: `title` and `agents` need the owner (or staff), `config` a
    writer."""

    title = serializers.CharField(max_length=200, required=False, allow_blank=True)
    agents = serializers.ListField(
        child=serializers.CharField(max_length=64),
        required=False,
        help_text=AGENTS_HELP + " Replaces the list; agents added later see "
        "the thread's history as their config allows (`persistent`).",
    )
    # A null value turns a setting off (`{"team": null}`).
    config = serializers.DictField(
        child=serializers.JSONField(allow_null=True), required=False
    )


# --- Members ------------------------------------------------------------------


class MemberSerializer(serializers.ModelSerializer):
    username = serializers.CharField(source="user.username", read_only=True)
    # A plain string here (participant or observer): an enum would share the
    # name "role" with MemberCreate's and clash in the schema's enum naming.
    role = serializers.CharField(read_only=True, help_text="participant or observer")

    class Meta:
        model = ThreadMember
        fields = ["username", "role", "created_at"]
        read_only_fields = fields


class MemberCreateSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    role = serializers.ChoiceField(
        choices=MEMBER_ROLE_CHOICES, default=Role.PARTICIPANT.value
    )


# --- Messages -----------------------------------------------------------------


class MessageErrorSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="e.g. worker_lost, provider_error.")
    message = serializers.CharField()


class MessageInputSerializer(serializers.Serializer):
    """A question the reply's run asked the thread, and how it ended."""

    input_id = serializers.CharField()
    kind = serializers.CharField(help_text="question")
    question = serializers.CharField()
    status = serializers.ChoiceField(
        choices=["open", "answered", "timed_out", "cancelled"],
        help_text="cancelled: the run ended while the question was open.",
    )
    answer = serializers.CharField(allow_null=True)
    answered_by = UserRefSerializer(allow_null=True)
    asked_at = serializers.DateTimeField()
    answered_at = serializers.DateTimeField(allow_null=True)


class ToolStepSerializer(serializers.Serializer):
    """One tool call a run made, with its result (docs/protocol.md, Tools)."""

    id = serializers.CharField()
    name = serializers.CharField()
    arguments = serializers.JSONField(help_text="The JSON object the model gave.")
    status = serializers.ChoiceField(
        choices=["pending", "completed", "failed", "denied", "cancelled"]
    )
    output = serializers.CharField(allow_null=True)
    error = serializers.CharField(allow_null=True)
    started_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)


class MessageListSerializer(serializers.ListSerializer):
    """Reads the questions of every reply on the page in one query."""

    def to_representation(self, data):
        messages = list(data.all() if hasattr(data, "all") else data)
        replies = [m.run_id for m in messages if m.role == "assistant"]
        self._context["inputs_by_run"] = message_inputs_by_run(run_ids=replies)
        self._context["tool_steps_by_run"] = tool_steps_by_run(run_ids=replies)
        return super().to_representation(messages)


class MessageSerializer(serializers.ModelSerializer):
    """One message of a thread's history (the fields of the socket's `message`,
    plus `inputs`)."""

    author = serializers.SerializerMethodField()
    agent = serializers.SlugRelatedField(
        slug_field="name",
        read_only=True,
        allow_null=True,
        help_text="For agent replies.",
    )
    run_id = serializers.UUIDField(read_only=True, allow_null=True)
    status = serializers.SerializerMethodField(
        help_text="For agent replies: the run's outcome (completed, cancelled, failed)."
    )
    error = serializers.SerializerMethodField(
        help_text="For agent replies that failed: why (e.g. worker_lost)."
    )
    inputs = serializers.SerializerMethodField(
        help_text="For agent replies: the questions the run asked the thread, "
        "with their answers; [] otherwise."
    )
    tool_steps = serializers.SerializerMethodField(
        help_text="For agent replies: the tool calls the run made, in order, "
        "with their results; [] otherwise."
    )
    agent_version = serializers.SerializerMethodField(
        help_text="For agent replies: the version of the agent config that "
        "produced it (the agent's `version` then); null otherwise."
    )

    class Meta:
        model = Message
        fields = [
            "id",
            "role",
            "text",
            "author",
            "agent",
            "run_id",
            "status",
            "error",
            "inputs",
            "tool_steps",
            "agent_version",
            "created_at",
        ]
        read_only_fields = fields
        list_serializer_class = MessageListSerializer

    @extend_schema_field(serializers.IntegerField(allow_null=True))
    def get_agent_version(self, message: Message) -> int | None:
        if message.role == "assistant" and message.run_id:
            return message.run.agent_version
        return None

    @extend_schema_field(UserRefSerializer(allow_null=True))
    def get_author(self, message: Message) -> dict | None:
        return {"username": message.author.username} if message.author_id else None

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_status(self, message: Message) -> str | None:
        if message.role == "assistant" and message.run_id:
            return message.run.status
        return None

    @extend_schema_field(MessageErrorSerializer(allow_null=True))
    def get_error(self, message: Message) -> dict | None:
        return message_error(message)

    @extend_schema_field(MessageInputSerializer(many=True))
    def get_inputs(self, message: Message) -> list[dict]:
        if message.role != "assistant" or not message.run_id:
            return []
        inputs_by_run = self.context.get("inputs_by_run")
        if inputs_by_run is None:  # one message, not a page
            inputs_by_run = message_inputs_by_run(run_ids=[message.run_id])
        return inputs_by_run.get(str(message.run_id), [])

    @extend_schema_field(ToolStepSerializer(many=True))
    def get_tool_steps(self, message: Message) -> list[dict]:
        if message.role != "assistant" or not message.run_id:
            return []
        steps_by_run = self.context.get("tool_steps_by_run")
        if steps_by_run is None:  # one message, not a page
            steps_by_run = tool_steps_by_run(run_ids=[message.run_id])
        return steps_by_run.get(str(message.run_id), [])


class RunsStartedSerializer(RunSerializer):
    """The answer to posting a message: its (first) run, and every run it
    started (one per agent it addressed, in mention order)."""

    runs = RunSerializer(
        many=True,
        read_only=True,
        source="started_runs",
        help_text="Every run the message started, in mention order (the first "
        "is this one); one unless the message named several agents.",
    )

    class Meta(RunSerializer.Meta):
        fields = [*RunSerializer.Meta.fields, "runs"]
        read_only_fields = fields


class RunCreateSerializer(serializers.Serializer):
    content = serializers.CharField(
        trim_whitespace=False, help_text="The user message; the agent answers it."
    )
    client_id = serializers.UUIDField(
        required=False,
        allow_null=True,
        help_text="Your own id for this message: posting it again within a day "
        "returns the first post's run (200) instead of a new one (202).",
    )
    request_id = serializers.CharField(
        max_length=128,
        required=False,
        allow_null=True,
        help_text="Echoed in the `message` frame the thread's sockets receive.",
    )
