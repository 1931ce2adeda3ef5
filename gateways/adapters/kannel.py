"""Kannel over HTTP: smsbox's ``sendsms`` interface out, ``dlr-url`` and ``sms-service`` callbacks in.

``gateway.settings`` (non-secret):
    sendsms_url          "http://127.0.0.1:13013/cgi-bin/sendsms" (required)
    username             the smsbox ``sendsms-user`` (required)
    smsc                 optional smsc-id to route through (Kannel's ``smsc`` parameter)
    dlr_url_base         "https://sms.example.hk/hooks": the origin Kannel calls back, up to and
                         including ``/hooks`` (required when receipts are wanted)
    timeout_seconds      read timeout per sendsms request (default 10; connecting: at most 5)
    retry_after_seconds  back-off after a temporary refusal (default 5)
``gateway.credentials_env``: ``{"password": "KANNEL_SENDSMS_PASSWORD", "dlr_secret": "KANNEL_DLR_SECRET"}``.
Callback tokens (dlr-url, get-url) are keyed with the gateway's own ``webhook_secret`` (generated
per gateway, rotatable: gateways.services.gateway_webhook_secret_rotate), or with ``dlr_secret``
when that names an environment variable; never with Django's SECRET_KEY.

Sending: one GET per part (``username, password, from, to, text, coding, charset=UTF-8, dlr-mask,
dlr-url[, smsc][, udh]``). ``coding=0`` for GSM-7, ``coding=2`` for UCS-2; Kannel converts the UTF-8
text itself. Kannel's sendsms answer carries no SMSC message id, so provider ids are ours:
``kannel-<message id>`` for part 1 and ``kannel-<message id>-<n>`` for part n >= 2.

Parts, and why the adapter splits long messages itself: when Kannel splits a long message it asks
for a delivery report on the first part only (``sms_split`` clears the dlr-url of parts 2..n), so a
message could be reported delivered while its later parts were lost. Instead the body is cut with
the platform's own segment engine (``smsplatform.kernel.segments.analyse``: 153 septets / 67 UTF-16 units,
never splitting an escape or a surrogate pair; the same engine that counted and billed the
segments), and each part is its own sendsms request carrying a concatenation UDH (8-bit reference =
message id mod 256) and its own dlr-url with ``part=<n>``. Every part fits one SMS, so Kannel does
not split again, and every part's receipt maps exactly to its MessagePart: a message is delivered
only when every part is.

Outcomes of one request:
    202 ("0: Accepted for delivery", "3: Queued for later delivery", "Sent.")  -> accepted
    403 "Not routable. Do not try again." and 400 "... rejected" / "Invalid ..." -> permanent
    403 "Authorization failed for sendsms" (our credentials), 404 (wrong URL), 5xx, connection
        never established, gateway not configured                      -> temporary "gateway_unavailable"
        (the delivery layer fails over to the fallback gateway)
    429                                                                 -> temporary "throttled"
    504, other 2xx, or the request sent but no answer (read timeout, dropped connection)
                                                                        -> unknown "submit_unknown"
A part refused or unanswered after earlier parts were accepted leaves a fragment on the handset:
the message becomes unknown "partial_submit" (charged, never resent). After a temporary or unknown
outcome the rest of the batch is not attempted (temporary, same code).

Callbacks are GETs from Kannel itself, authenticated by an HMAC-SHA256 token in the URL (Kannel
cannot sign anything): ``token = HMAC(secret, <provider id of the part>)`` on the dlr-url and
``token = HMAC(secret, "kannel-inbound:<gateway code>")`` on the sms-service get-url (the prefixes
keep one token from ever being valid for the other callback). ``KannelAdapter.inbound_url()``
prints the get-url to paste into kannel.conf::

    group = sms-service
    keyword = default
    catch-all = true
    max-messages = 0        # never send the HTTP answer back to the handset as a reply SMS
    get-url = "<inbound_url()>"

DLR status (Kannel's %d): 1 delivered -> delivered; 2 undelivered, 16 SMSC reject -> failed;
4 queued on the SMSC, 8 accepted by the SMSC -> submitted (pending is never delivered).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, quote_from_bytes, urlencode

import httpx
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

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
from smsplatform.kernel.segments import SegmentInputError, analyse

logger = logging.getLogger(__name__)

UNAVAILABLE = "gateway_unavailable"
THROTTLED = "throttled"
SUBMIT_UNKNOWN = "submit_unknown"
PARTIAL_SUBMIT = "partial_submit"
NOT_ROUTABLE = "not_routable"
REJECTED = "kannel_rejected"
PROVIDER_ID_PREFIX = "kannel-"
INBOUND_TOKEN_PREFIX = "kannel-inbound:"
DEFAULT_TIMEOUT_SECONDS = 10.0
CONNECT_TIMEOUT_SECONDS = 5.0
DEFAULT_RETRY_AFTER_SECONDS = 5.0
MAX_PARTS = 255  # the 8-bit concatenation header's limit

# Kannel DLR types (%d).
DLR_DELIVERED, DLR_UNDELIVERED, DLR_QUEUED, DLR_SMSC_ACCEPTED, DLR_SMSC_REJECTED = 1, 2, 4, 8, 16
DLR_MASK_ALL = 31
# Without a wanted receipt, Kannel still tells us when the SMSC refuses the message.
DLR_MASK_REJECT_ONLY = DLR_SMSC_REJECTED

_STAT_RE = re.compile(r"\bstat:(\S+)")
_ERR_RE = re.compile(r"\berr:(\S+)")
_NACK_RE = re.compile(r"^NACK/([^/]*)")
# The SMSC's receipt text ends with "text:<first characters of the SMS>": never stored.
_RECEIPT_TEXT_RE = re.compile(r"\s*\btext:.*$", re.DOTALL | re.IGNORECASE)
_UCS2_CHARSETS = {"UTF-16BE", "UTF-16", "UCS-2", "UCS-2BE", "UCS2", "UTF16BE"}


def provider_id(message_id: int, part: int = 1) -> str:
    return f"{PROVIDER_ID_PREFIX}{message_id}" if part == 1 else f"{PROVIDER_ID_PREFIX}{message_id}-{part}"


def callback_token(secret: str, value: str) -> str:
    return hmac.new(secret.encode(), value.encode(), hashlib.sha256).hexdigest()


def concatenation_udh(reference: int, total: int, sequence: int) -> bytes:
    """GSM 03.40 concatenated SMS, 8-bit reference: UDHL, IEI 00, IEDL 03, ref, total, sequence."""
    return bytes([0x05, 0x00, 0x03, reference & 0xFF, total, sequence])


def _default_http_client(gateway: Gateway) -> httpx.Client:
    read = float((gateway.settings or {}).get("timeout_seconds") or DEFAULT_TIMEOUT_SECONDS)
    return httpx.Client(timeout=httpx.Timeout(read, connect=min(read, CONNECT_TIMEOUT_SECONDS)))


# Tests (and anything else that must not touch the network) replace this factory or pass
# ``client`` to the adapter.
http_client_factory: Callable[[Gateway], httpx.Client] = _default_http_client


class _RedactSendsmsPassword(logging.Filter):
    """httpx logs every request URL at INFO, and a sendsms GET carries the password in its query."""

    _PASSWORD = re.compile(r"([?&]password=)[^&\s\"]*")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any("password=" in str(arg) for arg in record.args):
            record.args = tuple(
                self._PASSWORD.sub(r"\1***", str(arg)) if "password=" in str(arg) else arg for arg in record.args
            )
        return True


if not any(isinstance(f, _RedactSendsmsPassword) for f in logging.getLogger("httpx").filters):
    logging.getLogger("httpx").addFilter(_RedactSendsmsPassword())


def _never_reached_kannel(exc: httpx.HTTPError) -> bool:
    """True when the request provably never reached smsbox (safe to retry or fail over)."""
    return isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout | httpx.UnsupportedProtocol)


@register_adapter
class KannelAdapter(GatewayAdapter):
    provider = "kannel"

    def __init__(self, gateway: Gateway, client: httpx.Client | None = None) -> None:
        super().__init__(gateway)
        self._client = client

    # --- configuration ---------------------------------------------------------------------

    def _setting(self, name: str) -> str:
        return str((self.gateway.settings or {}).get(name) or "").strip()

    @property
    def _retry_after(self) -> float:
        value = (self.gateway.settings or {}).get("retry_after_seconds")
        return float(value) if value else DEFAULT_RETRY_AFTER_SECONDS

    def _callback_secret(self) -> str:
        return self.secret("dlr_secret") or self.gateway.webhook_secret

    def _callback_secrets(self) -> list[str]:
        """Every secret a callback may carry: after a rotation the previous one for a while."""
        configured = self.secret("dlr_secret")
        return [configured] if configured else self.gateway.webhook_secrets()

    def dlr_url(self, message_id: int, part: int = 1) -> str:
        """The dlr-url handed to Kannel for one part; %-escapes are expanded by Kannel."""
        base = self._setting("dlr_url_base").rstrip("/")
        part_param = f"&part={part}" if part != 1 else ""
        token = callback_token(self._callback_secret(), provider_id(message_id, part))
        return (
            f"{base}/{self.gateway.code}/receipts?msg={message_id}{part_param}"
            f"&status=%d&answer=%A&ts=%T&smscid=%F&token={token}"
        )

    def inbound_url(self, base: str | None = None) -> str:
        """The sms-service get-url for kannel.conf (``base`` defaults to ``dlr_url_base``)."""
        origin = (base if base is not None else self._setting("dlr_url_base")).rstrip("/")
        token = callback_token(self._callback_secret(), f"{INBOUND_TOKEN_PREFIX}{self.gateway.code}")
        return (
            f"{origin}/{self.gateway.code}/inbound?from=%p&to=%P&text=%b&charset=%C&coding=%c&ts=%T&id=%I&token={token}"
        )

    # --- sending ------------------------------------------------------------------------------

    def send(self, batch: Sequence[OutgoingSms]) -> list[SendOutcome]:
        if not batch:
            return []
        missing = [
            name
            for name, value in (
                ("sendsms_url", self._setting("sendsms_url")),
                ("username", self._setting("username")),
                ("password secret", self.secret("password")),
            )
            if not value
        ]
        if any(sms.request_receipt for sms in batch) and not self._setting("dlr_url_base"):
            missing.append("dlr_url_base")
        if missing:
            logger.error("kannel gateway %s is not configured: missing %s", self.gateway.code, ", ".join(missing))
            outcome = SendOutcome.temporary(UNAVAILABLE, f"Kannel gateway not configured: missing {', '.join(missing)}")
            return [outcome] * len(batch)
        client = self._client or http_client_factory(self.gateway)
        try:
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
                elif outcome.kind == "unknown":
                    stop = SendOutcome.temporary(UNAVAILABLE, "not attempted: an earlier submit got no usable answer")
            return outcomes
        finally:
            if self._client is None:
                client.close()

    def _parts(self, sms: OutgoingSms) -> list[str]:
        try:
            result = analyse(sms.body)
        except SegmentInputError:
            return [sms.body]  # validated when queued; let Kannel judge anything else
        return [part.text for part in result.parts]

    def _send_one(self, client: httpx.Client, sms: OutgoingSms) -> SendOutcome:
        parts = self._parts(sms)
        if len(parts) > MAX_PARTS:
            return SendOutcome.permanent("too_many_parts", f"{len(parts)} parts: at most {MAX_PARTS} can be joined.")
        ids: list[str] = []
        for number, text in enumerate(parts, start=1):
            udh = concatenation_udh(sms.message_id, len(parts), number) if len(parts) > 1 else None
            outcome = self._submit(client, sms, text, number, udh)
            if outcome.kind == "accepted":
                ids.append(provider_id(sms.message_id, number))
                continue
            if number == 1:
                return outcome
            logger.warning(
                "kannel %s: message %s part %s/%s not accepted after earlier parts were: %s",
                self.gateway.code,
                sms.message_id,
                number,
                len(parts),
                outcome.reason,
            )
            return SendOutcome.unknown(
                PARTIAL_SUBMIT,
                f"Parts 1-{number - 1} of {len(parts)} accepted, part {number} not ({outcome.reason}); not resent.",
            )
        return SendOutcome.accepted(ids)

    def _query(self, sms: OutgoingSms, text: str, part: int, udh: bytes | None) -> str:
        params: list[tuple[str, str]] = [
            ("username", self._setting("username")),
            ("password", self.secret("password")),
            ("from", sms.sender_id),
            ("to", sms.destination),
            ("text", text),
            ("coding", "2" if sms.encoding == "UCS-2" else "0"),
            ("charset", "UTF-8"),
        ]
        if self._setting("smsc"):
            params.append(("smsc", self._setting("smsc")))
        if sms.request_receipt:
            params += [("dlr-mask", str(DLR_MASK_ALL)), ("dlr-url", self.dlr_url(sms.message_id, part))]
        elif self._setting("dlr_url_base"):
            params += [("dlr-mask", str(DLR_MASK_REJECT_ONLY)), ("dlr-url", self.dlr_url(sms.message_id, part))]
        query = urlencode(params, quote_via=quote)
        if udh is not None:
            query += "&udh=" + quote_from_bytes(udh, safe="")
        return query

    def _submit(self, client: httpx.Client, sms: OutgoingSms, text: str, part: int, udh: bytes | None) -> SendOutcome:
        url = self._setting("sendsms_url")
        url = f"{url}{'&' if '?' in url else '?'}{self._query(sms, text, part, udh)}"
        try:
            response = client.get(url)
        except httpx.HTTPError as exc:
            # Never log the URL: it carries the sendsms password.
            if _never_reached_kannel(exc):
                return SendOutcome.temporary(UNAVAILABLE, f"Kannel unreachable: {exc.__class__.__name__}")
            logger.warning("kannel %s: message %s sent but no answer: %s", self.gateway.code, sms.message_id, exc)
            return SendOutcome.unknown(SUBMIT_UNKNOWN, f"No answer from Kannel ({exc.__class__.__name__}); not resent.")
        return self._outcome_for_answer(response.status_code, response.text.strip())

    def _outcome_for_answer(self, status: int, body: str) -> SendOutcome:
        reason = f"HTTP {status}: {body[:200]}".strip()
        if status == 202:
            return SendOutcome.accepted([])
        if 200 <= status < 300:
            return SendOutcome.unknown(SUBMIT_UNKNOWN, f"Unexpected answer from Kannel ({reason}); not resent.")
        if status == 403 and "authori" in body.lower():
            # Our credentials, not the recipient: every message would fail the same way.
            logger.error("kannel gateway %s refused our sendsms credentials: %s", self.gateway.code, reason)
            return SendOutcome.temporary(UNAVAILABLE, reason)
        if status == 403 and "not routable" in body.lower():
            return SendOutcome.permanent(NOT_ROUTABLE, reason)
        if status == 404:
            logger.error("kannel gateway %s: sendsms_url answers 404", self.gateway.code)
            return SendOutcome.temporary(UNAVAILABLE, reason)
        if status == 429:
            return SendOutcome.temporary(THROTTLED, reason, retry_after=self._retry_after)
        if 400 <= status < 500:
            return SendOutcome.permanent(REJECTED if status in (400, 403) else f"kannel_http_{status}", reason)
        if status == 504:
            # A proxy in front of smsbox forwarded the request and gave up waiting: it may be sent.
            return SendOutcome.unknown(SUBMIT_UNKNOWN, f"{reason}; not resent.")
        return SendOutcome.temporary(UNAVAILABLE, reason, retry_after=self._retry_after)

    # --- callbacks ---------------------------------------------------------------------------

    @staticmethod
    def _params(request: HttpRequest) -> Mapping[str, str]:
        params = {key: request.GET.get(key, "") for key in request.GET}
        if request.method == "POST":
            params.update({key: request.POST.get(key, "") for key in request.POST})
        return params

    def _check_token(self, supplied: str, value: str) -> None:
        if not supplied:
            raise CallbackRejected(403, "signature_invalid", "Missing token.")
        supplied = supplied.strip().lower()
        # compare_digest against each accepted secret (at most two), without stopping early.
        matches = [hmac.compare_digest(supplied, callback_token(secret, value)) for secret in self._callback_secrets()]
        if not any(matches):
            raise CallbackRejected(403, "signature_invalid", "The callback token does not match.")

    def parse_receipts(self, request: HttpRequest) -> list[ReceiptEvent]:
        params = self._params(request)
        msg, part_param = params.get("msg", "").strip(), params.get("part", "").strip() or "1"
        if not msg.isdecimal() or not int(msg):
            raise CallbackRejected(400, "malformed_callback", "msg (the platform's message id) is required.")
        if not part_param.isdecimal() or not 1 <= int(part_param) <= MAX_PARTS:
            raise CallbackRejected(400, "malformed_callback", "part must be a number from 1 to 255.")
        message_id, part = int(msg), int(part_param)
        pid = provider_id(message_id, part)
        self._check_token(params.get("token", ""), pid)
        status_param = params.get("status", "").strip()
        if not status_param.isdecimal() or not 0 < int(status_param) < 256:
            raise CallbackRejected(400, "malformed_callback", "status must be a Kannel DLR type (1, 2, 4, 8, 16).")
        status = int(status_param)
        answer = params.get("answer", "")
        state, provider_status, error_code = _receipt_state(status, answer)
        return [
            ReceiptEvent(
                provider_message_id=pid,
                status=state,
                provider_status=provider_status,
                error_code=error_code,
                occurred_at=_timestamp(params.get("ts", "")),
                raw={
                    "msg": msg,
                    "part": part,
                    "status": status,
                    "smscid": params.get("smscid", "")[:100],
                    "answer": _RECEIPT_TEXT_RE.sub("", answer)[:200],
                    "ts": params.get("ts", "")[:20],
                },
            )
        ]

    def callback_response(self, kind: Literal["receipts", "inbound"], result: dict[str, Any]) -> HttpResponse:
        # smsbox sends an sms-service's HTTP answer back to the handset as a reply SMS: answer
        # nothing (and configure max-messages = 0 as well).
        if kind == "inbound":
            return HttpResponse("", content_type="text/plain; charset=utf-8")
        return super().callback_response(kind, result)

    def parse_inbound(self, request: HttpRequest) -> list[InboundEvent]:
        params = self._params(request)
        self._check_token(params.get("token", ""), f"{INBOUND_TOKEN_PREFIX}{self.gateway.code}")
        source, destination = params.get("from", "").strip(), params.get("to", "").strip()
        if not source or not destination:
            raise CallbackRejected(400, "malformed_callback", "from and to are required.")
        return [
            InboundEvent(
                source=_e164(source),
                destination=destination,
                body=_inbound_text(request, params),
                provider_message_id=params.get("id", "").strip()[:100],
                raw={
                    "coding": params.get("coding", ""),
                    "charset": params.get("charset", ""),
                    "ts": params.get("ts", "")[:20],
                },
            )
        ]


def _receipt_state(status: int, answer: str) -> tuple[MessageState, str, str]:
    """Kannel's DLR type (and the SMSC's answer) -> our state, provider status, error code."""
    stat = _STAT_RE.search(answer)
    if status & DLR_DELIVERED:
        return MessageState.DELIVERED, f"{status}:{stat.group(1) if stat else 'DELIVRD'}"[:40], ""
    if status & DLR_SMSC_REJECTED:
        nack = _NACK_RE.match(answer.strip())
        return MessageState.FAILED, f"{status}:NACK"[:40], (nack.group(1) if nack and nack.group(1) else "smsc_reject")
    if status & DLR_UNDELIVERED:
        err = _ERR_RE.search(answer)
        return (
            MessageState.FAILED,
            f"{status}:{stat.group(1) if stat else 'UNDELIV'}"[:40],
            err.group(1) if err else "undelivered",
        )
    label = stat.group(1) if stat else ("ACK" if status & DLR_SMSC_ACCEPTED else "BUFFERED")
    return MessageState.SUBMITTED, f"{status}:{label}"[:40], ""


def _timestamp(value: str) -> datetime | None:
    """Kannel's %T (Unix time), when plausible; otherwise the time of arrival is used."""
    value = value.strip()
    if not value.isdecimal():
        return None
    try:
        moment = datetime.fromtimestamp(int(value), tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None
    now = timezone.now()
    return moment if now - timedelta(days=30) <= moment <= now + timedelta(minutes=5) else None


def _e164(number: str) -> str:
    if number.startswith("00") and number[2:].isdigit():
        return f"+{number[2:]}"
    return f"+{number}" if number.isdigit() else number


def _inbound_text(request: HttpRequest, params: Mapping[str, str]) -> str:
    """The MO text, decoded with the charset Kannel reports (%C): UTF-16BE when smsbox hands over a
    UCS-2 message as is (no mo-recode), UTF-8 otherwise."""
    charset = params.get("charset", "").strip().upper()
    raw: bytes | None = None
    for key, value in parse_qsl(request.META.get("QUERY_STRING", ""), keep_blank_values=True, encoding="latin-1"):
        if key == "text":
            raw = value.encode("latin-1")
    if raw is None:
        return params.get("text", "")
    if charset in _UCS2_CHARSETS:
        return raw.decode("utf-16-be", errors="replace")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")
