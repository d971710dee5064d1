"""protocols.ecr on its own: exact frame bytes, decoder resync, link retries, message codec."""

from __future__ import annotations

import pytest

from protocols import ecr
from protocols.errors import DecodeError, FramingError

# STATUS request, SEQ 01: LRC = 00^02^01^53^54^03 = 07 (worked by hand in docs/ecr-protocol.md)
ST_SEQ1 = bytes.fromhex("02 0002 01 5354 03 07")
PU_SEQ0 = bytes.fromhex("02 0013 00 50551c616d743d313030301c6375723d313536 03 3a")


def test_encode_frame_exact_bytes() -> None:
    assert ecr.encode_frame(1, b"ST") == ST_SEQ1
    assert ecr.lrc(ST_SEQ1[1:-1]) == 0x07


def test_encode_message_exact_bytes() -> None:
    payload = ecr.encode_message(ecr.Message("PU", {"amt": "1000", "cur": "156"}))
    assert payload == b"PU\x1camt=1000\x1ccur=156"
    assert ecr.encode_frame(0, payload) == PU_SEQ0


def test_payload_may_contain_control_bytes() -> None:
    payload = bytes([0x02, 0x03, 0x06, 0x15, 0x00, 0xFF])
    frame = ecr.encode_frame(7, payload)
    assert frame[1:3] == b"\x00\x06"
    (item,) = ecr.FrameDecoder().feed(frame)
    assert isinstance(item, ecr.Frame) and item.payload == payload and item.seq == 7


def test_decoder_byte_by_byte() -> None:
    dec = ecr.FrameDecoder()
    items: list[ecr.Decoded] = []
    for b in PU_SEQ0 + b"\x06\x00" + b"\x15":
        items += dec.feed(bytes([b]))
    assert [type(i).__name__ for i in items] == ["Frame", "AckIn", "NakIn"]
    assert items[1] == ecr.AckIn(0)
    assert dec.pending == b""


def test_decoder_resyncs_on_garbage() -> None:
    items = ecr.FrameDecoder().feed(b"\xff\xfeAB" + ST_SEQ1)
    assert items == [ecr.Garbage(b"\xff\xfeAB"), ecr.Frame(1, b"ST", ST_SEQ1)]


def test_bad_lrc_reported_with_hexdump() -> None:
    bad = ST_SEQ1[:-1] + b"\x08"
    (item,) = ecr.FrameDecoder().feed(bad)
    assert isinstance(item, ecr.BadFrame)
    assert str(item.error) == ("ECR frame: bad LRC, expected 07, got 08; "
                               "frame 02 00 02 01 53 54 03 08 (8 bytes)")


def test_missing_etx_resyncs_to_the_next_frame() -> None:
    broken = bytes.fromhex("02 0002 01 5354 99 07")  # ETX replaced
    dec = ecr.FrameDecoder(frame_timeout=0.2)
    items = dec.feed(broken + ST_SEQ1, now=0.0)
    assert isinstance(items[0], ecr.BadFrame)
    assert "expected ETX (03) at byte 6, got 99" in str(items[0].error)
    # the rescan meets '02 01 53' (a length of 339): it waits, then gives up and finds the frame
    assert dec.pending.endswith(ST_SEQ1)
    assert dec.expire(0.3)[-1] == ecr.Frame(1, b"ST", ST_SEQ1)
    assert dec.pending == b""


def test_length_over_limit_is_rejected() -> None:
    items = ecr.FrameDecoder().feed(b"\x02\xff\xff" + ST_SEQ1)
    assert isinstance(items[0], ecr.BadFrame)
    assert "length field says 65535 bytes, limit is 4096" in str(items[0].error)
    assert items[-1] == ecr.Frame(1, b"ST", ST_SEQ1)


def test_partial_frame_expires_and_decoder_resyncs() -> None:
    dec = ecr.FrameDecoder(frame_timeout=0.2)
    assert dec.feed(b"\x02\x00\x10\x01AB", now=1.0) == []
    assert dec.expire(1.1) == []
    items = dec.expire(1.25)
    assert isinstance(items[0], ecr.BadFrame) and "incomplete after 0.200 s" in str(items[0].error)
    assert dec.feed(ST_SEQ1, now=1.3)[-1] == ecr.Frame(1, b"ST", ST_SEQ1)


def test_encode_limits() -> None:
    with pytest.raises(FramingError, match="4097 bytes, limit is 4096"):
        ecr.encode_frame(0, b"x" * 4097)
    with pytest.raises(FramingError, match="SEQ must be 0..255"):
        ecr.encode_frame(256, b"")


# ------------------------------------------------------------------------------ link

def test_link_send_ack_delivered() -> None:
    link = ecr.EcrLink()
    t = link.send(b"ST", 0.0)
    assert link.take_output() == ecr.encode_frame(0, b"ST")
    assert link.receive(b"\x06\x00", 0.1) == [ecr.Delivered(t, 0)]
    t2 = link.send(b"ST", 0.2)
    assert link.take_output() == ecr.encode_frame(1, b"ST")  # SEQ 00 first, then 01
    assert link.receive(b"\x06\x00", 0.3) == []  # stale ACK ignored
    assert link.receive(b"\x06\x01", 0.3) == [ecr.Delivered(t2, 1)]


def test_link_retransmits_then_fails_with_bound() -> None:
    link = ecr.EcrLink(ack_timeout=0.5, max_retries=3)
    t = link.send(b"ST", 0.0)
    frame = link.take_output()
    sent = [frame]
    for now in (0.5, 1.0, 1.5):
        assert link.poll(now) == []
        sent.append(link.take_output())
    assert sent == [frame] * 4
    (failed,) = link.poll(2.0)
    assert isinstance(failed, ecr.Failed) and failed.ticket == t
    assert failed.error == "no ACK for SEQ 00 after 4 attempts (0.500 s each, 2.000 s bound)"
    assert link.take_output() == b""
    assert not link.busy


def test_link_nak_triggers_retransmission() -> None:
    link = ecr.EcrLink()
    link.send(b"ST", 0.0)
    frame = link.take_output()
    assert link.receive(b"\x15", 0.1) == []
    assert link.take_output() == frame


def test_link_acks_frames_and_drops_duplicates() -> None:
    link = ecr.EcrLink()
    f1 = ecr.encode_frame(0, b"RD")
    assert link.receive(f1, 0.0) == [ecr.Received(0, b"RD")]
    assert link.take_output() == b"\x06\x00"
    assert link.receive(f1, 0.5) == []  # retransmission inside the window: ACK again only
    assert link.take_output() == b"\x06\x00"
    f2 = ecr.encode_frame(1, b"EV\x1ccode=PAPER_OUT")
    assert link.receive(f2 + f2, 0.6) == [ecr.Received(1, b"EV\x1ccode=PAPER_OUT")]
    assert link.take_output() == b"\x06\x01\x06\x01"
    # a rebooted peer starts again at SEQ 00: accepted
    assert link.receive(f1, 10.0) == [ecr.Received(0, b"RD")]


def test_link_naks_bad_frame() -> None:
    link = ecr.EcrLink()
    (ev,) = link.receive(ST_SEQ1[:-1] + b"\x00", 0.0)
    assert isinstance(ev, ecr.Rejected) and "bad LRC" in ev.error
    assert link.take_output() == b"\x15"


def test_link_seq_wraps_to_one() -> None:
    link = ecr.EcrLink()
    for i in range(257):
        link.send(b"ST", float(i))
        out = link.take_output()
        link.receive(bytes([0x06, out[3]]), float(i))
    assert out[3] == 1  # 00, 01 … FF, then 01


# ------------------------------------------------------------------------------ messages

def test_decode_message_utf8_chinese() -> None:
    raw = "EV\x1ccode=PAPER_OUT\x1ctext=打印机缺纸".encode()
    msg = ecr.decode_message(raw, "terminal")
    assert msg == ecr.Message("EV", {"code": "PAPER_OUT", "text": "打印机缺纸"})
    assert ecr.decode_message(ecr.encode_message(msg)) == msg


@pytest.mark.parametrize("payload, sender, error", [
    (b"Z", None, "code at byte 0 must be 2 ASCII letters, got 'Z'"),
    (b"XX", "rig", "unknown code 'XX' from rig at byte 0"),
    (b"PU\x1camt=1", "rig", "ECR message PU(PURCHASE) from rig: missing field(s) cur"),
    (b"ST\x1cnoequals", None, "ECR message ST: field at byte 3 is not key=value: 'noequals'"),
    (b"ST\x1ca=1\x1ca=2", None, "field 'a' repeated at byte 7"),
    (b"EV\x1ctext=\xe6\x89", None, "invalid UTF-8 at byte 8"),
    ("ST\x1cé=1".encode(), None, "ECR message ST: field name 'é' at byte 3 is not 1-16 "
                                  "printable ASCII characters without '='"),
    (b"ST\x1ca=1\x1c" + b"k" * 17 + b"=2", None, f"field name {'k' * 16!r} at byte 7 is not"),
    (b"ST\x1ca\tb=1", None, "field name 'a\\tb' at byte 3 is not 1-16 printable ASCII"),
])
def test_decode_errors_name_position(payload: bytes, sender: ecr.Sender | None,
                                     error: str) -> None:
    with pytest.raises(DecodeError) as info:
        ecr.decode_message(payload, sender)
    assert error in str(info.value)


@pytest.mark.parametrize("key", ["é", "", "a=b", "a\x1cb", "a\tb", "k" * 17])
def test_encoder_decoder_and_request_check_share_one_field_name_rule(key: str) -> None:
    """decode_message() took a non-ASCII field name ('ST' FS 'é=1', found by the fuzzer) that
    encode_message() refused: what one side refuses, the other refuses too."""
    assert ecr.field_name_problem(key) is not None
    with pytest.raises(DecodeError, match=r"encode\(\) field name .* is not 1-16 printable"):
        ecr.encode_message(ecr.Message("ST", {key: "1"}))
    if "=" not in key:  # 'a=b=1' is field a (value 'b=1') on the wire
        with pytest.raises(DecodeError, match="at byte 3"):
            ecr.decode_message(b"ST\x1c" + key.encode() + b"=1")
    assert "field name" in (ecr.request_problem(ecr.Message("ST", {key: "1"})) or "")
    good = ecr.Message("ST", {"k" * 16: "1", "a b": "2"})
    assert ecr.decode_message(ecr.encode_message(good)) == good
    assert ecr.request_problem(good) is None


def test_response_code_is_er_for_a_request_without_a_response() -> None:
    assert ecr.response_code("ST") == "ST" and ecr.response_code("PU") == "PU"
    for code in ("KY", "ZZ", "RD", "PR", "ER"):  # no response, unknown, terminal events
        assert ecr.response_code(code) == "ER", code
    for sender, code in ecr.MESSAGE_SPECS:
        if sender == "rig":
            answer = ecr.MESSAGE_SPECS[("terminal", ecr.response_code(code))]
            assert answer.kind is ecr.Kind.RESPONSE, code


def test_encode_rejects_separator_in_value() -> None:
    with pytest.raises(DecodeError, match="contains the separator 1c"):
        ecr.encode_message(ecr.Message("EV", {"text": "a\x1cb"}))


def test_describe_masks_secrets_and_pan() -> None:
    assert ecr.Message("LI", {"op": "01", "pw": "0000"}).describe("rig") == \
        "LI(LOGIN) op=01 pw=****"
    assert ecr.Message("KY", {"k": "7"}).describe("rig") == "KY(KEY) k=*"
    text = ecr.Message("PR", {"copy": "merchant", "text": "6212345678901234"}).describe("terminal")
    assert "6212345678901234" not in text and "621234******1234" in text


def test_describe_stream_shows_bad_frames_as_hex() -> None:
    lines = ecr.describe_stream(ST_SEQ1 + b"\x06\x01" + ST_SEQ1[:-1] + b"\x00", "rig")
    assert lines == ["[01] ST(STATUS)", "ACK 01",
                     "bad frame: ECR frame: bad LRC, expected 07, got 00; "
                     "frame 02 00 02 01 53 54 03 00 (8 bytes)"]
