"""MCP clients other than the Python SDK, against a live server (issue 14, "Kept true in CI").

- The official conformance suite (npm @modelcontextprotocol/conformance) over the protocol-level
  server scenarios; the scenarios that need its fixture tools, resources or prompts are named
  as skipped below.
- The TypeScript SDK client (npm @modelcontextprotocol/sdk, tests/mcp_node/ts_client.mjs): lists
  the tools, compiles every schema with strict ajv, calls each read and preview tool and checks
  the structured results against their output schemas, and reads error results as errors.

Both need `scripts/install_node_tools.sh` (npm ci in tests/mcp_node, Node 22 from npm); without
it they are skipped, saying so. Marked real_clients: .ci/run runs them once, with the real
worker tests, not again per database.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from contacts.models import Contact
from gateways.platform_config import platform_config_update
from smsplatform.config_service import platform_config_get
from smsplatform.mcp.registry import get_tool, registered_tools
from tests.campaigns import conftest as campaign_conftest
from tests.campaigns.conftest import crm, marketer
from tests.support.actors import actor
from tests.support.campaigns import act, draft_data, key

__all__ = ["crm", "marketer"]  # fixtures: a gateway, contacts, a segment and a short link

NODE_DIR = Path(__file__).resolve().parents[1] / "mcp_node"
NODE = NODE_DIR / "node_modules" / ".bin" / "node"
CONFORMANCE = NODE_DIR / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"

pytestmark = [
    pytest.mark.real_clients,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not (NODE.exists() and CONFORMANCE.exists()),
        reason="Node MCP clients not installed: run scripts/install_node_tools.sh (npm ci in tests/mcp_node)",
    ),
]

# Protocol-level scenarios: they need nothing but a conformant server.
PROTOCOL_SCENARIOS = ["server-initialize", "ping", "tools-list", "dns-rebinding-protection"]
# Scenarios that call the suite's fixture tools, resources or prompts (test_simple_text,
# test_image_content, ...), or features we do not offer (logging, completions, sampling,
# elicitation, SSE streams on a stateless JSON server). Named here so that a new scenario in the
# suite is noticed: the test fails until it is sorted into one list or the other.
SKIPPED_SCENARIOS = {
    "logging-set-level": "no logging capability (stateless JSON responses, no notifications)",
    "completion-complete": "no prompts or resource templates to complete",
    "tools-call-simple-text": "needs the fixture tool test_simple_text",
    "tools-call-image": "needs the fixture tool test_image_content",
    "tools-call-audio": "needs the fixture tool test_audio_content",
    "tools-call-embedded-resource": "needs the fixture tool test_embedded_resource",
    "tools-call-mixed-content": "needs the fixture tool test_multiple_content_types",
    "tools-call-with-logging": "needs the fixture tool test_tool_with_logging",
    "tools-call-error": "needs the fixture tool test_error_handling",
    "tools-call-with-progress": "needs the fixture tool test_tool_with_progress",
    "tools-call-sampling": "needs the fixture tool test_sampling",
    "tools-call-elicitation": "needs the fixture tool test_elicitation",
    "json-schema-2020-12": "needs the fixture tool json_schema_2020_12_tool",
    "elicitation-sep1034-defaults": "needs the fixture tool test_elicitation_sep1034_defaults",
    "elicitation-sep1330-enums": "needs the fixture tool test_elicitation_sep1330_enums",
    "server-sse-polling": "needs the fixture tool test_reconnection and SSE streams",
    "server-sse-multiple-streams": "needs SSE streams (GET is 405 on our stateless server)",
    "resources-list": "needs the fixture resources",
    "resources-read-text": "needs the fixture resource test://static-text",
    "resources-read-binary": "needs the fixture resource test://static-binary",
    "resources-templates-read": "needs the fixture resource template test://template/{id}/data",
    "resources-subscribe": "needs the fixture resources",
    "resources-unsubscribe": "needs the fixture resources",
    "prompts-list": "needs the fixture prompts",
    "prompts-get-simple": "needs the fixture prompt test_simple_prompt",
    "prompts-get-with-args": "needs the fixture prompt test_prompt_with_arguments",
    "prompts-get-embedded-resource": "needs the fixture prompt test_prompt_with_embedded_resource",
    "prompts-get-with-image": "needs the fixture prompt test_prompt_with_image",
}


@pytest.fixture
def world(marketer: Any, crm: Any, known_gateways: None) -> dict[str, Any]:
    """The campaign tests' world (stored rows built by factories, so it needs no transaction of its
    own in a live-server test)."""
    return dict(campaign_conftest.world.__wrapped__(marketer, crm, known_gateways))  # type: ignore[attr-defined]


@pytest.fixture
def superuser_key(make_user: Any, token_for: Any) -> str:
    return str(token_for(make_user(superuser=True), "node-client"))


@pytest.fixture
def authorising_proxy(live_server: Any, superuser_key: str) -> Iterator[str]:
    """A loopback proxy that adds our Bearer token: the conformance client sends none.

    Everything else (Host, Origin, MCP headers, bodies, status codes) passes unchanged."""
    target = live_server.url

    class Handler(BaseHTTPRequestHandler):
        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k: v for k, v in self.headers.items() if k.lower() not in {"content-length", "connection"}}
            headers["Authorization"] = f"Bearer {superuser_key}"
            answer = httpx.request(self.command, target + self.path, headers=headers, content=body, timeout=30)
            self.send_response(answer.status_code)
            for name, value in answer.headers.items():
                if name.lower() not in {"content-length", "transfer-encoding", "connection", "content-encoding"}:
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer.content)))
            self.end_headers()
            self.wfile.write(answer.content)

        do_GET = do_POST = do_DELETE = _forward

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{server.server_address[1]}/mcp"
    finally:
        server.shutdown()
        server.server_close()


def listed_server_scenarios() -> set[str]:
    out = subprocess.run([str(NODE), str(CONFORMANCE), "list"], capture_output=True, text=True, timeout=60, check=True)
    server_part = out.stdout.split("Client scenarios")[0]
    return {line.strip()[2:].split(" ")[0] for line in server_part.splitlines() if line.strip().startswith("- ")}


def test_conformance_suite_protocol_scenarios(authorising_proxy: str, tmp_path: Path) -> None:
    listed = listed_server_scenarios()
    # Every scenario the suite has is either run or named as skipped, with its reason.
    assert listed == set(PROTOCOL_SCENARIOS) | set(SKIPPED_SCENARIOS), listed ^ (
        set(PROTOCOL_SCENARIOS) | set(SKIPPED_SCENARIOS)
    )
    failures = {}
    for scenario in PROTOCOL_SCENARIOS:
        run = subprocess.run(
            [
                str(NODE),
                str(CONFORMANCE),
                "server",
                "--url",
                authorising_proxy,
                "--scenario",
                scenario,
                "-o",
                str(tmp_path),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=NODE_DIR,
        )
        checks = [json.loads(p.read_text()) for p in tmp_path.glob(f"server-{scenario}-*/checks.json")]
        statuses = [c["status"] for group in checks for c in group]
        failed = [c for group in checks for c in group if c["status"] in ("FAILURE", "ERROR")]
        if run.returncode != 0 or failed or not statuses:
            failures[scenario] = (run.returncode, failed or run.stdout[-2000:] + run.stderr[-2000:])
    assert not failures, failures


def read_plan(technical: Any, marketer: Any, world: dict[str, Any]) -> dict[str, Any]:
    pending = platform_config_update(
        actor=actor(technical),
        changes={"default_gateway": "simulator"},
        base_version_token=platform_config_get()["base_version_token"],
        idempotency_key="node-client-0001",
    )
    create = get_tool("sms_marketing.campaigns.create_draft")
    assert create is not None
    created = create.handler(act(marketer), {**draft_data(world), "idempotency_key": key()})
    campaign_id = created["result"]["campaign_id"]
    contact = Contact.objects.order_by("pk").first()
    assert contact is not None
    utm = {"utm_source": "sms", "utm_medium": "sms", "utm_campaign": "node"}
    reads: dict[str, dict[str, Any]] = {
        "sms_marketing.action_request.status": {"action_request_id": pending["action_request_id"]},
        "sms_marketing.approval_policies.list": {},
        "sms_marketing.audiences.list": {},
        "sms_marketing.campaigns.get": {"campaign_id": campaign_id},
        "sms_marketing.campaigns.list": {},
        "sms_marketing.config.get": {},
        "sms_marketing.contacts.get": {"contact_id": contact.pk},
        "sms_marketing.contacts.search": {"opted_out": False},
        "sms_marketing.copy.fit_preview": {"text": "Weekend sale: 20% off at Demo Shop. Reply STOP to opt out."},
        "sms_marketing.cost_preview": {"campaign_id": campaign_id},
        "sms_marketing.delivery_status.get": {"phone": contact.phone},
        "sms_marketing.failed_messages.retry_preview": {"campaign_id": campaign_id},
        "sms_marketing.frequency_caps.get": {},
        "sms_marketing.gateways.list": {},
        "sms_marketing.opt_outs.list": {},
        "sms_marketing.owners.list": {},
        "sms_marketing.quotas.get": {},
        "sms_marketing.segments.preview": {"criteria": {"audiences": [world["audience"].pk]}},
        "sms_marketing.send_batches.list": {"campaign_id": campaign_id},
        "sms_marketing.sender_ids.list": {},
        "sms_marketing.short_links.preview": {"url": "https://shop.example.hk/sale", "utm": utm},
        "sms_marketing.templates.list": {},
        "sms_marketing.otp_templates.list": {},
        "sms_marketing.automations.list": {},
        "sms_marketing.campaign_reports.get": {"campaign_id": campaign_id},
        "sms_marketing.link_clicks.list": {"campaign_id": campaign_id},
        "sms_marketing.conversion_attribution.get": {"campaign_id": campaign_id},
    }
    return reads


ERROR_CALLS = [
    ("sms_marketing.config.get", {"surprise": 1}, "validation_error"),
    ("sms_marketing.action_request.status", {"action_request_id": "seven"}, "validation_error"),
    ("sms_marketing.action_request.status", {"action_request_id": 999999}, "not_found"),
    ("sms_marketing.contacts.search", {}, None),
    ("sms_marketing.delivery_status.get", {}, None),
    ("sms_marketing.campaigns.get", {"campaign_id": 999999}, "not_found"),
    ("sms_marketing.short_links.preview", {"url": "javascript:alert(1)"}, None),
    ("sms_marketing.nope", {}, "unknown_tool"),
    ("sms_marketing.contacts.opt_out", {"phone": "+85291234567"}, "validation_error"),
]


def test_typescript_sdk_client(
    live_server: Any,
    superuser_key: str,
    technical: Any,
    marketer: Any,
    world: dict[str, Any],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    # The approval policy on config changes only after the world (its quiet-hours change) exists.
    request.getfixturevalue("config_policy")
    reads = read_plan(technical, marketer, world)
    read_tools = {s.name for s in registered_tools() if s.read_only}
    assert set(reads) == read_tools, set(reads) ^ read_tools  # every read and preview tool, no more
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"reads": reads, "errors": [{"tool": t, "arguments": a} for t, a, _ in ERROR_CALLS]}))
    run = subprocess.run(
        [str(NODE), str(NODE_DIR / "ts_client.mjs"), f"{live_server.url}/mcp", str(plan)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=NODE_DIR,
        env={**os.environ, "MCP_TOKEN": superuser_key},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout)
    import smsplatform

    assert report["server"] == {"name": "sms_marketing", "version": smsplatform.__version__}
    assert report["tools"] == len(registered_tools())
    assert report["schemaProblems"] == []
    for name, entry in report["reads"].items():
        assert "thrown" not in entry, (name, entry)
        assert entry["listed"] and entry["readOnly"] is True, (name, entry)
        assert entry["isError"] is False, (name, entry)
        assert entry["outputValid"] is True and entry["textMatches"] is True, (name, entry)
    assert len(report["errors"]) == len(ERROR_CALLS)
    for entry, (_tool, _args, code) in zip(report["errors"], ERROR_CALLS, strict=True):
        # Read as an error: no -32602 thrown by the client's output-schema check.
        assert "thrown" not in entry, entry
        assert entry["isError"] is True and entry["hasStructured"] is False, entry
        assert set(entry["error"]) >= {"code", "message", "field", "hint"}, entry
        if code is not None:
            assert entry["error"]["code"] == code, entry
