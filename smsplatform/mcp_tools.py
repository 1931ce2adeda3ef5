"""MCP tools of the platform kernel."""

from __future__ import annotations

from typing import Any

from smsplatform.config_schema import PlatformConfigData
from smsplatform.config_service import platform_config_get
from smsplatform.kernel.actor import Actor
from smsplatform.mcp.registry import INT, NSTR, STR, object_schema, register_tool

CONFIG_OUTPUT = object_schema(
    {
        "config": PlatformConfigData.model_json_schema(mode="serialization"),
        "version": INT,
        "base_version_token": STR,
        "updated_at": {"type": "string", "format": "date-time"},
        "updated_by": NSTR,
        "note": STR,
    },
    ["config", "version", "base_version_token", "updated_at"],
)


@register_tool(
    "sms_marketing.config.get",
    permission="smsplatform.view_platformconfig",
    input_schema=object_schema({}),
    output_schema=CONFIG_OUTPUT,
)
def config_get(actor: Actor, args: dict[str, Any]) -> dict[str, Any]:
    return platform_config_get()
