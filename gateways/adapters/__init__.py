"""Gateway adapters behind one interface (ARCHITECTURE, Gateways)."""

from __future__ import annotations

from gateways.adapters.base import (
    CallbackRejected,
    GatewayAdapter,
    InboundEvent,
    OutgoingSms,
    ReceiptEvent,
    SendOutcome,
    adapter_for,
    register_adapter,
)

__all__ = [
    "CallbackRejected",
    "GatewayAdapter",
    "InboundEvent",
    "OutgoingSms",
    "ReceiptEvent",
    "SendOutcome",
    "adapter_for",
    "register_adapter",
]
