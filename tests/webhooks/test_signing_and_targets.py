"""The signature scheme and the address checks made before every attempt."""

from __future__ import annotations

import pytest

from webhooks import signing
from webhooks.errors import WebhookErrorCode
from webhooks.targets import TargetRefused, resolve_target

SECRET = "whsec_test-secret"
BODY = b'{"event":"run.completed"}'


def test_a_signature_verifies_only_the_body_and_secret_it_was_made_with():
    header = signing.signature_header(SECRET, BODY, 1_800_000_000)
    assert header.startswith("t=1800000000,v1=")
    assert signing.verify(SECRET, BODY, header, now=1_800_000_010)
    assert not signing.verify(SECRET, BODY + b" ", header, now=1_800_000_010)
    assert not signing.verify("whsec_other", BODY, header, now=1_800_000_010)
    assert not signing.verify(SECRET, BODY, "t=1800000000", now=1_800_000_010)
    assert not signing.verify(SECRET, BODY, "v1=abc", now=1_800_000_010)


def test_an_old_signature_is_refused_as_a_replay():
    header = signing.signature_header(SECRET, BODY, 1_800_000_000)
    assert not signing.verify(SECRET, BODY, header, now=1_800_000_000 + 301)
    assert signing.verify(SECRET, BODY, header, now=1_800_000_000 + 301, tolerance=600)


def test_any_of_several_v1_signatures_may_match():
    good = signing.signature(SECRET, BODY, 1_800_000_000)
    header = f"t=1800000000,v1={'0' * 64},v1={good}"
    assert signing.verify(SECRET, BODY, header, now=1_800_000_000)


async def test_a_wildcard_never_reaches_loopback(settings):
    settings.PARLEY_WEBHOOK_ALLOWED_HOSTS = ["*"]
    with pytest.raises(TargetRefused) as refused:
        await resolve_target("https://localhost:8443/hook")
    assert refused.value.code == WebhookErrorCode.WEBHOOK_ADDRESS_FORBIDDEN
    for private in ("https://10.1.2.3/hook", "https://169.254.169.254/latest"):
        with pytest.raises(TargetRefused) as refused:
            await resolve_target(private)
        assert refused.value.code == WebhookErrorCode.WEBHOOK_ADDRESS_FORBIDDEN


async def test_a_host_listed_exactly_may_be_loopback(settings):
    settings.PARLEY_WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
    target = await resolve_target("http://localhost:8080/hook?x=1")
    assert target.address in ("127.0.0.1", "::1")
    assert target.host_header == "localhost:8080"
    assert target.server_name == "localhost"
    assert target.url.endswith(":8080/hook?x=1") and "localhost" not in target.url


async def test_a_host_no_longer_allowed_is_refused_before_any_lookup(settings):
    settings.PARLEY_WEBHOOK_ALLOWED_HOSTS = ["hooks.example.com"]
    with pytest.raises(TargetRefused) as refused:
        await resolve_target("http://127.0.0.1:8080/hook")
    assert refused.value.code == WebhookErrorCode.WEBHOOK_HOST_NOT_ALLOWED
