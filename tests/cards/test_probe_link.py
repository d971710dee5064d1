from __future__ import annotations

import pytest

from protocols.errors import DecodeError, FramingError, ProtocolError
from protocols.probe import (
    AnswerStatus,
    FrameDecoder,
    MsgType,
    ProbeFrame,
    SeqCounter,
    StatusFlag,
    answer_payload,
    decode_frame,
    encode_frame,
    parse_answer,
    parse_status,
)
from sim.probe import SimProbe

H = bytes.fromhex


# -- framing, exact bytes ---------------------------------------------------------------------
@pytest.mark.parametrize(("frame", "wire"), [
    (ProbeFrame(1, MsgType.INSERT), "02 01 10 0000 11"),
    (ProbeFrame(2, MsgType.CAPDU, H("00A4")), "02 02 22 0002 00A4 86"),
    (ProbeFrame(5, MsgType.ATR, H("003B600000")), "02 05 12 0005 003B600000 49"),
    (ProbeFrame(3, MsgType.STATUS, b"\x05"), "02 03 23 0001 05 24"),
    (ProbeFrame(0, MsgType.NAK), "02 00 15 0000 15"),
])
def test_frame_exact_bytes(frame: ProbeFrame, wire: str) -> None:
    raw = H(wire.replace(" ", ""))
    assert encode_frame(frame) == raw
    assert decode_frame(raw) == frame


def test_decoder_resyncs_and_splits() -> None:
    dec = FrameDecoder()
    a, b = encode_frame(ProbeFrame(1, MsgType.POWER_ON)), encode_frame(ProbeFrame(2, MsgType.ACK))
    stream = b"\xff\x00" + a + b
    assert dec.feed(stream[:4]) == []
    assert dec.feed(stream[4:9]) == [ProbeFrame(1, MsgType.POWER_ON)]
    assert dec.feed(stream[9:]) == [ProbeFrame(2, MsgType.ACK)]
    assert dec.skipped == 2 and not dec.pending


def test_decoder_errors_name_offsets() -> None:
    bad = bytearray(encode_frame(ProbeFrame(7, MsgType.CAPDU, H("00B2010C00"))))
    bad[-1] ^= 0xFF
    (err,) = FrameDecoder().feed(bytes(bad))
    assert isinstance(err, FramingError)
    assert str(err).startswith("probe frame: LRC 60 at offset 10, computed 9F; frame 02 07 22")
    with pytest.raises(DecodeError, match=r"^probe frame: unknown TYPE 7F at offset 2 \(seq 1\)"):
        decode_frame(H("02017F00007E"))
    (err2, ok) = FrameDecoder().feed(H("0201100800") + encode_frame(ProbeFrame(1, MsgType.ACK)))
    assert isinstance(err2, FramingError) and "LEN 2048 at offset 3 exceeds 1024" in str(err2)
    assert ok == ProbeFrame(1, MsgType.ACK)
    with pytest.raises(FramingError, match="incomplete, 3 bytes pending"):
        decode_frame(H("020110"))


def test_answer_and_status_payloads() -> None:
    assert answer_payload(AnswerStatus.MUTE) == b"\x01"
    assert parse_answer(ProbeFrame(1, MsgType.RAPDU, H("009000"))) == (AnswerStatus.OK, H("9000"))
    with pytest.raises(DecodeError, match=r"^probe ATR seq 4: unknown status 09 at offset 5"):
        parse_answer(ProbeFrame(4, MsgType.ATR, b"\x09"))
    with pytest.raises(DecodeError, match="status MUTE with 1 data bytes"):
        parse_answer(ProbeFrame(4, MsgType.ATR, b"\x01\x3b"))
    assert parse_status(ProbeFrame(1, MsgType.STATUS, b"\x03")) == (
        StatusFlag.CARD_PRESENT | StatusFlag.CARD_POWERED)
    seq = SeqCounter(254)
    assert [seq.next() for _ in range(3)] == [254, 255, 1]


# -- SimProbe ----------------------------------------------------------------------------------
def rig(seq: int, mtype: MsgType, payload: bytes = b"") -> bytes:
    return encode_frame(ProbeFrame(seq, mtype, payload))


def test_insert_power_on_apdu_sequence() -> None:
    p = SimProbe(retry_interval=0.5, max_retries=2)
    assert p.harness_connected(0.0).harness_out == [{"t": "card", "present": False}]
    out = p.feed_link(rig(9, MsgType.INSERT), 0.1)
    assert out.link_out == rig(9, MsgType.STATUS, b"\x05")   # present | terminal up
    assert out.harness_out == [{"t": "card", "present": True}]
    out = p.feed_harness({"t": "card_power", "on": True}, 1.0)
    assert out.link_out == H("0201200000" "21") and out.harness_out == []
    out = p.feed_link(rig(1, MsgType.ATR, H("003B600000")), 1.01)
    assert out.harness_out == [{"t": "atr", "atr": "3b600000"}] and out.link_out == b""
    out = p.feed_harness({"t": "capdu", "data": "00a4040000"}, 1.1)
    assert out.link_out == rig(2, MsgType.CAPDU, H("00A4040000"))
    out = p.feed_link(rig(2, MsgType.RAPDU, H("006A82")), 1.2)
    assert out.harness_out == [{"t": "rapdu", "data": "6a82"}]
    out = p.feed_harness({"t": "card_power", "on": False}, 1.3)
    assert out.link_out == rig(3, MsgType.POWER_OFF) and out.harness_out == []
    assert p.feed_link(rig(3, MsgType.ACK), 1.31).link_out == b""
    assert not p.busy


def test_retry_then_mute_after_bound() -> None:
    p = SimProbe(retry_interval=0.5, max_retries=2)
    p.feed_link(rig(1, MsgType.INSERT), 0.0)
    first = p.feed_harness({"t": "card_power", "on": True}, 10.0).link_out
    assert p.poll(10.49).link_out == b""
    assert p.poll(10.5).link_out == first                   # same frame, same seq
    assert p.poll(11.0).link_out == first
    assert p.next_deadline() == 11.5
    out = p.poll(11.5)
    assert out.harness_out == [{"t": "atr", "error": "mute"}] and out.link_out == b""
    # a late answer for the abandoned request is ignored
    assert p.feed_link(rig(1, MsgType.ATR, H("003B600000")), 12.0).harness_out == []


def test_nak_resends_and_damaged_frame_is_nakked() -> None:
    p = SimProbe()
    p.feed_link(rig(1, MsgType.INSERT), 0.0)
    first = p.feed_harness({"t": "card_power", "on": True}, 0.0).link_out
    assert p.feed_link(rig(0, MsgType.NAK), 0.1).link_out == first
    bad = bytearray(rig(1, MsgType.ATR, H("003B600000")))
    bad[6] ^= 0x01
    out = p.feed_link(bytes(bad), 0.2)
    assert out.link_out == H("0200150000" "15") and out.harness_out == []
    assert p.link_errors == 1


def test_duplicate_rig_request_answered_once() -> None:
    p = SimProbe()
    p.harness_connected(0.0)
    first = p.feed_link(rig(4, MsgType.INSERT), 0.0)
    again = p.feed_link(rig(4, MsgType.INSERT), 0.6)
    assert again.link_out == first.link_out and again.harness_out == []


def test_no_card_answers_absent_locally_and_removal_fails_pending() -> None:
    p = SimProbe()
    p.harness_connected(0.0)
    out = p.feed_harness({"t": "card_power", "on": True}, 0.0)
    assert out.link_out == b"" and out.harness_out == [{"t": "atr", "error": "absent"}]
    p.feed_link(rig(1, MsgType.INSERT), 0.1)
    p.feed_harness({"t": "card_power", "on": True}, 0.2)
    p.feed_link(rig(1, MsgType.ATR, H("003B600000")), 0.3)
    p.feed_harness({"t": "capdu", "data": "00a4040000"}, 0.4)
    out = p.feed_link(rig(2, MsgType.REMOVE), 0.5)
    assert out.harness_out == [{"t": "rapdu", "error": "absent"},
                               {"t": "card", "present": False}]
    assert out.link_out == rig(2, MsgType.STATUS, b"\x04")
    assert p.feed_harness({"t": "capdu", "data": "00a4040000"}, 0.6).harness_out == [
        {"t": "rapdu", "error": "absent"}]


def test_card_state_survives_terminal_power_cycle() -> None:
    p = SimProbe()
    p.harness_connected(0.0)
    p.feed_link(rig(1, MsgType.INSERT), 0.0)
    p.feed_harness({"t": "card_power", "on": True}, 0.1)
    p.feed_link(rig(1, MsgType.ATR, H("003B600000")), 0.2)
    out = p.harness_disconnected(1.0)                       # terminal lost power
    assert out.link_out == rig(2, MsgType.POWER_OFF) and not p.card_powered
    assert p.harness_connected(2.0).harness_out == [{"t": "card", "present": True}]


def test_harness_errors_and_foreign_messages() -> None:
    p = SimProbe()
    assert p.feed_harness({"t": "load", "state": "idle"}, 0.0).harness_out == []
    with pytest.raises(DecodeError, match="card_power needs a boolean 'on'"):
        p.feed_harness({"t": "card_power"}, 0.0)
    with pytest.raises(DecodeError, match="capdu needs hex 'data' of at least 4 bytes"):
        p.feed_harness({"t": "capdu", "data": "zz"}, 0.0)
    p.feed_link(rig(1, MsgType.INSERT), 0.0)
    p.feed_harness({"t": "card_power", "on": True}, 0.0)
    with pytest.raises(ProtocolError, match="answered POWER_ON seq 1 with RAPDU, expected ATR"):
        p.feed_link(rig(1, MsgType.RAPDU, H("009000")), 0.1)
