"""Unread per user, kept on the server (ThreadReadMark), and what the thread
list and its search read fast: messages by thread and time, and on PostgreSQL
a GIN index over the messages' full-text vector (chat/selectors.py,
`thread_search_for_user`; other databases search with a plain substring scan).

Existing owners and members start with everything read, so the upgrade does
not light every thread up as unread."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

# The expression chat/selectors.py queries with (SEARCH_CONFIG there): the
# index is only used when the query's expression is the same.
SEARCH_INDEX = "message_text_search"
SEARCH_CONFIG = "english"
BATCH = 1000


def _search_index():
    from django.contrib.postgres.indexes import GinIndex
    from django.contrib.postgres.search import SearchVector

    return GinIndex(SearchVector("text", config=SEARCH_CONFIG), name=SEARCH_INDEX)


def add_search_index(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.add_index(apps.get_model("chat", "Message"), _search_index())


def remove_search_index(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.remove_index(apps.get_model("chat", "Message"), _search_index())


def mark_everything_read(apps, schema_editor):
    Thread = apps.get_model("chat", "Thread")
    ThreadMember = apps.get_model("chat", "ThreadMember")
    ThreadReadMark = apps.get_model("chat", "ThreadReadMark")
    marks = []
    for thread_id, owner_id, updated_at in Thread.objects.values_list(
        "pk", "owner_id", "updated_at"
    ).iterator(chunk_size=BATCH):
        marks.append(
            ThreadReadMark(
                thread_id=thread_id, user_id=owner_id, last_read_at=updated_at
            )
        )
        if len(marks) >= BATCH:
            ThreadReadMark.objects.bulk_create(marks, ignore_conflicts=True)
            marks = []
    for thread_id, user_id, updated_at in ThreadMember.objects.values_list(
        "thread_id", "user_id", "thread__updated_at"
    ).iterator(chunk_size=BATCH):
        marks.append(
            ThreadReadMark(
                thread_id=thread_id, user_id=user_id, last_read_at=updated_at
            )
        )
        if len(marks) >= BATCH:
            ThreadReadMark.objects.bulk_create(marks, ignore_conflicts=True)
            marks = []
    ThreadReadMark.objects.bulk_create(marks, ignore_conflicts=True)


class Migration(migrations.Migration):
    dependencies = [
        ("chat", "0003_thread_agents"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="ThreadReadMark",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True,
                        primary_key=True,
                        serialize=False,
                        verbose_name="ID",
                    ),
                ),
                ("last_read_at", models.DateTimeField()),
                (
                    "thread",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="read_marks",
                        to="chat.thread",
                    ),
                ),
                (
                    "user",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
        ),
        migrations.AddConstraint(
            model_name="threadreadmark",
            constraint=models.UniqueConstraint(
                fields=("user", "thread"), name="unique_thread_read_mark"
            ),
        ),
        migrations.AddIndex(
            model_name="message",
            index=models.Index(
                fields=["thread", "created_at"], name="message_thread_created"
            ),
        ),
        migrations.RunPython(mark_everything_read, migrations.RunPython.noop),
        # Outside the model state on purpose: SQLite has no GIN indexes.
        migrations.RunPython(add_search_index, remove_search_index),
    ]
