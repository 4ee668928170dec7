"""WebSocket URL routes."""

from django.urls import path, re_path

from chat.consumers import AgentConsumer, ThreadConsumer, UnknownPathConsumer

websocket_urlpatterns = [
    path("ws/threads/<str:thread_id>/", ThreadConsumer.as_asgi()),
    # A new thread with the agent for the caller (or ?thread_id= to go on).
    path("ws/agents/<str:agent_name>/", AgentConsumer.as_asgi()),
    # Anything else: an error frame and close 4404, not the router's HTTP 500.
    re_path(r"", UnknownPathConsumer.as_asgi()),
]
