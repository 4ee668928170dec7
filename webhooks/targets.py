"""Where webhooks may go: PARLEY_WEBHOOK_ALLOWED_HOSTS, checked when a webhook is
created (`url_problem`) and again before every attempt (`resolve_target`,
which also resolves the name and refuses private and loopback addresses).

An entry is a host (exactly that host: http and private addresses allowed, the
deployment named it), `*.example.com` (its subdomains) or `*` (any host). A host
a wildcard lets in must use https and resolve to public addresses only, so a
webhook cannot reach the deployment's own network. The attempt then connects to
the address checked here, never to a second lookup's (DNS rebinding).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

from webhooks.errors import WebhookErrorCode


@dataclass(frozen=True)
class Target:
    """The address an attempt connects to, and the names it presents there."""

    url: str  # the webhook's URL with its host replaced by `address`
    host_header: str  # the URL's host[:port], sent as Host
    server_name: str  # the name TLS presents (SNI) and checks the certificate for
    address: str


class TargetRefused(Exception):
    def __init__(self, code: WebhookErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _host_of(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TargetRefused(
            WebhookErrorCode.WEBHOOK_URL_INVALID,
            "A webhook URL is an absolute http:// or https:// URL.",
        )
    if parts.username or parts.password:
        raise TargetRefused(
            WebhookErrorCode.WEBHOOK_URL_INVALID,
            "A webhook URL carries no user name or password (the signature "
            "authenticates Parley).",
        )
    try:
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError:
        raise TargetRefused(
            WebhookErrorCode.WEBHOOK_URL_INVALID, "The URL's port is not a number."
        ) from None
    return parts.scheme, parts.hostname.lower().rstrip(".")


def host_listing(host: str) -> str | None:
    """`exact`, `wildcard` or None: how PARLEY_WEBHOOK_ALLOWED_HOSTS lets `host` in."""
    entries = [
        entry.lower().rstrip(".") for entry in settings.PARLEY_WEBHOOK_ALLOWED_HOSTS
    ]
    bare = host.strip("[]")
    if any(entry.strip("[]") == bare for entry in entries if "*" not in entry):
        return "exact"
    for entry in entries:
        if entry == "*" or (
            entry.startswith("*.") and host.endswith(entry[1:]) and host != entry[2:]
        ):
            return "wildcard"
    return None


def url_problem(url: str) -> TargetRefused | None:
    """Why `url` may not be a webhook now (None: it may)."""
    try:
        scheme, host = _host_of(url)
    except TargetRefused as refused:
        return refused
    listing = host_listing(host)
    if listing is None:
        allowed = ", ".join(settings.PARLEY_WEBHOOK_ALLOWED_HOSTS) or "none"
        return TargetRefused(
            WebhookErrorCode.WEBHOOK_HOST_NOT_ALLOWED,
            f"Webhooks may not call {host}: this deployment allows {allowed} "
            "(PARLEY_WEBHOOK_ALLOWED_HOSTS).",
        )
    if listing == "wildcard" and scheme != "https":
        return TargetRefused(
            WebhookErrorCode.WEBHOOK_HTTPS_REQUIRED,
            f"Webhooks to {host} must use https://.",
        )
    return None


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def resolve_target(url: str) -> Target:
    """The address to call for `url`, checked against the allowed hosts; raises
    TargetRefused (the attempt fails with its code) when there is none."""
    problem = url_problem(url)
    if problem is not None:
        raise problem
    scheme, host = _host_of(url)
    parts = urlsplit(url)
    port = parts.port or (443 if scheme == "https" else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM
        )
    except OSError as error:
        raise TargetRefused(
            WebhookErrorCode.WEBHOOK_DNS_FAILED, f"{host} does not resolve: {error}"
        ) from None
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    if host_listing(host) != "exact":
        private = [address for address in addresses if not _is_public(address)]
        if private or not addresses:
            raise TargetRefused(
                WebhookErrorCode.WEBHOOK_ADDRESS_FORBIDDEN,
                f"{host} resolves to a private or local address ({', '.join(private)}); "
                "only hosts listed exactly in PARLEY_WEBHOOK_ALLOWED_HOSTS may.",
            )
    address = addresses[0]
    netloc = f"[{address}]" if ":" in address else address
    if parts.port:
        netloc += f":{parts.port}"
    return Target(
        url=parts._replace(netloc=netloc).geturl(),
        host_header=parts.netloc,
        server_name=host.strip("[]"),
        address=address,
    )
