"""Money in words for people and agents: always with its currency, never a Python repr.

Facts and answers keep amounts as strings or ``{currency: amount}`` maps (what policies and
clients compute with); ``money_text`` is how a message, a summary or a hint says them.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any


def money_text(value: Any, currency: str | None = None) -> str:
    """``HKD 26.60``; a ``{currency: amount}`` map as ``HKD 26.60 + USD 1.00``; an amount without a
    known currency as the bare amount with two decimals. Unknown or empty: ``unknown``."""
    if isinstance(value, Mapping):
        parts = [money_text(amount, str(code)) for code, amount in sorted(value.items())]
        return " + ".join(parts) if parts else "unknown"
    if value is None or value == "":
        return "unknown"
    try:
        amount = Decimal(str(value)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    except InvalidOperation:
        return "unknown"
    return f"{currency} {amount}" if currency else str(amount)
