"""Keep cardholder data out of logs, receipts, reports and attachments.

PAN is shown as first 6 + last 4 (PCI DSS 3.4); PIN blocks, CVV and track data are never shown.
"""

from __future__ import annotations

import re

_PAN_RE = re.compile(r"(?<!\d)(\d{6})(\d{3,9})(\d{4})(?!\d)")
# Track 2 / track-2-equivalent: PAN, separator ('=' or 'D'), YYMM, service code, discretionary.
_TRACK2_RE = re.compile(r"(?<![0-9A-Fa-f])(\d{12,19})[=Dd](\d{4})(\d{3})([0-9A-Fa-f]*)")


def mask_pan(pan: str) -> str:
    """``'6212345678901234'`` → ``'621234******1234'``.  Short or non-digit input is fully masked."""
    digits = pan.strip().rstrip("Ff")
    if not digits.isdigit() or len(digits) < 13:
        return "*" * len(digits)
    return digits[:6] + "*" * (len(digits) - 10) + digits[-4:]


def scrub(text: str) -> str:
    """Mask every PAN-like digit run and blank track-2 data in free text (logs, transcripts)."""
    text = _TRACK2_RE.sub(lambda m: mask_pan(m.group(1)) + "=****", text)
    return _PAN_RE.sub(lambda m: mask_pan(m.group(0)), text)
