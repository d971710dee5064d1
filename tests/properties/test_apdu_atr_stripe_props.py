"""Properties of the card-side parsers: command and response APDUs (protocols.apdu), the ATR
(protocols.atr) and the magnetic stripe tracks (protocols.magstripe).  Any input raises only
DecodeError; what parses encodes back to the same bytes; what is built parses back."""

from __future__ import annotations

from functools import reduce

from hypothesis import given
from hypothesis import strategies as st

from protocols.apdu import CommandApdu, ResponseApdu
from protocols.atr import MAX_ATR, parse_atr
from protocols.errors import DecodeError
from protocols.magstripe import TRACKS, decode_track, encode_track, lrc

byte = st.integers(0, 0xFF)


@given(st.binary(max_size=270))
def test_any_command_apdu_parses_back_to_its_bytes_or_raises_decode_error(raw: bytes) -> None:
    try:
        cmd = CommandApdu.from_bytes(raw)
    except DecodeError:
        return
    assert cmd.to_bytes() == raw


@given(byte, byte, byte, byte, st.binary(max_size=255),
       st.one_of(st.none(), st.integers(1, 256)))
def test_a_command_apdu_round_trips(cla: int, ins: int, p1: int, p2: int, data: bytes,
                                    le: int | None) -> None:
    cmd = CommandApdu(cla, ins, p1, p2, data, le)
    assert CommandApdu.from_bytes(cmd.to_bytes()) == cmd


@given(st.binary(max_size=260))
def test_any_response_apdu_parses_back_to_its_bytes_or_raises_decode_error(raw: bytes) -> None:
    try:
        resp = ResponseApdu.from_bytes(raw)
    except DecodeError:
        assert len(raw) < 2
        return
    assert resp.to_bytes() == raw and resp.sw1 == raw[-2] and resp.sw2 == raw[-1]


atr_bytes = st.one_of(
    st.binary(max_size=40),
    st.tuples(st.sampled_from([0x3B, 0x3F]), st.binary(max_size=34)).map(
        lambda t: bytes([t[0]]) + t[1]),
)


@given(atr_bytes)
def test_any_atr_parses_to_itself_or_raises_decode_error(raw: bytes) -> None:
    try:
        atr = parse_atr(raw)
    except DecodeError as exc:
        assert str(exc).startswith("ATR ")
        return
    assert atr.raw == raw and 2 <= len(raw) <= MAX_ATR


@st.composite
def atrs(draw: st.DrawFn) -> tuple[bytes, tuple[int, ...], bytes]:
    """A well-formed ATR built by ISO/IEC 7816-3's rules: its bytes, protocols, historical."""
    historical = draw(st.binary(max_size=15))
    groups = draw(st.lists(st.tuples(st.integers(0, 7), st.integers(0, 15)), max_size=3))
    presence = [g[0] | (0x8 if i < len(groups) - 1 else 0) for i, g in enumerate(groups)]
    # T0 announces the first group; each TDi the next (its high nibble) and a protocol
    first = (presence[0] if groups else 0) << 4
    body = bytearray([first | len(historical)])
    protocols: list[int] = []
    for i, (bits, _) in enumerate(groups):
        for flag in (0x1, 0x2, 0x4):
            if bits & flag:
                body.append(draw(byte))
        if presence[i] & 0x8:
            proto = groups[i + 1][1]
            body.append(((presence[i + 1] & 0xF) << 4) | proto)
            protocols.append(proto)
    body += historical
    if any(p != 0 for p in protocols):
        body.append(reduce(lambda a, b: a ^ b, body, 0))
    raw = bytes([draw(st.sampled_from([0x3B, 0x3F]))]) + bytes(body)
    return raw, tuple(protocols) or (0,), historical


@given(atrs())
def test_a_well_formed_atr_parses(built: tuple[bytes, tuple[int, ...], bytes]) -> None:
    raw, protocols, historical = built
    if len(raw) > MAX_ATR:
        return  # (only with 3 full groups and 15 historical bytes)
    atr = parse_atr(raw)
    assert (atr.protocols, atr.historical) == (protocols, historical)


track_no = st.sampled_from([1, 2])


@given(st.integers(-1, 4), st.text(max_size=90))
def test_any_text_decodes_as_a_track_or_raises_decode_error(track: int, raw: str) -> None:
    try:
        decode_track(track, raw)
    except DecodeError as exc:
        data = raw[1:-2]
        assert len(data) < 8 or data not in str(exc)  # the data is never shown
    try:
        lrc(track, raw)
    except DecodeError:
        pass


@st.composite
def track_data(draw: st.DrawFn) -> tuple[int, str]:
    track = draw(track_no)
    fmt = TRACKS[track]
    chars = [chr(fmt.base + v) for v in range(1 << fmt.bits)]
    chars = [c for c in chars if c not in (fmt.start, fmt.end)]
    return track, draw(st.text(st.sampled_from(chars), max_size=fmt.max_chars - 3))


@given(track_data(), st.booleans())
def test_a_track_round_trips_and_a_bad_lrc_is_caught(data: tuple[int, str],
                                                      bad_lrc: bool) -> None:
    track, text = data
    raw = encode_track(track, text, bad_lrc=bad_lrc)
    if not bad_lrc:
        assert decode_track(track, raw) == text
        return
    try:
        decode_track(track, raw)
    except DecodeError as exc:
        assert "LRC error" in str(exc)
    else:
        raise AssertionError("a track with a corrupted LRC decoded")
