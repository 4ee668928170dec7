"""Routes of the OpenAI-compatible endpoint, mounted at /api/openai/v1/.

No trailing slashes: the OpenAI SDKs do not add one."""

from django.urls import path, re_path

from compat import views

urlpatterns = [
    path("chat/completions", views.chat_completions, name="openai-chat-completions"),
    path("models", views.models, name="openai-models"),
    path("models/<str:name>", views.model_detail, name="openai-model"),
    # Anything else under /api/openai/v1/: a 404 in OpenAI's shape.
    re_path(r"^[\s\S]*$", views.not_found),
]
