"""Threads, their members and their messages."""

import uuid

from django.conf import settings
from django.db import models


class Role(models.TextChoices):
    OWNER = "owner"
    PARTICIPANT = "participant"
    OBSERVER = "observer"
    STAFF = "staff"


class Thread(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="owned_threads"
    )
    agent = models.ForeignKey(
        "agents.AgentConfig", on_delete=models.PROTECT, related_name="threads"
    )
    title = models.CharField(max_length=200, blank=True)
    config = models.JSONField(
        default=dict, blank=True, help_text="Per-thread agent overrides."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at"]

    def __str__(self) -> str:
        return self.title or str(self.id)

    @property
    def display_title(self) -> str:
        """What pages head the thread with: its title, else its agent's name
        (a thread takes a title from its first message, chat/services.py)."""
        return self.title or f"Chat with {self.agent.name}"


class ThreadAgent(models.Model):
    """An agent of a thread besides its default one (`Thread.agent`), in order.

    A thread's agents are `[thread.agent, *extra agents by position]`: the
    default stays on the thread row, so a thread with one agent (every thread
    made before several agents) needs no row here (chat/selectors.py,
    `thread_agents`)."""

    thread = models.ForeignKey(
        Thread, on_delete=models.CASCADE, related_name="extra_agents"
    )
    agent = models.ForeignKey(
        "agents.AgentConfig", on_delete=models.CASCADE, related_name="+"
    )
    position = models.PositiveIntegerField()

    class Meta:
        ordering = ["position"]
        constraints = [
            models.UniqueConstraint(
                fields=["thread", "agent"], name="unique_thread_agent"
            )
        ]

    def __str__(self) -> str:
        return f"{self.agent} in {self.thread} at {self.position}"


class ThreadMember(models.Model):
    MEMBER_ROLES = [(Role.PARTICIPANT, "participant"), (Role.OBSERVER, "observer")]

    thread = models.ForeignKey(Thread, on_delete=models.CASCADE, related_name="members")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="thread_memberships",
    )
    role = models.CharField(
        max_length=12, choices=MEMBER_ROLES, default=Role.PARTICIPANT
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["thread", "user"], name="unique_thread_member"
            )
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.thread} as {self.role}"


class MessageRole(models.TextChoices):
    USER = "user"
    ASSISTANT = "assistant"


class Message(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    thread = models.ForeignKey(
        Thread, on_delete=models.CASCADE, related_name="messages"
    )
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    agent = models.ForeignKey(
        "agents.AgentConfig", null=True, blank=True, on_delete=models.SET_NULL
    )
    role = models.CharField(max_length=10, choices=MessageRole.choices)
    text = models.TextField(blank=True)
    run = models.ForeignKey(
        "agents.Run",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="messages",
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    # Chosen by the sending client: the same id from the same author in the
    # same thread within a day is the same message (a resend after a cut).
    client_id = models.UUIDField(null=True, blank=True)

    class Meta:
        ordering = ["created_at"]
        indexes = [
            # The latest message of a thread, and "anything since I read it"
            # (chat/selectors.py, thread list and unread marks).
            models.Index(
                fields=["thread", "created_at"], name="message_thread_created"
            ),
            models.Index(
                fields=["thread", "client_id"],
                name="message_client_id",
                condition=models.Q(client_id__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.role}: {self.text[:40]}"


class ThreadReadMark(models.Model):
    """How far a user has read a thread: the server's time when they last saw
    it (chat/services.py, `thread_mark_read`). Kept per user, not per browser,
    so every device agrees on what is unread; one row per user and thread the
    user has opened, owners and staff included (they are no `ThreadMember`)."""

    thread = models.ForeignKey(
        Thread, on_delete=models.CASCADE, related_name="read_marks"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+"
    )
    last_read_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["user", "thread"], name="unique_thread_read_mark"
            )
        ]

    def __str__(self) -> str:
        return f"{self.user} read {self.thread} up to {self.last_read_at}"
