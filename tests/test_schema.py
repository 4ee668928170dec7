"""The OpenAPI schema is valid, types every body, and the live API keeps to it.

The schemathesis run generates requests for every operation (valid and invalid
ones), sends them to the WSGI app with a real staff token and checks that no
answer is a server error and every answer matches the schema: documented
status code, JSON content type, body shape.
"""

from __future__ import annotations

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.validation import validate_schema
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable
from rest_framework.authtoken.models import Token
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from agents.models import Run, RunStatus
from chat.models import Message, MessageRole, Role

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def generated_schema() -> dict:
    return SchemaGenerator().get_schema(request=None, public=True)


def test_the_schema_is_valid_openapi_3():
    schema = generated_schema()
    validate_schema(schema)
    assert schema["openapi"].startswith("3.")


def test_every_operation_has_typed_bodies_and_documents_its_errors():
    schema = generated_schema()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            if "requestBody" in operation:
                content = operation["requestBody"]["content"]
                assert list(content) == ["application/json"], where
                assert "$ref" in content["application/json"]["schema"], where
            for code, response in operation["responses"].items():
                if code == "204":
                    assert "content" not in response, where
                    continue
                body = response["content"]["application/json"]["schema"]
                assert body, where
                assert "Unspecified" not in str(response), where
                if code >= "400":
                    assert body == {"$ref": "#/components/schemas/Error"}, where
            assert "429" in operation["responses"], where
            if operation.get("security") != [{}] and "security" in operation:
                assert "401" in operation["responses"], where


def test_the_error_component_is_the_contracts_shape():
    error = generated_schema()["components"]["schemas"]["Error"]
    assert error["required"] == ["error"]
    assert error["properties"]["error"]["$ref"] == "#/components/schemas/ErrorDetail"


# --- schemathesis against the live app ---------------------------------------------------


@pytest.fixture
def seeded(db, users, thread):
    """A staff caller with a token, a thread with history and a run to find."""
    staff = users[Role.STAFF]
    thread.owner = staff
    thread.save()
    Message.objects.create(
        thread=thread, author=staff, role=MessageRole.USER, text="hello"
    )
    run = Run.objects.create(
        thread=thread, agent=thread.agent, status=RunStatus.COMPLETED
    )
    token = Token.objects.create(user=staff)
    return {"token": token.key, "thread": str(thread.id), "run": str(run.id)}


def _point_at_real_objects(case, seeded) -> None:
    """Random ids only ever find nothing; point most calls at real objects so the
    success responses are exercised too (DELETE keeps its random ids, so the
    objects survive for the other calls)."""
    if not case.path_parameters or case.method.upper() == "DELETE":
        return
    if "id" in case.path_parameters and case.path.startswith("/api/threads/"):
        case.path_parameters["id"] = seeded["thread"]
    elif "id" in case.path_parameters and case.path.startswith("/api/runs/"):
        case.path_parameters["id"] = seeded["run"]
    elif "name" in case.path_parameters:
        case.path_parameters["name"] = "echo"


# Revoking the token would end the run's authentication.
SKIPPED = {("DELETE", "/api/auth/token/"), ("POST", "/api/auth/token/revoke/")}
EXAMPLES_PER_OPERATION_AND_MODE = 20


@pytest.fixture
def keep_test_connection():
    """The WSGI handler closes the database connection after each request, which
    would end the test's transaction; Django's own test client does the same."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.mark.django_db
def test_the_api_keeps_to_its_schema(seeded, settings, keep_test_connection):
    """Every operation, valid and invalid inputs: no 5xx, nothing off-schema.

    (schemathesis's own pytest integration, `from_fixture`, breaks under
    pytest 9, so the operations are driven through their Hypothesis strategies.)
    """
    settings.PARLEY_MESSAGES_PER_MINUTE = 10_000
    settings.PARLEY_MAX_ACTIVE_RUNS_PER_USER = 0
    api = schemathesis.openapi.from_wsgi(
        "/api/schema/?format=json", get_wsgi_application()
    )
    headers = {"Authorization": f"Token {seeded['token']}"}
    failures: list[str] = []
    operations = 0
    for result in api.get_all_operations():
        operation = result.ok()
        if (operation.method.upper(), operation.path) in SKIPPED:
            continue
        operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @hypothesis_settings(
                max_examples=EXAMPLES_PER_OPERATION_AND_MODE,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                derandomize=True,
                database=None,
                phases=[Phase.explicit, Phase.generate, Phase.shrink],
            )
            def run(case):
                _point_at_real_objects(case, seeded)
                case.call_and_validate(headers=headers, checks=CHECKS)

            try:
                run()
            except Unsatisfiable:
                pass  # nothing to make invalid (no parameters, no body)
            except Exception as error:  # collect every operation's failure, then report
                failures.append(f"{operation.label} ({mode.value}): {error}")
    assert operations >= 20
    assert not failures, "\n\n".join(failures)
