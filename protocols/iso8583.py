"""ISO 8583, UnionPay POS dialect (CUPS POS terminal style): spec as data, framing, codec.

Wire layout of one message (see docs/iso8583.md)::

    LEN (2 bytes, big endian, counts everything after it)
    TPDU (5 bytes)   60 | destination (2) | source (2)
    HEADER (6 bytes) app type | version | status<<4 + processing requirement | sub-version (3)
    MTI (2 bytes BCD) | primary bitmap (8 bytes binary) | fields

Numeric fields are BCD; variable lengths (LLVAR / LLLVAR) are BCD.  Framing (length, TPDU,
header) is its own layer: :func:`frame`, :func:`unframe`, :class:`LengthFramer`.  The message
codec (:func:`encode_message` / :func:`decode_message`) wraps pyiso8583 and turns its errors
into :class:`~protocols.errors.DecodeError` naming the field and the byte position.
"""

from __future__ import annotations

import copy
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import iso8583
from iso8583.decoder import DecodeError as _PyDecodeError
from iso8583.encoder import EncodeError as _PyEncodeError

from protocols.crypto import mac_x919, verify_mac
from protocols.digits import ascii_digits
from protocols.errors import DecodeError, FramingError, hexdump
from protocols.masking import mask_pan, render_tlv

__all__ = [
    "Dialect",
    "Header",
    "LengthFramer",
    "PosEntry",
    "RESPONSE_CODES",
    "SENSITIVE_FIELDS",
    "Tpdu",
    "UNIONPAY",
    "describe",
    "encode_with_mac",
    "mac_ok",
    "decode_message",
    "encode_message",
    "frame",
    "response_mti",
    "response_text",
    "split_body",
    "unframe",
    "validate_message",
]

TPDU_LEN = 5
HEADER_LEN = 6
LENGTH_PREFIX = 2
#: The smallest frame body: TPDU + header + MTI + primary bitmap.
MIN_BODY = TPDU_LEN + HEADER_LEN + 2 + 8
#: Longer bodies than this are treated as a broken stream (a UnionPay POS message is < 1 kB).
MAX_BODY = 4096


# --------------------------------------------------------------------------------------------
# The spec as data.  One entry per field: (data encoding, length type, max length, count unit,
# padding, description).  ``_field`` turns a row into pyiso8583's dict form.


def _field(data_enc: str, len_type: int, max_len: int, desc: str, *, nibbles: bool = False,
           left_pad: str | None = None, right_pad: str | None = None,
           len_enc: str = "bcd") -> dict[str, Any]:
    spec: dict[str, Any] = {"data_enc": data_enc, "len_enc": len_enc, "len_type": len_type,
                            "max_len": max_len, "desc": desc}
    if nibbles:
        spec["len_count"] = "nibbles"
    if left_pad is not None:
        spec["left_pad"] = left_pad
    if right_pad is not None:
        spec["right_pad"] = right_pad
    return spec


# len_type with BCD lengths: 0 fixed, 1 LLVAR (1 byte), 2 LLLVAR (2 bytes).
_UNIONPAY_FIELDS: dict[str, dict[str, Any]] = {
    "h": _field("ascii", 0, 0, "Message header (framed separately: TPDU + 6-byte header)"),
    "t": _field("b", 0, 2, "Message type (n4 BCD)"),
    "p": _field("b", 0, 8, "Primary bitmap"),
    "1": _field("b", 0, 8, "Secondary bitmap"),
    "2": _field("b", 1, 19, "PAN (n..19 LLVAR, left-aligned BCD)", nibbles=True, right_pad="0"),
    "3": _field("b", 0, 3, "Processing code (n6)"),
    "4": _field("b", 0, 6, "Amount, transaction (n12, minor units)"),
    "11": _field("b", 0, 3, "System trace audit number (n6)"),
    "12": _field("b", 0, 3, "Local time hhmmss (n6)"),
    "13": _field("b", 0, 2, "Local date MMDD (n4)"),
    "14": _field("b", 0, 2, "Expiry date YYMM (n4)"),
    "15": _field("b", 0, 2, "Settlement date MMDD (n4)"),
    "22": _field("b", 0, 3, "POS entry mode (n3, left-aligned)", nibbles=True, right_pad="0"),
    "23": _field("b", 0, 3, "Card sequence number (n3, right-aligned)", nibbles=True,
                 left_pad="0"),
    "25": _field("b", 0, 1, "POS condition code (n2)"),
    "26": _field("b", 0, 1, "POS PIN capture code (n2)"),
    "32": _field("b", 1, 11, "Acquiring institution id (n..11 LLVAR)", nibbles=True,
                 right_pad="0"),
    "35": _field("b", 1, 37, "Track 2 data (z..37 LLVAR, separator D)", nibbles=True,
                 right_pad="0"),
    "36": _field("b", 2, 104, "Track 3 data (z...104 LLLVAR)", nibbles=True, right_pad="0"),
    "37": _field("ascii", 0, 12, "Retrieval reference number (an12)"),
    "38": _field("ascii", 0, 6, "Authorization id response (an6)"),
    "39": _field("ascii", 0, 2, "Response code (an2)"),
    "41": _field("ascii", 0, 8, "Card acceptor terminal id (ans8)"),
    "42": _field("ascii", 0, 15, "Card acceptor id / merchant id (ans15)"),
    "44": _field("ascii", 1, 25, "Additional response data (an..25 LLVAR)"),
    "48": _field("ascii", 2, 322, "Additional data, private: settlement totals in 0500/0510, "
                                  "upload count in 0320 (ans...322 LLLVAR)"),
    "49": _field("ascii", 0, 3, "Currency code, transaction (an3)"),
    "52": _field("b", 0, 8, "PIN data (b64, ISO 9564 format 0 under PIK)"),
    "53": _field("b", 0, 8, "Security related control information (n16)"),
    "54": _field("ascii", 2, 20, "Additional amounts (an...020 LLLVAR)"),
    "55": _field("b", 2, 255, "ICC system related data (b...255 LLLVAR)"),
    "60": _field("b", 2, 17, "Reserved private: type, batch, net mgmt code (n...017 LLLVAR)",
                 nibbles=True, right_pad="0"),
    "61": _field("b", 2, 29, "Original message data (n...029 LLLVAR)", nibbles=True,
                 right_pad="0"),
    "62": _field("b", 2, 512, "Reserved private: working keys in 0810 (b...512 LLLVAR)"),
    "63": _field("ascii", 2, 63, "Reserved private: operator no / org code (ans...063 LLLVAR)"),
    "64": _field("b", 0, 8, "MAC (b64)"),
}


def _freeze(spec: Mapping[str, Mapping[str, Any]]) -> Mapping[str, Mapping[str, Any]]:
    return MappingProxyType({k: MappingProxyType(dict(v)) for k, v in spec.items()})


@dataclass(frozen=True)
class Dialect:
    """One ISO 8583 dialect: a name and its frozen spec (never mutated at run time)."""

    name: str
    spec: Mapping[str, Mapping[str, Any]]
    #: Numeric fields (BCD digits only) validated before encoding.
    numeric: frozenset[str] = field(default_factory=frozenset)

    def pyiso_spec(self) -> dict[str, dict[str, Any]]:
        """A fresh mutable copy in pyiso8583's format (pyiso8583 wants plain dicts)."""
        return {k: dict(v) for k, v in self.spec.items()}

    def derive(self, name: str, **overrides: Mapping[str, Any]) -> Dialect:
        """A new dialect from this one with some field specs replaced (a copy, not a mutation)."""
        spec = {k: dict(v) for k, v in self.spec.items()}
        for key, value in overrides.items():
            spec[key.removeprefix("f")] = dict(value)
        return Dialect(name, _freeze(spec), self.numeric)


UNIONPAY = Dialect(
    "unionpay-pos",
    _freeze(_UNIONPAY_FIELDS),
    frozenset({"2", "3", "4", "11", "12", "13", "14", "15", "22", "23", "25", "26", "32",
               "53", "60", "61"}),
)

#: Response codes of the dialect (field 39) and their meaning.
RESPONSE_CODES: Mapping[str, str] = MappingProxyType({
    "00": "APPROVED",
    "03": "INVALID MERCHANT",
    "05": "DO NOT HONOUR",
    "12": "INVALID TRANSACTION",
    "14": "INVALID CARD",
    "22": "SIGN IN AGAIN",
    "25": "UNABLE TO LOCATE ORIGINAL",
    "30": "FORMAT ERROR",
    "41": "LOST CARD",
    "43": "STOLEN CARD",
    "51": "INSUFFICIENT FUNDS",
    "54": "EXPIRED CARD",
    "55": "WRONG PIN",
    "61": "EXCEEDS AMOUNT LIMIT",
    "62": "RESTRICTED CARD",
    "64": "ORIGINAL AMOUNT INCORRECT",
    "75": "PIN TRIES EXCEEDED",
    "77": "BATCH MISMATCH",
    "91": "ISSUER UNAVAILABLE",
    "94": "DUPLICATE TRANSACTION",
    "96": "SYSTEM MALFUNCTION",
    "97": "TERMINAL NOT REGISTERED",
    "A0": "MAC ERROR",
})


def response_text(code: str) -> str:
    return RESPONSE_CODES.get(code, f"UNKNOWN RESPONSE {code}")


def response_mti(mti: str) -> str:
    """'0200' → '0210', '0800' → '0810'.  A response MTI (odd third digit) raises DecodeError."""
    if len(mti) != 4 or not mti.isdigit() or int(mti[2]) % 2:
        raise DecodeError(f"response_mti(): {mti!r} is not a request MTI (expected 4 digits, "
                          f"third digit even)")
    return mti[:2] + str(int(mti[2]) + 1) + mti[3]


#: Fields whose content must never appear in evidence or logs.
SENSITIVE_FIELDS = frozenset({"2", "35", "36", "52", "55", "62", "64"})


# --------------------------------------------------------------------------------------------
# Framing


@dataclass(frozen=True)
class Tpdu:
    """Transport protocol data unit: ID (0x60), destination and source addresses (2 bytes each)."""

    destination: int = 0x0003
    source: int = 0x0000
    id: int = 0x60

    def to_bytes(self) -> bytes:
        return bytes([self.id]) + self.destination.to_bytes(2, "big") + self.source.to_bytes(
            2, "big")

    @classmethod
    def from_bytes(cls, data: bytes) -> Tpdu:
        if len(data) != TPDU_LEN:
            raise FramingError(f"Tpdu.from_bytes(): expected {TPDU_LEN} bytes, got "
                               f"{hexdump(data)}")
        if data[0] != 0x60:
            raise FramingError(f"Tpdu.from_bytes(): TPDU id byte is 0x{data[0]:02x}, expected "
                               f"0x60 in {hexdump(data)}")
        return cls(destination=int.from_bytes(data[1:3], "big"),
                   source=int.from_bytes(data[3:5], "big"), id=data[0])

    def swapped(self) -> Tpdu:
        """The TPDU of a response: destination and source exchanged."""
        return Tpdu(destination=self.source, source=self.destination, id=self.id)


@dataclass(frozen=True)
class Header:
    """UnionPay 6-byte application header.

    application type (1 byte BCD, 0x60), version (1 byte, 0x31), one byte holding the terminal
    status (high nibble) and the processing requirement (low nibble; the host sets 3 = "sign in
    again"), and a 3-byte software sub-version.
    """

    app_type: int = 0x60
    version: int = 0x31
    terminal_status: int = 0
    processing_requirement: int = 0
    sub_version: bytes = b"\x31\x00\x00"

    def __post_init__(self) -> None:
        if not (0 <= self.terminal_status <= 15 and 0 <= self.processing_requirement <= 15):
            raise FramingError(
                f"Header: terminal_status and processing_requirement are nibbles (0..15); got "
                f"{self.terminal_status}, {self.processing_requirement}")
        if len(self.sub_version) != 3:
            raise FramingError(f"Header: sub_version must be 3 bytes, got "
                               f"{hexdump(self.sub_version)}")

    def to_bytes(self) -> bytes:
        return bytes([self.app_type, self.version,
                      (self.terminal_status << 4) | self.processing_requirement]) + \
            self.sub_version

    @classmethod
    def from_bytes(cls, data: bytes) -> Header:
        if len(data) != HEADER_LEN:
            raise FramingError(f"Header.from_bytes(): expected {HEADER_LEN} bytes, got "
                               f"{hexdump(data)}")
        return cls(app_type=data[0], version=data[1], terminal_status=data[2] >> 4,
                   processing_requirement=data[2] & 0x0F, sub_version=bytes(data[3:6]))

    def with_requirement(self, processing_requirement: int) -> Header:
        return Header(self.app_type, self.version, self.terminal_status, processing_requirement,
                      self.sub_version)


def frame(msg_bytes: bytes, tpdu: Tpdu, header: Header) -> bytes:
    """Length prefix + TPDU + header + ISO 8583 message (MTI, bitmap, fields)."""
    body = tpdu.to_bytes() + header.to_bytes() + bytes(msg_bytes)
    if len(body) > MAX_BODY:
        raise FramingError(f"frame(): body of {len(body)} bytes exceeds the maximum {MAX_BODY}")
    return len(body).to_bytes(LENGTH_PREFIX, "big") + body


def unframe(data: bytes) -> tuple[Tpdu, Header, bytes]:
    """Split one complete frame (with its 2-byte length) into TPDU, header and payload."""
    if len(data) < LENGTH_PREFIX:
        raise FramingError(f"unframe(): no length prefix in {hexdump(data)}")
    declared = int.from_bytes(data[:LENGTH_PREFIX], "big")
    body = data[LENGTH_PREFIX:]
    if declared != len(body):
        raise FramingError(f"unframe(): length prefix says {declared} bytes, frame carries "
                           f"{len(body)}: {hexdump(bytes(data), 16)}")
    return split_body(body)


def split_body(body: bytes) -> tuple[Tpdu, Header, bytes]:
    """Split a frame body (after the length prefix) into TPDU, header and payload."""
    if len(body) < TPDU_LEN + HEADER_LEN:
        raise FramingError(f"unframe(): body of {len(body)} bytes is shorter than TPDU + header "
                           f"({TPDU_LEN + HEADER_LEN}): {hexdump(bytes(body), 16)}")
    tpdu = Tpdu.from_bytes(bytes(body[:TPDU_LEN]))
    header = Header.from_bytes(bytes(body[TPDU_LEN:TPDU_LEN + HEADER_LEN]))
    return tpdu, header, bytes(body[TPDU_LEN + HEADER_LEN:])


class LengthFramer:
    """Stream reassembler: feed TCP bytes, get complete frames (length prefix included).

    A declared length below the TPDU + header + MTI + bitmap minimum or above *max_body* means
    the stream is not (or no longer) this protocol: :class:`FramingError`, and the framer stays
    broken (the connection must be dropped) until :meth:`reset`.
    """

    def __init__(self, max_body: int = MAX_BODY, min_body: int = MIN_BODY) -> None:
        self.max_body = max_body
        self.min_body = min_body
        self._buf = bytearray()
        self._broken: str | None = None

    @property
    def pending(self) -> int:
        """Bytes received that do not yet form a complete frame."""
        return len(self._buf)

    def reset(self) -> None:
        self._buf.clear()
        self._broken = None

    def feed(self, data: bytes) -> list[bytes]:
        if self._broken is not None:
            raise FramingError(f"LengthFramer.feed(): stream already broken ({self._broken}); "
                               f"reset() or drop the connection")
        self._buf += data
        frames: list[bytes] = []
        while len(self._buf) >= LENGTH_PREFIX:
            declared = int.from_bytes(self._buf[:LENGTH_PREFIX], "big")
            if not self.min_body <= declared <= self.max_body:
                self._broken = (f"length prefix {declared} outside {self.min_body}.."
                                f"{self.max_body}")
                raise FramingError(
                    f"LengthFramer.feed(): length prefix {declared} is outside "
                    f"{self.min_body}..{self.max_body} bytes at {hexdump(bytes(self._buf), 16)}")
            total = LENGTH_PREFIX + declared
            if len(self._buf) < total:
                break
            frames.append(bytes(self._buf[:total]))
            del self._buf[:total]
        return frames


# --------------------------------------------------------------------------------------------
# Message codec


def _non_decimal(doc: Mapping[str, str], dialect: Dialect) -> tuple[str, int] | None:
    """The first numeric field of *doc* (in field order) holding something other than the
    ASCII digits 0-9, and the index of the first such character; None when there is none."""
    for key in sorted(dialect.numeric, key=int):
        value = doc.get(key)
        if value is not None and not ascii_digits(value):
            return key, next((i for i, ch in enumerate(value) if not ascii_digits(ch)), 0)
    return None


def _check_numeric(doc: Mapping[str, str], dialect: Dialect) -> None:
    bad = _non_decimal(doc, dialect)
    if bad is not None:
        key = bad[0]
        shown = "(sensitive, not shown)" if key in SENSITIVE_FIELDS else repr(doc[key])
        raise DecodeError(f"encode_message(): field {key} must be decimal digits; got {shown}")


def _field_label(key: str, dialect: Dialect) -> str:
    """``'4'`` → ``'field 4 (Amount, transaction)'``: the spec's description up to its format or details."""
    desc = str(dialect.spec.get(key, {}).get("desc", "")).split(" (", 1)[0].split(":", 1)[0]
    return f"field {key} ({desc})" if desc else f"field {key}"


def _field_offsets(encoded: Mapping[str, Mapping[str, bytes]]) -> dict[str, int]:
    """Where each field's data starts in the message pyiso8583 encoded (MTI at byte 0)."""
    order = ["t", "p", *(["1"] if "1" in encoded else []),
             *sorted((k for k in encoded if k.isdigit() and k != "1"), key=int)]
    offsets: dict[str, int] = {}
    pos = 0
    for key in order:
        part = encoded.get(key)
        if part is None:
            continue
        pos += len(part.get("len", b""))
        offsets[key] = pos
        pos += len(part.get("data", b""))
    return offsets


def validate_message(doc: Mapping[str, str], dialect: Dialect = UNIONPAY) -> None:
    """Check a message beyond what :func:`decode_message` reads: every field encodes under the
    dialect, and every numeric field holds decimal digits only.

    Decoding stays lenient on purpose: a numeric field is BCD, and a byte damaged on the way
    (the injector's corrupt_byte) leaves an A-F nibble there; the host must still read such a
    request to answer it (A0 when its MAC fails).  Whoever acts on a request validates it
    first: :class:`DecodeError` names the field, the nibble and its byte in the message
    (as :func:`encode_message` lays it out, which is how it came on the wire); a sensitive
    field's nibble is not shown."""
    work = {k: v for k, v in dict(doc).items() if k not in ("p", "1", "h")}
    mti = work.get("t", "?")
    try:
        raw, encoded = iso8583.encode(work, dialect.pyiso_spec())
    except _PyEncodeError as exc:
        raise DecodeError(f"validate_message(): {_field_label(exc.field, dialect)}: {exc.msg} "
                          f"(MTI {mti}, dialect {dialect.name})") from None
    bad = _non_decimal(work, dialect)
    if bad is None:
        return
    key, index = bad
    value = work[key]
    if not value:
        raise DecodeError(f"validate_message(): {_field_label(key, dialect)}: empty; a numeric "
                          f"field holds one digit at least (MTI {mti})")
    spec = dialect.spec[key]
    pad = len(value) % 2 if "left_pad" in spec else 0  # a left pad nibble comes first
    at = _field_offsets(encoded).get(key, 0) + (index + pad) // 2
    shown = "" if key in SENSITIVE_FIELDS else f" {value[index]!r}"
    raise DecodeError(
        f"validate_message(): {_field_label(key, dialect)}: non-decimal nibble{shown} at byte "
        f"{at} of {len(raw)} (digit {index + 1} of {len(value)}; MTI {mti})"
        + ("; sensitive field, value not shown" if key in SENSITIVE_FIELDS else ""))


def encode_message(doc: Mapping[str, str], dialect: Dialect = UNIONPAY) -> bytes:
    """MTI + bitmap + fields.  *doc* is not modified (pyiso8583 adds bitmap keys to a copy)."""
    work = {k: v for k, v in copy.deepcopy(dict(doc)).items() if k not in ("p", "1", "h")}
    _check_numeric(work, dialect)
    try:
        raw, _ = iso8583.encode(work, dialect.pyiso_spec())
    except _PyEncodeError as exc:
        raise DecodeError(f"encode_message(): field {exc.field}: {exc.msg} "
                          f"(MTI {work.get('t', '?')}, dialect {dialect.name})") from None
    return bytes(raw)


def decode_message(payload: bytes, dialect: Dialect = UNIONPAY) -> dict[str, str]:
    """Decode MTI + bitmap + fields into a doc (field number string → value string)."""
    try:
        doc, _ = iso8583.decode(bytes(payload), dialect.pyiso_spec())
    except _PyDecodeError as exc:
        where = exc.pos
        if exc.field in SENSITIVE_FIELDS:
            near = "(sensitive field, bytes not shown)"
        else:
            near = "at " + hexdump(bytes(payload[where:where + 16]), 16)
        raise DecodeError(
            f"decode_message(): field {exc.field} at byte {where} of {len(payload)}: {exc.msg}; "
            f"{near}") from None
    except KeyError as exc:  # the bitmap names a field the dialect does not define
        raise DecodeError(f"decode_message(): the bitmap names field {exc.args[0]}, which "
                          f"dialect {dialect.name} does not define ({len(payload)} bytes; "
                          f"bitmap {hexdump(bytes(payload[2:10]), 8)})") from None
    return {k: v for k, v in doc.items() if k not in ("h",)}


MAC_LEN = 8


def encode_with_mac(doc: Mapping[str, str], mak: bytes, dialect: Dialect = UNIONPAY) -> bytes:
    """Encode *doc* with field 64 = ANSI X9.19 MAC (MAK) over MTI .. the last field before 64."""
    work = dict(doc)
    work["64"] = "00" * MAC_LEN
    raw = encode_message(work, dialect)
    mab = raw[:-MAC_LEN]
    return mab + mac_x919(mak, mab)


def mac_ok(payload: bytes, mak: bytes) -> bool:
    """True when *payload* ends with field 64 holding the X9.19 MAC of what precedes it.

    The caller knows field 64 is present (it decoded the payload); the MAC is always last.
    """
    return len(payload) > MAC_LEN and verify_mac(mak, payload[:-MAC_LEN], payload[-MAC_LEN:])


# --------------------------------------------------------------------------------------------
# Evidence

def _icc_summary(hexdata: str) -> str:
    """Field 55 for evidence: its BER-TLV with card data redacted by tag (the one list,
    :data:`protocols.masking.SENSITIVE_TAGS`); bad TLV becomes a note, never an exception."""
    try:
        data = bytes.fromhex(hexdata)
    except ValueError:
        return f"[ICC data, {len(hexdata) // 2} bytes, not hex]"
    return render_tlv(data, style="fields")


def describe(doc: Mapping[str, str]) -> dict[str, str]:
    """A copy of *doc* safe for evidence: PAN masked, track/PIN/MAC/keys redacted, ICC walked."""
    out: dict[str, str] = {}
    for key in sorted(doc, key=lambda k: (not k.isdigit(), int(k) if k.isdigit() else 0, k)):
        value = str(doc[key])
        if key == "2":
            out[key] = mask_pan(value)
        elif key in ("35", "36"):
            pan = value.upper().split("D", 1)[0]
            out[key] = f"[track data redacted, PAN {mask_pan(pan)}]"
        elif key == "52":
            out[key] = "[PIN block redacted]"
        elif key == "55":
            out[key] = _icc_summary(value)
        elif key == "62":
            out[key] = f"[{len(value) // 2} bytes redacted]"
        elif key == "64":
            out[key] = "[MAC present]"
        else:
            out[key] = value
    return out


class PosEntry(enum.StrEnum):
    """Field 22, POS entry mode (UnionPay convention, n3): digits 1-2 how the PAN was read,
    digit 3 the terminal's PIN entry capability (1: it can take a PIN; 2 would be a terminal
    without a PIN pad).  The simulated terminal has a PIN pad: every code it sends ends in 1.
    A fallback is a stripe read of a chip card whose chip failed (digits 80)."""

    CHIP = "051"  # 05 integrated circuit card (contact)
    SWIPE = "021"  # 02 magnetic stripe
    TAP = "071"  # 07 contactless IC (qPBOC / QuickPass)
    FALLBACK = "801"  # 80 fallback: the chip failed, the stripe was read
