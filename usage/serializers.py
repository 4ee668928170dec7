"""The usage API's shapes: the summary's filters and answer, budgets."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from rest_framework import serializers

from chat.models import Thread
from usage.models import Budget
from usage.selectors import GROUPS
from usage.validation import budget_errors


class UsageFilterSerializer(serializers.Serializer):
    user = serializers.CharField(
        required=False,
        max_length=150,
        help_text="Only runs asked by this username (staff; others see their own).",
    )
    thread = serializers.UUIDField(required=False, help_text="Only this thread's runs.")
    agent = serializers.SlugField(
        required=False, max_length=64, help_text="Only this agent's runs (name)."
    )
    # `from` is a Python keyword: the field is named in `to_internal_value`.
    date_from = serializers.DateField(
        required=False, help_text="From this day (UTC, included), YYYY-MM-DD."
    )
    date_to = serializers.DateField(
        required=False, help_text="To this day (UTC, included), YYYY-MM-DD."
    )
    group_by = serializers.ChoiceField(
        choices=GROUPS,
        required=False,
        help_text="Totals per day, user, thread or agent.",
    )

    def to_internal_value(self, data):
        data = {key: data.get(key) for key in data}
        for short, name in (("from", "date_from"), ("to", "date_to")):
            if short in data:
                data[name] = data.pop(short)
        return super().to_internal_value(data)

    def validate(self, data):
        if data.get("date_from") and data.get("date_to"):
            if data["date_from"] > data["date_to"]:
                raise serializers.ValidationError({"to": "to must not be before from."})
        return data


class UsageTotalsSerializer(serializers.Serializer):
    runs = serializers.IntegerField()
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    total_tokens = serializers.IntegerField()
    cost = serializers.CharField(help_text="At the agents' prices, a decimal string.")


class UsageGroupSerializer(UsageTotalsSerializer):
    key = serializers.CharField(
        allow_null=True,
        help_text="The day (YYYY-MM-DD), username, thread id or agent name.",
    )


class UsageSummarySerializer(serializers.Serializer):
    totals = UsageTotalsSerializer()
    groups = UsageGroupSerializer(many=True)
    group_by = serializers.CharField(allow_null=True)


class BudgetStatusSerializer(serializers.Serializer):
    scope = serializers.ChoiceField(choices=["user", "thread"])
    unit = serializers.ChoiceField(choices=["tokens", "cost"])
    used = serializers.CharField(help_text="Tokens (a number) or cost (a string).")
    limit = serializers.CharField(help_text="Tokens (a number) or cost (a string).")
    period = serializers.CharField(help_text="The calendar month, YYYY-MM (UTC).")
    hard = serializers.BooleanField()
    default = serializers.BooleanField(help_text="The deployment's default budget.")


class BudgetStatusFilterSerializer(serializers.Serializer):
    thread = serializers.UUIDField(
        required=False, help_text="Add this thread's budget to the caller's."
    )


class UsernameField(serializers.SlugRelatedField):
    """A user by username; a value the database cannot hold (a NUL character)
    is no user, not a server error."""

    def to_internal_value(self, data):
        if isinstance(data, str) and "\x00" in data:
            self.fail("does_not_exist", slug_name=self.slug_field, value=data)
        return super().to_internal_value(data)


class BudgetSerializer(serializers.ModelSerializer):
    """A monthly budget of one user (`user`: username) or one thread
    (`thread`: id); tokens and/or cost; `hard` also stops replies mid-way."""

    user = UsernameField(
        slug_field="username",
        queryset=get_user_model().objects.all(),
        required=False,
        allow_null=True,
    )
    thread = serializers.PrimaryKeyRelatedField(
        queryset=Thread.objects.all(), required=False, allow_null=True
    )
    monthly_cost = serializers.DecimalField(
        max_digits=16,
        decimal_places=6,
        required=False,
        allow_null=True,
        help_text="Cost a month; null = no cost limit.",
    )

    class Meta:
        model = Budget
        fields = [
            "id",
            "user",
            "thread",
            "monthly_tokens",
            "monthly_cost",
            "hard",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "created_at", "updated_at"]
        # One budget per user and per thread: a second POST is refused.
        validators = []

    def validate(self, attrs):
        merged = {
            name: attrs.get(name, getattr(self.instance, name, None))
            for name in ("user", "thread", "monthly_tokens", "monthly_cost")
        }
        errors = budget_errors(
            user_id=getattr(merged["user"], "pk", None),
            thread_id=getattr(merged["thread"], "pk", None),
            monthly_tokens=merged["monthly_tokens"],
            monthly_cost=merged["monthly_cost"],
        )
        if errors:
            raise serializers.ValidationError(errors)
        others = Budget.objects.exclude(pk=getattr(self.instance, "pk", None))
        if merged["user"] is not None and others.filter(user=merged["user"]).exists():
            raise serializers.ValidationError({"user": "This user has a budget."})
        if (
            merged["thread"] is not None
            and others.filter(thread=merged["thread"]).exists()
        ):
            raise serializers.ValidationError({"thread": "This thread has a budget."})
        return attrs
