"""Prices on agent configs (validated like every field, in the admin and the
API), each run's cost from them, and the agent config version each reply is
stamped with."""

from __future__ import annotations

from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async

from agents.models import AgentConfig, Run
from chat.models import Role
from chat.services import message_post
from tests.eventually import eventually
from usage.models import UsageRecord

pytestmark = pytest.mark.django_db


def agent_form(**overrides) -> dict:
    data = {
        "name": "priced",
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
        "allowed_overrides": '["model"]',
        "extra_params": "{}",
    }
    data.update(overrides)
    return data


@pytest.mark.parametrize("price", [-1, "-0.01", "free", "NaN", True, None])
def test_a_negative_or_non_numeric_price_is_refused_by_the_api(api_for, users, price):
    response = api_for(users[Role.STAFF]).post(
        "/api/agents/",
        {"name": "priced", "provider": "echo", "input_price_per_million": price},
        format="json",
    )
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "validation_error"
    assert "input_price_per_million" in response.json()["error"]["details"]
    assert not AgentConfig.objects.filter(name="priced").exists()


def test_prices_set_through_the_api_are_shown(api_for, users):
    staff = api_for(users[Role.STAFF])
    response = staff.post(
        "/api/agents/",
        {
            "name": "priced",
            "provider": "echo",
            "input_price_per_million": 2.5,
            "output_price_per_million": "10",
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["input_price_per_million"] == "2.500000"
    assert body["output_price_per_million"] == "10.000000"
    assert body["version"] == 1


@pytest.mark.parametrize("price", ["-3", "lots"])
def test_a_negative_or_non_numeric_price_is_refused_by_the_admin(
    client, make_user, price
):
    client.force_login(make_user("boss", is_staff=True, is_superuser=True))
    response = client.post(
        "/admin/agents/agentconfig/add/",
        agent_form(output_price_per_million=price),
    )
    assert response.status_code == 200  # the form again, with the error
    assert "output_price_per_million" in response.context["adminform"].form.errors
    assert not AgentConfig.objects.filter(name="priced").exists()


def test_the_admin_saves_prices_and_defaults_them_to_zero(client, make_user):
    client.force_login(make_user("boss", is_staff=True, is_superuser=True))
    response = client.post(
        "/admin/agents/agentconfig/add/", agent_form(input_price_per_million="0.15")
    )
    assert response.status_code == 302, response.context["adminform"].form.errors
    agent = AgentConfig.objects.get(name="priced")
    assert agent.input_price_per_million == Decimal("0.15")
    assert agent.output_price_per_million == 0


def test_the_version_goes_up_with_each_change_that_shapes_replies(echo_agent):
    assert echo_agent.version == 1
    echo_agent.system_prompt = "Be brief."
    echo_agent.save()
    assert AgentConfig.objects.get(pk=echo_agent.pk).version == 2
    echo_agent.save()  # nothing changed
    echo_agent.description = "described"
    echo_agent.enabled = False
    echo_agent.input_price_per_million = Decimal(3)
    echo_agent.save()  # nothing a reply depends on
    assert AgentConfig.objects.get(pk=echo_agent.pk).version == 2
    echo_agent.temperature = 0.1
    echo_agent.save(update_fields=["temperature"])
    assert AgentConfig.objects.get(pk=echo_agent.pk).version == 3


def test_the_api_bumps_the_version_and_cannot_set_it(api_for, users, echo_agent):
    staff = api_for(users[Role.STAFF])
    response = staff.patch(
        "/api/agents/echo/", {"model": "m2", "version": 99}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["version"] == 2


@pytest.mark.django_db(transaction=True)
async def test_each_reply_is_stamped_with_the_version_and_charged_at_its_prices(
    thread, users, worker, client_for, api_for
):
    agent = thread.agent
    agent.input_price_per_million = Decimal("2")
    agent.output_price_per_million = Decimal("10")
    await agent.asave()
    client = client_for(thread.id, users[Role.PARTICIPANT])
    await client.join()

    async def ask(text: str) -> dict:
        await client.send({"type": "message", "content": text})
        return (
            await client.receive_until(lambda frame: frame["type"] == "state_complete")
        )[-1]

    first = await ask("one two three four")
    agent.system_prompt = "Answer in verse."
    await agent.asave()
    second = await ask("five six")

    runs = [await Run.objects.aget(pk=done["run_id"]) for done in (first, second)]
    assert [run.agent_version for run in runs] == [1, 2]
    records = [await UsageRecord.objects.aget(run_id=run.pk) for run in runs]
    assert [record.agent_version for record in records] == [1, 2]
    # 4 in + 4 out at 2 and 10 per million.
    assert records[0].cost == Decimal(4 * 2 + 4 * 10) / 1_000_000
    assert records[1].cost == Decimal(2 * 2 + 2 * 10) / 1_000_000

    api = api_for(users[Role.PARTICIPANT])
    run_body = (await sync_to_async(api.get)(f"/api/runs/{runs[0].pk}/")).json()
    assert run_body["agent_version"] == 1
    history = (
        await sync_to_async(api.get)(f"/api/threads/{thread.id}/messages/")
    ).json()["results"]
    assert [(item["role"], item["agent_version"]) for item in history] == [
        ("user", None),
        ("assistant", 1),
        ("user", None),
        ("assistant", 2),
    ]


@pytest.mark.django_db(transaction=True)
async def test_a_config_changed_while_a_run_waits_stamps_the_version_that_ran(
    thread, users, worker
):
    """The version recorded is the one the worker ran, not the one in force
    when the message was admitted."""
    agent = thread.agent
    agent.extra_params = {"tokens_per_second": 20}
    await agent.asave()  # version 2
    owner = users[Role.OWNER]
    first = await sync_to_async(message_post)(
        thread=thread, user=owner, text=" ".join(["word"] * 20)
    )
    await eventually(
        lambda: Run.objects.filter(pk=first.pk, status="running").aexists(),
        what="the first run started",
    )
    second = await sync_to_async(message_post)(thread=thread, user=owner, text="hi")
    queued = await Run.objects.aget(pk=second.pk)
    assert (queued.status, queued.agent_version) == ("queued", 2)

    agent.system_prompt = "Changed while the second waits."
    await agent.asave()  # version 3

    await eventually(
        lambda: Run.objects.filter(pk=second.pk, status="completed").aexists(),
        what="the second run finished",
    )
    ran = {
        run.pk: run.agent_version
        async for run in Run.objects.filter(pk__in=[first.pk, second.pk])
    }
    assert ran == {first.pk: 2, second.pk: 3}
    record = await UsageRecord.objects.aget(run_id=second.pk)
    assert record.agent_version == 3
