"""Magnetic stripe tracks 1 and 2 (ISO/IEC 7813 layout, ISO/IEC 7811-2 characters and LRC).

A test card's stripe is derived from its profile (PAN, expiry, service code, name) with
:func:`stripe_of`; a stripe reader head gets :meth:`Stripe.encoded` (start sentinel, data, end
sentinel, LRC) and checks it with :func:`decode_track`.  The card profile (sim.card.profile) and
whatever presents or reads a swipe (a stripe emulator head, the terminal's reader) use these
functions, so a track has one layout.

- Track 2 (5-bit characters 0x30-0x3F, 4 data bits + parity): ``;`` PAN ``=`` YYMM service
  code discretionary ``?`` LRC; at most 40 characters with sentinels and LRC.
- Track 1 (7-bit characters 0x20-0x5F, 6 data bits + parity), format code B: ``%B`` PAN ``^``
  NAME ``^`` YYMM service code discretionary ``?`` LRC; at most 79 characters.
- LRC: the exclusive-or of the data bits (parity bits left out) of every character from the
  start sentinel to the end sentinel included, written as a character of the same set.  A
  stripe whose LRC was corrupted on purpose (a test card's ``bad_stripe``) fails
  :func:`decode_track`.

The chip's Track 2 Equivalent Data (tag 57) is the same track 2 data with ``D`` as separator
(:meth:`Stripe.track2_equivalent`).  Track data is cardholder data: :class:`Stripe`'s ``repr``
hides it, and no message here ever contains it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from protocols.digits import ascii_digits
from protocols.errors import DecodeError

TrackNo = Literal[1, 2]


@dataclass(frozen=True)
class TrackFormat:
    """Sentinels, separator, character set and length of one track (ISO/IEC 7811-2, 7813)."""

    start: str
    end: str
    separator: str
    base: int          # code of the character whose data bits are 0
    bits: int          # data bits per character (parity not counted)
    max_chars: int     # sentinels and LRC included


TRACKS: dict[int, TrackFormat] = {
    1: TrackFormat(start="%", end="?", separator="^", base=0x20, bits=6, max_chars=79),
    2: TrackFormat(start=";", end="?", separator="=", base=0x30, bits=4, max_chars=40),
}
DEFAULT_DISCRETIONARY = "0000000000"


def _fmt(track: int) -> TrackFormat:
    fmt = TRACKS.get(track)
    if fmt is None:
        raise DecodeError(f"track {track!r}: there is no such track; expected 1 or 2")
    return fmt


def _value(fmt: TrackFormat, ch: str, track: int, where: str) -> int:
    v = ord(ch) - fmt.base
    if not 0 <= v < (1 << fmt.bits):
        raise DecodeError(f"track {track}: {where} is not a track {track} character "
                          f"(0x{fmt.base:02X}-0x{fmt.base + (1 << fmt.bits) - 1:02X})")
    return v


def lrc(track: int, chars: str) -> str:
    """The LRC character of *chars* (start sentinel to end sentinel included)."""
    fmt = _fmt(track)
    acc = 0
    for i, ch in enumerate(chars):
        acc ^= _value(fmt, ch, track, f"character {i}")
    return chr(fmt.base + acc)


def encode_track(track: int, data: str, *, bad_lrc: bool = False) -> str:
    """Start sentinel + *data* + end sentinel + LRC; *bad_lrc* flips the LRC's lowest data bit
    (a stripe that reads with an LRC error)."""
    fmt = _fmt(track)
    body = fmt.start + data + fmt.end
    check = lrc(track, body)
    if bad_lrc:
        check = chr(fmt.base + ((ord(check) - fmt.base) ^ 0x01))
    out = body + check
    if len(out) > fmt.max_chars:
        raise DecodeError(f"track {track}: {len(out)} characters with sentinels and LRC; at "
                          f"most {fmt.max_chars}")
    return out


def decode_track(track: int, raw: str) -> str:
    """The data between the sentinels of *raw*, after checking sentinels and LRC (DecodeError
    naming what is wrong, never the data)."""
    fmt = _fmt(track)
    if len(raw) < 3 or len(raw) > fmt.max_chars:
        raise DecodeError(f"track {track}: {len(raw)} characters; expected 3 to "
                          f"{fmt.max_chars} with sentinels and LRC")
    if raw[0] != fmt.start:
        raise DecodeError(f"track {track}: no start sentinel {fmt.start!r} at character 0")
    end = raw.find(fmt.end, 1)
    if end < 0 or end != len(raw) - 2:
        raise DecodeError(f"track {track}: end sentinel {fmt.end!r} expected at character "
                          f"{len(raw) - 2}, followed by the LRC")
    for i, ch in enumerate(raw):
        _value(fmt, ch, track, f"character {i}")
    if lrc(track, raw[:-1]) != raw[-1]:
        raise DecodeError(f"track {track}: LRC error (character {len(raw) - 1} does not match "
                          f"the exclusive-or of characters 0-{len(raw) - 2})")
    return raw[1:end]


def track2_data(pan: str, expiry: str, service_code: str,
                discretionary: str = DEFAULT_DISCRETIONARY) -> str:
    """``PAN=YYMMSSS`` + discretionary data (digits only)."""
    for name, value in (("PAN", pan), ("expiry", expiry), ("service code", service_code),
                        ("discretionary data", discretionary)):
        if not ascii_digits(value) and not (name == "discretionary data" and value == ""):
            raise DecodeError(f"track 2: {name} must be digits")
    return f"{pan}={expiry}{service_code}{discretionary}"


def track1_data(pan: str, name: str, expiry: str, service_code: str,
                discretionary: str = DEFAULT_DISCRETIONARY) -> str:
    """``B`` PAN ``^`` NAME ``^`` YYMMSSS + discretionary data (format code B)."""
    if not 2 <= len(name) <= 26:
        raise DecodeError(f"track 1: the name is {len(name)} characters; expected 2 to 26")
    if any(c in "^%?" or not 0x20 <= ord(c) <= 0x5F for c in name):
        raise DecodeError("track 1: the name holds a character track 1 cannot carry (upper "
                          "case letters, digits, space, / . - and the like; not ^ % ?)")
    return f"B{track2_data(pan, expiry, service_code, discretionary).split('=')[0]}^{name}^" \
           f"{expiry}{service_code}{discretionary}"


@dataclass(frozen=True)
class Stripe:
    """What a card's stripe holds: track 1 and track 2 data, and whether its LRCs read wrong.
    ``repr`` hides the tracks."""

    track1: str = field(repr=False)
    track2: str = field(repr=False)
    bad_lrc: bool = False

    def encoded(self, track: TrackNo) -> str:
        """The track as the head reads it: sentinels, data, LRC (corrupted when ``bad_lrc``)."""
        return encode_track(track, self.track1 if track == 1 else self.track2,
                            bad_lrc=self.bad_lrc)

    @property
    def service_code(self) -> str:
        return self.track2.split("=", 1)[1][4:7]

    @property
    def track2_equivalent(self) -> str:
        """The chip's tag 57 form of track 2: ``D`` as separator."""
        return self.track2.replace("=", "D")


def stripe_of(pan: str, name: str, expiry: str, service_code: str, *,
              discretionary: str = DEFAULT_DISCRETIONARY, bad_lrc: bool = False) -> Stripe:
    """Both tracks of a card (each checked against its length limit)."""
    stripe = Stripe(track1_data(pan, name, expiry, service_code, discretionary),
                    track2_data(pan, expiry, service_code, discretionary), bad_lrc)
    stripe.encoded(1)
    stripe.encoded(2)
    return stripe


__all__ = [
    "DEFAULT_DISCRETIONARY",
    "TRACKS",
    "Stripe",
    "TrackFormat",
    "decode_track",
    "encode_track",
    "lrc",
    "stripe_of",
    "track1_data",
    "track2_data",
]
