"""Framing layer alone: TPDU, header, length prefix, stream reassembly — exact bytes."""

from __future__ import annotations

import pytest

from protocols.errors import FramingError
from protocols.iso8583 import Header, LengthFramer, Tpdu, frame, split_body, unframe

PAYLOAD = bytes.fromhex("0800" "0020000000C00012") + b"\x00" * 11  # 21 bytes, content irrelevant


def test_tpdu_bytes_and_swap() -> None:
    tpdu = Tpdu()
    assert tpdu.to_bytes() == bytes.fromhex("6000030000")
    assert Tpdu.from_bytes(bytes.fromhex("6000030000")) == tpdu
    assert tpdu.swapped().to_bytes() == bytes.fromhex("6000000003")
    assert Tpdu(destination=0x1234, source=0xABCD).swapped() == Tpdu(0xABCD, 0x1234)


def test_tpdu_bad_id_message_pinned() -> None:
    with pytest.raises(FramingError) as err:
        Tpdu.from_bytes(bytes.fromhex("6100030000"))
    assert str(err.value) == ("Tpdu.from_bytes(): TPDU id byte is 0x61, expected 0x60 in "
                              "61 00 03 00 00 (5 bytes)")


def test_header_bytes_roundtrip() -> None:
    header = Header()
    assert header.to_bytes() == bytes.fromhex("603100310000")
    req = Header(terminal_status=0, processing_requirement=3)
    assert req.to_bytes() == bytes.fromhex("603103310000")
    assert Header.from_bytes(bytes.fromhex("603123310000")) == Header(
        terminal_status=2, processing_requirement=3)
    assert header.with_requirement(3).processing_requirement == 3
    with pytest.raises(FramingError, match="nibbles"):
        Header(processing_requirement=16)


def test_frame_exact_bytes_and_unframe() -> None:
    raw = frame(PAYLOAD, Tpdu(), Header())
    body_len = 5 + 6 + len(PAYLOAD)
    assert raw == bytes([0, body_len]) + bytes.fromhex("6000030000" "603100310000") + PAYLOAD
    tpdu, header, payload = unframe(raw)
    assert (tpdu, header, payload) == (Tpdu(), Header(), PAYLOAD)
    assert split_body(raw[2:]) == (Tpdu(), Header(), PAYLOAD)


def test_unframe_length_mismatch_message_pinned() -> None:
    raw = frame(PAYLOAD, Tpdu(), Header())
    with pytest.raises(FramingError) as err:
        unframe(raw[:-1])
    assert str(err.value).startswith(
        "unframe(): length prefix says 32 bytes, frame carries 31: "
        "00 20 60 00 03 00 00 60 31 00 31 00 00 08 00 00 … (+17 more) (33 bytes)")


def test_framer_reassembles_split_and_coalesced_frames() -> None:
    one = frame(PAYLOAD, Tpdu(), Header())
    two = frame(PAYLOAD + b"\x01", Tpdu(), Header())
    framer = LengthFramer()
    assert framer.feed(one[:1]) == []
    assert framer.feed(one[1:7]) == []
    assert framer.pending == 7
    assert framer.feed(one[7:] + two[:3]) == [one]
    assert framer.feed(two[3:]) == [two]
    assert framer.pending == 0
    assert framer.feed(one + two) == [one, two]


@pytest.mark.parametrize("prefix, declared", [(b"\x00\x05", 5), (b"\xff\xff", 65535)])
def test_framer_absurd_length_breaks_stream(prefix: bytes, declared: int) -> None:
    framer = LengthFramer()
    with pytest.raises(FramingError) as err:
        framer.feed(prefix + b"\x60\x00")
    assert str(err.value) == (f"LengthFramer.feed(): length prefix {declared} is outside "
                              f"21..4096 bytes at {prefix.hex(' ')} 60 00 (4 bytes)")
    with pytest.raises(FramingError, match="already broken"):
        framer.feed(b"")
    framer.reset()
    one = frame(PAYLOAD, Tpdu(), Header())
    assert framer.feed(one) == [one]
