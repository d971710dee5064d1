"""The probe link's stripe reader and contactless field (docs/probe-link.md: SWIPE, TAP,
CL_POWER_ON / CL_CAPDU / CL_POWER_OFF): exact bytes, payload errors, and the simulated probe's
state machine between the rig and the terminal's harness."""

from __future__ import annotations

import pytest

from protocols.errors import DecodeError
from protocols.magstripe import encode_track, stripe_of
from protocols.masking import scrub
from protocols.probe import (
    AnswerStatus,
    MsgType,
    ProbeFrame,
    StatusFlag,
    Swipe,
    answer_payload,
    decode_frame,
    encode_frame,
    parse_answer,
    parse_status,
    parse_swipe,
    parse_tap,
    swipe_payload,
    tap_payload,
)
from sim.probe import SimProbe

H = bytes.fromhex
TRACK2 = ";6214830000000017=3012220?5"      # the LRC '5': see test_track2_lrc_by_hand


def rig(seq: int, mtype: MsgType, payload: bytes = b"") -> bytes:
    return encode_frame(ProbeFrame(seq, mtype, payload))


def test_track2_lrc_by_hand() -> None:
    value = 0
    for ch in TRACK2[:-1]:
        value ^= ord(ch) - 0x30
    assert chr(0x30 + value) == "5" == TRACK2[-1]
    assert encode_track(2, "6214830000000017=3012220") == TRACK2


@pytest.mark.parametrize(("frame", "wire"), [
    (ProbeFrame(1, MsgType.SWIPE, swipe_payload("", TRACK2)),
     "02 01 14 001D 00 1B 3B36323134383330303030303030303137 3D33303132323230 3F35 23"),
    (ProbeFrame(2, MsgType.TAP, tap_payload(2)), "02 02 16 0001 02 17"),
    (ProbeFrame(2, MsgType.TAP, tap_payload(0)), "02 02 16 0001 00 15"),
    (ProbeFrame(3, MsgType.CL_POWER_ON), "02 03 24 0000 27"),
    (ProbeFrame(4, MsgType.CL_CAPDU, H("00A4")), "02 04 26 0002 00A4 84"),
    (ProbeFrame(5, MsgType.CL_POWER_OFF), "02 05 25 0000 20"),
    (ProbeFrame(3, MsgType.ATR, answer_payload(AnswerStatus.COLLISION)), "02 03 12 0001 03 13"),
    (ProbeFrame(2, MsgType.STATUS, b"\x1d"), "02 02 23 0001 1D 3D"),
])
def test_new_frames_exact_bytes(frame: ProbeFrame, wire: str) -> None:
    raw = H(wire.replace(" ", ""))
    assert encode_frame(frame) == raw
    assert decode_frame(raw) == frame


def test_swipe_payload_round_trip_and_errors_without_data() -> None:
    frame = ProbeFrame(1, MsgType.SWIPE, swipe_payload("%B6214^NAME^3012?x", TRACK2))
    swipe = parse_swipe(frame)
    assert (swipe.track1, swipe.track2) == ("%B6214^NAME^3012?x", TRACK2)
    assert "6214" not in repr(swipe) and repr(swipe) == "Swipe(track1=18 chars, track2=27 chars)"
    assert "6214" not in repr(frame)
    with pytest.raises(DecodeError, match=r"^probe SWIPE seq 7: track 2 of 27 bytes at offset "
                                          r"7, only 3 follow$"):
        parse_swipe(ProbeFrame(7, MsgType.SWIPE, b"\x00\x1b;62"))
    with pytest.raises(DecodeError, match="T1LEN expected at offset 5"):
        parse_swipe(ProbeFrame(7, MsgType.SWIPE, b""))
    with pytest.raises(DecodeError, match="1 byte.s. after track 2 at offset 7"):
        parse_swipe(ProbeFrame(7, MsgType.SWIPE, b"\x00\x00\x00"))
    with pytest.raises(DecodeError, match="track 2 at offset 7 is not printable ASCII"):
        parse_swipe(ProbeFrame(7, MsgType.SWIPE, b"\x00\x01\x03"))
    assert Swipe() == parse_swipe(ProbeFrame(1, MsgType.SWIPE, b"\x00\x00"))


def test_tap_payload_and_status_flags() -> None:
    assert parse_tap(ProbeFrame(1, MsgType.TAP, b"\x02")) == 2
    with pytest.raises(DecodeError, match=r"^probe TAP seq 1: payload must be 1 byte 00..08"):
        parse_tap(ProbeFrame(1, MsgType.TAP, b"\x09"))
    with pytest.raises(ValueError):
        tap_payload(9)
    assert parse_status(ProbeFrame(1, MsgType.STATUS, b"\x3f")) == (
        StatusFlag.CARD_PRESENT | StatusFlag.CARD_POWERED | StatusFlag.TERMINAL_UP
        | StatusFlag.FIELD_CARD | StatusFlag.FIELD_COLLISION | StatusFlag.FIELD_POWERED)
    assert parse_answer(ProbeFrame(1, MsgType.ATR, b"\x03")) == (AnswerStatus.COLLISION, b"")


# -- the simulated probe ------------------------------------------------------------------------

def test_swipe_reaches_the_terminal_once_and_is_answered_status() -> None:
    p = SimProbe()
    p.harness_connected(0.0)
    out = p.feed_link(rig(4, MsgType.SWIPE, swipe_payload("", TRACK2)), 0.1)
    assert out.harness_out == [{"t": "swipe", "track1": "", "track2": TRACK2}]
    assert out.link_out == rig(4, MsgType.STATUS, b"\x04")
    retry = p.feed_link(rig(4, MsgType.SWIPE, swipe_payload("", TRACK2)), 0.6)
    assert retry.harness_out == [] and retry.link_out == out.link_out   # not swiped twice


def test_a_swipe_while_the_terminal_is_off_is_lost() -> None:
    p = SimProbe()
    out = p.feed_link(rig(1, MsgType.SWIPE, swipe_payload("", TRACK2)), 0.0)
    assert out.harness_out == [] and out.link_out == rig(1, MsgType.STATUS, b"\x00")


def test_a_malformed_swipe_payload_is_nakked() -> None:
    p = SimProbe()
    out = p.feed_link(rig(1, MsgType.SWIPE, b"\x00\x05;6"), 0.0)
    assert out.link_out == rig(0, MsgType.NAK) and out.harness_out == [] and p.link_errors == 1


def test_tap_one_card_activation_apdu_and_field_reset() -> None:
    p = SimProbe()
    p.harness_connected(0.0)
    out = p.feed_link(rig(2, MsgType.TAP, b"\x01"), 0.1)
    assert out.harness_out == [{"t": "field", "cards": 1}]
    assert out.link_out == rig(2, MsgType.STATUS, b"\x0c")             # terminal up | field
    out = p.feed_harness({"t": "cl_power", "on": True}, 1.0)
    assert out.link_out == rig(1, MsgType.CL_POWER_ON)
    out = p.feed_link(rig(1, MsgType.ATR, H("003B8F8001")), 1.01)
    assert out.harness_out == [{"t": "cl_atr", "atr": "3b8f8001"}] and p.field_powered
    assert not p.card_powered                                          # the slot is apart
    out = p.feed_harness({"t": "cl_capdu", "data": "00a404000e"}, 1.1)
    assert out.link_out == rig(2, MsgType.CL_CAPDU, H("00A404000E"))
    out = p.feed_link(rig(2, MsgType.RAPDU, H("006A82")), 1.2)
    assert out.harness_out == [{"t": "cl_rapdu", "data": "6a82"}]
    out = p.feed_harness({"t": "cl_power", "on": False}, 1.3)
    assert out.link_out == rig(3, MsgType.CL_POWER_OFF) and not p.field_powered
    assert p.feed_link(rig(3, MsgType.ACK), 1.31).link_out == b""
    assert not p.busy


def test_empty_or_crowded_field_is_answered_by_the_probe_itself() -> None:
    p = SimProbe()
    p.harness_connected(0.0)
    assert p.feed_harness({"t": "cl_power", "on": True}, 0.1).harness_out == [
        {"t": "cl_atr", "error": "absent"}]
    out = p.feed_link(rig(1, MsgType.TAP, b"\x02"), 0.2)
    assert out.harness_out == [{"t": "field", "cards": 2}]
    assert out.link_out == rig(1, MsgType.STATUS, b"\x1c")             # up | field | collision
    out = p.feed_harness({"t": "cl_power", "on": True}, 0.3)
    assert out.harness_out == [{"t": "cl_atr", "error": "collision"}] and out.link_out == b""
    assert p.feed_harness({"t": "cl_capdu", "data": "00a40400"}, 0.4).harness_out == [
        {"t": "cl_rapdu", "error": "mute"}]                            # nothing activated


def test_card_taken_away_answers_the_pending_contactless_request_absent() -> None:
    p = SimProbe()
    p.harness_connected(0.0)
    p.feed_link(rig(1, MsgType.TAP, b"\x01"), 0.0)
    p.feed_harness({"t": "cl_power", "on": True}, 0.1)
    p.feed_link(rig(1, MsgType.ATR, H("003B00")), 0.2)
    p.feed_harness({"t": "cl_capdu", "data": "80a80000"}, 0.3)           # in flight
    out = p.feed_link(rig(2, MsgType.TAP, b"\x00"), 0.4)
    assert out.harness_out == [{"t": "cl_rapdu", "error": "absent"}, {"t": "field", "cards": 0}]
    assert not p.field_powered and not p.busy


def test_the_two_channels_do_not_answer_for_each_other() -> None:
    p = SimProbe()
    p.harness_connected(0.0)
    p.feed_link(rig(1, MsgType.INSERT), 0.0)
    p.feed_link(rig(2, MsgType.TAP, b"\x01"), 0.0)
    p.feed_harness({"t": "cl_power", "on": True}, 0.1)                  # in flight (seq 1)
    out = p.feed_link(rig(3, MsgType.REMOVE), 0.2)                      # the slot's card goes
    assert out.harness_out == [{"t": "card", "present": False}]         # no cl_atr absent
    out = p.feed_link(rig(1, MsgType.ATR, H("003B00")), 0.3)
    assert out.harness_out == [{"t": "cl_atr", "atr": "3b00"}]


def test_a_field_reported_at_connection_and_powered_off_with_the_terminal() -> None:
    p = SimProbe()
    p.feed_link(rig(1, MsgType.TAP, b"\x01"), 0.0)
    assert p.harness_connected(0.1).harness_out == [{"t": "card", "present": False},
                                                    {"t": "field", "cards": 1}]
    p.feed_harness({"t": "cl_power", "on": True}, 0.2)
    p.feed_link(rig(1, MsgType.ATR, H("003B00")), 0.3)
    out = p.harness_disconnected(0.4)
    assert out.link_out == rig(2, MsgType.CL_POWER_OFF)


def test_contactless_retry_then_mute_after_bound() -> None:
    p = SimProbe(retry_interval=0.5, max_retries=2)
    p.feed_link(rig(1, MsgType.TAP, b"\x01"), 0.0)
    first = p.feed_harness({"t": "cl_power", "on": True}, 10.0).link_out
    assert p.poll(10.5).link_out == first and p.poll(11.0).link_out == first
    assert p.poll(11.5).harness_out == [{"t": "cl_atr", "error": "mute"}]
    assert not p.field_powered


def test_scrub_blanks_both_tracks_in_free_text() -> None:
    stripe = stripe_of("6214830000000017", "UNIONPAY/TEST CARD", "3012", "220")
    line = f"harness line {{'track1': '{stripe.encoded(1)}', 'track2': '{stripe.encoded(2)}'}}"
    text = scrub(line)
    assert "6214830000000017" not in text and "UNIONPAY/TEST" not in text
    assert "3012220" not in text and text.count("621483******0017") == 2
