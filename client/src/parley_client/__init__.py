"""parley-client: talk to a Parley server from Python.

- `ParleyClient` (async) holds a thread's socket: connection states, requests
  with their replies, streams of a run's events, resume after a lost
  connection; `SyncParleyClient` is the same, blocking.
- `ParleyAPI` / `ParleyAPISync` wrap the REST calls programs need.
- `python -m parley_client ask|chat|token` is the terminal client.

docs/protocol.md (the socket) and docs/api.md (REST) of the server describe
what travels; client/README.md shows how to use this package.
"""

from parley_client.connection import ConnectionState, ParleyClient, thread_socket_url
from parley_client.errors import (
    ApiError,
    ConnectionClosedError,
    ConnectionLostError,
    FrameTooLargeError,
    ParleyError,
    ProtocolViolation,
    RequestError,
    RequestTimeout,
)
from parley_client.events import (
    Connected,
    ErrorReceived,
    Event,
    InputRequested,
    Message,
    MessagePosted,
    RunCompleted,
    RunStatusChanged,
    StateChanged,
    StatusChanged,
    Synced,
    TextDelta,
    TextReset,
)
from parley_client.frames import Frame
from parley_client.rest import ParleyAPI, ParleyAPISync
from parley_client.retry import RetryPolicy
from parley_client.sync import SyncParleyClient
from parley_client.view import ThreadView

__version__ = "0.1.0"

__all__ = [
    "ApiError",
    "Connected",
    "ConnectionClosedError",
    "ConnectionLostError",
    "ConnectionState",
    "ErrorReceived",
    "Event",
    "Frame",
    "FrameTooLargeError",
    "InputRequested",
    "Message",
    "MessagePosted",
    "ParleyAPI",
    "ParleyAPISync",
    "ParleyClient",
    "ParleyError",
    "ProtocolViolation",
    "RequestError",
    "RequestTimeout",
    "RetryPolicy",
    "RunCompleted",
    "RunStatusChanged",
    "StateChanged",
    "StatusChanged",
    "Synced",
    "SyncParleyClient",
    "TextDelta",
    "TextReset",
    "ThreadView",
    "thread_socket_url",
]
