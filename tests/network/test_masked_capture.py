"""redact_pcap on pcaps written with scapy from the real framing and dialect encoder: every frame
kept at its length, checksums right, card data masked in place, the rest still decodable (by
rigs.host.decode_pcap and by the shipped Wireshark dissector)."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw
from scapy.utils import rdpcap, wrpcap

from protocols.iso8583 import (
    Header,
    Tpdu,
    decode_message,
    encode_message,
    encode_with_mac,
    frame,
    unframe,
)
from protocols.masking import mask_pan
from protocols.qr import DEFAULT_PORT as QR_PORT
from protocols.qr import Operation, build_request, mask_code
from rigs.errors import RigError
from rigs.host import decode_pcap
from rigs.network.capture import redact_pcap
from rigs.wireshark import LUA_SCRIPT
from rigs.wireshark.__main__ import main as wireshark_main

ROOT = Path(__file__).resolve().parents[2]
LUA = LUA_SCRIPT

TERM, HOST = "198.18.0.10", "198.18.0.20"
TID, MID = "10000001", "898100012340001"
MAK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
PAN = "62148312345678975"  # 17 digits: odd, so field 2 and 5A carry a pad nibble
MASKED_PAN = mask_pan(PAN)  # 621483*******8975
DISCRETIONARY = "987654321"
TRACK2 = f"{PAN}D3012220{DISCRETIONARY}"
PIN_BLOCK = "8A3F19C2D47E6B05"
CRYPTOGRAM = "1F2E3D4C5B6A7988"
ICC = ("5A09" + PAN + "F" + "5F340101" + "9F2608" + CRYPTOGRAM
       + "5712" + (TRACK2 + "F").ljust(36, "F") + "9F270180" + "950500000480009F360200A1")
KEYS = "C0FFEE" * 13 + "AB"  # 40 bytes: PIK under TMK, KCV, MAK under TMK, KCV
AUTH_CODE = "134567890123456789"  # a WeChat-shaped payment code (18 digits)
QR_KEY = bytes.fromhex("00112233445566778899AABBCCDDEEFF")


def sale(stan: str, amount: str = "000000001000") -> bytes:
    doc = {"t": "0200", "2": PAN, "3": "000000", "4": amount, "11": stan, "14": "3012",
           "22": "051", "23": "001", "25": "00", "26": "12", "35": TRACK2, "41": TID, "42": MID,
           "49": "156", "52": PIN_BLOCK, "53": "2600000000000000", "55": ICC,
           "60": "2200000100050"}
    return frame(encode_with_mac(doc, MAK), Tpdu(), Header())


def sale_response(stan: str, rc: str = "00", amount: str = "000000001000") -> bytes:
    doc = {"t": "0210", "3": "000000", "4": amount, "11": stan, "12": "150926", "13": "0314",
           "32": "00000001", "37": "260730000001", "38": "123456", "39": rc, "41": TID, "42": MID,
           "49": "156", "60": "22000001"}
    return frame(encode_with_mac(doc, MAK), Tpdu().swapped(), Header())


SIGN_IN = frame(encode_message({"t": "0800", "11": "000001", "41": TID, "42": MID,
                                "60": "00000001004", "63": "01 "}), Tpdu(), Header())
SIGN_IN_RESPONSE = frame(encode_message({"t": "0810", "11": "000001", "12": "150926",
                                         "13": "0314", "37": "260730000000", "39": "00",
                                         "41": TID, "42": MID, "60": "00000001004", "62": KEYS}),
                         Tpdu().swapped(), Header())


@dataclass
class Conn:
    """One TCP connection between the terminal (client) and a server port, with correct
    sequence and acknowledgement numbers; ``pkts`` collects its frames in order."""

    cport: int
    sport: int
    t: float
    cseq: int = 1000
    sseq: int = 7000
    pkts: list[Packet] = field(default_factory=list)

    def _add(self, to_server: bool, flags: str, payload: bytes = b"", *, seq: int | None = None
             ) -> Packet:
        src, dst, sp, dp = (TERM, HOST, self.cport, self.sport) if to_server else \
            (HOST, TERM, self.sport, self.cport)
        mine, theirs = (self.cseq, self.sseq) if to_server else (self.sseq, self.cseq)
        pkt = Ether() / IP(src=src, dst=dst) / TCP(
            sport=sp, dport=dp, flags=flags, seq=(mine if seq is None else seq) % (1 << 32),
            ack=theirs % (1 << 32) if "A" in flags else 0)
        if payload:
            pkt = pkt / Raw(payload)
        pkt = Ether(bytes(pkt))  # checksums computed now, as on the wire
        pkt.time = self._tick()
        self.pkts.append(pkt)
        return pkt

    def _tick(self) -> float:
        now = round(self.t, 6)
        self.t += 0.001
        return now

    def open(self) -> Conn:
        self._add(True, "S")
        self.cseq += 1
        self._add(False, "SA")
        self.sseq += 1
        self._add(True, "A")
        return self

    def send(self, to_server: bool, data: bytes, *, cuts: tuple[int, ...] = ()) -> list[Packet]:
        """*data* in segments cut at the offsets *cuts*."""
        out = []
        edges = [0, *cuts, len(data)]
        for a, b in zip(edges, edges[1:], strict=False):
            out.append(self._add(to_server, "PA", data[a:b]))
            if to_server:
                self.cseq += b - a
            else:
                self.sseq += b - a
        return out

    def retransmit(self, pkt: Packet) -> Packet:
        copy = Ether(bytes(pkt))
        copy.time = self._tick()
        self.pkts.append(copy)
        return copy

    def close(self) -> None:
        self._add(True, "FA")
        self.cseq += 1
        self._add(False, "FA")
        self.sseq += 1
        self._add(True, "A")


def http_request(path: str, body: bytes) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: {HOST}:{QR_PORT}\r\nAccept-Encoding: identity\r\n"
            f"Content-Length: {len(body)}\r\nContent-Type: application/json; charset=utf-8\r\n"
            f"\r\n").encode() + body


def http_answer(body: bytes) -> bytes:
    return (f"HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


MICROPAY_PATH, MICROPAY_BODY = build_request(
    Operation.MICROPAY, {"out_trade_no": "20260314000123", "amount": 1888,
                         "auth_code": AUTH_CODE, "description": "午餐"},
    merchant_id=MID, terminal_id=TID, key=QR_KEY, nonce="5K8264ILTKCH16CQ", timestamp=1790000000)
ANSWER_BODY = json.dumps({"ok": True, "order": {"order_id": "Q1", "auth_code": mask_code(AUTH_CODE),
                                                "status": "SUCCESS", "amount": 1888},
                          "nonce": "5K8264ILTKCH16CQ", "sign": "AB" * 32},
                         separators=(",", ":")).encode()
GARBAGE = b"PAN=" + PAN.encode() + b" PIN=" + bytes.fromhex(PIN_BLOCK) + b" and more bytes\r\n"


@dataclass
class Scenario:
    pkts: list[Packet]
    retransmitted: tuple[int, int]   # frame indexes (0-based) of a segment and its copy
    garbage: int                     # frame index of the garbage segment on 8583
    qr_request: list[int]            # frame indexes of the micropay request's segments


def scenario() -> Scenario:
    t = 1_700_000_000.0
    pkts: list[Packet] = []
    # Sign-in: 0800 → 0810 (working keys in field 62).
    c = Conn(40001, 8583, t).open()
    c.send(True, SIGN_IN)
    c.send(False, SIGN_IN_RESPONSE)
    c.close()
    pkts += c.pkts
    # A sale split inside the PAN (byte 28: the length prefix of field 2 is at 23), the first
    # segment retransmitted; the ISN close to the 32-bit wrap.
    c = Conn(40002, 8583, t + 1, cseq=(1 << 32) - 9)
    c.open()
    first, _ = c.send(True, sale("000123"), cuts=(28,))
    c.retransmit(first)
    c.send(False, sale_response("000123"))
    c.close()
    base = len(pkts)
    pkts += c.pkts
    retransmitted = (base + 3, base + 5)
    # Two sales in one segment, their two answers in one segment.
    c = Conn(40003, 8583, t + 2).open()
    c.send(True, sale("000124", "000000002000") + sale("000125", "000000003000"))
    c.send(False, sale_response("000124", "51", "000000002000")
           + sale_response("000125", "00", "000000003000"))
    c.close()
    pkts += c.pkts
    # Not ISO 8583 at all on port 8583.
    c = Conn(40004, 8583, t + 3).open()
    (bad,) = c.send(True, GARBAGE)
    base = len(pkts)
    pkts += c.pkts
    garbage = base + 3
    # QR micropay: the auth_code split across the second and third segments.
    request = http_request(MICROPAY_PATH, MICROPAY_BODY)
    cut = request.index(AUTH_CODE.encode()) + 7
    c = Conn(40005, QR_PORT, t + 4).open()
    c.send(True, request, cuts=(request.index(b"\r\n\r\n") + 4, cut))
    c.send(False, http_answer(ANSWER_BODY))
    c.close()
    base = len(pkts)
    pkts += c.pkts
    # Other traffic: UDP carrying digits, untouched.
    udp = Ether(bytes(Ether() / IP(src=TERM, dst=HOST) / UDP(sport=40999, dport=9999)
                      / Raw(b"not card data, 42")))
    udp.time = t + 5
    pkts.append(udp)
    return Scenario(pkts, retransmitted, garbage, [base + 3, base + 4, base + 5])


def bcd_forms(digits: str) -> list[bytes]:
    """Both nibble alignments of a digit run as packed BCD (whole bytes only)."""
    even = digits[:len(digits) // 2 * 2]
    odd = digits[1:][:(len(digits) - 1) // 2 * 2]
    return [bytes.fromhex(even), bytes.fromhex(odd)]


def secrets() -> dict[str, list[bytes]]:
    middle = PAN[6:-4]
    return {
        "PAN as ASCII": [PAN.encode(), middle.encode()],
        "PAN as BCD": bcd_forms(PAN) + [bytes.fromhex(PAN[:16])],
        "track 2 as BCD": [bytes.fromhex(TRACK2)] + bcd_forms(TRACK2[18:]) + bcd_forms(DISCRETIONARY),
        "PIN block": [bytes.fromhex(PIN_BLOCK)],
        "working keys": [bytes.fromhex(KEYS)[:8], bytes.fromhex(KEYS)[-8:]],
        "auth_code": [AUTH_CODE.encode(), AUTH_CODE[6:-4].encode()],
    }


Masked = tuple[Scenario, Path, Path, int]


@pytest.fixture
def masked(tmp_path: Path) -> Masked:
    sc = scenario()
    raw, safe = tmp_path / "raw.pcap", tmp_path / "raw.redacted.pcap"
    wrpcap(str(raw), sc.pkts)
    changed = redact_pcap(raw, safe)
    return sc, raw, safe, changed


def payload(pkt: Packet) -> bytes:
    return bytes(pkt[TCP].payload) if TCP in pkt else bytes(pkt[UDP].payload)


def checksums_ok(pkt: Packet) -> bool:
    fresh = pkt.copy()
    del fresh[IP].chksum
    layer = TCP if TCP in fresh else UDP
    del fresh[layer].chksum
    fresh = Ether(bytes(fresh))
    return bool(fresh[IP].chksum == pkt[IP].chksum and fresh[layer].chksum == pkt[layer].chksum)


def test_every_frame_is_kept_with_its_length_headers_and_right_checksums(masked: Masked) -> None:
    sc, raw, safe, changed = masked
    before, after = rdpcap(str(raw)), rdpcap(str(safe))
    assert len(after) == len(before) == len(sc.pkts)
    differ = 0
    for old, new in zip(before, after, strict=True):
        assert len(bytes(new)) == len(bytes(old)) and new.time == old.time
        assert checksums_ok(new)
        head_old, head_new = old.copy(), new.copy()
        for p in (head_old, head_new):
            (p[TCP] if TCP in p else p[UDP]).remove_payload()
            (p[TCP] if TCP in p else p[UDP]).chksum = 0
        assert bytes(head_new) == bytes(head_old)  # Ethernet, IP and TCP headers as they were
        differ += bytes(new) != bytes(old)
    assert changed == differ
    # the 0810 (keys), the sale's 2 segments + its retransmission, the 0210 (MAC), the segment
    # of two sales, the segment of their answers (MACs), the garbage, the 2 segments of the QR
    # request carrying auth_code (not its header segment, not the answer: its code is masked)
    assert changed == 1 + 3 + 1 + 1 + 1 + 1 + 2


def flows(path: Path) -> bytes:
    """The file's bytes, then each TCP direction's payloads end to end (what spans segments)."""
    by_flow: dict[tuple[str, int], bytes] = {}
    for pkt in rdpcap(str(path)):
        if TCP in pkt:
            key = (pkt[IP].src, pkt[TCP].sport)
            by_flow[key] = by_flow.get(key, b"") + payload(pkt)
    return b"\n".join([path.read_bytes(), *by_flow.values()])


def test_no_card_data_is_left_in_the_file(masked: Masked) -> None:
    _, raw, safe, _ = masked
    raw_bytes, safe_bytes = flows(raw), flows(safe)
    for what, forms in secrets().items():
        assert any(form in raw_bytes for form in forms), f"the test pcap lacks {what}"
        for form in forms:
            assert form not in safe_bytes, f"{what} ({len(form)} bytes) left in the masked pcap"
    assert bytes.fromhex(CRYPTOGRAM) in safe_bytes  # not card data: kept
    assert b"not card data, 42" in safe_bytes  # UDP untouched


def test_decode_pcap_still_decodes_every_message_masked(masked: Masked) -> None:
    _, _, safe, _ = masked
    entries = decode_pcap(safe, port=8583)
    good = [e for e in entries if "error" not in e]
    assert [(e["mti"], e["stan"]) for e in good] == [
        ("0800", "000001"), ("0810", "000001"), ("0200", "000123"), ("0210", "000123"),
        ("0200", "000124"), ("0200", "000125"), ("0210", "000124"), ("0210", "000125")]
    bad = [e for e in entries if "error" in e]
    assert len(bad) == 1 and bad[0]["src"] == f"{TERM}:40004"  # the garbage, zeroed
    for e in good:
        if e["mti"] == "0200":
            f = e["fields"]
            assert f["2"] == MASKED_PAN == "621483*******8975"
            assert f["35"] == f"[track data redacted, PAN {MASKED_PAN}]"
            assert f["55"].startswith("5A=[redacted 9 bytes] 5F34=01 9F26=" + CRYPTOGRAM)
            assert "57=[redacted 18 bytes] 9F27=80" in f["55"]
            assert f["4"] in ("000000001000", "000000002000", "000000003000")
            assert f["41"] == TID and f["42"] == MID and f["22"] == "051" and f["23"] == "001"
    responses = {e["stan"]: e["response_code"] for e in good if e["mti"] == "0210"}
    assert responses == {"000123": "00", "000124": "51", "000125": "00"}


def test_masked_values_keep_the_fields_decodable(masked: Masked) -> None:
    """The raw bytes of the masked sale: PAN 6/4 with zeros in BCD, track 2 separator kept,
    PIN block, ICC sensitive values, MAC and keys zeroed; tags and lengths kept."""
    sc, _, safe, _ = masked
    after = rdpcap(str(safe))
    i, j = sc.retransmitted
    assert payload(after[i]) == payload(after[j])  # both copies masked the same
    stream = payload(after[i]) + payload(after[i + 1])
    masked_pan = PAN[:6] + "F" * 7 + PAN[-4:]
    assert stream[23:33] == bytes.fromhex("17" + masked_pan + "0")  # LL 17 digits, pad kept
    assert bytes.fromhex("34" + masked_pan + "D" + "0" * 16) in stream  # field 35
    assert bytes.fromhex("5A09" + masked_pan + "F5F340101") in stream
    assert bytes.fromhex("5712" + "00" * 18 + "9F270180") in stream
    assert stream.endswith(bytes(8))  # field 64, the MAC
    assert bytes(8) + bytes.fromhex("2600000000000000") in stream  # field 52 then 53 (kept)


def test_the_garbage_payload_is_zeroed_and_logged_without_its_bytes(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sc = scenario()
    raw, safe = tmp_path / "g.pcap", tmp_path / "g.safe.pcap"
    wrpcap(str(raw), sc.pkts)
    with caplog.at_level(logging.WARNING, logger="rigs.network.capture"):
        redact_pcap(raw, safe)
    assert payload(rdpcap(str(safe))[sc.garbage]) == bytes(len(GARBAGE))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"frame {sc.garbage + 1} " in w and "not ISO 8583 framing" in w
               and f"{TERM}:40004" in w for w in warnings), warnings
    text = "\n".join(warnings)
    assert PAN not in text and PAN[6:-4] not in text and PIN_BLOCK.lower() not in text.lower()
    prefix = str(int.from_bytes(GARBAGE[:2], "big"))  # the "length" its first two bytes make
    assert "50 41 4e" not in text.lower() and prefix not in text  # no bytes, no value of them


def test_the_qr_auth_code_is_masked_like_mask_code(masked: Masked) -> None:
    sc, _, safe, _ = masked
    after = rdpcap(str(safe))
    request = http_request(MICROPAY_PATH, MICROPAY_BODY)
    first = sc.qr_request[0]
    got = b"".join(payload(after[k]) for k in sc.qr_request)
    assert len(got) == len(request)
    head, body = got.split(b"\r\n\r\n", 1)
    assert head == request.split(b"\r\n\r\n", 1)[0]
    sent, seen = json.loads(MICROPAY_BODY), json.loads(body)
    assert seen["auth_code"] == mask_code(AUTH_CODE) == "134567********6789"
    assert {k: v for k, v in seen.items() if k != "auth_code"} == \
        {k: v for k, v in sent.items() if k != "auth_code"}
    answer = payload(after[first + 3])
    assert answer == http_answer(ANSWER_BODY)  # already masked by the platform: unchanged


def test_a_corrupted_copy_with_a_bad_checksum_never_leaks(tmp_path: Path) -> None:
    """CORRUPT_BYTE without fixing checksums: the corrupted copy (bitmap broken, TCP checksum
    wrong) then the intact retransmission.  The stream is the intact copy; the corrupted one is
    parsed as its own version of the stream and zeroed when it does not decode; its checksum
    stays wrong."""
    c = Conn(40010, 8583, 1_700_000_000.0).open()
    msg = sale("000200")
    (good,) = c.send(True, msg)
    broken = bytearray(bytes(good))
    at = len(bytes(good)) - len(msg) + 2 + 11 + 2  # the first bitmap byte
    broken[at] ^= 0xFF
    corrupted = Ether(bytes(broken))
    corrupted.time = good.time
    c.pkts[-1] = corrupted
    c.retransmit(good)
    c.send(False, sale_response("000200"))
    raw, safe = tmp_path / "c.pcap", tmp_path / "c.safe.pcap"
    wrpcap(str(raw), c.pkts)
    redact_pcap(raw, safe)
    after = rdpcap(str(safe))
    data = safe.read_bytes()
    for form in secrets()["PAN as BCD"] + [bytes.fromhex(PIN_BLOCK)]:
        assert form not in data
    assert payload(after[3]) == bytes(len(msg)) and not checksums_ok(after[3])
    assert payload(after[4]) != bytes(len(msg)) and checksums_ok(after[4])
    doc = decode_message(unframe(payload(after[4]))[2])
    assert doc["2"] == PAN[:6] + "F" * 7 + PAN[-4:] and doc["11"] == "000200"
    entries = decode_pcap(safe)  # it takes the first copy of the bytes: the zeroed one
    assert [e.get("mti") for e in entries] == [None, "0210"] and "error" in entries[0]


def test_a_stream_cut_short_and_a_gap_are_zeroed(tmp_path: Path) -> None:
    c = Conn(40011, 8583, 1_700_000_000.0).open()
    msg = sale("000300")
    c.send(True, msg, cuts=(40, 80))
    del c.pkts[4]  # the middle segment never reached the capture
    raw, safe = tmp_path / "gap.pcap", tmp_path / "gap.safe.pcap"
    wrpcap(str(raw), c.pkts)
    assert redact_pcap(raw, safe) == 2
    after = rdpcap(str(safe))
    assert payload(after[3]) == bytes(40) and payload(after[4]) == bytes(len(msg) - 80)


def test_a_harmless_corruption_is_masked_like_the_stream(tmp_path: Path) -> None:
    """A flipped byte in field 4 (amount) of a copy sent with a bad checksum: the fields are
    where they were, so that copy is masked too (not zeroed)."""
    c = Conn(40013, 8583, 1_700_000_000.0).open()
    msg = sale("000201")
    (good,) = c.send(True, msg)
    broken = bytearray(bytes(good))
    amount_at = len(bytes(good)) - len(msg) + 23 + 1 + 9 + 3 + 5  # LL, PAN, field 3, 4[5]
    broken[amount_at] ^= 0x11
    c.pkts[-1] = Ether(bytes(broken))
    c.pkts[-1].time = good.time
    c.retransmit(good)
    raw, safe = tmp_path / "h.pcap", tmp_path / "h.safe.pcap"
    wrpcap(str(raw), c.pkts)
    assert redact_pcap(raw, safe) == 2
    after = rdpcap(str(safe))
    docs = [decode_message(unframe(payload(after[k]))[2]) for k in (3, 4)]
    assert [d["4"] for d in docs] == ["000000001011", "000000001000"]
    assert {d["2"] for d in docs} == {PAN[:6] + "F" * 7 + PAN[-4:]}
    assert not checksums_ok(after[3]) and checksums_ok(after[4])


def test_icc_data_that_stops_being_tlv_is_zeroed_from_there(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    doc = {"t": "0200", "2": PAN, "3": "000000", "4": "000000001000", "11": "000400",
           "41": TID, "42": MID, "55": "5A09" + PAN + "F" + "9F2701809F1F0A3132333435"}
    msg = frame(encode_message(doc), Tpdu(), Header())
    c = Conn(40014, 8583, 1_700_000_000.0).open()
    c.send(True, msg)
    raw, safe = tmp_path / "t.pcap", tmp_path / "t.safe.pcap"
    wrpcap(str(raw), c.pkts)
    with caplog.at_level(logging.WARNING, logger="rigs.network.capture"):
        assert redact_pcap(raw, safe) == 1
    field55 = decode_message(unframe(payload(rdpcap(str(safe))[3]))[2])["55"]
    assert field55 == "5A09" + PAN[:6] + "F" * 7 + PAN[-4:] + "F" + "9F270180" + "00" * 8
    assert any("frame 4 " in r.getMessage() and "field 55" in r.getMessage()
               and "not BER-TLV from byte 15" in r.getMessage() for r in caplog.records)


def test_qr_messages_that_cannot_be_understood_are_zeroed(tmp_path: Path) -> None:
    chunked = (f"POST {MICROPAY_PATH} HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
               f"{len(MICROPAY_BODY):x}\r\n").encode() + MICROPAY_BODY + b"\r\n0\r\n\r\n"
    not_json = http_request(MICROPAY_PATH, b'{"auth_code": "' + AUTH_CODE.encode() + b'",')
    query = http_request(MICROPAY_PATH + "?auth_code=" + AUTH_CODE, b"")
    good = http_request(MICROPAY_PATH, MICROPAY_BODY)
    pkts: list[Packet] = []
    c = Conn(40020, QR_PORT, 0.0).open()
    c.send(True, chunked)
    pkts += c.pkts
    c = Conn(40021, QR_PORT, 1.0).open()
    c.send(True, not_json)
    c.send(True, good)  # the next request on the connection is still read
    pkts += c.pkts
    c = Conn(40022, QR_PORT, 2.0).open()
    c.send(True, query + good)
    pkts += c.pkts
    raw, safe = tmp_path / "q.pcap", tmp_path / "q.safe.pcap"
    wrpcap(str(raw), pkts)
    assert redact_pcap(raw, safe) == 4
    after = [payload(p) for p in rdpcap(str(safe))]
    assert after[3] == bytes(len(chunked)) and after[7] == bytes(len(not_json))
    assert after[8] == good.replace(AUTH_CODE.encode(), mask_code(AUTH_CODE).encode())
    assert after[12] == bytes(len(query) + len(good))  # one segment, one bad message: zeroed
    for data in after:
        assert AUTH_CODE.encode() not in data and AUTH_CODE[6:-4].encode() not in data


def test_bridge_pcaps_ipv6_vlan_and_the_ports_given(tmp_path: Path) -> None:
    """The bridge's own pcap writer, an IPv6 connection and an 802.1Q-tagged IPv4 one on the
    port given (9100); TCP on a port not given (8583 here) is copied untouched."""
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Dot1Q

    from rigs.network.bridge import PcapSink

    msg = sale("000500")
    v6 = Ether() / IPv6(src="fd00::10", dst="fd00::20") / TCP(sport=40030, dport=9100, flags="PA",
                                                              seq=10, ack=1) / Raw(msg)
    tagged = Ether() / Dot1Q(vlan=7) / IP(src=TERM, dst=HOST) / TCP(
        sport=40031, dport=9100, flags="PA", seq=10, ack=1) / Raw(msg)
    other = Ether() / IP(src=TERM, dst=HOST) / TCP(sport=40032, dport=8583, flags="PA", seq=10,
                                                    ack=1) / Raw(msg)
    raw = tmp_path / "b.pcap"
    sink = PcapSink(raw)
    for i, pkt in enumerate((v6, tagged, other)):
        sink.write(bytes(pkt), 1_700_000_000.0 + i)
    sink.close()
    safe = tmp_path / "b.safe.pcap"
    assert redact_pcap(raw, safe, iso_ports=(9100,), qr_ports=()) == 2
    after = rdpcap(str(safe))
    for pkt in after[:2]:
        doc = decode_message(unframe(payload(pkt))[2])
        assert doc["2"] == PAN[:6] + "F" * 7 + PAN[-4:] and doc["52"] == "00" * 8
        fresh = Ether(bytes(pkt))
        del fresh[TCP].chksum
        assert Ether(bytes(fresh))[TCP].chksum == pkt[TCP].chksum
    assert bytes(after[2]) == bytes(other)


def test_a_record_cut_short_at_the_end_is_left_out(tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    c = Conn(40040, 8583, 0.0).open()
    c.send(True, sale("000600"))
    raw, safe = tmp_path / "cut.pcap", tmp_path / "cut.safe.pcap"
    wrpcap(str(raw), c.pkts)
    raw.write_bytes(raw.read_bytes()[:-30])
    with caplog.at_level(logging.WARNING, logger="rigs.network.capture"):
        assert redact_pcap(raw, safe) == 0
    assert len(rdpcap(str(safe))) == 3
    assert any("frame 4 is cut short" in r.getMessage() for r in caplog.records)


def test_io_errors_name_the_files(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pcap"
    with pytest.raises(RigError, match="missing.pcap"):
        redact_pcap(missing, tmp_path / "out.pcap")
    not_pcap = tmp_path / "text.pcap"
    not_pcap.write_bytes(b"hello, this is not a capture at all")
    with pytest.raises(RigError, match="text.pcap.*not a pcap"):
        redact_pcap(not_pcap, tmp_path / "out.pcap")
    good = tmp_path / "ok.pcap"
    wrpcap(str(good), Conn(40012, 8583, 0.0).open().pkts)
    with pytest.raises(RigError, match=r"no-such-dir/out.pcap.*ok.pcap"):
        redact_pcap(good, tmp_path / "no-such-dir" / "out.pcap")


# --------------------------------------------------------------------------------------------
# The Wireshark dissector

TSHARK = shutil.which("tshark")


def test_the_shipped_dissector_is_generated_from_the_dialect() -> None:
    done = subprocess.run([sys.executable, "-m", "rigs.wireshark", "--check"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_check_fails_on_a_stale_dissector(tmp_path: Path) -> None:
    lua = tmp_path / "posrig_iso8583.lua"
    assert wireshark_main(["--check", "--output", str(lua)]) == 1  # missing
    assert wireshark_main(["--write", "--output", str(lua)]) == 0
    assert wireshark_main(["--check", "--output", str(lua)]) == 0
    assert lua.read_text() == LUA_SCRIPT.read_text()
    lua.write_text(lua.read_text().replace('[2] = {name = "PAN"', '[2] = {name = "Account"'))
    assert wireshark_main(["--check", "--output", str(lua)]) == 1


def tshark(pcap: Path, *args: str) -> str:
    assert TSHARK is not None
    done = subprocess.run([TSHARK, "-n", "-X", f"lua_script:{LUA}", "-r", str(pcap), *args],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Lua" not in done.stderr, done.stderr
    return done.stdout


@pytest.mark.skipif(TSHARK is None, reason="tshark is not installed (apt-get install tshark)")
def test_tshark_decodes_the_masked_capture_with_the_dissector(masked: Masked) -> None:
    _, _, safe, _ = masked
    rows = [line.split("\t") for line in tshark(
        safe, "-Y", "posrig", "-T", "fields", "-E", "occurrence=a", "-E", "aggregator=|",
        "-e", "frame.number", "-e", "posrig.mti", "-e", "posrig.f11", "-e", "posrig.f4",
        "-e", "posrig.f39", "-e", "posrig.f2").splitlines()]
    mtis = [m for row in rows for m in row[1].split("|")]
    assert mtis == ["0800", "0810", "0200", "0210", "0200", "0200", "0210", "0210"]
    stans = [s for row in rows for s in row[2].split("|")]
    assert stans == ["000001", "000001", "000123", "000123", "000124", "000125", "000124",
                     "000125"]
    amounts = {a for row in rows for a in row[3].split("|") if a}
    assert amounts == {"000000001000", "000000002000", "000000003000"}
    codes = [c for row in rows for c in row[4].split("|") if c]
    assert codes == ["00", "00", "51", "00"]
    pans = {p for row in rows for p in row[5].split("|") if p}
    assert pans == {PAN[:6] + "F" * 7 + PAN[-4:]}
    detail = tshark(safe, "-Y", "posrig.mti == \"0200\"", "-V")
    assert "ISO 8583 0200 STAN 000123" in detail
    assert "TPDU" in detail and "Destination: 0x0003" in detail
    assert "Field 35" in detail and "Track 2 data" in detail
    assert PAN not in detail
    info = tshark(safe, "-Y", "posrig", "-T", "fields", "-e", "_ws.col.Info")
    assert "ISO 8583 0210 STAN 000124 RC 51" in info
