"""Typed parsers for step text: amounts as the merchant types them, volts."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from pytest_bdd import parsers

_AMOUNT_RE = r"\d{1,9}(?:\.\d{2})?"


def parse_amount(text: str) -> int:
    """``'12.34'`` → 1234 minor units (fen)."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"{text!r} is not an amount like 12.34") from None
    return int(value * 100)


parse_amount.pattern = _AMOUNT_RE  # type: ignore[attr-defined]

def parse_number(text: str) -> float:
    """``'6.40'`` → 6.4 (volts, volts per second, amps)."""
    return float(text)


parse_number.pattern = r"\d{1,3}(?:\.\d{1,3})?"  # type: ignore[attr-defined]

EXTRA_TYPES = {"Amount": parse_amount, "Number": parse_number}


def step(text: str) -> parsers.parse:
    """A step pattern with the project's typed fields (``{amount:Amount}``)."""
    return parsers.parse(text, extra_types=EXTRA_TYPES)


def format_amount(minor: int) -> str:
    return f"{minor // 100}.{minor % 100:02d}"


MASKED_PAN_RE = re.compile(r"(?<!\d)\d{6}\*{3,9}\d{4}(?!\d)")
