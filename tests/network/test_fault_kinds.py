"""The network fault kinds that look inside segments (drop_message, delay, corrupt_byte,
forge_rst, drop_segment, syn_blackhole, duplicate, flap): their parameters, each rule alone on
crafted frames (Ethernet/IPv4/TCP with correct checksums, ISO 8583 framing), then in a
BridgeCore (counters, trips, the timed queue, injected frames)."""

from __future__ import annotations

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import ARP, Dot1Q, Ether

from protocols.errors import ConfigError
from protocols.faults import FaultKind, FaultSpec, parse_spec
from rigs.network import bridge
from rigs.network.bridge import (
    DROP,
    FORWARD,
    RULE_KINDS,
    BridgeCore,
    BridgeState,
    CorruptByte,
    Delay,
    DropMessage,
    DropQr,
    DropSegment,
    Duplicate,
    Flap,
    ForgeRst,
    SynBlackhole,
    Verdict,
    forge_rst,
    iso_mti,
    tcp_payload,
)
from rigs.network.records import Action, TcpSegment
from tests.network.test_rules import H2T, T2H

TERM_MAC, HOST_MAC = "02:00:00:00:00:01", "02:00:00:00:00:02"
TERM_IP, HOST_IP = "198.18.0.10", "198.18.0.20"
TPDU = bytes.fromhex("6000030000")
HEADER = bytes.fromhex("603100310000")


def iso(mti: str, fields: bytes = bytes(range(40))) -> bytes:
    """One framed ISO 8583 message: length, TPDU, header, MTI (BCD), bitmap, *fields*."""
    body = TPDU + HEADER + bytes.fromhex(mti) + bytes.fromhex("0020000000c00012") + fields
    return len(body).to_bytes(2, "big") + body


def seg(direction: object = T2H, payload: bytes = b"", *, seq: int = 1000, ack: int = 7000,
        flags: str = "PA", vlan: bool = False) -> bytes:
    """A terminal → host (or host → terminal) IPv4 TCP frame, checksums computed by scapy."""
    if direction is T2H:
        eth = Ether(src=TERM_MAC, dst=HOST_MAC)
        ip, tcp = IP(src=TERM_IP, dst=HOST_IP), TCP(sport=40001, dport=8583)
    else:
        eth = Ether(src=HOST_MAC, dst=TERM_MAC)
        ip, tcp = IP(src=HOST_IP, dst=TERM_IP), TCP(sport=8583, dport=40001)
    tcp.seq, tcp.ack, tcp.flags = seq, ack, flags
    pkt = (eth / Dot1Q(vlan=5) / ip / tcp) if vlan else (eth / ip / tcp)
    return bytes(pkt / payload) if payload else bytes(pkt)


def checksums_ok(frame: bytes) -> bool:
    pkt = Ether(frame)
    ip_sum, tcp_sum = pkt[IP].chksum, pkt[TCP].chksum
    del pkt[IP].chksum
    del pkt[TCP].chksum
    again = Ether(bytes(pkt))
    return bool(again[IP].chksum == ip_sum and again[TCP].chksum == tcp_sum)


REQ = seg(T2H, iso("0200"), seq=1000, ack=7000)
RESP = seg(H2T, iso("0210"), seq=7000, ack=1000 + len(iso("0200")))
ACK = seg(T2H, seq=1100, ack=7100, flags="A")
ARP_FRAME = bytes(Ether(src=TERM_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(pdst=HOST_IP))
UDP_FRAME = bytes(Ether() / IP(src=TERM_IP, dst=HOST_IP) / UDP() / iso("0200"))


def test_every_new_kind_has_a_rule_and_its_parameters_are_checked() -> None:
    for kind in ("drop_message", "delay", "corrupt_byte", "forge_rst", "drop_segment",
                 "syn_blackhole", "duplicate", "flap", "bandwidth", "reorder"):
        assert FaultKind(kind) in RULE_KINDS
    spec = FaultSpec.of("drop_message", mti="0210")
    assert dict(spec.params) == {"mti": "0210", "times": 1}
    assert dict(FaultSpec.of("delay", ms=50).params) == {
        "ms": 50.0, "jitter_ms": 0.0, "direction": "both", "seed": 0}
    assert dict(FaultSpec.of("corrupt_byte", mti="0200").params) == {
        "mti": "0200", "offset": 20, "fix_checksums": True, "times": 1}
    assert FaultSpec.of("corrupt_byte", mti="0200", fix_checksums="false").params[
        "fix_checksums"] is False
    assert FaultSpec.of("corrupt_byte", mti="0200", fix_checksums=False).params[
        "fix_checksums"] is False
    rst = FaultSpec.of("forge_rst")
    assert dict(rst.params) == {"direction": "host_to_terminal", "on_mti": None}
    assert parse_spec(rst.to_json()) == rst  # an optional parameter left out survives JSON
    assert dict(FaultSpec.of("drop_segment", n=3).params) == {"n": 3, "direction":
                                                              "terminal_to_host"}
    assert dict(FaultSpec.of("syn_blackhole").params) == {}
    assert dict(FaultSpec.of("duplicate").params) == {"direction": "terminal_to_host",
                                                      "times": 1}
    assert dict(FaultSpec.of("flap", down_ms=100, up_ms=200).params) == {
        "down_ms": 100.0, "up_ms": 200.0, "seed": 0}


@pytest.mark.parametrize(("kind", "params", "match"), [
    ("drop_message", {}, r"drop_message.mti is required"),
    ("drop_message", {"mti": "210"}, r"drop_message.mti is '210'; expected .*4 digits"),
    ("drop_message", {"mti": "02x0"}, r"drop_message.mti is '02x0'"),
    ("drop_message", {"mti": "0210", "times": -1}, r"drop_message.times is -1; it must be >= 0"),
    ("drop_message", {"mti": "0210", "times": 1.5}, r"drop_message.times must be a int"),
    ("delay", {}, r"delay.ms is required"),
    ("delay", {"ms": 0}, r"delay.ms is 0.0; it must be > 0"),
    ("delay", {"ms": 5, "jitter_ms": -1}, r"delay.jitter_ms is -1.0; it must be >= 0"),
    ("delay", {"ms": 5, "direction": "up"}, r"delay.direction is 'up'; expected one of"),
    ("corrupt_byte", {"mti": "0200", "fix_checksums": "maybe"},
     r"corrupt_byte.fix_checksums must be a bool"),
    ("corrupt_byte", {"mti": "0200", "offset": -2}, r"corrupt_byte.offset is -2"),
    ("forge_rst", {"direction": "both"}, r"forge_rst.direction is 'both'; expected one of "
                                         r"terminal_to_host, host_to_terminal$"),
    ("forge_rst", {"on_mti": 210}, r"forge_rst.on_mti is '210'"),
    ("drop_segment", {}, r"drop_segment.n is required"),
    ("drop_segment", {"n": 0}, r"drop_segment.n is 0; it must be >= 1"),
    ("syn_blackhole", {"direction": "both"}, r"syn_blackhole has no parameter"),
    ("flap", {"down_ms": 10}, r"flap.up_ms is required"),
    ("flap", {"down_ms": 10, "up_ms": -5}, r"flap.up_ms is -5.0; it must be > 0"),
    ("bandwidth", {}, r"bandwidth.kbps is required"),
    ("bandwidth", {"kbps": 0}, r"bandwidth.kbps is 0.0; it must be > 0"),
    ("reorder", {"ms": -1}, r"reorder.ms is -1.0; it must be > 0"),
])
def test_bad_parameters_are_refused_naming_kind_and_parameter(
        kind: str, params: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        FaultSpec.of(kind, **params)


def test_iso_mti_reads_the_framing_only_where_a_segment_starts_a_message() -> None:
    assert iso_mti(REQ) == "0200" and iso_mti(RESP) == "0210"
    assert iso_mti(seg(T2H, iso("0800"), vlan=True)) == "0800"
    assert iso_mti(ACK) is None and iso_mti(ARP_FRAME) is None and iso_mti(UDP_FRAME) is None
    assert iso_mti(seg(T2H, b"\x00\x30" + b"\x61" + iso("0200")[3:])) is None  # not TPDU 0x60
    assert iso_mti(seg(T2H, b"\x00\x05" + iso("0200")[2:])) is None  # length below a message
    assert iso_mti(seg(T2H, iso("0200")[:14])) is None  # too short to hold the MTI
    assert iso_mti(seg(T2H, iso("0200")[20:])) is None  # the middle of a message
    where = tcp_payload(REQ)
    assert where is not None and REQ[where[2]:where[2] + where[3]] == iso("0200")


def test_drop_message_drops_the_mti_either_way_and_its_retransmissions_then_is_spent() -> None:
    rule = DropMessage.from_spec(FaultSpec.of("drop_message", mti="0210"))
    assert rule(T2H, REQ, 0.0) is FORWARD and rule(H2T, ACK, 0.0) is FORWARD
    assert rule(T2H, ARP_FRAME, 0.0) is FORWARD and rule(T2H, UDP_FRAME, 0.0) is FORWARD
    first = rule(H2T, RESP, 1.0)
    assert first.action is Action.DROP and first.is_trip
    again = rule(H2T, RESP, 1.2)  # the host's retransmission: same flow, same seq
    assert again == DROP and not again.is_trip
    later = seg(H2T, iso("0210"), seq=9000)  # another 0210: the rule is spent
    assert rule(H2T, later, 2.0) is FORWARD
    request_too = DropMessage.from_spec(FaultSpec.of("drop_message", mti="0200", times=0))
    for seq in (1, 2, 3):
        assert request_too(T2H, seg(T2H, iso("0200"), seq=seq), 0.0).is_trip
    assert request_too(H2T, RESP, 0.0) is FORWARD


def test_drop_message_in_the_core_records_a_trip_per_message() -> None:
    core = BridgeCore()
    entry = core.add_rule(FaultSpec.of("drop_message", mti="0210"), 100.0)
    assert core.handle(T2H, REQ, 1.0, 101.0) == [(T2H, REQ)]
    assert core.handle(H2T, RESP, 1.1, 101.1) == []
    assert core.handle(H2T, RESP, 1.4, 101.4) == []
    assert core.handle(H2T, ACK, 1.5, 101.5) == [(H2T, ACK)]
    trip = entry.record().last_trip
    assert entry.fired_count == 1 and entry.frames_acted == 2
    assert trip is not None and trip.direction is H2T and trip.action is Action.DROP
    size = len(iso("0210"))
    assert trip.tcp == TcpSegment(HOST_IP, TERM_IP, 8583, 40001, 0x18, 7000, 1000 + size, size)
    assert core.stats[H2T].frames_dropped == 2 and core.active()[0] is entry


QR_PORT = 8600


def http(direction: object, payload: bytes, *, sport: int = 41000, seq: int = 1,
         ack: int = 1, flags: str = "PA") -> bytes:
    """A segment between the terminal (port *sport*) and the QR platform (8600)."""
    if direction is T2H:
        eth = Ether(src=TERM_MAC, dst=HOST_MAC)
        ip, tcp = IP(src=TERM_IP, dst=HOST_IP), TCP(sport=sport, dport=QR_PORT)
    else:
        eth = Ether(src=HOST_MAC, dst=TERM_MAC)
        ip, tcp = IP(src=HOST_IP, dst=TERM_IP), TCP(sport=QR_PORT, dport=sport)
    tcp.seq, tcp.ack, tcp.flags = seq, ack, flags
    pkt = eth / ip / tcp
    return bytes(pkt / payload) if payload else bytes(pkt)


MICROPAY = b"POST /v1/micropay HTTP/1.1\r\nHost: 198.18.0.20:8600\r\n\r\n"
QUERY = b"POST /v1/query HTTP/1.1\r\nHost: 198.18.0.20:8600\r\n\r\n"
ANSWER = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}"


def test_drop_qr_parameters() -> None:
    assert dict(FaultSpec.of("drop_qr", operation="micropay").params) == {
        "operation": "micropay", "part": "answer", "times": 1}
    with pytest.raises(ConfigError, match=r"drop_qr.operation is 'pay'; expected one of "
                                          r"create, query, close, cancel, refund, micropay"):
        FaultSpec.of("drop_qr", operation="pay")
    with pytest.raises(ConfigError, match=r"drop_qr.part is 'both'; expected one of request, "
                                          r"answer"):
        FaultSpec.of("drop_qr", operation="query", part="both")


def test_drop_qr_answer_forwards_the_request_and_drops_what_comes_back_on_its_connection() -> None:
    rule = DropQr.from_spec(FaultSpec.of("drop_qr", operation="micropay"))
    assert rule(T2H, http(T2H, QUERY), 0.0) is FORWARD         # another operation
    assert rule(H2T, http(H2T, ANSWER), 0.0) is FORWARD        # its answer passes
    assert rule(T2H, http(T2H, MICROPAY, sport=41001), 0.0) is FORWARD  # the request goes
    assert rule(T2H, http(T2H, b'{"amount": 1}', sport=41001, seq=60), 0.0) is FORWARD
    first = rule(H2T, http(H2T, ANSWER, sport=41001), 0.1)
    assert first.action is Action.DROP and first.is_trip
    again = rule(H2T, http(H2T, ANSWER, sport=41001), 0.3)     # retransmitted: dropped quietly
    assert again == DROP and not again.is_trip
    assert rule(H2T, http(H2T, b"", sport=41001, flags="FA"), 0.4) is FORWARD  # FIN, no data
    # spent (times=1): the next micropay and its answer pass
    assert rule(T2H, http(T2H, MICROPAY, sport=41002), 1.0) is FORWARD
    assert rule(H2T, http(H2T, ANSWER, sport=41002), 1.1) is FORWARD
    # a request line cut differently is not this operation
    assert rule(T2H, http(T2H, b"POST /v1/micropayX HTTP/1.1\r\n", sport=41003), 2.0) \
        is FORWARD


def test_drop_qr_request_drops_the_request_and_the_rest_of_its_connection_every_time() -> None:
    rule = DropQr.from_spec(FaultSpec.of("drop_qr", operation="query", part="request",
                                         times=0))
    for sport in (42000, 42001, 42002):
        first = rule(T2H, http(T2H, QUERY, sport=sport), 0.0)
        assert first.action is Action.DROP and first.is_trip
        body = rule(T2H, http(T2H, b'{"order_id": "x"}', sport=sport, seq=50), 0.0)
        assert body == DROP and not body.is_trip
    assert rule(T2H, http(T2H, MICROPAY, sport=42005), 0.0) is FORWARD
    assert rule(H2T, http(H2T, QUERY, sport=42006), 0.0) is FORWARD  # only towards the host


def test_drop_qr_in_the_core_records_one_trip_per_answer() -> None:
    core = BridgeCore()
    entry = core.add_rule(FaultSpec.of("drop_qr", operation="micropay"), 100.0)
    request = http(T2H, MICROPAY)
    assert core.handle(T2H, request, 1.0, 101.0) == [(T2H, request)]
    assert core.handle(H2T, http(H2T, ANSWER), 1.1, 101.1) == []
    assert core.handle(H2T, http(H2T, ANSWER), 1.5, 101.5) == []
    trip = entry.record().last_trip
    assert entry.fired_count == 1 and entry.frames_acted == 2
    assert trip is not None and trip.direction is H2T and trip.tcp is not None
    assert trip.tcp.sport == QR_PORT


def test_delay_defers_by_ms_in_its_direction_and_jitter_is_seeded() -> None:
    to_host = Delay.from_spec(FaultSpec.of("delay", ms=150, direction="terminal_to_host"))
    assert to_host(T2H, ARP_FRAME, 10.0) == Verdict.defer(10.15)
    assert to_host(H2T, RESP, 10.0) is FORWARD
    spec = FaultSpec.of("delay", ms=100, jitter_ms=40, seed=7)
    one, two = Delay.from_spec(spec), Delay.from_spec(spec)
    a = [one(H2T, RESP, 1.0).until for _ in range(50)]
    assert a == [two(H2T, RESP, 1.0).until for _ in range(50)]  # same seed, same delays
    assert all(1.06 <= t <= 1.14 for t in a) and len(set(a)) > 40
    other = Delay.from_spec(FaultSpec.of("delay", ms=100, jitter_ms=40, seed=8))
    assert [other(H2T, RESP, 1.0).until for _ in range(50)] != a
    never_negative = Delay.from_spec(FaultSpec.of("delay", ms=1, jitter_ms=50, seed=1))
    assert all(never_negative(T2H, ACK, 5.0).until >= 5.0 for _ in range(100))


def test_delay_in_the_core_keeps_order_and_does_not_stall_the_other_way() -> None:
    core = BridgeCore()
    core.add_rule(FaultSpec.of("delay", ms=200, direction="terminal_to_host"), 0.0)
    frames = [seg(T2H, iso("0200"), seq=s) for s in (1, 2, 3)]
    for i, frame in enumerate(frames):
        assert core.handle(T2H, frame, 1.0 + i * 0.01, 0.0) == []
    assert core.handle(H2T, RESP, 1.05, 0.0) == [(H2T, RESP)]  # not held behind them
    assert core.next_deadline() == pytest.approx(1.2)
    assert core.release(1.19, 0.0) == []
    assert core.release(1.215, 0.0) == [(T2H, frames[0]), (T2H, frames[1])]
    assert core.release(5.0, 0.0) == [(T2H, frames[2])]
    s = core.stats[T2H]
    assert (s.frames_deferred, s.frames_forwarded, s.frames_dropped) == (3, 3, 0)
    assert core.snapshot()["deferred"] == 0 and core.active()[0].fired_count == 0


def test_corrupt_byte_flips_the_byte_counted_from_the_mti_and_fixes_checksums() -> None:
    rule = CorruptByte.from_spec(FaultSpec.of("corrupt_byte", mti="0200", offset=20))
    assert rule(H2T, RESP, 0.0) is FORWARD and rule(T2H, ACK, 0.0) is FORWARD
    v = rule(T2H, REQ, 0.0)
    assert v.action is Action.REPLACE and v.is_trip and len(v.data) == len(REQ)
    where = tcp_payload(REQ)
    assert where is not None
    at = where[2] + 13 + 20  # payload start + length, TPDU, header + offset from the MTI
    assert [i for i in range(len(REQ)) if v.data[i] != REQ[i]
            and i not in range(where[1] + 16, where[1] + 18)] == [at]  # and the TCP checksum
    assert v.data[at] == REQ[at] ^ 0xFF
    assert checksums_ok(v.data) and checksums_ok(REQ)
    assert rule(T2H, REQ, 0.0) is FORWARD  # times=1: spent
    mti_itself = CorruptByte.from_spec(FaultSpec.of("corrupt_byte", mti="0200", offset=0))
    assert iso_mti(mti_itself(T2H, REQ, 0.0).data) is None  # 0x02 → 0xfd: no longer BCD


def test_corrupt_byte_without_fixing_checksums_leaves_a_bad_tcp_checksum() -> None:
    rule = CorruptByte.from_spec(FaultSpec.of("corrupt_byte", mti="0210", offset=3,
                                              fix_checksums="false", times=0))
    for _ in range(3):  # times=0: every one (retransmissions too)
        v = rule(H2T, RESP, 0.0)
        assert v.action is Action.REPLACE and not checksums_ok(v.data)
        assert Ether(v.data)[IP].chksum == Ether(RESP)[IP].chksum  # IP header untouched
    short = seg(H2T, iso("0210", fields=b""))  # 21-byte body: no byte at offset 40
    far = CorruptByte.from_spec(FaultSpec.of("corrupt_byte", mti="0210", offset=40))
    assert far(H2T, short, 0.0) is FORWARD and far.done == 0


def test_corrupt_byte_works_behind_a_vlan_tag() -> None:
    tagged = seg(T2H, iso("0200"), vlan=True)
    v = CorruptByte.from_spec(FaultSpec.of("corrupt_byte", mti="0200"))(T2H, tagged, 0.0)
    assert v.action is Action.REPLACE and checksums_ok(v.data)
    assert sum(a != b for a, b in zip(v.data, tagged, strict=True)) in (2, 3)


def test_forge_rst_answers_the_request_with_a_rst_the_terminal_accepts() -> None:
    rule = ForgeRst.from_spec(FaultSpec.of("forge_rst"))
    assert rule(H2T, RESP, 0.0) is FORWARD  # data travelling the RST's way: not the trigger
    assert rule(T2H, seg(T2H, seq=1000, ack=7000, flags="A"), 0.0) is FORWARD  # no data
    v = rule(T2H, REQ, 0.0)
    assert v.action is Action.DROP and v.is_trip and len(v.extra) == 1
    way, rst = v.extra[0]
    assert way is H2T and len(rst) == 60 and checksums_ok(rst)
    pkt = Ether(rst)
    assert (pkt.src, pkt.dst) == (HOST_MAC, TERM_MAC)
    assert (pkt[IP].src, pkt[IP].dst, pkt[TCP].sport, pkt[TCP].dport) == (
        HOST_IP, TERM_IP, 8583, 40001)
    assert pkt[TCP].flags == "RA" and pkt[TCP].seq == 7000
    assert pkt[TCP].ack == 1000 + len(iso("0200"))
    assert rule(T2H, REQ, 0.0) is FORWARD  # one-shot


def test_forge_rst_on_the_response_travels_its_way_with_its_sequence_number() -> None:
    rule = ForgeRst.from_spec(FaultSpec.of("forge_rst", on_mti="0210"))
    assert rule(T2H, REQ, 0.0) is FORWARD
    v = rule(H2T, RESP, 0.0)
    way, rst = v.extra[0]
    pkt = Ether(rst)
    assert way is H2T and pkt.src == HOST_MAC and pkt[IP].src == HOST_IP
    assert (pkt[TCP].seq, pkt[TCP].ack, pkt[TCP].flags) == (7000, 1000 + len(iso("0200")), "RA")
    to_host = ForgeRst.from_spec(FaultSpec.of("forge_rst", direction="terminal_to_host",
                                              on_mti="0210"))
    way, rst = to_host(H2T, RESP, 0.0).extra[0]
    back = Ether(rst)  # the host gets a RST as if from the terminal
    assert way is T2H and back[IP].src == TERM_IP and back[TCP].seq == 1000 + len(iso("0200"))
    assert back[TCP].ack == 7000 + len(iso("0210")) and checksums_ok(rst)
    tagged = forge_rst(seg(T2H, b"x", vlan=True), reply=True)
    assert Ether(tagged)[Dot1Q].vlan == 5 and checksums_ok(tagged)


def test_forge_rst_in_the_core_counts_the_forged_frame_as_injected() -> None:
    core = BridgeCore()
    entry = core.add_rule(FaultSpec.of("forge_rst"), 0.0)
    out = core.handle(T2H, REQ, 1.0, 10.0)
    assert [way for way, _ in out] == [H2T] and Ether(out[0][1])[TCP].flags == "RA"
    s, r = core.stats[T2H], core.stats[H2T]
    assert (s.frames_dropped, s.frames_forwarded, s.frames_injected) == (1, 0, 0)
    assert (r.frames_injected, r.frames_forwarded) == (1, 0)
    assert core.snapshot()["directions"]["host_to_terminal"]["frames_injected"] == 1
    assert entry.fired_count == 1 and entry.frames_acted == 1
    assert core.handle(T2H, REQ, 1.0, 10.0) == [(T2H, REQ)]


def test_drop_segment_drops_the_nth_data_segment_its_way_once() -> None:
    rule = DropSegment.from_spec(FaultSpec.of("drop_segment", n=2))
    data = [seg(T2H, bytes([i]) * 10, seq=100 * i) for i in range(1, 5)]
    assert rule(T2H, data[0], 0.0) is FORWARD
    assert rule(T2H, ACK, 0.0) is FORWARD and rule(H2T, RESP, 0.0) is FORWARD  # not counted
    assert rule(T2H, data[1], 0.0) == DROP.tripped()
    assert rule(T2H, data[1], 0.0) is FORWARD  # the retransmission passes
    assert rule(T2H, data[2], 0.0) is FORWARD
    both = DropSegment.from_spec(FaultSpec.of("drop_segment", n=2, direction="both"))
    assert both(T2H, REQ, 0.0) is FORWARD and both(H2T, RESP, 0.0).is_trip


def test_syn_blackhole_drops_syns_towards_the_host_only() -> None:
    rule = SynBlackhole.from_spec(FaultSpec.of("syn_blackhole"))
    syn = seg(T2H, flags="S", ack=0)
    assert rule(T2H, syn, 0.0) == DROP.tripped()
    assert rule(H2T, seg(H2T, flags="SA"), 0.0) is FORWARD
    assert rule(H2T, seg(H2T, flags="S"), 0.0) is FORWARD
    for frame in (REQ, ACK, ARP_FRAME, UDP_FRAME, seg(T2H, flags="R")):
        assert rule(T2H, frame, 0.0) is FORWARD


def test_duplicate_forwards_the_next_data_segment_twice() -> None:
    core = BridgeCore()
    entry = core.add_rule(FaultSpec.of("duplicate", times=2), 0.0)
    assert core.handle(T2H, ACK, 0.0, 0.0) == [(T2H, ACK)]
    assert core.handle(H2T, RESP, 0.0, 0.0) == [(H2T, RESP)]
    assert core.handle(T2H, REQ, 0.0, 0.0) == [(T2H, REQ), (T2H, REQ)]
    assert core.handle(T2H, REQ, 0.0, 0.0) == [(T2H, REQ), (T2H, REQ)]
    assert core.handle(T2H, REQ, 0.0, 0.0) == [(T2H, REQ)]  # times=2: spent
    s = core.stats[T2H]
    assert (s.frames_forwarded, s.frames_injected) == (4, 2)
    assert entry.fired_count == 2
    every = Duplicate.from_spec(FaultSpec.of("duplicate", direction="both", times=0))
    assert all(every(d, f, 0.0).extra == ((d, f),) for d, f in [(T2H, REQ), (H2T, RESP)] * 5)


def test_watch_message_forwards_untouched_and_notes_each_message_once() -> None:
    core = BridgeCore()
    entry = core.add_rule(FaultSpec.of("watch_message", mti="0200"), 0.0)
    assert core.handle(T2H, REQ, 1.0, 100.0) == [(T2H, REQ)]
    assert core.handle(T2H, REQ, 1.2, 100.2) == [(T2H, REQ)]  # its retransmission: not again
    assert core.handle(H2T, RESP, 1.3, 100.3) == [(H2T, RESP)]
    assert core.handle(T2H, ACK, 1.4, 100.4) == [(T2H, ACK)]
    trips = core.trips()
    assert [(t.rule_id, t.wall, t.direction) for t in trips] == [(entry.id, 100.0, T2H)]
    s = core.stats[T2H]
    assert (s.frames_forwarded, s.frames_dropped, s.frames_deferred) == (3, 0, 0)


def test_bandwidth_serialises_frames_at_the_rate_in_order() -> None:
    core = BridgeCore()
    core.add_rule(FaultSpec.of("bandwidth", kbps=8, direction="terminal_to_host"), 0.0)
    frames = [seg(T2H, iso("0200"), seq=s) for s in (1, 2)]
    size = len(frames[0])  # 8 kbit/s = 1000 bytes/s: size ms per frame
    assert core.handle(T2H, frames[0], 1.0, 0.0) == []
    assert core.handle(T2H, frames[1], 1.0, 0.0) == []
    assert core.handle(H2T, RESP, 1.0, 0.0) == [(H2T, RESP)]  # the other way is not limited
    assert core.next_deadline() == pytest.approx(1.0 + size / 1000)
    assert core.release(1.0 + size / 1000 + 1e-6, 0.0) == [(T2H, frames[0])]
    assert core.release(1.0 + 2 * size / 1000 + 1e-6, 0.0) == [(T2H, frames[1])]
    later = core.handle(T2H, frames[0], 10.0, 0.0)  # an idle link does not bank credit
    assert later == [] and core.next_deadline() == pytest.approx(10.0 + size / 1000)


def test_reorder_holds_the_next_data_segment_so_the_following_one_overtakes_it() -> None:
    core = BridgeCore()
    entry = core.add_rule(FaultSpec.of("reorder", ms=50), 0.0)
    first, second = seg(T2H, iso("0200"), seq=1), seg(T2H, iso("0200"), seq=2)
    assert core.handle(T2H, ACK, 1.0, 0.0) == [(T2H, ACK)]  # no data: passes
    assert core.handle(T2H, first, 1.0, 0.0) == []
    assert core.handle(T2H, second, 1.01, 0.0) == [(T2H, second)]  # times=1: spent
    assert core.release(1.06, 0.0) == [(T2H, first)]
    assert entry.fired_count == 1


def test_flap_is_a_square_wave_from_the_first_frame_with_a_trip_per_down_period() -> None:
    rule = Flap.from_spec(FaultSpec.of("flap", down_ms=100, up_ms=300))
    timeline = [(10.0, "trip"), (10.05, "drop"), (10.099, "drop"), (10.1, "fwd"), (10.39, "fwd"),
                (10.41, "trip"), (10.45, "drop"), (10.52, "fwd"), (10.8, "trip")]
    for now, expected in timeline:
        v = rule(H2T, RESP, now)
        got = "fwd" if v is FORWARD else "trip" if v.is_trip else "drop"
        assert (now, got) == (now, expected)
    assert rule(T2H, ARP_FRAME, 10.85) == DROP  # both directions, nothing parsed
    # a long idle spell is skipped in whole cycles (bounded work), the phase is kept
    assert rule.is_down(10.0 + 0.4 * 10**6 + 0.05) and not rule.is_down(10.0 + 0.4 * 10**6 + 0.2)


def test_flap_with_a_seed_draws_reproducible_periods_around_the_nominal() -> None:
    def edges(seed: int) -> list[float]:
        rule = Flap(100, 100, seed)
        out, state, t = [], True, 0.0
        while t < 3.0:
            if rule.is_down(t) != state:
                state = not state
                out.append(round(t, 3))
            t += 0.001
        return out

    a = edges(3)
    assert a == edges(3) and a != edges(4)
    gaps = [b - a_ for a_, b in zip([0.0, *a], a, strict=False)]
    assert all(0.049 <= g <= 0.151 for g in gaps) and len(set(gaps)) > 3


def test_the_new_rules_parse_nothing_they_do_not_need(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_dissection(frame: bytes) -> TcpSegment | None:
        raise AssertionError("a rule built a TcpSegment record")

    monkeypatch.setattr(bridge, "tcp_segment", no_dissection)
    core = BridgeCore()
    for spec in (FaultSpec.of("drop_message", mti="0400"), FaultSpec.of("delay", ms=1,
                 direction="host_to_terminal"), FaultSpec.of("corrupt_byte", mti="0400"),
                 FaultSpec.of("forge_rst", on_mti="0400"), FaultSpec.of("syn_blackhole"),
                 FaultSpec.of("drop_segment", n=99), FaultSpec.of("drop_qr", operation="query"),
                 FaultSpec.of("duplicate", times=1)):
        core.add_rule(spec, 0.0)
    core.clear_rule(core.active()[-1].id, 0.0)  # the duplicate would trip (a trip describes)
    assert core.handle(T2H, REQ, 0.0, 0.0) == [(T2H, REQ)]
    assert core.state is BridgeState.RUNNING


def test_a_malformed_extra_frame_marks_the_bridge_failed() -> None:
    def bad(direction: object, frame: bytes, now: float) -> Verdict:
        return Verdict(Action.DROP, extra=((T2H, b"short"),))

    core = BridgeCore({FaultKind.SYN_BLACKHOLE: lambda spec: bad})
    core.add_rule(FaultSpec.of("syn_blackhole"), 0.0)
    assert core.handle(T2H, REQ, 0.0, 0.0) == []
    assert core.state is BridgeState.FAILED and core.failure is not None
    assert "extra frames" in core.failure and "syn_blackhole" in core.failure
