"""sms_marketing.performance_snapshot.record: keep a result a person or an outside source reported.

A snapshot is stored beside the computed figures and never changes them. It must say where it came
from (source kind and name), what it covers (date range, gateway), how conversions were attributed,
and carry evidence: an uploaded file whose sha256 is computed here, or a link with the hash its
recorder states (the server never fetches links, so that hash is marked unverified).

The uniqueness key is subject + source + date range + gateway. Recording a key that already has a
current snapshot is an overwrite: it names the current version's token, is governed
(``performance_snapshot.record`` with the ``overwrites_existing`` fact) and, once approved, adds a
version; the old one stays, marked superseded. An overwrite never executes without an approval: with
no enabled policy it is refused rather than silently applied.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit

from django.apps import apps
from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction
from django.utils import timezone

from campaigns.access import campaign_access
from compliance.governance import Checked, GovernedAction, governed_write, register_action
from compliance.models import ActionRequest, ActionType
from gateways.models import Gateway
from reporting.errors import ReportingErrorCode
from reporting.models import (
    SNAPSHOT_AMOUNTS,
    SNAPSHOT_COUNTS,
    SNAPSHOT_METRICS,
    EvidenceKind,
    PerformanceSnapshot,
    SnapshotSource,
    SnapshotSubject,
    evidence_storage,
)
from reporting.snapshot_selectors import snapshot_dict
from smsplatform.kernel.actor import Actor
from smsplatform.kernel.audit import audit_record
from smsplatform.kernel.errors import ApplicationError, ErrorCode, permission_denied
from smsplatform.kernel.versioning import parse_version_token, stale_token_error, version_token

PERMISSION = "reporting.add_performancesnapshot"
LABEL = "performance_snapshot"
# Decoded size of an uploaded evidence file: it travels base64 in a JSON body (MCP, REST).
MAX_EVIDENCE_BYTES = 1_500_000
MAX_RANGE_DAYS = 400
# The automations app's flow model, looked up by name (reporting does not import the automations app).
FLOW_MODEL: str = "automations.Flow"
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
CURRENCY_RE = re.compile(r"^[A-Z]{3}$")
ATTRIBUTION_KEYS = {"model", "click_window_hours", "delivery_window_hours", "coupon_codes", "refunds_deducted", "note"}
HINT = "Record what the source reported, as it reported it; the campaign report holds our own figures."


def _error(message: str, field: str, hint: str = HINT) -> ApplicationError:
    """A value no source can truthfully report."""
    return ApplicationError(ReportingErrorCode.SNAPSHOT_IMPOSSIBLE_VALUE, message, field=field, hint=hint)


def _invalid(message: str, field: str, hint: str = HINT) -> ApplicationError:
    return ApplicationError(ErrorCode.VALIDATION_ERROR, message, field=field, hint=hint)


# Validation -------------------------------------------------------------------------------------


def _date(value: Any, field: str) -> date:
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise _invalid(f"{field} must be a date (YYYY-MM-DD).", field) from None


def _count(value: Any, field: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(f"{field} must be a whole number.", field)
    if value < 0:
        raise _error(f"{field} cannot be negative ({value}).", field)
    if value > 10**12:
        raise _error(f"{field} is beyond any possible volume ({value}).", field)
    return value


def _amount(value: Any, field: str) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise _invalid(f'{field} must be an amount such as "1234.50".', field)
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise _invalid(f'{field} must be an amount such as "1234.50".', field) from None
    if not amount.is_finite():
        raise _invalid(f"{field} must be a finite amount.", field)
    if amount < 0:
        raise _error(f"{field} cannot be negative ({amount}).", field)
    if amount >= Decimal(10) ** 12 or amount.as_tuple().exponent < -4:  # type: ignore[operator]
        raise _invalid(f"{field} must be below 10^12 with at most 4 decimals.", field)
    return amount


def _metrics(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise _invalid("metrics must be an object.", "metrics")
    unknown = sorted(set(raw) - set(SNAPSHOT_COUNTS) - set(SNAPSHOT_AMOUNTS))
    if unknown:
        raise _invalid(
            f"metrics.{unknown[0]} is not a snapshot metric.",
            f"metrics.{unknown[0]}",
            hint=f"Metrics: {', '.join(SNAPSHOT_METRICS)}; gateway figures go in gateway_performance.",
        )
    counts = {name: _count(raw.get(name), f"metrics.{name}") for name in SNAPSHOT_COUNTS}
    amounts = {name: _amount(raw.get(name), f"metrics.{name}") for name in SNAPSHOT_AMOUNTS}
    if all(v is None for v in (*counts.values(), *amounts.values())):
        raise _invalid("A snapshot reports at least one metric.", "metrics")
    # What no source can truthfully report: more outcomes than messages, more unique clickers
    # than clicks, more people opting out than were sent to.
    sent, delivered, failed = counts["sent"], counts["delivered"], counts["failed"]
    if sent is not None:
        for name in ("delivered", "failed", "opt_outs", "unique_clicks"):
            if counts[name] is not None and counts[name] > sent:  # type: ignore[operator]
                raise _error(f"metrics.{name} ({counts[name]}) cannot exceed metrics.sent ({sent}).", f"metrics.{name}")
        if delivered is not None and failed is not None and delivered + failed > sent:
            raise _error(
                f"metrics.delivered + metrics.failed ({delivered + failed}) cannot exceed metrics.sent ({sent}).",
                "metrics.failed",
            )
    if delivered is not None and counts["unique_clicks"] is not None and counts["unique_clicks"] > delivered:
        raise _error(
            f"metrics.unique_clicks ({counts['unique_clicks']}) cannot exceed metrics.delivered ({delivered}).",
            "metrics.unique_clicks",
        )
    if (
        counts["clicks"] is not None
        and counts["unique_clicks"] is not None
        and counts["unique_clicks"] > counts["clicks"]
    ):
        raise _error(
            f"metrics.unique_clicks ({counts['unique_clicks']}) cannot exceed metrics.clicks ({counts['clicks']}).",
            "metrics.unique_clicks",
        )
    if counts["conversions"] == 0 and amounts["revenue"] not in (None, Decimal(0)):
        raise _error("metrics.revenue needs at least one conversion (metrics.conversions is 0).", "metrics.revenue")
    return {**counts, **{k: (None if v is None else str(v)) for k, v in amounts.items()}}


def _gateway_performance(raw: Any) -> dict[str, Any]:
    if raw in (None, {}):
        return {}
    if not isinstance(raw, dict) or len(raw) > 30:
        raise _invalid("gateway_performance must be an object of at most 30 named figures.", "gateway_performance")
    out: dict[str, Any] = {}
    for name, value in raw.items():
        field = f"gateway_performance.{name}"
        if not re.match(r"^[a-z][a-z0-9_]{0,49}$", str(name)):
            raise _invalid(f"{field}: names are lower-case letters, digits and '_'.", field)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _invalid(f"{field} must be a number.", field)
        if value < 0:
            raise _error(f"{field} cannot be negative ({value}).", field)
        # Rates and shares are fractions: 0.97, not 97.
        if name.endswith(("_rate", "_share")) and value > 1:
            raise _error(f"{field} is a fraction between 0 and 1 (got {value}).", field)
        out[str(name)] = value
    return out


def _attribution(raw: Any, metrics: dict[str, Any]) -> dict[str, Any]:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise _invalid("attribution must be an object.", "attribution")
    unknown = sorted(set(raw) - ATTRIBUTION_KEYS)
    if unknown:
        raise _invalid(
            f"attribution.{unknown[0]} is not an attribution setting.",
            f"attribution.{unknown[0]}",
            hint=f"Settings: {', '.join(sorted(ATTRIBUTION_KEYS))}.",
        )
    out: dict[str, Any] = {}
    if "model" in raw:
        if not isinstance(raw["model"], str) or not re.match(r"^[a-z_]{2,40}$", raw["model"]):
            raise _invalid("attribution.model is a name such as last_touch or first_touch.", "attribution.model")
        out["model"] = raw["model"]
    for name in ("click_window_hours", "delivery_window_hours"):
        if name in raw and raw[name] is not None:
            value = raw[name]
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 24 * 365:
                raise _invalid(f"attribution.{name} is a whole number of hours (0-8760).", f"attribution.{name}")
            out[name] = value
    if "coupon_codes" in raw:
        if not isinstance(raw["coupon_codes"], bool):
            raise _invalid("attribution.coupon_codes is true or false.", "attribution.coupon_codes")
        out["coupon_codes"] = raw["coupon_codes"]
    if "refunds_deducted" in raw:
        if not isinstance(raw["refunds_deducted"], bool):
            raise _invalid("attribution.refunds_deducted is true or false.", "attribution.refunds_deducted")
        out["refunds_deducted"] = raw["refunds_deducted"]
    if "note" in raw:
        if not isinstance(raw["note"], str) or len(raw["note"]) > 500:
            raise _invalid("attribution.note is a text of at most 500 characters.", "attribution.note")
        out["note"] = raw["note"]
    # Conversions and revenue mean nothing without the rule that attributed them (safety note).
    if metrics.get("conversions") is not None or metrics.get("revenue") is not None:
        if "model" not in out:
            raise _invalid(
                "Conversions or revenue need attribution.model (the rule the source used).",
                "attribution.model",
                hint='e.g. {"model": "last_touch", "click_window_hours": 120}; state the rule the source used.',
            )
        if "click_window_hours" not in out and "delivery_window_hours" not in out:
            raise _invalid(
                "Conversions or revenue need the attribution window the source used.",
                "attribution.click_window_hours",
                hint="State click_window_hours and/or delivery_window_hours.",
            )
    return out


def _evidence(raw: Any) -> tuple[dict[str, Any], bytes | None]:
    """The evidence as frozen in the payload, and the file's bytes (to store) when one was sent."""
    if not isinstance(raw, dict) or not raw:
        raise ApplicationError(
            ReportingErrorCode.SNAPSHOT_EVIDENCE_REQUIRED,
            "A snapshot needs evidence: an uploaded file or a link with its sha256.",
            field="evidence",
            hint="Send evidence.file_base64 with evidence.file_name, or evidence.url with evidence.sha256.",
        )
    unknown = sorted(set(raw) - {"file_base64", "file_name", "url", "sha256"})
    if unknown:
        raise _invalid(
            f"evidence.{unknown[0]} cannot be set here.",
            f"evidence.{unknown[0]}",
            hint="Evidence: file_base64 + file_name, or url + sha256.",
        )
    stated = raw.get("sha256")
    if stated is not None:
        if not isinstance(stated, str) or not SHA256_RE.match(stated.lower()):
            raise _invalid("evidence.sha256 is 64 hexadecimal characters.", "evidence.sha256")
        stated = stated.lower()
    has_file, has_url = raw.get("file_base64") not in (None, ""), raw.get("url") not in (None, "")
    if has_file == has_url:
        raise _invalid(
            "Evidence is either a file (file_base64 + file_name) or a link (url + sha256), not both or neither.",
            "evidence",
        )
    if has_url:
        url = raw["url"]
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or len(url) > 1000:
            raise _invalid("evidence.url must be an http(s) link of at most 1000 characters.", "evidence.url")
        if stated is None:
            raise ApplicationError(
                ReportingErrorCode.SNAPSHOT_EVIDENCE_REQUIRED,
                "A link needs the sha256 of what it points to (the server does not fetch it).",
                field="evidence.sha256",
                hint="Hash the exported file (sha256sum) and send the hex digest.",
            )
        return {"kind": EvidenceKind.URL.value, "url": url, "sha256": stated, "verified": False}, None
    name = raw.get("file_name")
    if not isinstance(name, str) or not name.strip() or len(name) > 200 or "/" in name or "\\" in name:
        raise _invalid("evidence.file_name is the file's name (no path), at most 200 characters.", "evidence.file_name")
    try:
        content = base64.b64decode(str(raw["file_base64"]), validate=True)
    except (binascii.Error, ValueError):
        raise _invalid("evidence.file_base64 is not valid base64.", "evidence.file_base64") from None
    if not content:
        raise _invalid("evidence.file_base64 decodes to an empty file.", "evidence.file_base64")
    if len(content) > MAX_EVIDENCE_BYTES:
        raise _invalid(
            f"The evidence file is {len(content)} bytes; at most {MAX_EVIDENCE_BYTES}.",
            "evidence.file_base64",
            hint="Upload a smaller export, or store it elsewhere and send its link with its sha256.",
        )
    digest = hashlib.sha256(content).hexdigest()
    if stated is not None and stated != digest:
        raise ApplicationError(
            ReportingErrorCode.SNAPSHOT_EVIDENCE_HASH_MISMATCH,
            "evidence.sha256 does not match the uploaded file.",
            field="evidence.sha256",
            hint=f"The file's sha256 is {digest}; send the file you meant, or leave sha256 out.",
        )
    return {
        "kind": EvidenceKind.FILE.value,
        "file_name": name.strip(),
        "size": len(content),
        "sha256": digest,
        "verified": True,
    }, content


def _subject(actor: Actor, raw: Any) -> dict[str, Any]:
    if isinstance(raw, dict) and set(raw) - {"campaign_id", "flow_id"}:
        name = sorted(set(raw) - {"campaign_id", "flow_id"})[0]
        raise _invalid(
            f"subject.{name} cannot be set here.", f"subject.{name}", hint="subject: campaign_id or flow_id."
        )
    if not isinstance(raw, dict) or len([k for k in ("campaign_id", "flow_id") if raw.get(k) is not None]) != 1:
        raise _invalid(
            "subject names exactly one of campaign_id or flow_id.", "subject", hint="See sms_marketing.campaigns.list."
        )
    if raw.get("campaign_id") is not None:
        campaign = campaign_access(actor=actor, campaign_id=raw["campaign_id"])
        return {"kind": SnapshotSubject.CAMPAIGN.value, "campaign_id": campaign.pk}
    flow_id = raw["flow_id"]
    if isinstance(flow_id, bool) or not isinstance(flow_id, int) or flow_id < 1:
        raise _invalid("subject.flow_id must be a positive integer.", "subject.flow_id")
    flow_model = apps.get_model(FLOW_MODEL)
    if not flow_model.objects.filter(pk=flow_id).exists():
        raise ApplicationError(
            ErrorCode.NOT_FOUND, f"No flow with id {flow_id}.", field="subject.flow_id", hint="See the flows list."
        )
    return {"kind": SnapshotSubject.FLOW.value, "flow_id": flow_id}


def snapshot_key(subject: dict[str, Any], source: dict[str, Any], date_from: str, date_to: str, gateway: str) -> str:
    target = f"campaign:{subject['campaign_id']}" if subject["kind"] == "campaign" else f"flow:{subject['flow_id']}"
    return f"{target}|{source['kind']}:{source['name'].casefold()}|{date_from}..{date_to}|{gateway or '*'}"


def snapshot_normalise(*, actor: Actor, data: dict[str, Any]) -> tuple[dict[str, Any], bytes | None]:
    """Validate the caller's snapshot and return the payload to freeze, and the evidence bytes."""
    subject = _subject(actor, data.get("subject"))
    source_kind = data.get("source_kind")
    if source_kind not in SnapshotSource.values:
        raise _invalid(
            "source_kind must be one of " + ", ".join(SnapshotSource.values) + ".",
            "source_kind",
        )
    source_name = data.get("source_name")
    if not isinstance(source_name, str) or not source_name.strip() or len(source_name) > 100:
        raise _invalid("source_name names the portal, platform or export (1-100 characters).", "source_name")
    date_from, date_to = _date(data.get("date_from"), "date_from"), _date(data.get("date_to"), "date_to")
    if date_from > date_to:
        raise _error("date_from is after date_to.", "date_from")
    if date_to > timezone.localdate():
        raise _error("date_to is in the future: a snapshot reports results already seen.", "date_to")
    if (date_to - date_from).days > MAX_RANGE_DAYS:
        raise _invalid(f"A snapshot covers at most {MAX_RANGE_DAYS} days.", "date_to")
    gateway = data.get("gateway") or ""
    if gateway and (not isinstance(gateway, str) or not Gateway.objects.filter(code=gateway).exists()):
        raise ApplicationError(
            ErrorCode.NOT_FOUND,
            f"No gateway {gateway!r}.",
            field="gateway",
            hint="Pick a code from sms_marketing.gateways.list.",
        )
    currency = data.get("currency") or "HKD"
    if not isinstance(currency, str) or not CURRENCY_RE.match(currency):
        raise _invalid("currency is a three-letter code such as HKD.", "currency")
    metrics = _metrics(data.get("metrics"))
    evidence, content = _evidence(data.get("evidence"))
    note = data.get("note") or ""
    if not isinstance(note, str) or len(note) > 2000:
        raise _invalid("note is a text of at most 2000 characters.", "note")
    source = {"kind": source_kind, "name": source_name.strip()}
    payload: dict[str, Any] = {
        "subject": subject,
        "source": source,
        "date_from": date_from.isoformat(),
        "date_to": date_to.isoformat(),
        "gateway": gateway,
        "attribution": _attribution(data.get("attribution"), metrics),
        "metrics": metrics,
        "currency": currency,
        "gateway_performance": _gateway_performance(data.get("gateway_performance")),
        "evidence": evidence,
        "note": note,
        "base_version_token": data.get("base_version_token") or None,
        "reason": data.get("reason") or "",
    }
    payload["key"] = snapshot_key(subject, source, payload["date_from"], payload["date_to"], gateway)
    return payload, content


def _evidence_store(evidence: dict[str, Any], content: bytes | None) -> dict[str, Any]:
    """Store an uploaded file under its hash (before the write: a held overwrite keeps only the path
    in its payload). The same bytes land on the same name, so a retry stores nothing twice."""
    if content is None:
        return evidence
    storage = evidence_storage()
    path = f"sha256/{evidence['sha256'][:2]}/{evidence['sha256']}"
    if not storage.exists(path):
        storage.save(path, ContentFile(content))
    return {**evidence, "path": path}


# The governed action -----------------------------------------------------------------------------


def _current(key: str, *, lock: bool = False) -> PerformanceSnapshot | None:
    qs = PerformanceSnapshot.objects.filter(key=key, is_current=True)
    if lock:
        qs = qs.select_for_update()
    return qs.first()


def _check_token(payload: dict[str, Any], current: PerformanceSnapshot | None) -> None:
    if current is None:
        return
    token = payload.get("base_version_token")
    if not token:
        raise ApplicationError(
            ReportingErrorCode.SNAPSHOT_EXISTS,
            f"A snapshot for this subject, source, date range and gateway exists (version {current.version}); "
            "recording it again overwrites it and needs its version token.",
            field="base_version_token",
            hint="Send base_version_token (from this error's details or a snapshot read) to propose the overwrite; "
            "overwrites go through approval and keep the old version.",
            details={
                "snapshot_id": current.pk,
                "current_version_token": version_token(LABEL, current.key, current.version),
            },
        )
    expected = parse_version_token(token, label=LABEL, pk=current.key)
    if expected != current.version:
        raise stale_token_error(label=LABEL, pk=current.key, current_version=current.version)


def _check(actor: Actor, payload: dict[str, Any]) -> Checked:
    # Re-validated on approval: the campaign must still be visible to the requester, and the
    # version named must still be the current one.
    frozen = payload["subject"]
    _subject(actor, {k: frozen[k] for k in ("campaign_id", "flow_id") if frozen.get(k) is not None})
    current = _current(payload["key"])
    if current is None and payload.get("base_version_token"):
        raise _invalid(
            "base_version_token was sent, but no snapshot exists under this key.",
            "base_version_token",
            hint="Leave base_version_token out for a first recording.",
        )
    _check_token(payload, current)
    return Checked(
        facts={
            "overwrites_existing": current is not None,
            "key": payload["key"],
            "current_version": current.version if current else None,
        }
    )


def _execute(actor: Actor, payload: dict[str, Any], request: ActionRequest | None, context: Any) -> dict[str, Any]:
    # Lock the current version (if any) for the rest of the transaction, then re-check the token
    # on the locked row: two overwrites approved at once cannot both supersede the same version.
    current = _current(payload["key"], lock=True)
    _check_token(payload, current)
    if current is not None and request is None:
        raise ApplicationError(
            ReportingErrorCode.APPROVAL_POLICY_MISSING,
            "Overwriting a snapshot goes through approval, and no approval policy applies to this write.",
            field="base_version_token",
            hint="An administrator adds an enabled approval policy for performance_snapshot.record "
            "(condition: overwrites an existing record); then send the overwrite again.",
        )
    now = timezone.now()
    before = None
    if current is not None:
        before = snapshot_dict(current)
        PerformanceSnapshot.objects.filter(pk=current.pk).update(is_current=False, superseded_at=now)
    metrics = payload["metrics"]
    evidence = payload["evidence"]
    subject = payload["subject"]
    try:
        # A savepoint: two first recordings of one key racing leave the loser a coded error.
        with transaction.atomic():
            snapshot = PerformanceSnapshot.objects.create(
                key=payload["key"],
                version=(current.version + 1) if current else 1,
                is_current=True,
                subject_kind=subject["kind"],
                campaign_id=subject.get("campaign_id"),
                flow_id=subject.get("flow_id"),
                source_kind=payload["source"]["kind"],
                source_name=payload["source"]["name"],
                date_from=date.fromisoformat(payload["date_from"]),
                date_to=date.fromisoformat(payload["date_to"]),
                gateway_code=payload["gateway"],
                attribution=payload["attribution"],
                **{name: metrics.get(name) for name in SNAPSHOT_COUNTS},
                **{name: (None if metrics.get(name) is None else Decimal(metrics[name])) for name in SNAPSHOT_AMOUNTS},
                currency=payload["currency"],
                gateway_performance=payload["gateway_performance"],
                evidence_kind=evidence["kind"],
                evidence_file=evidence.get("path", ""),
                evidence_name=evidence.get("file_name", ""),
                evidence_size=evidence.get("size"),
                evidence_url=evidence.get("url", ""),
                evidence_sha256=evidence["sha256"],
                evidence_hash_verified=bool(evidence["verified"]),
                note=payload["note"],
                recorded_by=actor.user,
                recorded_at=now,
                actor_channel=str(actor.channel),
                actor_token_name=actor.token_name,
                reason=payload["reason"],
                action_request_id=request.pk if request else None,
            )
    except IntegrityError:
        raise ApplicationError(
            ReportingErrorCode.SNAPSHOT_EXISTS,
            "Another recording of this snapshot was saved at the same moment.",
            field="base_version_token",
            hint="Read the snapshot again; recording it once more is an overwrite with its token.",
        ) from None
    out = snapshot_dict(snapshot)
    audit_record(
        actor=actor,
        action="performance_snapshot.record",
        object_type="performance_snapshot",
        object_id=snapshot.pk,
        before=before,
        after=out,
        reason=payload["reason"],
        action_request_id=request.pk if request else None,
    )
    return {
        "snapshot": out,
        "overwrote_version": current.version if current else None,
        "base_version_token": version_token(LABEL, snapshot.key, snapshot.version),
        "note": "Stored beside the computed figures; it changes none of them.",
    }


def _summary(payload: dict[str, Any], facts: dict[str, Any]) -> str:
    verb = f"Overwrite v{facts.get('current_version')} of" if facts.get("overwrites_existing") else "Record"
    return f"{verb} performance snapshot {payload['key']}"


register_action(
    GovernedAction(
        action=ActionType.SNAPSHOT_OVERWRITE,
        permission=PERMISSION,
        check=_check,
        execute=_execute,
        summary=_summary,
    )
)


def performance_snapshot_record(
    *, actor: Actor, data: dict[str, Any], idempotency_key: str | None, reason: str = ""
) -> dict[str, Any]:
    """Record a snapshot, or propose an overwrite of the current one (held for approval)."""
    if not actor.has_perm(PERMISSION):
        raise permission_denied(PERMISSION)
    payload, content = snapshot_normalise(actor=actor, data={**data, "reason": reason})
    payload["evidence"] = _evidence_store(payload["evidence"], content)
    return governed_write(
        actor=actor,
        action=ActionType.SNAPSHOT_OVERWRITE,
        payload=payload,
        idempotency_key=idempotency_key,
        reason=reason,
    )


def snapshot_token(snapshot: PerformanceSnapshot) -> str:
    return version_token(LABEL, snapshot.key, snapshot.version)
