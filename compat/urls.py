"""Routes of the compat app: `urlpatterns`, the OpenAI-compatible endpoint
(mounted at /api/openai/v1/); `agui_urlpatterns`, the AG-UI endpoint (at
/api/agui/); `aisdk_urlpatterns`, the Vercel AI SDK chat and resume endpoints
(at /api/aisdk/).

No trailing slashes: the OpenAI SDKs do not add one, nor does the AI SDK's
DefaultChatTransport to the resume path it builds (`<api>/<chat id>/stream`)."""

from django.urls import path, re_path

from compat import agui, aisdk, views

urlpatterns = [
    path("chat/completions", views.chat_completions, name="openai-chat-completions"),
    path("models", views.models, name="openai-models"),
    path("models/<str:name>", views.model_detail, name="openai-model"),
    # Anything else under /api/openai/v1/: a 404 in OpenAI's shape.
    re_path(r"^[\s\S]*$", views.not_found),
]

agui_urlpatterns = [
    path("<str:agent_name>", agui.run_agent, name="agui-run"),
]

aisdk_urlpatterns = [
    path("<str:agent_name>", aisdk.chat, name="aisdk-chat"),
    path(
        "<str:agent_name>/<str:chat_id>/stream",
        aisdk.resume_stream,
        name="aisdk-resume-stream",
    ),
]
