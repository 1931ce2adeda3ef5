"""The REST API's front door: an index at /api/v1/, a schema without guesswork, docs that work offline."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from django.contrib.staticfiles import finders
from django.core.management import call_command
from django.test import Client

pytestmark = pytest.mark.django_db


def test_api_root_is_an_index_of_endpoints_and_links() -> None:
    response = Client().get("/api/v1/")
    assert response.status_code == 200
    index = response.json()
    assert index["links"]["openapi_schema"].endswith("/api/schema/")
    assert index["links"]["swagger_ui"].endswith("/api/docs/")
    assert index["links"]["mcp_endpoint"].endswith("/mcp")
    paths = {e["path"]: e["methods"] for e in index["endpoints"]}
    assert paths["/api/v1/health/"] == ["GET"]
    assert paths["/api/v1/campaigns/"] == ["GET", "POST"]
    assert "/api/v1/campaigns/<int:campaign_id>/send/" in paths


def test_schema_has_no_warnings_or_errors(tmp_path: Path) -> None:
    # --fail-on-warn turns every "unable to guess serializer" and name collision into a failure.
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml"))
    schema = (tmp_path / "schema.yaml").read_text()
    assert "/api/v1/campaigns/{campaign_id}/send/" in schema and "/mcp" not in schema


@pytest.mark.parametrize("url", ["/api/docs/", "/api/redoc/"])
def test_docs_load_only_our_own_static_files(url: str, settings: Any) -> None:
    html = Client().get(url).content.decode()
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert assets, html
    for asset in assets:
        if asset == f"{url}?script=":
            # Swagger's split view: its start-up script comes from this same page (no inline script,
            # so the Content-Security-Policy can forbid them); it must answer with JavaScript.
            answer = Client().get(asset)
            assert answer.status_code == 200 and "javascript" in answer["Content-Type"], asset
            continue
        # No CDN: every script and stylesheet is ours, and really there.
        assert asset.startswith(f"/{settings.STATIC_URL.strip('/')}/drf_spectacular_sidecar/"), asset
        assert finders.find(asset.split("/static/", 1)[1]), asset
