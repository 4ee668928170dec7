"""Who an OpenID Connect login is: found by issuer and subject, created on the
first login, staff by the groups claim (sso/services.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from django.contrib.auth import get_user_model

from audit.models import AuditEvent
from sso.models import OidcIdentity
from sso.services import sso_user_get_or_create
from tests.integration.conftest import ROOT

ISSUER = "https://sso.example.com/realms/acme"
pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def staff_mapping(settings):
    settings.OIDC_STAFF_GROUP = "parley-staff"
    settings.OIDC_GROUPS_CLAIM = "groups"


def test_the_first_login_creates_a_user_and_the_next_finds_it_by_subject():
    claims = {"sub": "u-1", "preferred_username": "carol", "email": "c@example.com"}

    first = sso_user_get_or_create(issuer=ISSUER, claims=claims)
    again = sso_user_get_or_create(
        issuer=ISSUER, claims={**claims, "email": "carol@example.com"}
    )

    assert first.pk == again.pk and again.username == "carol"
    assert again.email == "carol@example.com"  # kept in step with the provider
    assert not again.has_usable_password()
    assert OidcIdentity.objects.get(user=again).subject == "u-1"


def test_a_local_user_with_the_same_email_or_name_is_never_taken_over():
    local = get_user_model().objects.create_user(
        username="dave", email="dave@example.com", password="local-password"
    )

    user = sso_user_get_or_create(
        issuer=ISSUER,
        claims={
            "sub": "u-2",
            "preferred_username": "dave",
            "email": "dave@example.com",
        },
    )

    assert user.pk != local.pk and user.username == "dave-2"
    other_issuer = sso_user_get_or_create(
        issuer="https://other.example.com", claims={"sub": "u-2", "email": "x@y.z"}
    )
    assert other_issuer.pk not in (user.pk, local.pk)


def test_the_staff_group_grants_and_its_absence_revokes_staff_audited():
    claims = {"sub": "u-3", "preferred_username": "erin"}

    user = sso_user_get_or_create(
        issuer=ISSUER, claims={**claims, "groups": ["x", "parley-staff"]}
    )
    assert user.is_staff
    user = sso_user_get_or_create(issuer=ISSUER, claims={**claims, "groups": ["x"]})
    assert not user.is_staff

    changes = [
        event.changes["is_staff"]
        for event in AuditEvent.objects.filter(
            action="user.update", target_repr="erin"
        ).order_by("created_at", "id")
    ]
    assert changes == [
        {"before": False, "after": True},
        {"before": True, "after": False},
    ]


def test_superusers_keep_staff_and_no_mapping_leaves_staff_alone(settings):
    admin = get_user_model().objects.create_superuser(username="root", password="p")
    OidcIdentity.objects.create(user=admin, issuer=ISSUER, subject="u-4")
    assert sso_user_get_or_create(issuer=ISSUER, claims={"sub": "u-4"}).is_staff

    settings.OIDC_STAFF_GROUP = ""
    user = sso_user_get_or_create(
        issuer=ISSUER, claims={"sub": "u-5", "groups": ["parley-staff"]}
    )
    assert not user.is_staff


def test_an_issuer_without_its_endpoints_stops_start_up():
    done = subprocess.run(
        [sys.executable, "-c", "import config.settings"],
        cwd=ROOT,
        env={"OIDC_ISSUER": ISSUER, "OIDC_CLIENT_ID": "parley", "PATH": ""},
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0
    assert "OIDC_CLIENT_SECRET" in done.stderr and "OIDC_JWKS_ENDPOINT" in done.stderr
