"""CORS (django-cors-headers): a preflight from an allowed origin to /api/ gets
the headers; another origin, another path, or the default (off) gets none."""

from __future__ import annotations

import pytest
from django.test import Client

ALLOWED = "https://app.example.com"


def preflight(path: str, origin: str):
    return Client().options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )


@pytest.fixture
def cors(settings):
    settings.CORS_ALLOWED_ORIGINS = [ALLOWED]


@pytest.mark.django_db
def test_a_preflight_from_an_allowed_origin_gets_the_headers(cors):
    response = preflight("/api/threads/", ALLOWED)
    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == ALLOWED
    assert "POST" in response["Access-Control-Allow-Methods"]
    allowed_headers = response["Access-Control-Allow-Headers"].lower()
    assert "authorization" in allowed_headers and "content-type" in allowed_headers


@pytest.mark.django_db
def test_an_allowed_origin_can_read_parleys_own_headers(cors, users):
    response = Client().get("/api/openai/v1/models", headers={"Origin": ALLOWED})
    assert response["Access-Control-Allow-Origin"] == ALLOWED
    exposed = response["Access-Control-Expose-Headers"].lower()
    assert "x-parley-run-id" in exposed and "x-parley-thread-id" in exposed


@pytest.mark.django_db
def test_a_preflight_from_another_origin_gets_none(cors):
    response = preflight("/api/threads/", "https://evil.example.net")
    assert "Access-Control-Allow-Origin" not in response


@pytest.mark.django_db
def test_cors_applies_to_the_api_only(cors):
    response = preflight("/accounts/login/", ALLOWED)
    assert "Access-Control-Allow-Origin" not in response


@pytest.mark.django_db
def test_cors_is_off_by_default(settings):
    assert settings.PARLEY_CORS_ALLOWED_ORIGINS == []
    response = preflight("/api/threads/", ALLOWED)
    assert "Access-Control-Allow-Origin" not in response
