"""Rate limits and pumping defence for OTP sends: the interface otp.send and otp.check call.

The otp-abuse branch replaces this module on merge with the real limits (per phone, IP, token
and country from the template's ``limits``) and its pumping defence; until then both functions
accept everything and record nothing.
"""

from __future__ import annotations

from typing import Any


def abuse_check(
    *, limits: dict[str, Any], phone: str, country: str, client_ip: str | None, token_name: str | None
) -> None:
    """Raise ApplicationError(code "rate_limited", with the retry time) when a send must not go."""


def abuse_record_verified(*, phone: str) -> None:
    """Record that a code sent to ``phone`` was verified (the verified share is the pumping signal)."""
