"""Admin for threads (members inline, read-only transcript inline) and messages.

Messages are read-only here: they are what was said, written by the socket,
the API and the worker. Staff manage members; resetting or deleting a thread
goes through chat/services.py so that live sockets hear of it.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import Count

from chat import services
from chat.models import Message, Thread, ThreadAgent, ThreadMember

TRANSCRIPT_PREVIEW_CHARS = 300


class ThreadMemberInline(admin.TabularInline):
    model = ThreadMember
    extra = 0
    autocomplete_fields = ("user",)
    fields = ("user", "role", "created_at")
    readonly_fields = ("created_at",)


class ThreadAgentInline(admin.TabularInline):
    """The thread's agents besides its default (`agent`), by position."""

    model = ThreadAgent
    extra = 0
    fields = ("position", "agent")
    ordering = ("position",)
    verbose_name = "other agent"
    verbose_name_plural = "other agents (a message starting with @name goes to one)"


class MessageInline(admin.TabularInline):
    """The thread's transcript, oldest first, read-only."""

    model = Message
    extra = 0
    can_delete = False
    show_change_link = True
    fields = ("created_at", "role", "author", "agent", "text_preview", "run")
    readonly_fields = fields
    ordering = ("created_at",)

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="text")
    def text_preview(self, message: Message) -> str:
        text = message.text
        if len(text) > TRANSCRIPT_PREVIEW_CHARS:
            return text[:TRANSCRIPT_PREVIEW_CHARS] + "…"
        return text

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("author", "agent", "run")


@admin.register(Thread)
class ThreadAdmin(admin.ModelAdmin):
    list_display = (
        "__str__",
        "owner",
        "agent",
        "member_count",
        "message_count",
        "updated_at",
    )
    list_filter = ("agent",)
    search_fields = ("id", "title", "owner__username")
    list_select_related = ("owner", "agent")
    autocomplete_fields = ("owner",)
    readonly_fields = ("id", "created_at", "updated_at")
    fields = ("id", "title", "owner", "agent", "config", "created_at", "updated_at")
    inlines = [ThreadAgentInline, ThreadMemberInline, MessageInline]
    actions = ["reset_threads"]

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(
                _members=Count("members", distinct=True),
                _messages=Count("messages", distinct=True),
            )
        )

    @admin.display(description="members", ordering="_members")
    def member_count(self, thread: Thread) -> int:
        return thread._members

    @admin.display(description="messages", ordering="_messages")
    def message_count(self, thread: Thread) -> int:
        return thread._messages

    def delete_model(self, request, obj: Thread) -> None:
        services.thread_delete(actor=request.user, thread=obj)

    def delete_queryset(self, request, queryset) -> None:
        for thread in queryset:
            services.thread_delete(actor=request.user, thread=thread)

    @admin.action(description="Reset selected threads (cancel runs, delete messages)")
    def reset_threads(self, request, queryset) -> None:
        for thread in queryset:
            services.thread_reset(actor=request.user, thread=thread)
        messages.success(request, f"Reset {queryset.count()} thread(s).")


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ("created_at", "thread", "role", "author", "agent", "short_text")
    list_filter = ("role", "agent")
    search_fields = ("text", "thread__title", "author__username")
    list_select_related = ("thread", "author", "agent")
    date_hierarchy = "created_at"
    fields = ("id", "thread", "role", "author", "agent", "run", "text", "created_at")
    readonly_fields = fields

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="text")
    def short_text(self, message: Message) -> str:
        return message.text[:80] + ("…" if len(message.text) > 80 else "")
