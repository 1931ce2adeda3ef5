"""The adapter interface: capabilities, send a batch, parse callbacks."""

from __future__ import annotations

import importlib
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Literal

from django.http import HttpRequest, HttpResponse, JsonResponse

from gateways.models import Gateway, MessageState


@dataclass(frozen=True)
class OutgoingSms:
    message_id: int
    sender_id: str
    destination: str  # E.164 with '+'
    body: str
    encoding: str  # "GSM-7" or "UCS-2"
    segments: int
    request_receipt: bool = True
    attempt: int = 1


@dataclass(frozen=True)
class SendOutcome:
    """What a gateway said about one message."""

    # unknown: the request may have reached the gateway but no answer came back; the
    # message is never resent (at most once) and becomes 'unknown' for reconciliation.
    kind: Literal["accepted", "temporary", "permanent", "unknown"]
    provider_ids: tuple[str, ...] = ()  # one per part, in part order
    retry_after: float = 0.0
    code: str = ""
    reason: str = ""
    # The parts the provider says it billed, when it splits the message itself (Twilio's
    # num_segments); None when the platform split it (SMPP, Kannel): then the count is ours.
    billed_segments: int | None = None

    @classmethod
    def accepted(cls, provider_ids: Sequence[str], *, billed_segments: int | None = None) -> SendOutcome:
        return cls("accepted", tuple(provider_ids), billed_segments=billed_segments)

    @classmethod
    def temporary(cls, code: str, reason: str, retry_after: float = 5.0) -> SendOutcome:
        return cls("temporary", retry_after=retry_after, code=code, reason=reason)

    @classmethod
    def permanent(cls, code: str, reason: str) -> SendOutcome:
        return cls("permanent", code=code, reason=reason)

    @classmethod
    def unknown(cls, code: str, reason: str) -> SendOutcome:
        return cls("unknown", code=code, reason=reason)


@dataclass(frozen=True)
class ReceiptEvent:
    provider_message_id: str
    status: MessageState
    provider_status: str
    error_code: str = ""
    occurred_at: datetime | None = None
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class InboundEvent:
    source: str
    destination: str
    body: str
    provider_message_id: str = ""
    raw: dict[str, Any] = field(default_factory=dict)


class CallbackRejected(Exception):
    """A callback we refuse: forged, unsigned or malformed. Nothing is stored from it."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class GatewayAdapter(ABC):
    provider: ClassVar[str]
    # Adapters whose sending happens in a long-running worker (SMPP) say so: Celery must not
    # call send() for them.
    sends_from_worker: ClassVar[bool] = False

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def secret(self, name: str) -> str:
        env_name = (self.gateway.credentials_env or {}).get(name)
        return os.environ.get(env_name, "") if env_name else ""

    def capabilities(self) -> dict[str, Any]:
        g = self.gateway
        return {
            "countries": list(g.countries or []),
            "receipts": g.receipts_supported,
            "max_rate_per_second": g.max_rate_per_second,
            "encodings": list(g.encodings or ["GSM-7", "UCS-2"]),
            "window_size": g.window_size,
        }

    @abstractmethod
    def send(self, batch: Sequence[OutgoingSms]) -> list[SendOutcome]:
        """Submit each message; one outcome per message, in order."""

    def parse_receipts(self, request: HttpRequest) -> list[ReceiptEvent]:
        raise CallbackRejected(404, "not_supported", "This gateway does not take receipt callbacks over HTTP.")

    def callback_response(self, kind: Literal["receipts", "inbound"], result: dict[str, Any]) -> HttpResponse:
        """What the provider expects back from a callback (JSON unless it says otherwise)."""
        return JsonResponse(result)

    def parse_inbound(self, request: HttpRequest) -> list[InboundEvent]:
        raise CallbackRejected(404, "not_supported", "This gateway does not take inbound SMS over HTTP.")


_ADAPTERS: dict[str, type[GatewayAdapter]] = {}
_MODULES = {
    "simulator": "gateways.adapters.simulator",
    "smpp": "gateways.adapters.smpp",
    "kannel": "gateways.adapters.kannel",
    "twilio": "gateways.adapters.twilio",
}


def register_adapter(cls: type[GatewayAdapter]) -> type[GatewayAdapter]:
    _ADAPTERS[cls.provider] = cls
    return cls


def adapter_for(gateway: Gateway) -> GatewayAdapter:
    if gateway.provider not in _ADAPTERS and gateway.provider in _MODULES:
        importlib.import_module(_MODULES[gateway.provider])
    return _ADAPTERS[gateway.provider](gateway)
