"""Phone numbers, parsed and validated with phonenumbers (default region Hong Kong)."""

from __future__ import annotations

from dataclasses import dataclass

import phonenumbers

from smsplatform.kernel.errors import ApplicationError, ErrorCode

DEFAULT_REGION = "HK"


@dataclass(frozen=True)
class Phone:
    e164: str
    country: str


def phone_parse(raw: str, *, field: str = "phone", region: str = DEFAULT_REGION) -> Phone:
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException as exc:
        raise ApplicationError(
            ErrorCode.PHONE_INVALID,
            f"{raw!r} is not a phone number ({exc}).",
            field=field,
            hint="Use E.164 (+85291234567) or a local Hong Kong number.",
        ) from None
    if not phonenumbers.is_valid_number(number):
        raise ApplicationError(
            ErrorCode.PHONE_INVALID,
            f"{raw!r} is not a valid number for its country.",
            field=field,
            hint="Check the digits and the country code.",
        )
    country = phonenumbers.region_code_for_number(number) or ""
    return Phone(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), country)


def phone_mask(e164: str) -> str:
    """+852****4567: enough to recognise, not enough to dial."""
    if len(e164) <= 6:
        return "*" * len(e164)
    return f"{e164[:4]}{'*' * (len(e164) - 8)}{e164[-4:]}"
