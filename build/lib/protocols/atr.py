"""The Answer To Reset of ISO/IEC 7816-3 (section 8.2): its structure, and the one check of it.

``parse_atr(atr)`` walks TS, T0, the interface bytes TAi/TBi/TCi/TDi, the K historical bytes and
the check byte TCK, and returns an :class:`Atr`; an ATR that breaks the standard is a
:class:`~protocols.errors.DecodeError` naming the byte offset and what was expected there.  The
card profile model (a profile's ``atr`` must pass, its ``faulty_atr`` must not) and a terminal
kernel that rejects a card by its ATR (EMV Book 1, 8.3) use this one walker.

Rules checked: 2..33 bytes; TS is 3B (direct convention) or 3F (inverse); each TDi announces the
next interface bytes and a protocol T; the ATR holds exactly the bytes T0 and the TDi announce
(none missing, none extra); TCK is present exactly when a protocol other than T=0 is indicated,
and then T0..TCK XOR to 00.  An ATR carries no card data: it may be shown in messages.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocols.errors import DecodeError

TS_DIRECT, TS_INVERSE = 0x3B, 0x3F
MAX_ATR = 33


@dataclass(frozen=True)
class Atr:
    """A well-formed ATR: its convention, the protocols it indicates (T=0 when none is), its
    historical bytes and its interface bytes by name (``TA1``, ``TD1`` …)."""

    raw: bytes
    convention: str
    protocols: tuple[int, ...]
    historical: bytes
    interface: tuple[tuple[str, int], ...]


def _need(atr: bytes, pos: int, what: str) -> int:
    if pos >= len(atr):
        raise DecodeError(f"ATR {atr.hex().upper()}: ends after {len(atr)} bytes; {what} "
                          f"expected at offset {pos}")
    return atr[pos]


def parse_atr(atr: bytes) -> Atr:
    """Check *atr* against ISO/IEC 7816-3 and return its parts (DecodeError when it breaks it)."""
    if not 2 <= len(atr) <= MAX_ATR:
        raise DecodeError(f"ATR {atr.hex().upper()}: {len(atr)} bytes; an ATR is 2 to "
                          f"{MAX_ATR} bytes")
    ts = atr[0]
    if ts not in (TS_DIRECT, TS_INVERSE):
        raise DecodeError(f"ATR {atr.hex().upper()}: TS at offset 0 is {ts:02X}; expected 3B "
                          f"(direct convention) or 3F (inverse convention)")
    t0 = atr[1]
    historical_len = t0 & 0x0F
    presence = t0 >> 4
    pos, i = 2, 1
    interface: list[tuple[str, int]] = []
    protocols: list[int] = []
    while True:
        for bit, name in ((0x1, "TA"), (0x2, "TB"), (0x4, "TC")):
            if presence & bit:
                interface.append((f"{name}{i}", _need(atr, pos, f"{name}{i}")))
                pos += 1
        if not presence & 0x8:
            break
        td = _need(atr, pos, f"TD{i}")
        interface.append((f"TD{i}", td))
        protocols.append(td & 0x0F)
        presence = td >> 4
        pos += 1
        i += 1
    end_historical = pos + historical_len
    if end_historical > len(atr):
        raise DecodeError(f"ATR {atr.hex().upper()}: T0 announces {historical_len} historical "
                          f"bytes from offset {pos}, only {len(atr) - pos} follow")
    historical = atr[pos:end_historical]
    needs_tck = any(t != 0 for t in protocols)
    end = end_historical + (1 if needs_tck else 0)
    if needs_tck and end > len(atr):
        raise DecodeError(f"ATR {atr.hex().upper()}: protocol T={max(protocols)} is indicated, "
                          f"so TCK is expected at offset {end_historical}; the ATR ends there")
    if len(atr) != end:
        raise DecodeError(f"ATR {atr.hex().upper()}: {len(atr) - end} byte(s) after the end at "
                          f"offset {end} that T0 and the TDi announce")
    if needs_tck:
        check = 0
        for b in atr[1:]:
            check ^= b
        if check:
            raise DecodeError(f"ATR {atr.hex().upper()}: TCK at offset {end - 1} is "
                              f"{atr[-1]:02X}; T0..TCK XOR to {check:02X}, expected 00 "
                              f"(TCK {atr[-1] ^ check:02X})")
    return Atr(bytes(atr), "direct" if ts == TS_DIRECT else "inverse",
               tuple(protocols) or (0,), bytes(historical), tuple(interface))


def atr_problem(atr: bytes) -> str | None:
    """Why *atr* is not a valid ATR, or None when it is."""
    try:
        parse_atr(atr)
    except DecodeError as exc:
        return str(exc)
    return None


__all__ = ["Atr", "MAX_ATR", "atr_problem", "parse_atr"]
