"""The chat REST API: threads, their messages, members and runs; API tokens.

Views stay thin: they parse the body with a serializer, ask chat/permissions.py
what the caller's role allows, call one service (the same services the socket
calls, so every socket on the thread sees what the API did) and shape the
answer. docs/api.md describes the endpoints for client authors.
"""

from __future__ import annotations

from asgiref.sync import async_to_sync
from django.db.models import Q, QuerySet
from django.utils.dateparse import parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status, viewsets
from rest_framework.authtoken.models import Token
from rest_framework.authtoken.serializers import AuthTokenSerializer
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.pagination import CursorPagination
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from agents.models import Run
from agents.serializers import RUN_STATUS_FILTER, RunFilterSerializer, RunSerializer
from audit.services import audit_login
from chat import services
from chat.models import Message, Role, Thread, ThreadMember
from chat.permissions import can_manage, can_write, permission_error, thread_roles
from chat.selectors import (
    thread_get_for_user,
    thread_list_for_user,
    thread_read_state,
    thread_search_for_user,
    with_read_state,
)
from chat.serializers import (
    MemberCreateSerializer,
    MemberSerializer,
    MessageSerializer,
    ReadMarkSerializer,
    RunCreateSerializer,
    RunsStartedSerializer,
    ThreadCreateSerializer,
    ThreadDetailSerializer,
    ThreadFilterSerializer,
    ThreadSerializer,
    ThreadUpdateSerializer,
    TokenRequestSerializer,
    TokenSerializer,
)
from realtime.errors import ErrorCode, ServiceError
from realtime.eventlog import get_event_log
from realtime.events import presence_users
from restapi.serializers import ErrorSerializer
from restapi.views import UUID_PATTERN, ApiViewMixin, validated


def thread_for(
    request, thread_id, *, need=None, action: str = "do this"
) -> tuple[Thread, Role]:
    """The thread and the caller's role; 404 for strangers, 403 when `need(role)` is False."""
    thread, role = thread_get_for_user(thread_id=thread_id, user=request.user)
    if need is not None and not need(role):
        raise permission_error(role, action=action)
    return thread, role


class MessageCursorPagination(CursorPagination):
    """History pages, oldest first; `next` walks towards the newest message."""

    ordering = ("created_at", "id")
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200

    def decode_cursor(self, request):
        # The cursor's position is compared with created_at; anything that is
        # not a timestamp was not made by us.
        cursor = super().decode_cursor(request)
        if cursor is not None and cursor.position is not None:
            try:
                valid = parse_datetime(cursor.position) is not None
            except ValueError:
                valid = False
            if not valid:
                raise NotFound(self.invalid_cursor_message)
        return cursor


THREAD_AGENT_FILTER = OpenApiParameter(
    "agent", OpenApiTypes.STR, description="Only threads with this agent (its name)."
)
THREAD_SEARCH = OpenApiParameter(
    "q",
    OpenApiTypes.STR,
    description="Search: threads whose title or message text has every word "
    "(PostgreSQL: full-text, stemmed; the last word may be a prefix). Each "
    "result's `match` holds a snippet.",
)


# --- Threads ----------------------------------------------------------------------


@extend_schema(tags=["threads"])
class ThreadViewSet(ApiViewMixin, viewsets.GenericViewSet):
    """Threads the caller may see; a stranger is told a thread does not exist (404)."""

    queryset = Thread.objects.none()
    serializer_class = ThreadSerializer
    lookup_value_regex = UUID_PATTERN

    def get_queryset(self) -> QuerySet[Thread]:
        if getattr(self, "swagger_fake_view", False):
            return Thread.objects.none()
        return thread_list_for_user(user=self.request.user)

    def _render(
        self, thread: Thread, role: Role, *, status_code: int = 200
    ) -> Response:
        for name, value in thread_read_state(
            thread=thread, user=self.request.user
        ).items():
            setattr(thread, name, value)
        serializer = ThreadSerializer(thread, context={"roles": {thread.pk: role}})
        return Response(serializer.data, status=status_code)

    @extend_schema(
        parameters=[THREAD_AGENT_FILTER, THREAD_SEARCH],
        responses=ThreadSerializer(many=True),
        summary="Threads the caller owns, is a member of, or (staff) all threads",
    )
    def list(self, request):
        filters = validated(ThreadFilterSerializer, request.query_params)
        query = (filters.get("q") or "").strip()
        if query:
            threads = thread_search_for_user(user=request.user, query=query)
        else:
            threads = with_read_state(self.get_queryset(), user=request.user)
        if filters.get("agent"):
            threads = threads.filter(
                Q(agent__name=filters["agent"])
                | Q(extra_agents__agent__name=filters["agent"])
            ).distinct()
        page = self.paginate_queryset(threads)
        roles = thread_roles(threads=page, user=request.user)
        return self.get_paginated_response(
            ThreadSerializer(
                page, many=True, context={"roles": roles, "query": query}
            ).data
        )

    @extend_schema(
        request=ThreadCreateSerializer,
        responses={201: ThreadSerializer},
        summary="Start a thread with an agent; the caller owns it",
    )
    def create(self, request):
        data = validated(ThreadCreateSerializer, request.data)
        thread = services.thread_create(
            owner=request.user,
            agent_name=data.get("agent"),
            agent_names=data.get("agents"),
            title=data.get("title", ""),
            config=data.get("config"),
        )
        return self._render(thread, Role.OWNER, status_code=status.HTTP_201_CREATED)

    @extend_schema(
        responses=ThreadDetailSerializer, summary="One thread, with its presence"
    )
    def retrieve(self, request, pk=None):
        thread, role = thread_for(request, pk)
        response = self._render(thread, role)
        members = async_to_sync(get_event_log().presence_list)(str(thread.id))
        response.data["presence"] = presence_users(members)
        return response

    @extend_schema(
        request=ThreadUpdateSerializer,
        responses=ThreadSerializer,
        summary="Rename or change the agents (owner, staff), or change the "
        "per-thread config (owner, participants)",
    )
    def partial_update(self, request, pk=None):
        thread, role = thread_for(request, pk)
        data = validated(ThreadUpdateSerializer, request.data)
        if "title" in data and not can_manage(role):
            raise permission_error(role, action="rename this thread")
        if "agents" in data and not can_manage(role):
            raise permission_error(role, action="change this thread's agents")
        if "config" in data and not can_write(role):
            raise permission_error(role, action="change this thread's config")
        if data:
            thread = services.thread_update(
                actor=request.user,
                thread=thread,
                title=data.get("title"),
                config=data.get("config"),
                agent_names=data.get("agents"),
            )
        return self._render(thread, role)

    @extend_schema(
        responses={204: OpenApiResponse(description="Deleted.")},
        summary="Delete the thread, its messages and runs (owner, staff)",
    )
    def destroy(self, request, pk=None):
        thread, _ = thread_for(
            request, pk, need=can_manage, action="delete this thread"
        )
        services.thread_delete(actor=request.user, thread=thread)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        request=None,
        responses=ReadMarkSerializer,
        summary="The caller has read the thread up to now (every reader)",
        description="Moves the caller's read mark to the server's time now; the "
        "thread's `unread` is then false on every device until someone else "
        "writes. The mark never moves back.",
    )
    @action(detail=True, methods=["post"])
    def read(self, request, pk=None):
        thread, _ = thread_for(request, pk)
        mark = services.thread_mark_read(user=request.user, thread=thread)
        return Response(
            ReadMarkSerializer(
                {
                    "thread": thread.pk,
                    "last_read_at": mark.last_read_at,
                    "unread": False,
                }
            ).data
        )

    # --- messages, reset -----------------------------------------------------------

    @extend_schema(
        responses=MessageSerializer(many=True),
        summary="The thread's history, oldest first (cursor pagination)",
    )
    @action(detail=True, methods=["get"], pagination_class=MessageCursorPagination)
    def messages(self, request, pk=None):
        thread, _ = thread_for(request, pk)
        messages = Message.objects.filter(thread=thread).select_related(
            "author", "agent", "run"
        )
        page = self.paginate_queryset(messages)
        return self.get_paginated_response(MessageSerializer(page, many=True).data)

    @extend_schema(
        request=None,
        responses={204: OpenApiResponse(description="The thread is empty again.")},
        summary="Cancel the thread's runs and delete its messages (owner, staff)",
    )
    @action(detail=True, methods=["post"])
    def reset(self, request, pk=None):
        thread, _ = thread_for(request, pk, need=can_manage, action="reset this thread")
        services.thread_reset(actor=request.user, thread=thread)
        return Response(status=status.HTTP_204_NO_CONTENT)

    # --- members ---------------------------------------------------------------------

    @extend_schema(
        responses=MemberSerializer(many=True),
        summary="The thread's members besides its owner",
    )
    @action(detail=True, methods=["get"], pagination_class=None)
    def members(self, request, pk=None):
        thread, _ = thread_for(request, pk)
        members = (
            ThreadMember.objects.filter(thread=thread)
            .select_related("user")
            .order_by("created_at")
        )
        return Response(MemberSerializer(members, many=True).data)

    @extend_schema(
        request=MemberCreateSerializer,
        responses={201: MemberSerializer, 200: MemberSerializer},
        summary="Add a member or change a member's role (owner, staff)",
        description="201 when the user joined, 200 when an existing member's role changed.",
    )
    @members.mapping.post
    def member_add(self, request, pk=None):
        thread, _ = thread_for(request, pk, need=can_manage, action="share this thread")
        data = validated(MemberCreateSerializer, request.data)
        member, created = services.member_add(
            actor=request.user,
            thread=thread,
            username=data["username"],
            role=data["role"],
        )
        return Response(
            MemberSerializer(member).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )

    @extend_schema(
        responses={204: OpenApiResponse(description="Removed (or was not a member).")},
        summary="Remove a member (owner, staff; members may remove themselves)",
        parameters=[
            OpenApiParameter("username", OpenApiTypes.STR, OpenApiParameter.PATH)
        ],
    )
    @action(
        detail=True,
        methods=["delete"],
        # Django's username characters; anything else is no member (JSON 404).
        url_path=r"members/(?P<username>[\w.@+-]+)",
        url_name="member-detail",
    )
    def member_remove(self, request, pk=None, username=None):
        thread, role = thread_for(request, pk)
        if not can_manage(role) and username != request.user.username:
            raise permission_error(role, action="remove members")
        services.member_remove(actor=request.user, thread=thread, username=username)
        return Response(status=status.HTTP_204_NO_CONTENT)

    # --- runs ------------------------------------------------------------------------

    @extend_schema(
        parameters=[RUN_STATUS_FILTER],
        responses=RunSerializer(many=True),
        summary="The thread's runs, oldest first",
    )
    @action(detail=True, methods=["get"])
    def runs(self, request, pk=None):
        thread, _ = thread_for(request, pk)
        filters = validated(RunFilterSerializer, request.query_params)
        runs = Run.objects.filter(thread=thread).select_related("agent", "requested_by")
        if "status" in filters:
            runs = runs.filter(status=filters["status"])
        page = self.paginate_queryset(runs.order_by("created_at"))
        return self.get_paginated_response(RunSerializer(page, many=True).data)

    @extend_schema(
        request=RunCreateSerializer,
        responses={
            202: RunsStartedSerializer,
            200: OpenApiResponse(
                RunsStartedSerializer,
                description="A resend: this client_id was posted before.",
            ),
            409: OpenApiResponse(
                ErrorSerializer, description="thread_busy (reject policy)."
            ),
            413: OpenApiResponse(ErrorSerializer, description="message_too_long."),
            503: OpenApiResponse(
                ErrorSerializer,
                description="server_busy: PARLEY_MAX_ACTIVE_RUNS reached; "
                "try again after `Retry-After` seconds.",
            ),
        },
        summary="Post a user message and queue an agent run (owner, participants)",
        description=(
            "Exactly what a `message` frame on the socket does: the message and the "
            "run's events reach every socket on the thread. Follow the reply on the "
            "socket, with `GET /api/runs/{id}/stream/` (SSE) or by polling "
            "`GET /api/runs/{id}/`. 429 `rate_limited` / `too_many_runs` apply as on "
            "the socket. A message starting with `@<agent name>` goes to that agent "
            "of the thread, `@a @b ...` to each in turn (`runs`: one run each); "
            "400 `agent_not_in_thread` names the thread's agents, 400 "
            "`agent_disabled` a disabled one."
        ),
    )
    @runs.mapping.post
    def run_create(self, request, pk=None):
        thread, _ = thread_for(request, pk, need=can_write, action="post messages")
        data = validated(RunCreateSerializer, request.data)
        run = services.message_post(
            thread=thread,
            user=request.user,
            text=data["content"],
            request_id=data.get("request_id"),
            client_id=data.get("client_id"),
        )
        resent = run.resent
        started = list(
            Run.objects.filter(prompt_id=run.prompt_id)
            .select_related("agent", "requested_by")
            .order_by("created_at", "pk")
        )
        run = next(each for each in started if each.pk == run.pk)
        run.started_runs = started
        return Response(
            RunsStartedSerializer(run).data,
            status=status.HTTP_200_OK if resent else status.HTTP_202_ACCEPTED,
        )


# --- Tokens -----------------------------------------------------------------------


class TokenView(ApiViewMixin, APIView):
    """`POST` trades a username and password for an API token; `DELETE` revokes it.

    Revoking deletes the token row; chat/signals.py then closes every socket
    that token opened (error `not_authenticated`, close code 4401).
    """

    def get_authenticators(self):
        # Logging in needs no credentials (and no CSRF token for a stale session).
        if getattr(self.request, "method", None) == "POST":
            return []
        return super().get_authenticators()

    def get_permissions(self):
        if getattr(self.request, "method", None) == "POST":
            return [AllowAny()]
        return super().get_permissions()

    @extend_schema(
        tags=["auth"],
        request=TokenRequestSerializer,
        responses={200: TokenSerializer},
        summary="Get an API token for a username and password",
        auth=[],
    )
    def post(self, request):
        serializer = AuthTokenSerializer(
            data=request.data, context={"request": request}
        )
        if not serializer.is_valid():
            errors = serializer.errors
            if set(errors) <= {"non_field_errors"}:
                raise ServiceError(
                    ErrorCode.NOT_AUTHENTICATED,
                    "Unable to log in with the username and password given.",
                    status=400,
                )
            serializer.is_valid(raise_exception=True)
        user = serializer.validated_data["user"]
        token, _ = Token.objects.get_or_create(user=user)
        audit_login(request=request, user=user, method="token")
        return Response({"token": token.key})

    @extend_schema(
        tags=["auth"],
        request=None,
        responses={
            204: OpenApiResponse(description="Revoked; its sockets are closed.")
        },
        summary="Revoke the caller's API token",
        description=(
            "Deletes the token used for this request (with session authentication: "
            "the user's token). Sockets opened with it receive `error` "
            "`not_authenticated` and close with 4401."
        ),
    )
    def delete(self, request):
        token = request.auth if isinstance(request.auth, Token) else None
        if token is not None:
            token.delete()
        else:
            for token in Token.objects.filter(user=request.user):
                token.delete()
        return Response(status=status.HTTP_204_NO_CONTENT)


class TokenRevokeView(TokenView):
    """`POST /api/auth/token/revoke/`: the same as `DELETE /api/auth/token/`,
    for clients that cannot send DELETE."""

    http_method_names = ["post", "options"]

    def get_authenticators(self):
        return APIView.get_authenticators(self)

    def get_permissions(self):
        return APIView.get_permissions(self)

    @extend_schema(
        tags=["auth"],
        request=None,
        responses={
            204: OpenApiResponse(description="Revoked; its sockets are closed.")
        },
        summary="Revoke the caller's API token (POST form)",
    )
    def post(self, request):
        return TokenView.delete(self, request)
