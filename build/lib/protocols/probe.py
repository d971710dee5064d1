"""Probe link framing: the serial link between the rig's card bank and the probe sitting in the
terminal's card slot.  Specified in docs/probe-link.md; this module is that spec as code.

Frame (all integers big-endian)::

    STX(02) | SEQ(1) | TYPE(1) | LEN(2) | PAYLOAD(LEN) | LRC(1)

LRC is the XOR of SEQ, TYPE, both LEN bytes and every PAYLOAD byte.  LEN ≤ :data:`MAX_PAYLOAD`.
Bytes before an STX are skipped (resynchronisation).  Every request gets exactly one answer
carrying the request's SEQ; see :data:`ANSWERS`.

Besides the contact slot the probe carries the terminal's other card readers: the stripe reader
(``SWIPE``: the tracks as the reader head reads them, :func:`swipe_payload`) and the contactless
field (``TAP``: how many cards are in the field, :func:`tap_payload`; ``CL_POWER_ON`` /
``CL_CAPDU`` / ``CL_POWER_OFF``: the terminal's contactless reader talking to the card there)
and the terminal's code scanner (``SCAN``: the text of a code shown to it, the customer's payment
code, :func:`scan_payload`).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from protocols.errors import DecodeError, FramingError, hexdump

STX = 0x02
HEADER_LEN = 5          # STX SEQ TYPE LEN LEN
MAX_PAYLOAD = 1024

# Retry semantics (docs/probe-link.md): the requester re-sends the identical frame after
# RETRY_INTERVAL without an answer, at most MAX_RETRIES times, then gives up.
RETRY_INTERVAL = 0.5
MAX_RETRIES = 2


class MsgType(enum.IntEnum):
    # rig → probe
    INSERT = 0x10       # a card is in the slot (card-detect closes); answered by STATUS
    REMOVE = 0x11       # the card left the slot; answered by STATUS
    ATR = 0x12          # answer to POWER_ON / CL_POWER_ON: status byte (+ ATR when OK)
    RAPDU = 0x13        # answer to CAPDU / CL_CAPDU: status byte (+ R-APDU when OK)
    SWIPE = 0x14        # a card is swiped through the stripe reader (tracks); answered by STATUS
    TAP = 0x16          # the cards in the contactless field changed (count); answered by STATUS
    SCAN = 0x17         # a code shown to the terminal's scanner (its text); answered by STATUS
    # probe → rig
    POWER_ON = 0x20     # the terminal powers (or resets) the card; answered by ATR
    POWER_OFF = 0x21    # the terminal removed power from the card; answered by ACK
    CAPDU = 0x22        # a command APDU from the terminal; answered by RAPDU
    STATUS = 0x23       # answer to INSERT/REMOVE/SWIPE/TAP: flags byte (see StatusFlag)
    CL_POWER_ON = 0x24  # the contactless reader activates the card in its field; answered by ATR
    CL_POWER_OFF = 0x25  # the contactless reader deactivates it (field reset); answered by ACK
    CL_CAPDU = 0x26     # a command APDU over the contactless field; answered by RAPDU
    # either direction
    ACK = 0x06          # answer to a notification (POWER_OFF)
    NAK = 0x15          # "your last frame arrived damaged, send it again"; SEQ 00


class AnswerStatus(enum.IntEnum):
    OK = 0x00
    MUTE = 0x01         # the card did not answer (no ATR / no R-APDU)
    ABSENT = 0x02       # no card in the slot (or it was removed); contactless: none in the field
    COLLISION = 0x03    # contactless only: more than one card in the field (anticollision)


class StatusFlag(enum.IntFlag):
    CARD_PRESENT = 0x01     # card-detect switch closed
    CARD_POWERED = 0x02     # the terminal has powered the card
    TERMINAL_UP = 0x04      # the terminal side of the probe is powered / connected
    FIELD_CARD = 0x08       # at least one card in the contactless field
    FIELD_COLLISION = 0x10  # more than one card in the contactless field
    FIELD_POWERED = 0x20    # the terminal's contactless reader has activated the card


#: Bits of the STATUS flags byte that carry meaning (the rest are 0).
STATUS_MASK = 0x3F

REQUESTS: frozenset[MsgType] = frozenset({
    MsgType.INSERT, MsgType.REMOVE, MsgType.SWIPE, MsgType.TAP, MsgType.SCAN,
    MsgType.POWER_ON, MsgType.POWER_OFF, MsgType.CAPDU, MsgType.CL_POWER_ON,
    MsgType.CL_POWER_OFF, MsgType.CL_CAPDU})
ANSWERS: Mapping[MsgType, MsgType] = MappingProxyType({
    MsgType.INSERT: MsgType.STATUS,
    MsgType.REMOVE: MsgType.STATUS,
    MsgType.SWIPE: MsgType.STATUS,
    MsgType.TAP: MsgType.STATUS,
    MsgType.SCAN: MsgType.STATUS,
    MsgType.POWER_ON: MsgType.ATR,
    MsgType.POWER_OFF: MsgType.ACK,
    MsgType.CAPDU: MsgType.RAPDU,
    MsgType.CL_POWER_ON: MsgType.ATR,
    MsgType.CL_POWER_OFF: MsgType.ACK,
    MsgType.CL_CAPDU: MsgType.RAPDU,
})
#: Requests the rig originates (the others are the probe's).
RIG_REQUESTS: frozenset[MsgType] = frozenset({
    MsgType.INSERT, MsgType.REMOVE, MsgType.SWIPE, MsgType.TAP, MsgType.SCAN})


@dataclass(frozen=True)
class ProbeFrame:
    seq: int
    type: MsgType
    payload: bytes = b""

    def __post_init__(self) -> None:
        if not 0 <= self.seq <= 0xFF:
            raise ValueError(f"ProbeFrame: seq {self.seq} is not a byte")
        if len(self.payload) > MAX_PAYLOAD:
            raise ValueError(f"ProbeFrame: payload of {len(self.payload)} bytes exceeds "
                             f"{MAX_PAYLOAD}")

    def __repr__(self) -> str:
        # Payloads are APDUs or tracks: show only the length (card data stays out of reprs).
        return f"ProbeFrame(seq={self.seq}, {self.type.name}, {len(self.payload)} bytes)"


def lrc(data: bytes) -> int:
    out = 0
    for b in data:
        out ^= b
    return out


def encode_frame(frame: ProbeFrame) -> bytes:
    body = bytes([frame.seq, frame.type]) + len(frame.payload).to_bytes(2, "big") + frame.payload
    return bytes([STX]) + body + bytes([lrc(body)])


def decode_frame(raw: bytes) -> ProbeFrame:
    """Decode exactly one frame (no bytes before or after)."""
    dec = FrameDecoder()
    out = dec.feed(raw)
    if dec.pending:
        raise FramingError(f"probe frame: incomplete, {len(dec.pending)} bytes pending "
                           f"{hexdump(bytes(dec.pending))}")
    if len(out) != 1:
        raise FramingError(f"probe frame: expected exactly one frame in {hexdump(raw)}, "
                           f"got {len(out)}")
    item = out[0]
    if isinstance(item, Exception):
        raise item
    return item


class FrameDecoder:
    """Incremental decoder: :meth:`feed` returns frames and, for damaged ones, the error
    (a :class:`FramingError` or :class:`DecodeError`) in arrival order, so the receiver can NAK.
    """

    def __init__(self) -> None:
        self.pending = bytearray()
        self.skipped = 0

    def feed(self, data: bytes) -> list[ProbeFrame | FramingError | DecodeError]:
        self.pending += data
        out: list[ProbeFrame | FramingError | DecodeError] = []
        while self.pending:
            if self.pending[0] != STX:
                idx = self.pending.find(bytes([STX]))
                cut = len(self.pending) if idx < 0 else idx
                self.skipped += cut
                del self.pending[:cut]
                continue
            if len(self.pending) < HEADER_LEN:
                break
            length = int.from_bytes(self.pending[3:5], "big")
            if length > MAX_PAYLOAD:
                out.append(FramingError(
                    f"probe frame: LEN {length} at offset 3 exceeds {MAX_PAYLOAD}; "
                    f"header {hexdump(bytes(self.pending[:HEADER_LEN]))}"))
                del self.pending[:1]          # resync on the next STX
                continue
            total = HEADER_LEN + length + 1
            if len(self.pending) < total:
                break
            raw = bytes(self.pending[:total])
            del self.pending[:total]
            body = raw[1:-1]
            if lrc(body) != raw[-1]:
                out.append(FramingError(
                    f"probe frame: LRC {raw[-1]:02X} at offset {total - 1}, computed "
                    f"{lrc(body):02X}; frame {hexdump(raw)}"))
                continue
            try:
                mtype = MsgType(raw[2])
            except ValueError:
                out.append(DecodeError(
                    f"probe frame: unknown TYPE {raw[2]:02X} at offset 2 (seq {raw[1]}); "
                    f"known {', '.join(f'{t.value:02X}={t.name}' for t in MsgType)}"))
                continue
            out.append(ProbeFrame(raw[1], mtype, raw[HEADER_LEN:-1]))
        return out


def answer_payload(status: AnswerStatus, data: bytes = b"") -> bytes:
    """Payload of ATR / RAPDU frames: status byte, then the data when status is OK."""
    if status is not AnswerStatus.OK and data:
        raise ValueError("answer_payload: data only goes with status OK")
    return bytes([status]) + data


def parse_answer(frame: ProbeFrame) -> tuple[AnswerStatus, bytes]:
    """Split an ATR / RAPDU payload; errors name the frame type and the offset."""
    if not frame.payload:
        raise DecodeError(f"probe {frame.type.name} seq {frame.seq}: empty payload, "
                          f"status byte expected at offset 5")
    try:
        status = AnswerStatus(frame.payload[0])
    except ValueError:
        raise DecodeError(f"probe {frame.type.name} seq {frame.seq}: unknown status "
                          f"{frame.payload[0]:02X} at offset 5") from None
    data = frame.payload[1:]
    if status is AnswerStatus.OK and not data:
        raise DecodeError(f"probe {frame.type.name} seq {frame.seq}: status OK without data")
    if status is not AnswerStatus.OK and data:
        raise DecodeError(f"probe {frame.type.name} seq {frame.seq}: status {status.name} "
                          f"with {len(data)} data bytes")
    return status, data


def parse_status(frame: ProbeFrame) -> StatusFlag:
    if len(frame.payload) != 1:
        raise DecodeError(f"probe STATUS seq {frame.seq}: payload must be 1 flags byte, got "
                          f"{hexdump(frame.payload)}")
    return StatusFlag(frame.payload[0] & STATUS_MASK)


# -- SWIPE and TAP payloads -------------------------------------------------------------------

#: Most cards the rig reports in the contactless field (a count above 1 is a collision anyway).
MAX_FIELD_CARDS = 8


@dataclass(frozen=True)
class Swipe:
    """The tracks of a SWIPE as the reader head read them (``''``: that track not read).
    ``repr`` shows lengths only: tracks hold the PAN and discretionary data."""

    track1: str = field(default="", repr=False)
    track2: str = field(default="", repr=False)

    def __repr__(self) -> str:
        return f"Swipe(track1={len(self.track1)} chars, track2={len(self.track2)} chars)"


def swipe_payload(track1: str, track2: str) -> bytes:
    """``T1LEN(1) | TRACK1 | T2LEN(1) | TRACK2``, each track ASCII as read (start sentinel .. end
    sentinel, LRC character); a length 0 says the track was not read."""
    out = b""
    for n, track in ((1, track1), (2, track2)):
        try:
            raw = track.encode("ascii")
        except UnicodeEncodeError:
            raise ValueError(f"swipe_payload: track {n} is not ASCII") from None
        if len(raw) > 0xFF:
            raise ValueError(f"swipe_payload: track {n} of {len(raw)} characters exceeds 255")
        out += bytes([len(raw)]) + raw
    return out


def parse_swipe(frame: ProbeFrame) -> Swipe:
    """Split a SWIPE payload; errors name the offset (in the frame) and never show the data."""
    data = frame.payload
    tracks: list[str] = []
    pos = 0
    for n in (1, 2):
        if pos >= len(data):
            raise DecodeError(f"probe SWIPE seq {frame.seq}: T{n}LEN expected at offset "
                              f"{5 + pos}, payload ends ({len(data)} bytes)")
        length = data[pos]
        raw = data[pos + 1:pos + 1 + length]
        if len(raw) != length:
            raise DecodeError(f"probe SWIPE seq {frame.seq}: track {n} of {length} bytes at "
                              f"offset {5 + pos + 1}, only {len(raw)} follow")
        if any(b < 0x20 or b > 0x7E for b in raw):
            raise DecodeError(f"probe SWIPE seq {frame.seq}: track {n} at offset "
                              f"{5 + pos + 1} is not printable ASCII")
        tracks.append(raw.decode("ascii"))
        pos += 1 + length
    if pos != len(data):
        raise DecodeError(f"probe SWIPE seq {frame.seq}: {len(data) - pos} byte(s) after "
                          f"track 2 at offset {5 + pos}")
    return Swipe(tracks[0], tracks[1])


def tap_payload(cards: int) -> bytes:
    """``N(1)``: how many cards are in the contactless field now (0: the field is empty)."""
    if not 0 <= cards <= MAX_FIELD_CARDS:
        raise ValueError(f"tap_payload: {cards} cards, expected 0..{MAX_FIELD_CARDS}")
    return bytes([cards])


def parse_tap(frame: ProbeFrame) -> int:
    if len(frame.payload) != 1 or frame.payload[0] > MAX_FIELD_CARDS:
        raise DecodeError(f"probe TAP seq {frame.seq}: payload must be 1 byte 00.."
                          f"{MAX_FIELD_CARDS:02X} (cards in the field), got "
                          f"{hexdump(frame.payload)}")
    return frame.payload[0]


#: Longest code text a SCAN carries (a payment code is 18-19 digits; a QR holds more).
MAX_SCAN = 255


def scan_payload(code: str) -> bytes:
    """``CODE``: the text the scanner decoded, printable ASCII, 1..:data:`MAX_SCAN` bytes."""
    try:
        raw = code.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError("scan_payload: the code is not ASCII") from None
    if not 1 <= len(raw) <= MAX_SCAN:
        raise ValueError(f"scan_payload: a code of {len(raw)} characters, expected 1..{MAX_SCAN}")
    if any(b < 0x20 or b > 0x7E for b in raw):
        raise ValueError("scan_payload: the code is not printable ASCII")
    return raw


def parse_scan(frame: ProbeFrame) -> str:
    """The code of a SCAN; errors name the offset and never show the code (a payment code)."""
    data = frame.payload
    if not 1 <= len(data) <= MAX_SCAN:
        raise DecodeError(f"probe SCAN seq {frame.seq}: code of {len(data)} bytes at offset 5, "
                          f"expected 1..{MAX_SCAN}")
    for i, b in enumerate(data):
        if b < 0x20 or b > 0x7E:
            raise DecodeError(f"probe SCAN seq {frame.seq}: byte at offset {5 + i} is not "
                              f"printable ASCII")
    return data.decode("ascii")


class SeqCounter:
    """Request sequence numbers 1..255, wrapping (0 is used only by NAK)."""

    def __init__(self, start: int = 1) -> None:
        self._next = start

    def next(self) -> int:
        seq = self._next
        self._next = 1 if seq >= 0xFF else seq + 1
        return seq
