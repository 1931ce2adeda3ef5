"""Twilio Programmable Messaging through the official SDK (``twilio`` 9.x).

``gateway.settings`` (non-secret):
    account_sid            "AC..." (required)
    messaging_service_sid  "MG..." (optional; used for messages without a sender ID)
    status_callback_base   "https://sms.example.hk": the public origin Twilio calls back. Twilio
                           signs the URL it called, so callbacks are verified against this base
                           plus the route, never against ``request.build_absolute_uri()`` (wrong
                           behind a proxy).
    timeout_seconds        HTTP timeout per API call (default 10)
    retry_after_seconds    back-off after a rate limit (default 5)
``gateway.credentials_env``: ``{"auth_token": "TWILIO_AUTH_TOKEN"}``.

Sending: one ``Messages.create`` per SMS. Twilio splits and concatenates long bodies itself and
returns one SID, recorded as a single part. Outcomes:
    201                                    -> accepted, the Message SID as the only provider id
    429, or error 20429 / 14107 (rate)     -> temporary "throttled"
    5xx, 401 / 20003 (bad credentials), connection never established, gateway not configured
                                           -> temporary "gateway_unavailable" (the delivery layer
                                              fails over to the fallback gateway)
    other 4xx (21211, 21610, 21408, 21612...) -> permanent "twilio_<code>"
    request sent but no usable answer (read timeout, connection dropped, unreadable 2xx)
                                           -> unknown "submit_unknown": Twilio may have taken
                                              it, so it is never resent (no duplicate SMS).
After a temporary outcome the rest of the batch is not attempted (temporary, same code): the
condition is gateway-wide and those messages were provably never sent.

Callbacks (status callbacks and incoming messages) are form POSTs signed with
``X-Twilio-Signature`` (HMAC-SHA1 with the auth token over URL + sorted params).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import requests
from django.http import HttpRequest, HttpResponse, QueryDict
from twilio.base.exceptions import TwilioRestException, TwilioServiceException
from twilio.http import HttpClient
from twilio.http.http_client import TwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client
from urllib3.exceptions import ConnectTimeoutError

from gateways.adapters.base import (
    CallbackRejected,
    GatewayAdapter,
    InboundEvent,
    OutgoingSms,
    ReceiptEvent,
    SendOutcome,
    register_adapter,
)
from gateways.models import Gateway, MessageState

logger = logging.getLogger(__name__)

UNAVAILABLE = "gateway_unavailable"
THROTTLED = "throttled"
SUBMIT_UNKNOWN = "submit_unknown"
RATE_LIMIT_CODES = frozenset({20429, 14107})
AUTH_CODES = frozenset({20003})
DEFAULT_TIMEOUT_SECONDS = 10.0
DEFAULT_RETRY_AFTER_SECONDS = 5.0

# Twilio MessageStatus -> our state. Intermediate statuses are never reported as delivered;
# a status Twilio adds later is treated as intermediate too.
_FINAL_STATUSES: dict[str, MessageState] = {
    "delivered": MessageState.DELIVERED,
    "read": MessageState.DELIVERED,  # read implies delivered (non-SMS channels)
    "undelivered": MessageState.FAILED,
    "failed": MessageState.FAILED,
    "canceled": MessageState.FAILED,
}
# Callback fields kept in DeliveryReceipt.raw: no phone numbers or message text.
_RECEIPT_RAW_FIELDS = (
    "MessageSid",
    "MessageStatus",
    "ErrorCode",
    "AccountSid",
    "MessagingServiceSid",
    "ApiVersion",
    "RawDlrDoneDate",
)
_INBOUND_RAW_FIELDS = ("MessageSid", "AccountSid", "MessagingServiceSid", "NumSegments", "NumMedia", "ApiVersion")


def _default_http_client(gateway: Gateway) -> HttpClient:
    timeout = float((gateway.settings or {}).get("timeout_seconds") or DEFAULT_TIMEOUT_SECONDS)
    return TwilioHttpClient(timeout=timeout)


# Tests (and anything else that must not touch the network) replace this factory or pass
# ``http_client`` to the adapter.
http_client_factory: Callable[[Gateway], HttpClient] = _default_http_client


def _never_reached_twilio(exc: requests.RequestException) -> bool:
    """True when the request provably never reached Twilio (safe to retry or fail over)."""
    if isinstance(exc, requests.exceptions.ConnectTimeout | requests.exceptions.SSLError):
        return True
    if isinstance(exc, requests.exceptions.ProxyError):
        return True
    if isinstance(exc, requests.exceptions.ConnectionError) and exc.args:
        # urllib3's MaxRetryError(reason=NewConnectionError / NameResolutionError / ConnectTimeoutError)
        reason = getattr(exc.args[0], "reason", exc.args[0])
        return isinstance(reason, ConnectTimeoutError)
    return False


def _subset(params: Mapping[str, str], fields: Sequence[str]) -> dict[str, str]:
    return {name: params[name] for name in fields if name in params}


def _as_int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


@register_adapter
class TwilioAdapter(GatewayAdapter):
    provider = "twilio"

    def __init__(self, gateway: Gateway, http_client: HttpClient | None = None) -> None:
        super().__init__(gateway)
        self._http_client = http_client

    # --- configuration ---------------------------------------------------------------------

    def _setting(self, name: str) -> str:
        return str((self.gateway.settings or {}).get(name) or "").strip()

    @property
    def _callback_base(self) -> str:
        return self._setting("status_callback_base").rstrip("/")

    @property
    def _retry_after(self) -> float:
        value = (self.gateway.settings or {}).get("retry_after_seconds")
        return float(value) if value else DEFAULT_RETRY_AFTER_SECONDS

    def status_callback_url(self) -> str:
        return f"{self._callback_base}/hooks/{self.gateway.code}/receipts"

    # --- sending ------------------------------------------------------------------------------

    def send(self, batch: Sequence[OutgoingSms]) -> list[SendOutcome]:
        if not batch:
            return []
        account_sid, auth_token = self._setting("account_sid"), self.secret("auth_token")
        missing = [n for n, v in (("account_sid", account_sid), ("auth_token secret", auth_token)) if not v]
        if missing:
            logger.error("twilio gateway %s is not configured: missing %s", self.gateway.code, ", ".join(missing))
            outcome = SendOutcome.temporary(UNAVAILABLE, f"Twilio gateway not configured: missing {', '.join(missing)}")
            return [outcome] * len(batch)
        client = Client(account_sid, auth_token, http_client=self._http_client or http_client_factory(self.gateway))
        outcomes: list[SendOutcome] = []
        stop: SendOutcome | None = None
        for sms in batch:
            if stop is not None:
                outcomes.append(stop)
                continue
            outcome = self._send_one(client, sms)
            outcomes.append(outcome)
            if outcome.kind == "temporary":
                stop = SendOutcome.temporary(outcome.code, f"not attempted: {outcome.reason}", outcome.retry_after)
            elif outcome.code == SUBMIT_UNKNOWN:
                stop = SendOutcome.temporary(UNAVAILABLE, "not attempted: an earlier submit got no answer")
        return outcomes

    def _send_one(self, client: Client, sms: OutgoingSms) -> SendOutcome:
        params: dict[str, Any] = {"to": sms.destination, "body": sms.body}
        messaging_service_sid = self._setting("messaging_service_sid")
        if sms.sender_id:
            params["from_"] = sms.sender_id
        elif messaging_service_sid:
            params["messaging_service_sid"] = messaging_service_sid
        else:
            return SendOutcome.permanent("sender_missing", "No sender ID and no messaging_service_sid configured.")
        if sms.request_receipt:
            if not self._callback_base:
                return SendOutcome.temporary(UNAVAILABLE, "status_callback_base is not configured: no receipts")
            params["status_callback"] = self.status_callback_url()
        try:
            message = client.messages.create(**params)
        except (TwilioRestException, TwilioServiceException) as exc:
            return self._outcome_for_error(exc)
        except requests.RequestException as exc:
            if _never_reached_twilio(exc):
                return SendOutcome.temporary(UNAVAILABLE, f"Twilio unreachable: {exc.__class__.__name__}")
            logger.warning("twilio %s: message %s sent but no answer: %r", self.gateway.code, sms.message_id, exc)
            return SendOutcome.unknown(SUBMIT_UNKNOWN, f"No answer from Twilio ({exc.__class__.__name__}); not resent.")
        except ValueError as exc:  # a 2xx whose body is not JSON
            logger.warning("twilio %s: message %s unreadable answer: %r", self.gateway.code, sms.message_id, exc)
            return SendOutcome.unknown(SUBMIT_UNKNOWN, "Unreadable answer from Twilio; not resent.")
        sid = str(getattr(message, "sid", "") or "")
        if not sid:
            return SendOutcome.unknown(SUBMIT_UNKNOWN, "Twilio answered without a Message SID; not resent.")
        # Twilio splits the message itself and bills its own count (it keeps grapheme clusters
        # such as ZWJ emoji whole across parts, and may apply the account's Smart Encoding).
        billed = _as_int(getattr(message, "num_segments", None))
        return SendOutcome.accepted([sid], billed_segments=billed if billed > 0 else None)

    def _outcome_for_error(self, exc: TwilioRestException | TwilioServiceException) -> SendOutcome:
        status, code = _as_int(exc.status), _as_int(exc.code)
        text = str(getattr(exc, "msg", "") or getattr(exc, "detail", "") or getattr(exc, "title", "") or "")
        reason = f"HTTP {status} twilio {code}: {text}".strip()
        if status == 429 or code in RATE_LIMIT_CODES:
            return SendOutcome.temporary(THROTTLED, reason, retry_after=self._retry_after)
        if status >= 500 or status == 0:
            return SendOutcome.temporary(UNAVAILABLE, reason)
        if status == 401 or code in AUTH_CODES:
            # Our credentials, not the recipient: every message would fail the same way.
            logger.error("twilio gateway %s refused our credentials: %s", self.gateway.code, reason)
            return SendOutcome.temporary(UNAVAILABLE, reason)
        return SendOutcome.permanent(f"twilio_{code or status}", reason)

    # --- callbacks ---------------------------------------------------------------------------

    def _verified_params(self, request: HttpRequest) -> QueryDict:
        """The callback's parameters, after checking Twilio's signature over the public URL."""
        signature = request.headers.get("X-Twilio-Signature", "")
        if not signature:
            raise CallbackRejected(403, "signature_invalid", "Missing X-Twilio-Signature.")
        token, base = self.secret("auth_token"), self._callback_base
        if not token or not base:
            # Never validate with an empty key: anyone could compute that signature.
            logger.error("twilio gateway %s cannot verify callbacks: auth_token or base missing", self.gateway.code)
            raise CallbackRejected(403, "signature_invalid", "This gateway cannot verify Twilio signatures.")
        url = base + request.path_info
        query = request.META.get("QUERY_STRING", "")
        if query:
            url = f"{url}?{query}"
        params = request.POST if request.method == "POST" else QueryDict()
        if not RequestValidator(token).validate(url, params, signature):
            raise CallbackRejected(403, "signature_invalid", "The Twilio signature does not match.")
        return request.POST if request.method == "POST" else request.GET

    def parse_receipts(self, request: HttpRequest) -> list[ReceiptEvent]:
        params = self._verified_params(request)
        sid = params.get("MessageSid", "").strip()
        status = params.get("MessageStatus", "").strip().lower()
        if not sid or not status:
            raise CallbackRejected(400, "malformed_callback", "MessageSid and MessageStatus are required.")
        state = _FINAL_STATUSES.get(status, MessageState.SUBMITTED)
        error_code = ""
        if status == "canceled":
            error_code = "canceled"
        elif state == MessageState.FAILED:
            error_code = params.get("ErrorCode", "").strip() or status
        return [
            ReceiptEvent(
                provider_message_id=sid,
                status=state,
                provider_status=status,
                error_code=error_code,
                raw=_subset(params, _RECEIPT_RAW_FIELDS),
            )
        ]

    def callback_response(self, kind: Literal["receipts", "inbound"], result: dict[str, Any]) -> HttpResponse:
        # Twilio expects TwiML from its messaging webhook: an empty <Response/> sends no reply.
        if kind == "inbound":
            return HttpResponse('<?xml version="1.0" encoding="UTF-8"?><Response></Response>', content_type="text/xml")
        return super().callback_response(kind, result)

    def parse_inbound(self, request: HttpRequest) -> list[InboundEvent]:
        params = self._verified_params(request)
        sid, source, destination = (params.get(k, "").strip() for k in ("MessageSid", "From", "To"))
        if not sid or not source or not destination:
            raise CallbackRejected(400, "malformed_callback", "MessageSid, From and To are required.")
        return [
            InboundEvent(
                source=source,
                destination=destination,
                body=params.get("Body", ""),
                provider_message_id=sid,
                raw=_subset(params, _INBOUND_RAW_FIELDS),
            )
        ]
