"""The gateways' readiness checks (registered with smsplatform.operations.health from apps.py):
every enabled SMPP gateway bound or failing over, and delivery receipts not lagging."""

from __future__ import annotations

from django.conf import settings
from django.utils import timezone

from gateways.models import Gateway, MessageState, OutboundMessage, Provider
from gateways.selectors import bind_status
from smsplatform.operations.health import FAIL, OK, WARN, CheckResult

# Counting outstanding receipts stops here: the figure is for an operator, not an invoice.
RECEIPT_COUNT_CAP = 100_000


def binds_check() -> CheckResult:
    """Each enabled SMPP gateway: bound (ok), down but failing over (warn), down or without a
    worker (fail: its queued messages wait). HTTP gateways have no bind to check."""
    gateways = list(Gateway.objects.filter(enabled=True, provider=Provider.SMPP).prefetch_related("bind_workers"))
    states = {}
    worst = OK
    problems = []
    for gateway in gateways:
        bind = bind_status(gateway, gateway.bind_workers.all()) or {}
        states[gateway.code] = bind.get("state")
        if bind.get("state") == "bound":
            continue
        if bind.get("state") == "down" and bind.get("failing_over_to"):
            worst = FAIL if worst == FAIL else WARN
            problems.append(f"{gateway.code} is down, failing over to {bind['failing_over_to']}")
        else:
            worst = FAIL
            problems.append(f"{gateway.code}: {bind.get('state')} ({bind.get('note') or bind.get('last_error')})")
    return CheckResult("gateway_binds", worst, "; ".join(problems), {"binds": states})


def receipt_lag_check() -> CheckResult:
    """The oldest message still waiting for its receipt, per enabled gateway that sends receipts
    (read by the queue index: the first submitted id, not a sort of every submitted row)."""
    limit = settings.SMS_RECEIPT_LAG_LIMIT_SECONDS
    now = timezone.now()
    lags = {}
    worst = OK
    problems = []
    for gateway in Gateway.objects.filter(enabled=True, receipts_supported=True).only("id", "code"):
        waiting = OutboundMessage.objects.filter(gateway=gateway, state=MessageState.SUBMITTED)
        oldest = waiting.filter(request_receipt=True).order_by("id").values_list("submitted_at", flat=True)[:1]
        submitted_at = next(iter(oldest), None)
        if submitted_at is None:
            continue
        lag = (now - submitted_at).total_seconds()
        outstanding = waiting.values("id")[:RECEIPT_COUNT_CAP].count()
        lags[gateway.code] = {"oldest_seconds": round(lag, 1), "outstanding": outstanding}
        if lag > 2 * limit:
            worst = FAIL
            problems.append(f"{gateway.code}: a receipt outstanding for {int(lag)} s (limit {limit} s)")
        elif lag > limit:
            worst = FAIL if worst == FAIL else WARN
            problems.append(f"{gateway.code}: a receipt outstanding for {int(lag)} s (limit {limit} s)")
    return CheckResult("receipt_lag", worst, "; ".join(problems), {"gateways": lags, "limit_seconds": limit})
