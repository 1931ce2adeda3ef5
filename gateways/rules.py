"""Sender-ID format and usability rules (Hong Kong SSRS first)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateways.errors import GatewayErrorCode
from gateways.models import SenderId, SenderIdKind, SenderIdStatus
from smsplatform.kernel.errors import ApplicationError

ALPHANUMERIC_RE = re.compile(r"^(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}$")
NUMERIC_RE = re.compile(r"^\+?[0-9]{3,15}$")
# SSRS names are '#' + up to 10 more characters (the whole ID stays within 11).
SSRS_RE = re.compile(r"^#(?=.*[A-Za-z])[A-Za-z0-9]{1,10}$")
SSRS_REGION = "HK"


def sender_id_kind(value: str, *, field: str = "sender_id") -> str:
    """Classify a sender ID by its format, or refuse it with the rule it breaks."""
    if value.startswith("#"):
        if not SSRS_RE.match(value):
            raise ApplicationError(
                GatewayErrorCode.SENDER_ID_INVALID_FORMAT,
                f"{value!r} is not a valid SSRS sender ID.",
                field=field,
                hint="An SSRS ID is '#' followed by 1-10 letters or digits, with at least one letter (e.g. #SHOPHK).",
            )
        return SenderIdKind.SSRS
    if NUMERIC_RE.match(value):
        return SenderIdKind.NUMERIC
    if ALPHANUMERIC_RE.match(value) and value == value.strip():
        return SenderIdKind.ALPHANUMERIC
    raise ApplicationError(
        GatewayErrorCode.SENDER_ID_INVALID_FORMAT,
        f"{value!r} is not a valid sender ID.",
        field=field,
        hint="Use up to 11 letters, digits or spaces with at least one letter, or a number of 3-15 digits.",
    )


@dataclass(frozen=True)
class Usability:
    usable: bool
    reason: str


def sender_id_usability(sender: SenderId, country: str) -> Usability:
    country = country.upper()
    if sender.status != SenderIdStatus.REGISTERED:
        return Usability(False, f"status is {sender.status}, not registered")
    if country not in (sender.regions or []):
        return Usability(False, f"not enabled for {country}")
    if sender.value.startswith("#") and country not in (sender.ssrs_registered_regions or []):
        return Usability(False, f"'#' sender IDs need SSRS registration for {country}")
    if sender.value.startswith("#") and country != SSRS_REGION:
        return Usability(False, "'#' sender IDs are a Hong Kong SSRS convention; other networks may reject them")
    return Usability(True, "registered for this region")


def sender_id_check_usable(*, value: str, country: str, field: str = "sender_id") -> SenderId:
    """Refuse a sender ID that may not be used for a live send to ``country``."""
    found = SenderId.objects.filter(value=value).first()
    return sender_id_check_found(value=value, country=country, found=found, field=field)


def sender_id_check_found(*, value: str, country: str, found: SenderId | None, field: str = "sender_id") -> SenderId:
    """``sender_id_check_usable`` once the row is read (``found``: the SenderId of ``value``, or
    None), for a caller that read it beside others; the value's form is checked here too."""
    sender_id_kind(value, field=field)
    if found is None:
        raise ApplicationError(
            GatewayErrorCode.SENDER_ID_UNKNOWN,
            f"Sender ID {value!r} is not registered with the platform.",
            field=field,
            hint="Pick one from sms_marketing.sender_ids.list, or apply with sms_marketing.sender_id.apply.",
        )
    usability = sender_id_usability(found, country)
    if not usability.usable:
        raise ApplicationError(
            GatewayErrorCode.SENDER_ID_NOT_USABLE,
            f"Sender ID {value!r} cannot be used for {country.upper()}: {usability.reason}.",
            field=field,
            hint="Pick a sender ID that sms_marketing.sender_ids.list shows as usable for this region.",
        )
    return found
