"""Error codes of the webhooks app, in API error bodies and delivery attempts."""

from enum import StrEnum


class WebhookErrorCode(StrEnum):
    # Refusals of the API.
    WEBHOOK_NOT_FOUND = "webhook_not_found"
    DELIVERY_NOT_FOUND = "delivery_not_found"
    WEBHOOK_URL_INVALID = "webhook_url_invalid"
    # The URL's host is not in PARLEY_WEBHOOK_ALLOWED_HOSTS.
    WEBHOOK_HOST_NOT_ALLOWED = "webhook_host_not_allowed"
    # http:// to a host only a wildcard of PARLEY_WEBHOOK_ALLOWED_HOSTS allows.
    WEBHOOK_HTTPS_REQUIRED = "webhook_https_required"
    RUN_NOT_FOUND = "run_not_found"
    # What a delivery attempt recorded (WebhookAttempt.error_code).
    WEBHOOK_ADDRESS_FORBIDDEN = "webhook_address_forbidden"
    WEBHOOK_DNS_FAILED = "webhook_dns_failed"
    WEBHOOK_TIMEOUT = "webhook_timeout"
    WEBHOOK_CONNECT_FAILED = "webhook_connect_failed"
    WEBHOOK_BAD_STATUS = "webhook_bad_status"
