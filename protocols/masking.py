"""Keep cardholder data out of logs, receipts, reports and attachments.

PAN is shown as first 6 + last 4 (PCI DSS 3.4); PIN blocks, CVV and track data are never shown.

Free text (logs, transcripts, receipts) goes through :func:`scrub`, which masks whatever looks
like a PAN or track 2.  EMV data goes through :func:`render_tlv`, which masks by tag
(:data:`SENSITIVE_TAGS`), so an AID or a label is never mistaken for a PAN.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Literal

from protocols import tlv
from protocols.digits import ascii_digits

_PAN_RE = re.compile(r"(?<!\d)(\d{6})(\d{3,9})(\d{4})(?!\d)")
# Track 2 / track-2-equivalent: PAN, separator ('=' or 'D'), YYMM, service code, discretionary.
_TRACK2_RE = re.compile(r"(?<![0-9A-Fa-f])(\d{12,19})[=Dd](\d{4})(\d{3})([0-9A-Fa-f]*)")
# Track 1 (format B): PAN ^ NAME ^ YYMM, service code, discretionary data up to the end sentinel.
_TRACK1_RE = re.compile(r"%?B(\d{12,19})\^[^^\n]{0,26}\^\d{7}[^?\s]*")


_MASKED_BCD = re.compile(r"(\d{6})[Ff]{3,9}(\d{4})")
"""A PAN masked in place in a capture (``rigs.network.capture``): digits between are F."""


def mask_pan(pan: str) -> str:
    """``'6212345678901234'`` → ``'621234******1234'``.  Short or non-digit input is fully masked."""
    digits = pan.strip().rstrip("Ff")
    if not ascii_digits(digits) or len(digits) < 13:
        masked = _MASKED_BCD.fullmatch(pan.strip())  # already masked in a capture: 621483FF…
        if masked is not None:
            return masked.group(1) + "*" * (len(pan.strip()) - 10) + masked.group(2)
        return "*" * len(digits)
    return digits[:6] + "*" * (len(digits) - 10) + digits[-4:]


def scrub(text: str) -> str:
    """Mask every PAN-like digit run and blank track data (track 1, track 2) in free text (logs,
    transcripts)."""
    text = _TRACK1_RE.sub(lambda m: mask_pan(m.group(1)) + "^****", text)
    text = _TRACK2_RE.sub(lambda m: mask_pan(m.group(1)) + "=****", text)
    return _PAN_RE.sub(lambda m: mask_pan(m.group(0)), text)


# -- EMV data objects ---------------------------------------------------------------------------

class TagMask(enum.Enum):
    """How a sensitive EMV data object is shown."""

    PAN = "pan"      # a PAN: first 6 / last 4
    BLANK = "blank"  # track data, names, PIN data, CVC3s: never shown, only their length


#: The one list of EMV tags that hold card data, and how each is masked (the APDU trace of
#: rigs.cards and ISO 8583 field 55 in protocols.iso8583 both render through :func:`render_tlv`).
#: Everything else (AID 4F/84, label 50, cryptograms, TVR, amounts…) is shown in clear.
SENSITIVE_TAGS: Mapping[int, TagMask] = MappingProxyType({
    0x5A: TagMask.PAN,      # Application PAN
    0x57: TagMask.BLANK,    # Track 2 Equivalent Data
    0x56: TagMask.BLANK,    # Track 1 Data
    0x9F6B: TagMask.BLANK,  # Track 2 Data (contactless)
    0x9F1F: TagMask.BLANK,  # Track 1 Discretionary Data
    0x9F20: TagMask.BLANK,  # Track 2 Discretionary Data
    0x5F20: TagMask.BLANK,  # Cardholder Name
    0x9F0B: TagMask.BLANK,  # Cardholder Name Extended
    0x99: TagMask.BLANK,    # Transaction PIN Data
    0x9F62: TagMask.BLANK,  # PCVC3 (Track 1)
    0x9F63: TagMask.BLANK,  # PUNATC (Track 1)
    0x9F64: TagMask.BLANK,  # NATC (Track 1)
    0x9F65: TagMask.BLANK,  # PCVC3 (Track 2)
    0x9F66: TagMask.BLANK,  # PUNATC (Track 2); TTQ for some schemes, blanked all the same
})

TlvStyle = Literal["apdu", "fields"]


def _head(item: tlv.Tlv) -> str:
    return tlv.tag_bytes(item.tag).hex().upper() + tlv.encode_length(len(item.value)).hex().upper()


def _render_item(item: tlv.Tlv, style: TlvStyle) -> str:
    tag = tlv.tag_bytes(item.tag).hex().upper()
    how = SENSITIVE_TAGS.get(item.tag)
    if style == "fields":
        if how is not None:
            return f"{tag}=[redacted {len(item.value)} bytes]"
        if item.children:
            return f"{tag}={{{' '.join(_render_item(c, style) for c in item.children)}}}"
        return f"{tag}={item.value.hex().upper()}"
    head = _head(item)
    if how is TagMask.PAN:
        return f"{head}[{mask_pan(item.value.hex().rstrip('fF'))}]"
    if how is TagMask.BLANK:
        return f"{head}[blanked]"
    if item.children:
        return f"{head}{{{' '.join(_render_item(c, style) for c in item.children)}}}"
    return head + item.value.hex().upper()


def render_tlv(data: bytes, *, style: TlvStyle = "apdu") -> str:
    """Text of a BER-TLV stream with every tag of :data:`SENSITIVE_TAGS` masked by tag.

    ``style="apdu"`` (APDU trace): ``TAG LEN VALUE`` in hex, constructed values in ``{…}``, a
    PAN as ``5A08[621483******0017]``, blanked tags as ``5711[blanked]``.  ``style="fields"``
    (ISO 8583 field 55): ``TAG=VALUE``, every sensitive tag as ``5A=[redacted 8 bytes]`` (the
    PAN is shown masked in field 2 already).  Data that stops being BER-TLV never raises: what
    decoded is shown, then a note saying where and why; the rest is not shown (with no tags to
    go by, it could be anything, card data included).
    """
    parts: list[str] = []
    end = 0
    try:
        for item in tlv.iter_decode(data):
            parts.append(_render_item(item, style))
            end = item.end
    except tlv.TlvError as exc:
        parts.append(f"[not BER-TLV from offset {end}: {exc.problem}; "
                     f"{len(data) - end} bytes not shown]")
    return " ".join(parts)
