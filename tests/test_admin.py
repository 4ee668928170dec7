"""The admin: agent configs (validation, key warnings, test prompt), threads, runs, messages."""

from __future__ import annotations

import socket

import pytest
from django.contrib.messages import get_messages

from agents.models import AgentConfig, Run, RunStatus
from chat.models import Message, MessageRole, Role

pytestmark = pytest.mark.django_db

AGENTS_URL = "/admin/agents/agentconfig/"


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def admin_client(client, make_user):
    client.force_login(make_user("boss", is_staff=True, is_superuser=True))
    return client


def shown(response) -> list[tuple[str, str]]:
    """(level, text) of the admin messages on the page the client ended on."""
    return [
        (message.level_tag, str(message))
        for message in get_messages(response.wsgi_request)
    ]


def agent_form(**overrides) -> dict:
    data = {
        "name": "helper",
        "description": "",
        "enabled": "on",
        "provider": "echo",
        "model": "",
        "base_url": "",
        "api_key_env": "",
        "system_prompt": "",
        "temperature": "0.7",
        "max_tokens": "1024",
        "persistent": "on",
        "stream": "on",
        "chunk_size": "256",
        "buffer_chunks": "on",
        "busy_policy": "enqueue",
        "allowed_overrides": '["model", "temperature"]',
        "extra_params": "{}",
    }
    data.update(overrides)
    return {key: value for key, value in data.items() if value is not None}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- Pages load -------------------------------------------------------------------


def test_every_admin_page_renders(admin_client, thread, users):
    Message.objects.create(
        thread=thread, author=users[Role.OWNER], role=MessageRole.USER, text="hello"
    )
    run = Run.objects.create(
        thread=thread,
        agent=thread.agent,
        status=RunStatus.COMPLETED,
        usage={"input_tokens": 3},
    )
    message = Message.objects.first()
    for url in [
        AGENTS_URL,
        f"{AGENTS_URL}add/",
        f"{AGENTS_URL}{thread.agent.pk}/change/",
        "/admin/agents/run/",
        "/admin/agents/run/?status__exact=completed",
        f"/admin/agents/run/?agent__id__exact={thread.agent.pk}",
        f"/admin/agents/run/{run.pk}/change/",
        "/admin/chat/thread/",
        f"/admin/chat/thread/{thread.pk}/change/",
        "/admin/chat/message/",
        f"/admin/chat/message/{message.pk}/change/",
    ]:
        response = admin_client.get(url)
        assert response.status_code == 200, url


def test_agent_list_shows_name_provider_model_and_enabled(admin_client, echo_agent):
    content = admin_client.get(AGENTS_URL).content.decode()
    for heading in ("Name", "Provider", "Model", "Enabled"):
        assert heading in content
    assert "echo" in content


def test_thread_page_shows_members_and_the_transcript(admin_client, thread, users):
    Message.objects.create(
        thread=thread,
        author=users[Role.OWNER],
        role=MessageRole.USER,
        text="the question",
    )
    content = admin_client.get(
        f"/admin/chat/thread/{thread.pk}/change/"
    ).content.decode()
    assert "participant" in content and "observer" in content
    assert "the question" in content


def test_messages_are_read_only(admin_client, thread, users):
    message = Message.objects.create(
        thread=thread, author=users[Role.OWNER], role=MessageRole.USER, text="said"
    )
    assert admin_client.get("/admin/chat/message/add/").status_code == 403
    response = admin_client.post(
        f"/admin/chat/message/{message.pk}/change/", {"text": "rewritten"}
    )
    assert response.status_code == 403
    message.refresh_from_db()
    assert message.text == "said"


def test_run_list_filters_by_status(admin_client, thread):
    failed = Run.objects.create(
        thread=thread, agent=thread.agent, status=RunStatus.FAILED
    )
    Run.objects.create(thread=thread, agent=thread.agent, status=RunStatus.COMPLETED)
    response = admin_client.get("/admin/agents/run/?status__exact=failed")
    assert list(response.context["cl"].queryset) == [failed]


def test_cancel_action_cancels_queued_runs(admin_client, thread):
    run = Run.objects.create(thread=thread, agent=thread.agent, status=RunStatus.QUEUED)
    response = admin_client.post(
        "/admin/agents/run/",
        {"action": "cancel_runs", "_selected_action": [str(run.pk)]},
        follow=True,
    )
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED
    assert any(level == "success" for level, _ in shown(response))


# --- Agent validation and warnings -------------------------------------------------------


def test_a_valid_agent_is_saved(admin_client):
    response = admin_client.post(f"{AGENTS_URL}add/", agent_form(), follow=True)
    assert response.status_code == 200
    agent = AgentConfig.objects.get(name="helper")
    assert agent.allowed_overrides == ["model", "temperature"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature", "3"),
        ("max_tokens", "0"),
        ("chunk_size", "0"),
        ("allowed_overrides", '["colour"]'),
        ("extra_params", "[1, 2]"),
        ("extra_params", '{"tokens_per_second": -1}'),
        ("extra_params", '{"timestamp_tokens": "yes"}'),
        ("api_key_env", "not a variable!"),
        ("api_key_env", "1STARTS_WITH_DIGIT"),
        ("base_url", "ftp://example.com/v1"),
        ("busy_policy", "sometimes"),
        ("provider", "nonesuch"),
        ("name", "has spaces"),
        ("base_url", "not a url"),
    ],
)
def test_an_invalid_agent_field_is_refused(admin_client, field, value):
    response = admin_client.post(f"{AGENTS_URL}add/", agent_form(**{field: value}))
    assert response.status_code == 200  # the form again, with errors
    errors = response.context["adminform"].form.errors
    assert field in errors, errors
    assert not AgentConfig.objects.filter(name="helper").exists()


def test_saving_an_agent_whose_key_variable_is_missing_warns(admin_client, monkeypatch):
    monkeypatch.delenv("PARLEY_TEST_MISSING_KEY", raising=False)
    response = admin_client.post(
        f"{AGENTS_URL}add/",
        agent_form(
            provider="openai",
            model="gpt-4o-mini",
            api_key_env="PARLEY_TEST_MISSING_KEY",
        ),
        follow=True,
    )
    assert AgentConfig.objects.filter(name="helper").exists(), response.content[:2000]
    warnings = [text for level, text in shown(response) if level == "warning"]
    assert any("PARLEY_TEST_MISSING_KEY" in text for text in warnings), shown(response)


def test_opening_an_agent_whose_key_variable_is_missing_warns(
    admin_client, monkeypatch
):
    monkeypatch.delenv("PARLEY_TEST_MISSING_KEY", raising=False)
    agent = AgentConfig.objects.create(
        name="remote",
        provider="openai",
        model="m",
        api_key_env="PARLEY_TEST_MISSING_KEY",
    )
    response = admin_client.get(f"{AGENTS_URL}{agent.pk}/change/")
    assert "PARLEY_TEST_MISSING_KEY is not set" in response.content.decode()
    monkeypatch.setenv("PARLEY_TEST_MISSING_KEY", "sk-test")
    response = admin_client.get(f"{AGENTS_URL}{agent.pk}/change/")
    assert "PARLEY_TEST_MISSING_KEY is not set" not in response.content.decode()


# --- Test prompt action -----------------------------------------------------------------


def send_test_prompt(admin_client, *agents):
    return admin_client.post(
        AGENTS_URL,
        {
            "action": "send_test_prompt",
            "_selected_action": [str(agent.pk) for agent in agents],
        },
        follow=True,
    )


def test_test_prompt_shows_the_first_chunk(admin_client, echo_agent):
    response = send_test_prompt(admin_client, echo_agent)
    successes = [text for level, text in shown(response) if level == "success"]
    assert len(successes) == 1 and "first chunk" in successes[0], shown(response)
    assert "'This '" in successes[0]  # echo streams the prompt back word by word


def test_test_prompt_shows_a_missing_key_as_an_error(admin_client, monkeypatch):
    monkeypatch.delenv("PARLEY_TEST_MISSING_KEY", raising=False)
    agent = AgentConfig.objects.create(
        name="remote",
        provider="openai",
        model="m",
        api_key_env="PARLEY_TEST_MISSING_KEY",
    )
    response = send_test_prompt(admin_client, agent)
    errors = [text for level, text in shown(response) if level == "error"]
    assert len(errors) == 1 and "provider_key_missing" in errors[0], shown(response)


def test_test_prompt_shows_an_unreachable_server_as_an_error(admin_client, monkeypatch):
    monkeypatch.setenv("PARLEY_TEST_KEY", "sk-test")
    agent = AgentConfig.objects.create(
        name="remote",
        provider="openai",
        model="m",
        api_key_env="PARLEY_TEST_KEY",
        base_url=f"http://127.0.0.1:{free_port()}/v1",
    )
    response = send_test_prompt(admin_client, agent)
    errors = [text for level, text in shown(response) if level == "error"]
    assert len(errors) == 1 and errors[0].startswith("remote: provider_"), shown(
        response
    )
    assert "sk-test" not in errors[0]
