"""/api/docs/ (Swagger UI) and /api/redoc/ are served from the project itself:
every script, stylesheet and icon they name is on this server (the files of
drf-spectacular-sidecar), so they work offline and on an intranet."""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.django_db

# Every src= and href= in the page.
REFERENCES = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""")


def references(html: str) -> list[str]:
    return REFERENCES.findall(html)


@pytest.mark.parametrize(
    ("path", "bundle"),
    [
        ("/api/docs/", "/static/drf_spectacular_sidecar/swagger-ui-dist/"),
        ("/api/redoc/", "/static/drf_spectacular_sidecar/redoc/bundles/"),
    ],
)
def test_api_docs_pages_name_no_other_host(client, path, bundle):
    response = client.get(path)
    assert response.status_code == 200
    html = response.content.decode()
    found = references(html)
    assert any(reference.startswith(bundle) for reference in found), found
    for reference in found:
        assert reference.startswith("/"), f"{path} loads {reference}"
        assert not reference.startswith("//"), f"{path} loads {reference}"
    assert "googleapis" not in html and "jsdelivr" not in html and "unpkg" not in html


def test_swagger_ui_fetches_no_validator_badge(client):
    html = client.get("/api/docs/").content.decode()
    assert '"validatorUrl": null' in html
