"""Error codes of the agents app (runs and providers), used in frames and API errors."""

from enum import StrEnum


class AgentErrorCode(StrEnum):
    AGENT_NOT_FOUND = "agent_not_found"
    AGENT_DISABLED = "agent_disabled"
    # A message addressed (`@name`) an agent that is not one of the thread's.
    AGENT_NOT_IN_THREAD = "agent_not_in_thread"
    PROVIDER_KEY_MISSING = "provider_key_missing"
    PROVIDER_AUTH_FAILED = "provider_auth_failed"
    PROVIDER_RATE_LIMITED = "provider_rate_limited"
    PROVIDER_UNAVAILABLE = "provider_unavailable"
    PROVIDER_BAD_RESPONSE = "provider_bad_response"
    PROVIDER_CONNECTION_LOST = "provider_connection_lost"
    PROVIDER_TIMEOUT = "provider_timeout"
    PROVIDER_ERROR = "provider_error"
    REPLY_TOO_LONG = "reply_too_long"
    WORKER_LOST = "worker_lost"
    WORKER_SHUTDOWN = "worker_shutdown"
    RUN_NOT_FOUND = "run_not_found"
    RUN_NOT_ACTIVE = "run_not_active"
    INPUT_NOT_PENDING = "input_not_pending"
    INPUT_MISMATCH = "input_mismatch"
    TOOL_STEPS_EXCEEDED = "tool_steps_exceeded"
    TOOL_UNAVAILABLE = "tool_unavailable"
    INTERNAL_ERROR = "internal_error"
