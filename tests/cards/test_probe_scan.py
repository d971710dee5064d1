"""The probe link's code scanner (docs/probe-link.md: SCAN): exact bytes, payload errors that
never show the code, the simulated probe forwarding it to the terminal's harness once, and the
rig's ``present_code`` refusing a code the scanner could not carry."""

from __future__ import annotations

import pytest

from protocols.errors import DecodeError
from protocols.probe import (
    ANSWERS,
    RIG_REQUESTS,
    MsgType,
    ProbeFrame,
    decode_frame,
    encode_frame,
    parse_scan,
    scan_payload,
)
from rigs.cards import PcscCardBank
from rigs.errors import ConfigError
from rigs.events import EventStream
from sim.probe import SimProbe
from tests.cards.conftest import needs_root
from tests.cards.probe_host import PtyProbeHost

H = bytes.fromhex
CODE = "134567890123456789"


def rig(seq: int, mtype: MsgType, payload: bytes = b"") -> bytes:
    return encode_frame(ProbeFrame(seq, mtype, payload))


@pytest.mark.parametrize(("frame", "wire"), [
    (ProbeFrame(1, MsgType.SCAN, scan_payload(CODE)),
     "02 01 17 0012 313334353637383930313233343536373839 06"),
    (ProbeFrame(9, MsgType.SCAN, scan_payload("A")), "02 09 17 0001 41 5E"),
])
def test_scan_exact_bytes(frame: ProbeFrame, wire: str) -> None:
    raw = H(wire.replace(" ", ""))
    assert encode_frame(frame) == raw
    assert decode_frame(raw) == frame
    assert parse_scan(frame) in (CODE, "A")


def test_scan_is_a_rig_request_answered_by_status() -> None:
    assert MsgType.SCAN in RIG_REQUESTS and ANSWERS[MsgType.SCAN] is MsgType.STATUS


def test_scan_payload_errors_never_show_the_code() -> None:
    with pytest.raises(DecodeError, match=r"^probe SCAN seq 3: code of 0 bytes at offset 5, "
                                          r"expected 1..255$"):
        parse_scan(ProbeFrame(3, MsgType.SCAN, b""))
    with pytest.raises(DecodeError, match=r"^probe SCAN seq 3: byte at offset 7 is not "
                                          r"printable ASCII$") as err:
        parse_scan(ProbeFrame(3, MsgType.SCAN, b"13\x00456"))
    assert "13" not in str(err.value).split("offset")[0]
    for bad in ("", "码", "x" * 256, "a\tb"):
        with pytest.raises(ValueError):
            scan_payload(bad)
    assert CODE not in repr(ProbeFrame(1, MsgType.SCAN, scan_payload(CODE)))


def test_scan_reaches_the_terminal_once_and_is_answered_status() -> None:
    p = SimProbe()
    p.harness_connected(0.0)
    out = p.feed_link(rig(4, MsgType.SCAN, scan_payload(CODE)), 0.1)
    assert out.harness_out == [{"t": "scan", "code": CODE}]
    assert out.link_out == rig(4, MsgType.STATUS, b"\x04")
    retry = p.feed_link(rig(4, MsgType.SCAN, scan_payload(CODE)), 0.6)
    assert retry.harness_out == [] and retry.link_out == out.link_out   # not scanned twice


def test_a_scan_while_the_terminal_is_off_is_lost_and_a_bad_one_nakked() -> None:
    p = SimProbe()
    out = p.feed_link(rig(1, MsgType.SCAN, scan_payload(CODE)), 0.0)
    assert out.harness_out == [] and out.link_out == rig(1, MsgType.STATUS, b"\x00")
    out = p.feed_link(rig(2, MsgType.SCAN, b"\x01"), 0.1)
    assert out.link_out == rig(0, MsgType.NAK) and p.link_errors == 1


@needs_root
def test_present_code_through_the_relay(relay: tuple[PcscCardBank, PtyProbeHost]) -> None:
    """The rig's present_code(): SCAN over the real probe link, the code reaches the harness;
    the trace and the event stream show it masked only; a code the scanner cannot carry is a
    ConfigError before anything is sent."""
    bank, host = relay
    stream = EventStream()
    bank.event_sink = stream
    host.expect("card", 1.0)
    bank.present_code(CODE)
    assert host.expect("scan", 2.0) == {"t": "scan", "code": CODE}
    text = bank.trace_text() + "\n" + stream.timeline()
    assert CODE not in text
    with pytest.raises(ConfigError, match=r"present_code\(\): scan_payload: a code of 0 "):
        bank.present_code("")
