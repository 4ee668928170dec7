"""The agents REST API: agent configs (read by everyone, written by staff) and their validation."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from agents.models import AgentConfig
from chat.models import Role, Thread

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def client_as(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def error_of(response, status: int) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    return response.json()["error"]


def test_everyone_reads_enabled_agents_and_staff_reads_all(users, echo_agent):
    AgentConfig.objects.create(name="hidden", provider="echo", enabled=False)
    names = [
        agent["name"]
        for agent in client_as(users[Role.OBSERVER])
        .get("/api/agents/")
        .json()["results"]
    ]
    assert names == ["echo"]
    staff_names = [
        agent["name"]
        for agent in client_as(users[Role.STAFF]).get("/api/agents/").json()["results"]
    ]
    assert staff_names == ["echo", "hidden"]
    assert (
        error_of(client_as(users[Role.OWNER]).get("/api/agents/hidden/"), 404)["code"]
        == "not_found"
    )
    assert client_as(users[Role.STAFF]).get("/api/agents/hidden/").status_code == 200


def test_an_agent_reads_back_every_field_but_never_a_key(
    users, echo_agent, monkeypatch
):
    monkeypatch.setenv("SOME_KEY", "sk-secret-value")
    echo_agent.api_key_env = "SOME_KEY"
    echo_agent.save()
    body = client_as(users[Role.OWNER]).get("/api/agents/echo/").json()
    assert body["api_key_env"] == "SOME_KEY"
    assert "sk-secret-value" not in str(body)
    assert {
        "name",
        "provider",
        "model",
        "temperature",
        "busy_policy",
        "allowed_overrides",
        "enabled",
    } <= set(body)


def test_staff_create_update_and_delete_agents(users):
    client = client_as(users[Role.STAFF])
    response = client.post(
        "/api/agents/",
        {
            "name": "writer",
            "provider": "echo",
            "temperature": 0.3,
            "extra_params": {"tokens_per_second": 0},
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    assert response.json()["temperature"] == 0.3
    response = client.patch(
        "/api/agents/writer/",
        {"enabled": False, "busy_policy": "reject"},
        format="json",
    )
    assert response.status_code == 200
    agent = AgentConfig.objects.get(name="writer")
    assert agent.enabled is False and agent.busy_policy == "reject"
    assert client.delete("/api/agents/writer/").status_code == 204
    assert not AgentConfig.objects.filter(name="writer").exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "provider": "nonesuch"}, "provider"),
        ({"name": "x", "provider": "echo", "temperature": 3}, "temperature"),
        ({"name": "x", "provider": "echo", "max_tokens": 0}, "max_tokens"),
        (
            {"name": "x", "provider": "echo", "allowed_overrides": ["colour"]},
            "allowed_overrides",
        ),
        (
            {
                "name": "x",
                "provider": "echo",
                "extra_params": {"tokens_per_second": -1},
            },
            "extra_params",
        ),
        ({"name": "x", "provider": "echo", "api_key_env": "sk-123 456"}, "api_key_env"),
        ({"name": "x", "provider": "openai"}, "model"),
        ({"name": "has space", "provider": "echo"}, "name"),
        ({"name": "echo", "provider": "echo"}, "name"),
        ({"provider": "echo"}, "name"),
    ],
)
def test_invalid_agents_are_refused_with_the_field_named(
    users, echo_agent, body, field
):
    error = error_of(
        client_as(users[Role.STAFF]).post("/api/agents/", body, format="json"), 400
    )
    assert error["code"] == "validation_error"
    assert field in error["details"], error


def test_a_patch_is_validated_against_the_whole_config(users):
    AgentConfig.objects.create(
        name="remote", provider="openai", model="m", api_key_env="OPENAI_API_KEY"
    )
    client = client_as(users[Role.STAFF])
    error = error_of(
        client.patch("/api/agents/remote/", {"model": ""}, format="json"), 400
    )
    assert "model" in error["details"]


def test_deleting_an_agent_threads_use_is_a_409(users, thread):
    error = error_of(client_as(users[Role.STAFF]).delete("/api/agents/echo/"), 409)
    assert error["code"] == "agent_in_use"
    assert Thread.objects.filter(pk=thread.pk).exists()


def test_non_staff_cannot_write_agents(users, echo_agent):
    client = client_as(users[Role.OWNER])
    assert (
        error_of(
            client.post(
                "/api/agents/", {"name": "x", "provider": "echo"}, format="json"
            ),
            403,
        )["code"]
        == "forbidden"
    )
    assert (
        error_of(
            client.patch("/api/agents/echo/", {"enabled": False}, format="json"), 403
        )["code"]
        == "forbidden"
    )
    assert error_of(client.delete("/api/agents/echo/"), 403)["code"] == "forbidden"


def test_put_is_not_offered(users, echo_agent):
    response = client_as(users[Role.STAFF]).put(
        "/api/agents/echo/", {"name": "echo", "provider": "echo"}, format="json"
    )
    assert error_of(response, 405)["code"] == "method_not_allowed"
