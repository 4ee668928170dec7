"""WebSocket URL routes."""

from django.urls import path

from chat.consumers import AgentConsumer, ThreadConsumer

websocket_urlpatterns = [
    path("ws/threads/<str:thread_id>/", ThreadConsumer.as_asgi()),
    # A new thread with the agent for the caller (or ?thread_id= to go on).
    path("ws/agents/<str:agent_name>/", AgentConsumer.as_asgi()),
]
