"""Rules are pure objects built from fault specs; the core applies them in order, keeps the fault
ledger, counts, defers, captures (seen and delivered), and fails loudly."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.utils import rdpcap

from protocols.faults import FAULT_KINDS, Direction, FaultKind, FaultSpec, Target
from rigs.network import bridge
from rigs.network.bridge import (
    CABLE_PULLED_BOTH,
    DROP,
    FORWARD,
    RULE_KINDS,
    BridgeCore,
    BridgeError,
    BridgeState,
    CablePull,
    PullOnRequest,
    Rule,
    RuleFactory,
    Verdict,
    tcp_payload_len,
    tcp_segment,
)
from rigs.network.records import Action, CapturePaths, RuleRecord, TcpSegment

T2H, H2T = Direction.TO_HOST, Direction.TO_TERMINAL
ETH = bytes.fromhex("020000000002" "020000000001" "0800")
FRAME = ETH + b"\x45" + bytes(19) + b"payload"
OTHER = ETH + b"\x45" + bytes(19) + b"reply"
PULL = FaultSpec.of(FaultKind.CABLE_PULL)
PULL_TO_HOST = FaultSpec.of(FaultKind.CABLE_PULL, direction="terminal_to_host")
ARMED = FaultSpec.of(FaultKind.PULL_ON_REQUEST)


def kinds(cable_pull: Callable[[Direction, bytes, float], Verdict],
          pull_on_request: Callable[[Direction, bytes, float], Verdict] | None = None
          ) -> dict[FaultKind, RuleFactory]:
    """A rule table whose kinds build the given test rules."""
    table: dict[FaultKind, RuleFactory] = {FaultKind.CABLE_PULL: lambda spec: cable_pull}
    if pull_on_request is not None:
        table[FaultKind.PULL_ON_REQUEST] = lambda spec: pull_on_request
    return table


def test_cable_pull_drops_the_directions_it_reaches_and_the_table_is_read_only() -> None:
    both, to_host = CablePull.from_spec(PULL), CablePull.from_spec(PULL_TO_HOST)
    for direction in (T2H, H2T):
        assert both(direction, FRAME, 0.0) == DROP
    assert to_host(T2H, FRAME, 0.0) == DROP and to_host(H2T, FRAME, 0.0) == FORWARD
    assert CablePull.from_spec(FaultSpec.of("cable_pull", direction="host_to_terminal")) == \
        CablePull(H2T)
    network = {k for k, ks in FAULT_KINDS.items() if ks.target is Target.NETWORK}
    assert set(RULE_KINDS) == network  # every network kind has a rule
    assert isinstance(RULE_KINDS[FaultKind.PULL_ON_REQUEST](ARMED), PullOnRequest)
    with pytest.raises(TypeError):
        RULE_KINDS[FaultKind.CABLE_PULL] = CablePull.from_spec  # type: ignore[index]


def test_core_without_rules_forwards_exact_bytes_and_counts_per_direction() -> None:
    core = BridgeCore()
    assert core.handle(T2H, FRAME, 1.0, 1000.0) == [(T2H, FRAME)]
    assert core.handle(H2T, OTHER, 1.0, 1000.0) == [(H2T, OTHER)]
    snap = core.snapshot()["directions"]
    assert snap["terminal_to_host"]["frames_forwarded"] == 1
    assert snap["terminal_to_host"]["bytes_forwarded"] == len(FRAME)
    assert snap["host_to_terminal"]["bytes_forwarded"] == len(OTHER)
    assert snap["host_to_terminal"]["frames_dropped"] == 0
    assert set(snap) == {"terminal_to_host", "host_to_terminal"}


def test_the_fast_path_and_a_cable_pull_parse_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_parsing(frame: bytes) -> TcpSegment | None:
        raise AssertionError("a frame was parsed")

    monkeypatch.setattr(bridge, "tcp_segment", no_parsing)
    core = BridgeCore()
    assert core.handle(T2H, FRAME, 0.0, 0.0) == [(T2H, FRAME)]
    core.add_rule(PULL_TO_HOST, 0.0)
    assert core.handle(T2H, FRAME, 0.0, 0.0) == []
    assert core.handle(H2T, OTHER, 0.0, 0.0) == [(H2T, OTHER)]
    assert core.state is BridgeState.RUNNING


def test_core_cable_pull_drops_and_counts_then_restores() -> None:
    core = BridgeCore()
    rule = core.add_rule(PULL, 10.0)
    assert core.handle(T2H, FRAME, 1.0, 1000.0) == []
    assert core.handle(H2T, OTHER, 1.0, 1000.0) == []
    core.clear_rule(rule.id, 11.0)
    assert core.handle(T2H, FRAME, 2.0, 1001.0) == [(T2H, FRAME)]
    s = core.stats
    assert (s[T2H].frames_dropped, s[T2H].bytes_dropped) == (1, len(FRAME))
    assert (s[H2T].frames_dropped, s[H2T].bytes_dropped) == (1, len(OTHER))
    assert s[T2H].frames_forwarded == 1 and s[H2T].frames_forwarded == 0
    assert rule.frames_acted == 2 and rule.fired_count == 0  # a pull acts, it does not trip


def test_two_rules_first_non_forward_verdict_wins_and_clearing_one_keeps_the_other() -> None:
    corrupted = FRAME[:-1] + b"X"
    seen: list[str] = []

    def corrupt_to_host(direction: Direction, frame: bytes, now: float) -> Verdict:
        seen.append("corrupt")
        return Verdict.replace(frame[:-1] + b"X") if direction is T2H else FORWARD

    def drop_all(direction: Direction, frame: bytes, now: float) -> Verdict:
        seen.append("drop")
        return DROP

    core = BridgeCore(kinds(corrupt_to_host, drop_all))
    first = core.add_rule(PULL, 1.0)
    second = core.add_rule(ARMED, 2.0)
    assert [e.id for e in core.active()] == [first.id, second.id]
    assert core.handle(T2H, FRAME, 0.0, 0.0) == [(T2H, corrupted)]  # the first rule decided
    assert seen == ["corrupt"]  # ... and the second was not asked
    assert core.handle(H2T, OTHER, 0.0, 0.0) == []  # the first forwarded: the second drops
    assert seen == ["corrupt", "corrupt", "drop"]
    assert (first.frames_acted, second.frames_acted) == (1, 1)

    core.clear_rule(first.id, 3.0)
    assert core.handle(T2H, FRAME, 0.0, 0.0) == []  # only the second is left
    core.clear_rule(second.id, 4.0)
    assert core.handle(T2H, FRAME, 0.0, 0.0) == [(T2H, FRAME)]
    assert core.active() == []


def test_the_real_rules_combine_a_one_way_pull_and_an_armed_pull() -> None:
    core = BridgeCore()
    one_way = core.add_rule(FaultSpec.of(FaultKind.CABLE_PULL, direction="host_to_terminal"), 1.0)
    armed = core.add_rule(ARMED, 2.0)
    assert core.handle(H2T, tcp_frame("SA", to_host=False), 0.0, 5.0) == []  # one-way pull
    assert core.handle(T2H, tcp_frame("S"), 0.0, 5.0) == [(T2H, tcp_frame("S"))]
    assert core.handle(T2H, REQUEST, 0.0, 6.0) == []  # the armed pull trips
    assert armed.current == CABLE_PULLED_BOTH and one_way.fired_count == 0
    core.clear_rule(one_way.id, 7.0)
    assert core.handle(H2T, OTHER, 0.0, 8.0) == []  # the tripped rule pulls both ways now


def test_replace_and_defer_verdicts_are_applied() -> None:
    corrupted = FRAME[:-1] + b"X"

    def corrupt_last_byte(direction: Direction, frame: bytes, now: float) -> Verdict:
        return Verdict.replace(frame[:-1] + b"X") if direction is T2H else FORWARD

    def delay_100ms(direction: Direction, frame: bytes, now: float) -> Verdict:
        return Verdict.defer(now + 0.1)

    core = BridgeCore(kinds(corrupt_last_byte, delay_100ms))
    corrupt = core.add_rule(PULL, 0.0)
    assert core.handle(T2H, FRAME, 0.0, 0.0) == [(T2H, corrupted)]
    assert core.handle(H2T, OTHER, 0.0, 0.0) == [(H2T, OTHER)]
    assert core.stats[T2H].frames_replaced == 1

    core.clear_rule(corrupt.id, 0.0)
    core.add_rule(ARMED, 0.0)
    assert core.handle(T2H, FRAME, 10.0, 0.0) == []
    assert core.handle(H2T, OTHER, 10.05, 0.0) == []
    assert core.next_deadline() == pytest.approx(10.1)
    assert core.release(10.09, 0.0) == []
    assert core.release(10.1, 0.0) == [(T2H, FRAME)]
    assert core.release(10.2, 0.0) == [(H2T, OTHER)]
    assert core.next_deadline() is None
    assert core.stats[T2H].frames_deferred == 1


def test_a_rule_that_raises_marks_the_core_failed_and_drops_loudly() -> None:
    pan_frame = ETH + b"4761739001010119"  # payload must never reach the failure text

    def broken(direction: Direction, frame: bytes, now: float) -> Verdict:
        raise KeyError("oops")

    core = BridgeCore(kinds(broken, lambda d, f, n: FORWARD))
    rule = core.add_rule(PULL, 0.0)
    assert core.handle(T2H, pan_frame, 0.0, 0.0) == []
    assert core.state is BridgeState.FAILED
    assert core.failure is not None
    assert f"rule #{rule.id} cable_pull(direction=both) raised KeyError" in core.failure
    assert "4761739001010119" not in core.failure
    assert "34 37 36 31" not in core.failure  # nor its hex
    # FAILED is sticky: even with a harmless rule set, every frame is dropped
    core.clear_rules(1.0)
    core.add_rule(ARMED, 1.0)
    assert core.handle(H2T, OTHER, 1.0, 0.0) == []
    core.clear_rules(2.0)
    assert core.handle(H2T, OTHER, 1.0, 0.0) == []
    assert core.state is BridgeState.FAILED
    assert core.stats[H2T].frames_dropped == 2


def test_a_malformed_verdict_is_a_failure_not_a_fault() -> None:
    core = BridgeCore(kinds(lambda d, f, n: Verdict.replace(b"short")))
    core.add_rule(PULL, 0.0)
    assert core.handle(T2H, FRAME, 0.0, 0.0) == []
    assert core.state is BridgeState.FAILED
    assert "REPLACE verdict carries 5 bytes" in (core.failure or "")

    core = BridgeCore(kinds(lambda d, f, n: "drop"))  # type: ignore[arg-type,return-value]
    core.add_rule(PULL, 0.0)
    assert core.handle(T2H, FRAME, 0.0, 0.0) == []
    assert "returned str, not a Verdict" in (core.failure or "")


def test_a_verdict_switching_to_a_kind_without_rule_is_a_failure() -> None:
    core = BridgeCore(kinds(lambda d, f, n: Verdict.drop_then(ARMED)))
    core.add_rule(PULL, 0.0)
    assert core.handle(T2H, FRAME, 0.0, 0.0) == []
    assert core.state is BridgeState.FAILED
    assert "switches to pull_on_request()" in (core.failure or "")
    assert "has no rule" in (core.failure or "")


def test_a_factory_bug_fails_the_core_and_a_factory_refusal_does_not() -> None:
    from protocols.errors import ConfigError

    def refuses(spec: FaultSpec) -> Rule:
        raise ConfigError("cable_pull.direction: not on this rig")

    def buggy(spec: FaultSpec) -> Rule:
        raise ZeroDivisionError("bug")

    core = BridgeCore({FaultKind.CABLE_PULL: refuses, FaultKind.PULL_ON_REQUEST: buggy})
    with pytest.raises(BridgeError, match="add_rule: cable_pull.direction: not on this rig"):
        core.add_rule(PULL, 0.0)
    assert core.state is BridgeState.RUNNING and core.ledger() == []
    with pytest.raises(BridgeError, match=r"building the rule of pull_on_request\(\) failed"):
        core.add_rule(ARMED, 0.0)
    assert core.state is BridgeState.FAILED


def test_add_rule_refuses_what_it_cannot_carry_out() -> None:
    core = BridgeCore({FaultKind.CABLE_PULL: CablePull.from_spec})
    with pytest.raises(BridgeError, match="paper_out\\(\\) is a switch fault; this bridge injects "
                                          "network faults only"):
        core.add_rule(FaultSpec.of(FaultKind.PAPER_OUT), 0.0)
    with pytest.raises(BridgeError, match="kind pull_on_request has no rule in this bridge; it "
                                          "has cable_pull"):
        core.add_rule(ARMED, 0.0)
    with pytest.raises(BridgeError, match=r"clear_rule: no rule #7 \(rules kept: none\)"):
        core.clear_rule(7, 0.0)
    rule = core.add_rule(PULL, 0.0)
    core.clear_rule(rule.id, 1.0)
    with pytest.raises(BridgeError, match=r"rule #1 cable_pull\(direction=both\) was already "
                                          "cleared"):
        core.clear_rule(rule.id, 2.0)


def test_the_ledger_keeps_the_latest_rules_but_never_an_active_one() -> None:
    core = BridgeCore(ledger_kept=3)
    kept = core.add_rule(PULL, 0.0)
    for t in range(1, 4):
        core.clear_rule(core.add_rule(ARMED, float(t)).id, float(t))
    assert [e.id for e in core.ledger()] == [kept.id, 3, 4]  # the oldest cleared one went
    core.add_rule(PULL_TO_HOST, 5.0)
    core.add_rule(PULL_TO_HOST, 6.0)
    assert [e.id for e in core.ledger()] == [kept.id, 5, 6]
    with pytest.raises(BridgeError, match="3 rules are active, the most this bridge keeps"):
        core.add_rule(PULL, 7.0)


# --- capture: every frame seen, and every frame delivered ---------------------------------------


def test_capture_writes_every_frame_seen_forwarded_or_dropped(tmp_path: Path) -> None:
    core = BridgeCore()
    path = tmp_path / "cap.pcap"
    started = core.start_capture(path)
    assert started == CapturePaths(path, tmp_path / "cap.delivered.pcap", 0, 0)
    core.handle(T2H, FRAME, 0.0, 1700000000.25)
    core.add_rule(PULL, 1700000001.0)
    core.handle(H2T, OTHER, 0.0, 1700000001.5)
    assert core.stop_capture() == CapturePaths(path, tmp_path / "cap.delivered.pcap", 2, 1)
    packets = rdpcap(str(path))
    assert [bytes(p) for p in packets] == [FRAME, OTHER]
    assert float(packets[0].time) == pytest.approx(1700000000.25)
    header = path.read_bytes()[:24]
    assert struct.unpack("<IHHiIII", header) == (0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)


def test_the_delivered_capture_lacks_what_a_rule_dropped_and_has_what_it_sent(
        tmp_path: Path) -> None:
    corrupted = FRAME[:-1] + b"X"

    def corrupt_or_delay(direction: Direction, frame: bytes, now: float) -> Verdict:
        return Verdict.replace(frame[:-1] + b"X") if direction is T2H else Verdict.defer(now + 1)

    core = BridgeCore(kinds(corrupt_or_delay, lambda d, f, n: DROP))
    paths = core.start_capture(tmp_path / "c.pcap")
    core.handle(T2H, b"\x0a" + FRAME[1:], 0.0, 100.0)  # no rule: forwarded
    rule = core.add_rule(PULL, 100.5)
    core.handle(T2H, FRAME, 1.0, 101.0)  # replaced
    core.handle(H2T, OTHER, 1.0, 101.0)  # deferred ...
    core.release(2.0, 102.0)  # ... and released
    core.clear_rule(rule.id, 102.5)
    core.add_rule(ARMED, 102.5)
    core.handle(H2T, b"\x06" + OTHER[1:], 3.0, 103.0)  # dropped
    assert core.stop_capture() == CapturePaths(paths.seen, paths.delivered, 4, 3)

    seen = [bytes(p) for p in rdpcap(str(paths.seen))]
    delivered = rdpcap(str(paths.delivered))
    assert seen == [b"\x0a" + FRAME[1:], FRAME, OTHER, b"\x06" + OTHER[1:]]
    assert [bytes(p) for p in delivered] == [b"\x0a" + FRAME[1:], corrupted, OTHER]
    assert [float(p.time) for p in delivered] == [100.0, 101.0, 102.0]  # as sent
    assert b"\x06" + OTHER[1:] not in [bytes(p) for p in delivered]


def test_flush_capture_makes_both_files_decodable_mid_capture(tmp_path: Path) -> None:
    core = BridgeCore()
    core.start_capture(tmp_path / "f.pcap")
    core.handle(T2H, FRAME, 0.0, 1.0)
    core.add_rule(PULL, 1.5)
    core.handle(H2T, OTHER, 0.0, 2.0)
    paths = core.flush_capture()
    assert (paths.frames_seen, paths.frames_delivered) == (2, 1)
    assert [bytes(p) for p in rdpcap(str(paths.seen))] == [FRAME, OTHER]
    assert [bytes(p) for p in rdpcap(str(paths.delivered))] == [FRAME]
    core.handle(T2H, FRAME, 0.0, 3.0)  # the capture goes on
    assert core.stop_capture().frames_seen == 3
    assert len(rdpcap(str(paths.seen))) == 3


def test_capture_refusals_name_the_problem(tmp_path: Path) -> None:
    core = BridgeCore()
    with pytest.raises(BridgeError, match="stop_capture: no capture is running"):
        core.stop_capture()
    with pytest.raises(BridgeError, match="flush_capture: no capture is running"):
        core.flush_capture()
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
    assert Verdict.drop_then(PULL) == Verdict(Action.DROP, then=PULL, trip=True)
    assert DROP.tripped() == Verdict(Action.DROP, trip=True) and DROP.tripped().is_trip
    assert not DROP.is_trip and not FORWARD.is_trip


# --- PULL_ON_REQUEST: the cable is pulled with the terminal's request in flight -------------------

def ether() -> Ether:
    return Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")

TERM, HOST = "198.18.0.10", "198.18.0.20"


def tcp_frame(flags: str, payload: bytes = b"", *, to_host: bool = True, seq: int = 1000,
              ack: int = 0) -> bytes:
    src, dst, sport, dport = (TERM, HOST, 40000, 8583) if to_host else (HOST, TERM, 8583, 40000)
    return bytes(ether() / IP(src=src, dst=dst) / TCP(sport=sport, dport=dport,
                                                            flags=flags, seq=seq, ack=ack)
                 / payload)


REQUEST = tcp_frame("PA", b"\x00\x40" + bytes(64), seq=4242, ack=77)


def test_tcp_segment_reads_what_scapy_wrote_and_nothing_else() -> None:
    segment = tcp_segment(REQUEST)
    assert segment == TcpSegment(TERM, HOST, 40000, 8583, 0x18, 4242, 77, 66)
    assert segment.describe() == (  # type: ignore[union-attr]
        "TCP 198.18.0.10:40000 > 198.18.0.20:8583 [AP] seq 4242 with 66 payload byte(s)")
    assert segment is not None and segment.carries_data and segment.is_ack and segment.is_psh
    assert segment.flag_names == ("PSH", "ACK") and not segment.is_syn
    syn = tcp_segment(tcp_frame("S"))
    assert syn is not None and syn.payload_len == 0 and syn.flags == 0x02
    assert syn.is_syn and not syn.carries_data and syn.flag_names == ("SYN",)
    tagged = bytes(ether() / Dot1Q(vlan=7) / IP(src=TERM, dst=HOST)
                   / TCP(dport=8583, flags="PA") / b"abc")
    assert tcp_segment(tagged) is not None and tcp_segment(tagged).payload_len == 3  # type: ignore[union-attr]
    padded = bytes(ether() / IP(src=TERM, dst=HOST) / TCP(dport=8583, flags="A")) + bytes(6)
    assert tcp_segment(padded).payload_len == 0  # type: ignore[union-attr]  # Ethernet padding
    for other in (bytes(ether() / ARP(pdst=HOST)),
                  bytes(ether() / IP(src=TERM, dst=HOST) / UDP(dport=8583) / b"x"),
                  bytes(ether() / IP(src=TERM, dst=HOST, frag=3, proto=6) / bytes(40)),
                  REQUEST[:40], FRAME, b""):
        assert tcp_segment(other) is None and tcp_payload_len(other) is None
    assert tcp_payload_len(REQUEST) == 66 and tcp_payload_len(tagged) == 3


def test_pull_on_request_forwards_the_handshake_and_trips_on_the_first_data() -> None:
    rule = PullOnRequest.from_spec(ARMED)
    for frame, direction in ((bytes(ether() / ARP(pdst=HOST)), T2H), (tcp_frame("S"), T2H),
                             (tcp_frame("SA", to_host=False), H2T), (tcp_frame("A"), T2H),
                             (tcp_frame("PA", b"banner", to_host=False), H2T)):
        assert rule(direction, frame, 0.0) == FORWARD
    assert rule(T2H, REQUEST, 0.0) == Verdict.drop_then(CABLE_PULLED_BOTH)
    assert CABLE_PULLED_BOTH == FaultSpec.of(FaultKind.CABLE_PULL, direction="both")


def test_core_trips_records_the_segment_in_the_ledger_and_stays_pulled() -> None:
    core = BridgeCore()
    rule = core.add_rule(ARMED, 999.0)
    syn = tcp_frame("S")
    assert core.handle(T2H, syn, 1.0, 1000.0) == [(T2H, syn)]
    assert core.trips() == [] and rule.fired_count == 0
    assert core.handle(T2H, REQUEST, 2.0, 1001.5) == []
    assert rule.current == CABLE_PULLED_BOTH and rule.spec == ARMED
    assert [e.id for e in core.active()] == [rule.id]  # still one rule, now a pull
    (trip,) = core.trips()
    assert trip.to_json() == {
        "n": 1, "rule": rule.id, "spec": {"kind": "pull_on_request", "params": {}},
        "wall": 1001.5, "direction": "terminal_to_host",
        "frame": "TCP 198.18.0.10:40000 > 198.18.0.20:8583 [AP] seq 4242 with 66 payload byte(s)",
        "tcp": {"src": TERM, "dst": HOST, "sport": 40000, "dport": 8583, "flags": 0x18,
                "seq": 4242, "ack": 77, "payload_len": 66},
        "action": "drop", "became": {"kind": "cable_pull", "params": {"direction": "both"}}}
    retransmit = tcp_frame("PA", b"\x00\x40" + bytes(64), seq=4242)
    reply = tcp_frame("A", to_host=False)
    assert core.handle(T2H, retransmit, 2.2, 1001.7) == []  # pulled now: nothing passes
    assert core.handle(H2T, reply, 2.2, 1001.7) == []
    assert core.stats[T2H].frames_dropped == 2 and core.stats[T2H].frames_forwarded == 1
    assert rule.fired_count == 1 and rule.frames_acted == 3
    core.clear_rule(rule.id, 1002.0)  # the cable is back: the trip is history, kept in the ledger
    assert core.active() == [] and [t.n for t in core.trips()] == [1]
    again = core.add_rule(ARMED, 1003.0)
    core.handle(T2H, REQUEST, 3.0, 1004.0)
    assert [t.n for t in core.trips()] == [1, 2] and [t.n for t in core.trips(after=1)] == [2]
    assert again.fired[-1].rule_id == again.id and core.trips_total == 2


def test_the_ledger_records_armed_fired_and_cleared_with_times() -> None:
    core = BridgeCore()
    armed = core.add_rule(ARMED, 500.0)
    pulled = core.add_rule(PULL_TO_HOST, 501.0)
    core.clear_rule(pulled.id, 502.0)
    core.handle(T2H, REQUEST, 1.0, 503.0)
    core.clear_rules(504.0)
    records = [RuleRecord.from_json(e.record().to_json()) for e in core.ledger()]
    first, second = records
    assert (first.id, first.spec, first.current) == (armed.id, ARMED, CABLE_PULLED_BOTH)
    assert (first.armed, first.cleared, first.active) == (500.0, 504.0, False)
    assert [(t.n, t.wall, t.action, t.became) for t in first.fired] == [
        (1, 503.0, Action.DROP, CABLE_PULLED_BOTH)]
    assert first.fired[0].tcp is not None and first.fired[0].tcp.dport == 8583
    assert first.tripped and first.last_trip == first.fired[0]
    assert (second.spec, second.armed, second.cleared, second.fired) == (
        PULL_TO_HOST, 501.0, 502.0, ())
    assert "rule #1 pull_on_request() (now cable_pull(direction=both)): cleared, fired 1" in \
        first.describe()


def test_a_trip_keeps_the_frame_description_without_payload() -> None:
    pan = b"4761739001010119"
    core = BridgeCore(kinds(lambda d, f, n: DROP.tripped()))
    core.add_rule(PULL, 0.0)
    core.handle(T2H, ETH + pan, 0.0, 1.0)
    core.handle(T2H, tcp_frame("PA", pan), 0.0, 2.0)
    first, second = core.trips()
    assert first.tcp is None and first.frame.startswith("30-byte frame, Ethernet header 02 00")
    assert second.tcp is not None and second.tcp.payload_len == len(pan)
    for trip in (first, second):
        text = str(trip.to_json())
        assert "4761739001010119" not in text and "34 37 36 31" not in text


def test_redact_pcap_zeroes_what_it_cannot_parse_in_both_captures(tmp_path: Path) -> None:
    """A PAN sent raw to the ISO 8583 port is not ISO 8583 framing: zeroed, in both pcaps the
    bridge writes (masking of real messages: tests/network/test_masked_capture.py)."""
    from rigs.network.capture import redact_pcap

    pan = b"4761739001010119"
    core = BridgeCore()
    paths = core.start_capture(tmp_path / "r.pcap")
    core.handle(T2H, tcp_frame("PA", pan), 0.0, 1.0)
    core.add_rule(PULL, 1.5)
    core.handle(T2H, tcp_frame("PA", pan, seq=2000), 0.0, 2.0)
    core.stop_capture()
    for raw, blanked in ((paths.seen, 2), (paths.delivered, 1)):
        safe = raw.with_name("safe-" + raw.name)
        assert redact_pcap(raw, safe) == blanked
        assert pan not in safe.read_bytes() and pan in raw.read_bytes()
        assert [bytes(p[TCP].payload) for p in rdpcap(str(safe))] == [bytes(len(pan))] * blanked
