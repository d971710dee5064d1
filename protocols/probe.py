"""Probe link framing: the serial link between the rig's card bank and the probe sitting in the
terminal's card slot.  Specified in docs/probe-link.md; this module is that spec as code.

Frame (all integers big-endian)::

    STX(02) | SEQ(1) | TYPE(1) | LEN(2) | PAYLOAD(LEN) | LRC(1)

LRC is the XOR of SEQ, TYPE, both LEN bytes and every PAYLOAD byte.  LEN ≤ :data:`MAX_PAYLOAD`.
Bytes before an STX are skipped (resynchronisation).  Every request gets exactly one answer
carrying the request's SEQ; see :data:`ANSWERS`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
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
    ATR = 0x12          # answer to POWER_ON: status byte (+ ATR bytes when status is OK)
    RAPDU = 0x13        # answer to CAPDU: status byte (+ R-APDU bytes when status is OK)
    # probe → rig
    POWER_ON = 0x20     # the terminal powers (or resets) the card; answered by ATR
    POWER_OFF = 0x21    # the terminal removed power from the card; answered by ACK
    CAPDU = 0x22        # a command APDU from the terminal; answered by RAPDU
    STATUS = 0x23       # answer to INSERT/REMOVE: flags byte (see StatusFlag)
    # either direction
    ACK = 0x06          # answer to a notification (POWER_OFF)
    NAK = 0x15          # "your last frame arrived damaged, send it again"; SEQ 00


class AnswerStatus(enum.IntEnum):
    OK = 0x00
    MUTE = 0x01         # the card did not answer (no ATR / no R-APDU)
    ABSENT = 0x02       # no card in the slot (or it was removed)


class StatusFlag(enum.IntFlag):
    CARD_PRESENT = 0x01     # card-detect switch closed
    CARD_POWERED = 0x02     # the terminal has powered the card
    TERMINAL_UP = 0x04      # the terminal side of the probe is powered / connected


REQUESTS: frozenset[MsgType] = frozenset({
    MsgType.INSERT, MsgType.REMOVE, MsgType.POWER_ON, MsgType.POWER_OFF, MsgType.CAPDU})
ANSWERS: Mapping[MsgType, MsgType] = MappingProxyType({
    MsgType.INSERT: MsgType.STATUS,
    MsgType.REMOVE: MsgType.STATUS,
    MsgType.POWER_ON: MsgType.ATR,
    MsgType.POWER_OFF: MsgType.ACK,
    MsgType.CAPDU: MsgType.RAPDU,
})


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
        # Payloads are APDUs: show only the length (cardholder data stays out of reprs).
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
    return StatusFlag(frame.payload[0] & 0x07)


class SeqCounter:
    """Request sequence numbers 1..255, wrapping (0 is used only by NAK)."""

    def __init__(self, start: int = 1) -> None:
        self._next = start

    def next(self) -> int:
        seq = self._next
        self._next = 1 if seq >= 0xFF else seq + 1
        return seq
