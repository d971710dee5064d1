"""Rules are pure functions; the core applies them, counts, defers, captures, and fails loudly."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.utils import rdpcap

from rigs.network.bridge import (
    DROP,
    FORWARD,
    MODE_RULES,
    Action,
    BridgeCore,
    BridgeError,
    BridgeState,
    Direction,
    Mode,
    TcpSegment,
    Verdict,
    cable_pulled_rule,
    pass_rule,
    pull_on_request_rule,
    tcp_segment,
)

T2H, H2T = Direction.TO_HOST, Direction.TO_TERMINAL
ETH = bytes.fromhex("020000000002" "020000000001" "0800")
FRAME = ETH + b"\x45" + bytes(19) + b"payload"
OTHER = ETH + b"\x45" + bytes(19) + b"reply"


def test_pass_forwards_and_cable_pulled_drops_in_both_directions() -> None:
    for direction in Direction:
        assert pass_rule(direction, FRAME, 0.0) == FORWARD
        assert cable_pulled_rule(direction, FRAME, 0.0) == DROP
    assert MODE_RULES[Mode.PASS] is pass_rule
    assert MODE_RULES[Mode.CABLE_PULLED] is cable_pulled_rule
    with pytest.raises(TypeError):
        MODE_RULES[Mode.PASS] = cable_pulled_rule  # type: ignore[index]


def test_core_pass_forwards_exact_bytes_and_counts_per_direction() -> None:
    core = BridgeCore()
    assert core.handle(T2H, FRAME, 1.0, 1000.0) == [(T2H, FRAME)]
    assert core.handle(H2T, OTHER, 1.0, 1000.0) == [(H2T, OTHER)]
    snap = core.snapshot()["directions"]
    assert snap["terminal_to_host"]["frames_forwarded"] == 1
    assert snap["terminal_to_host"]["bytes_forwarded"] == len(FRAME)
    assert snap["host_to_terminal"]["bytes_forwarded"] == len(OTHER)
    assert snap["host_to_terminal"]["frames_dropped"] == 0


def test_core_cable_pulled_drops_and_counts_then_restores() -> None:
    core = BridgeCore()
    core.set_mode(Mode.CABLE_PULLED)
    assert core.handle(T2H, FRAME, 1.0, 1000.0) == []
    assert core.handle(H2T, OTHER, 1.0, 1000.0) == []
    core.set_mode(Mode.PASS)
    assert core.handle(T2H, FRAME, 2.0, 1001.0) == [(T2H, FRAME)]
    s = core.stats
    assert (s[T2H].frames_dropped, s[T2H].bytes_dropped) == (1, len(FRAME))
    assert (s[H2T].frames_dropped, s[H2T].bytes_dropped) == (1, len(OTHER))
    assert s[T2H].frames_forwarded == 1 and s[H2T].frames_forwarded == 0


def test_replace_and_defer_verdicts_are_applied() -> None:
    corrupted = FRAME[:-1] + b"X"

    def corrupt_last_byte(direction: Direction, frame: bytes, now: float) -> Verdict:
        return Verdict.replace(frame[:-1] + b"X") if direction is T2H else FORWARD

    def delay_100ms(direction: Direction, frame: bytes, now: float) -> Verdict:
        return Verdict.defer(now + 0.1)

    core = BridgeCore({Mode.PASS: corrupt_last_byte, Mode.CABLE_PULLED: delay_100ms})
    assert core.handle(T2H, FRAME, 0.0, 0.0) == [(T2H, corrupted)]
    assert core.handle(H2T, OTHER, 0.0, 0.0) == [(H2T, OTHER)]
    assert core.stats[T2H].frames_replaced == 1

    core.set_mode(Mode.CABLE_PULLED)
    assert core.handle(T2H, FRAME, 10.0, 0.0) == []
    assert core.handle(H2T, OTHER, 10.05, 0.0) == []
    assert core.next_deadline() == pytest.approx(10.1)
    assert core.release(10.09) == []
    assert core.release(10.1) == [(T2H, FRAME)]
    assert core.release(10.2) == [(H2T, OTHER)]
    assert core.next_deadline() is None
    assert core.stats[T2H].frames_deferred == 1


def test_a_rule_that_raises_marks_the_core_failed_and_drops_loudly() -> None:
    pan_frame = ETH + b"4761739001010119"  # payload must never reach the failure text

    def broken(direction: Direction, frame: bytes, now: float) -> Verdict:
        raise KeyError("oops")

    core = BridgeCore({Mode.PASS: broken, Mode.CABLE_PULLED: cable_pulled_rule})
    assert core.handle(T2H, pan_frame, 0.0, 0.0) == []
    assert core.state is BridgeState.FAILED
    assert core.failure is not None
    assert "rule for mode PASS raised KeyError" in core.failure
    assert "4761739001010119" not in core.failure
    assert "34 37 36 31" not in core.failure  # nor its hex
    # FAILED is sticky: even a now-harmless mode drops, so nothing looks like it works
    core.set_mode(Mode.CABLE_PULLED)
    core.set_mode(Mode.PASS)
    assert core.handle(H2T, OTHER, 1.0, 0.0) == []
    assert core.state is BridgeState.FAILED
    assert core.stats[H2T].frames_dropped == 1


def test_a_malformed_verdict_is_a_failure_not_a_fault() -> None:
    core = BridgeCore({Mode.PASS: lambda d, f, n: Verdict.replace(b"short"),
                       Mode.CABLE_PULLED: cable_pulled_rule})
    assert core.handle(T2H, FRAME, 0.0, 0.0) == []
    assert core.state is BridgeState.FAILED
    assert "REPLACE verdict carries 5 bytes" in (core.failure or "")


def test_capture_writes_every_frame_seen_forwarded_or_dropped(tmp_path: Path) -> None:
    core = BridgeCore()
    path = tmp_path / "cap.pcap"
    core.start_capture(path)
    core.handle(T2H, FRAME, 0.0, 1700000000.25)
    core.set_mode(Mode.CABLE_PULLED)
    core.handle(H2T, OTHER, 0.0, 1700000001.5)
    assert core.stop_capture() == (path, 2)
    packets = rdpcap(str(path))
    assert [bytes(p) for p in packets] == [FRAME, OTHER]
    assert float(packets[0].time) == pytest.approx(1700000000.25)
    header = path.read_bytes()[:24]
    assert struct.unpack("<IHHiIII", header) == (0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)


def test_capture_refusals_name_the_problem(tmp_path: Path) -> None:
    core = BridgeCore()
    with pytest.raises(BridgeError, match="no capture is running"):
        core.stop_capture()
    with pytest.raises(BridgeError, match="must be absolute"):
        core.start_capture(Path("relative.pcap"))
    with pytest.raises(BridgeError, match="cannot write"):
        core.start_capture(tmp_path / "missing-dir" / "x.pcap")
    core.start_capture(tmp_path / "a.pcap")
    with pytest.raises(BridgeError, match="is running; stop it first"):
        core.start_capture(tmp_path / "b.pcap")
    core.close()
    assert core.capture is None


def test_verdict_helpers() -> None:
    assert Verdict.replace(bytearray(b"abc")) == Verdict(Action.REPLACE, data=b"abc")
    assert Verdict.defer(2.5).until == 2.5


# --- PULL_ON_REQUEST: the cable is pulled with the terminal's request in flight -------------------

MACS = {"src": "02:00:00:00:00:01", "dst": "02:00:00:00:00:02"}
TERM, HOST = "198.18.0.10", "198.18.0.20"


def tcp_frame(flags: str, payload: bytes = b"", *, to_host: bool = True, seq: int = 1000) -> bytes:
    src, dst, sport, dport = (TERM, HOST, 40000, 8583) if to_host else (HOST, TERM, 8583, 40000)
    return bytes(Ether(**MACS) / IP(src=src, dst=dst) / TCP(sport=sport, dport=dport,
                                                            flags=flags, seq=seq) / payload)


REQUEST = tcp_frame("PA", b"\x00\x40" + bytes(64), seq=4242)


def test_tcp_segment_reads_what_scapy_wrote_and_nothing_else() -> None:
    assert tcp_segment(REQUEST) == TcpSegment(TERM, HOST, 40000, 8583, 0x18, 4242, 66)
    assert tcp_segment(REQUEST).describe() == (  # type: ignore[union-attr]
        "TCP 198.18.0.10:40000 > 198.18.0.20:8583 [AP] seq 4242 with 66 payload byte(s)")
    syn = tcp_segment(tcp_frame("S"))
    assert syn is not None and syn.payload_len == 0 and syn.flags == 0x02
    tagged = bytes(Ether(**MACS) / Dot1Q(vlan=7) / IP(src=TERM, dst=HOST)
                   / TCP(dport=8583, flags="PA") / b"abc")
    assert tcp_segment(tagged) is not None and tcp_segment(tagged).payload_len == 3  # type: ignore[union-attr]
    padded = bytes(Ether(**MACS) / IP(src=TERM, dst=HOST) / TCP(dport=8583, flags="A")) + bytes(6)
    assert tcp_segment(padded).payload_len == 0  # type: ignore[union-attr]  # Ethernet padding
    for other in (bytes(Ether(**MACS) / ARP(pdst=HOST)),
                  bytes(Ether(**MACS) / IP(src=TERM, dst=HOST) / UDP(dport=8583) / b"x"),
                  bytes(Ether(**MACS) / IP(src=TERM, dst=HOST, frag=3, proto=6) / bytes(40)),
                  REQUEST[:40], FRAME, b""):
        assert tcp_segment(other) is None


def test_pull_on_request_forwards_the_handshake_and_trips_on_the_first_data() -> None:
    for frame, direction in ((bytes(Ether(**MACS) / ARP(pdst=HOST)), T2H), (tcp_frame("S"), T2H),
                             (tcp_frame("SA", to_host=False), H2T), (tcp_frame("A"), T2H),
                             (tcp_frame("PA", b"banner", to_host=False), H2T)):
        assert pull_on_request_rule(direction, frame, 0.0) == FORWARD
    assert pull_on_request_rule(T2H, REQUEST, 0.0) == Verdict.drop_then(Mode.CABLE_PULLED)
    assert MODE_RULES[Mode.PULL_ON_REQUEST] is pull_on_request_rule


def test_core_trips_records_the_segment_and_stays_pulled() -> None:
    core = BridgeCore()
    core.set_mode(Mode.PULL_ON_REQUEST)
    syn = tcp_frame("S")
    assert core.handle(T2H, syn, 1.0, 1000.0) == [(T2H, syn)]
    assert core.trip is None
    assert core.handle(T2H, REQUEST, 2.0, 1001.5) == []
    assert core.mode is Mode.CABLE_PULLED
    trip = core.snapshot()["trip"]
    assert trip == {"n": 1, "wall": 1001.5, "from": "PULL_ON_REQUEST", "to": "CABLE_PULLED",
                    "direction": "terminal_to_host", "action": "drop",
                    "frame": "TCP 198.18.0.10:40000 > 198.18.0.20:8583 [AP] seq 4242 with 66 "
                             "payload byte(s)",
                    "tcp": {"src": TERM, "dst": HOST, "sport": 40000, "dport": 8583,
                            "flags": 0x18, "seq": 4242, "payload_len": 66}}
    retransmit = tcp_frame("PA", b"\x00\x40" + bytes(64), seq=4242)
    reply = tcp_frame("A", to_host=False)
    assert core.handle(T2H, retransmit, 2.2, 1001.7) == []  # pulled now: nothing passes
    assert core.handle(H2T, reply, 2.2, 1001.7) == []
    assert core.stats[T2H].frames_dropped == 2 and core.stats[T2H].frames_forwarded == 1
    core.set_mode(Mode.PASS)  # the cable is back: the trip is history, kept in ``trips``
    assert core.trip is None and [t["n"] for t in core.snapshot()["trips"]] == [1]
    core.set_mode(Mode.PULL_ON_REQUEST)
    core.handle(T2H, REQUEST, 3.0, 1002.0)
    assert [t["n"] for t in core.snapshot()["trips"]] == [1, 2] and core.trip["n"] == 2  # type: ignore[index]


def test_a_verdict_switching_to_an_unknown_mode_is_a_failure() -> None:
    core = BridgeCore({Mode.PASS: lambda d, f, n: Verdict.drop_then(Mode.PULL_ON_REQUEST),
                       Mode.CABLE_PULLED: cable_pulled_rule})
    assert core.handle(T2H, FRAME, 0.0, 0.0) == []
    assert core.state is BridgeState.FAILED
    assert "switches to mode" in (core.failure or "") and "has no rule" in (core.failure or "")
