"""Single sign-on in Chromium against a real OpenID provider on loopback: a
new user logs in through the provider and lands in Parley; the staff group
maps to staff; a forged state and a wrong issuer are refused and audited."""

from __future__ import annotations

import re

import pytest

from tests.sso.conftest import ACCOUNTS, PROVIDER_NAME

pytestmark = pytest.mark.browser


def sign_in_at_provider(page, base_url: str, username: str) -> None:
    """From Parley's login page, through the provider's login form."""
    page.goto(f"{base_url}/accounts/login/")
    page.get_by_role("link", name=f"Sign in with {PROVIDER_NAME}").click()
    page.wait_for_url(re.compile(r"/interaction/"))
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(ACCOUNTS[username]["password"])
    page.get_by_role("button", name="Sign in").click()


def test_a_new_user_signs_in_through_the_provider_and_lands_logged_in(parley, new_page):
    page = new_page(parley.base_url)

    sign_in_at_provider(page, parley.base_url, "alice")

    page.wait_for_url(f"{parley.base_url}/")
    page.get_by_text("Signed in as").wait_for()
    assert page.locator(".account-name strong").inner_text() == "alice"
    # A new Parley user, not staff: the admin sends them to its own login.
    page.goto(f"{parley.base_url}/admin/")
    assert "/admin/login/" in page.url
    logins = [event["actor"] for event in parley.audit("auth.login")]
    assert logins.count("alice") == 1


def test_the_staff_group_makes_the_user_staff(parley, new_page):
    page = new_page(parley.base_url)

    sign_in_at_provider(page, parley.base_url, "bob")

    page.wait_for_url(f"{parley.base_url}/")
    assert page.locator(".account-name strong").inner_text() == "bob"
    page.goto(f"{parley.base_url}/admin/")
    page.get_by_text("Site administration").wait_for()
    assert "/admin/login/" not in page.url
    granted = [
        event for event in parley.audit("user.update") if event["target_repr"] == "bob"
    ]
    assert [event["changes"]["is_staff"] for event in granted] == [
        {"before": False, "after": True}
    ]


def test_a_callback_with_a_state_this_browser_was_not_given_is_refused_and_audited(
    parley, new_page
):
    page = new_page(parley.base_url)
    page.goto(f"{parley.base_url}/accounts/login/")
    page.get_by_role("link", name=f"Sign in with {PROVIDER_NAME}").click()
    page.wait_for_url(re.compile(r"/interaction/"))  # a real login has begun

    page.goto(f"{parley.base_url}/oidc/callback/?code=forged-code&state=forged-state")

    page.wait_for_url(f"{parley.base_url}/accounts/login/")
    alert = page.get_by_text(f"Sign-in with {PROVIDER_NAME} was refused (bad state)")
    alert.wait_for()
    page.goto(f"{parley.base_url}/")
    assert "/accounts/login/" in page.url  # nobody logged in
    refused = parley.audit("auth.sso_refused")
    assert [event["details"]["reason"] for event in refused] == ["bad_state"]
    assert refused[0]["actor"] == "" and refused[0]["ip"] == "127.0.0.1"
    assert refused[0]["target_repr"] == PROVIDER_NAME


def test_an_id_token_from_another_issuer_is_refused_and_audited(
    parley_expecting_another_issuer, new_page
):
    parley = parley_expecting_another_issuer
    page = new_page(parley.base_url)

    sign_in_at_provider(page, parley.base_url, "alice")

    page.wait_for_url(f"{parley.base_url}/accounts/login/")
    page.get_by_text(
        f"Sign-in with {PROVIDER_NAME} was refused (wrong issuer)"
    ).wait_for()
    page.goto(f"{parley.base_url}/")
    assert "/accounts/login/" in page.url
    refused = parley.audit("auth.sso_refused")
    assert [event["details"]["reason"] for event in refused] == ["wrong_issuer"]
    assert "realms/another" in refused[0]["details"]["detail"]
    assert parley.audit("auth.login") == []


def test_password_login_stays_beside_single_sign_on(parley, new_page):
    page = new_page(parley.base_url)
    page.goto(f"{parley.base_url}/accounts/login/")
    page.get_by_label("Username").fill("auditor")
    page.get_by_label("Password").fill("auditor-password")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{parley.base_url}/")
    assert page.locator(".account-name strong").inner_text() == "auditor"
