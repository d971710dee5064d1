"""decode_pcap on a pcap written with scapy from the bytes of a real loopback exchange."""

from __future__ import annotations

import datetime as dt
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import wrpcap

from protocols.crypto import decode_working_keys, pin_block
from protocols.iso8583 import (
    Header,
    LengthFramer,
    Tpdu,
    decode_message,
    encode_message,
    encode_with_mac,
    frame,
    unframe,
)
from rigs.host import decode_pcap, render_messages
from sim.host.engine import AcquirerEngine, load_accounts, load_terminals
from sim.host.server import AcquirerServer

from .conftest import MID, PAN, PIN, TID, TMK, counting_keys

TERM, HOST = "198.18.0.10", "198.18.0.20"


@pytest.fixture
def server(config_dir: Path) -> Iterator[AcquirerServer]:
    engine = AcquirerEngine(load_terminals(config_dir / "terminals.yaml"),
                            load_accounts(config_dir / "cards"), key_source=counting_keys())
    srv = AcquirerServer(engine, "127.0.0.1", 0, idle_timeout=2.0,
                         clock=lambda: dt.datetime(2026, 3, 14, 15, 9, 26))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def exchange(address: tuple[str, int], request: bytes) -> bytes:
    with socket.create_connection(address, timeout=2.0) as sock:
        sock.sendall(request)
        framer = LengthFramer()
        while True:
            data = sock.recv(4096)
            assert data, "host closed early"
            frames = framer.feed(data)
            if frames:
                return frames[0]


def loopback_bytes(address: tuple[str, int]) -> list[bytes]:
    """Sign-in request/response and sale request/response, as they crossed loopback."""
    si_req = frame(encode_message({"t": "0800", "11": "000001", "41": TID, "42": MID,
                                   "60": "00000001004", "63": "01 "}), Tpdu(), Header())
    si_resp = exchange(address, si_req)
    pik, mak = decode_working_keys(bytes.fromhex(decode_message(unframe(si_resp)[2])["62"]), TMK)
    sale = {"t": "0200", "2": PAN, "3": "000000", "4": "000000001000", "11": "000002",
            "14": "3012", "22": "051", "25": "00", "35": f"{PAN}D3012220000000000",
            "41": TID, "42": MID, "49": "156", "52": pin_block(PIN, PAN, pik).hex(),
            "53": "2600000000000000", "55": "5A08" + PAN + "9F270180",
            "60": "2200000100050"}
    sale_req = frame(encode_with_mac(sale, mak), Tpdu(), Header())
    sale_resp = exchange(address, sale_req)
    return [si_req, si_resp, sale_req, sale_resp]


def segments(src: str, sport: int, dst: str, dport: int, isn: int, t0: float,
             chunks: list[bytes]) -> list[Ether]:
    pkts = [Ether() / IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags="S", seq=isn)]
    pkts[0].time = t0
    seq = isn + 1
    for i, chunk in enumerate(chunks):
        p = Ether() / IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags="PA",
                                                  seq=seq % (1 << 32)) / Raw(chunk)
        p.time = t0 + 0.001 * (i + 1)
        pkts.append(p)
        seq += len(chunk)
    return pkts


def write_pcap(path: Path, msgs: list[bytes], *, corrupt: bool = False) -> None:
    si_req, si_resp, sale_req, sale_resp = msgs
    if corrupt:  # field 4 of the sale shortened: length prefix and bitmap still consistent
        sale_req = sale_req[:-3]
        sale_req = (len(sale_req) - 2).to_bytes(2, "big") + sale_req[2:]
    t = 1_700_000_000.0
    pkts = []
    pkts += segments(TERM, 40001, HOST, 8583, 1000, t, [si_req])
    pkts += segments(HOST, 8583, TERM, 40001, 5000, t + 0.01, [si_resp])
    # Sale on a second connection: request split in two segments, the first one retransmitted,
    # ISN close to the 32-bit wrap.
    split = sale_req[:9], sale_req[9:]
    req = segments(TERM, 40002, HOST, 8583, (1 << 32) - 5, t + 0.1, list(split))
    pkts += req + [req[1].copy()]
    pkts[-1].time = t + 0.1015
    pkts += segments(HOST, 8583, TERM, 40002, 7000, t + 0.2, [sale_resp])
    wrpcap(str(path), pkts)


def test_decode_pcap_of_a_loopback_exchange(server: AcquirerServer, tmp_path: Path) -> None:
    msgs = loopback_bytes(server.address)
    pcap = tmp_path / "acq.pcap"
    write_pcap(pcap, msgs)
    entries = decode_pcap(pcap)
    assert [(e["direction"], e["mti"]) for e in entries] == [
        ("terminal→host", "0800"), ("host→terminal", "0810"),
        ("terminal→host", "0200"), ("host→terminal", "0210")]
    assert all("error" not in e for e in entries)
    assert [e["stan"] for e in entries] == ["000001", "000001", "000002", "000002"]
    assert entries[3]["response_code"] == "00" and entries[3]["response_text"] == "APPROVED"
    assert entries[0]["src"] == f"{TERM}:40001" and entries[0]["dst"] == f"{HOST}:8583"
    assert entries[1]["tpdu"] == "60 00 00 00 03"
    sale = entries[2]["fields"]
    assert sale["2"] == "621483******0017" and sale["52"] == "[PIN block redacted]"
    assert sale["55"] == "5A=[redacted 8 bytes] 9F27=80"
    assert entries[2]["time"] == pytest.approx(1_700_000_000.102)  # completed by 2nd segment
    text = render_messages(entries)
    assert PAN not in text and "D3012" not in text
    assert "MTI 0200 STAN 000002" in text and "rc=00 (APPROVED)" in text


def test_decode_pcap_reports_bad_bytes_as_an_entry(server: AcquirerServer,
                                                   tmp_path: Path) -> None:
    pcap = tmp_path / "bad.pcap"
    write_pcap(pcap, loopback_bytes(server.address), corrupt=True)
    entries = decode_pcap(pcap)
    bad = [e for e in entries if "error" in e]
    assert len(bad) == 1 and bad[0]["direction"] == "terminal→host"
    assert bad[0]["error"].startswith("decode_message(): field 64 at byte ")
    assert "Field data is 5 bytes, expecting 8" in bad[0]["error"]
    assert "UNDECODABLE" in render_messages(entries)


def test_decode_pcap_gap_and_unreadable_file(tmp_path: Path) -> None:
    req = frame(encode_message({"t": "0800", "11": "000001", "41": TID, "42": MID,
                                "60": "00000001004"}), Tpdu(), Header())
    pkts = segments(TERM, 40003, HOST, 8583, 10, 1.0, [req[:5], req[5:10], req[10:]])
    del pkts[2]  # lose the middle segment
    pcap = tmp_path / "gap.pcap"
    wrpcap(str(pcap), pkts)
    entries = decode_pcap(pcap)
    assert entries == [{"direction": "terminal→host", "src": f"{TERM}:40003",
                        "dst": f"{HOST}:8583", "time": 1.003, "index": 0,
                        "error": "TCP stream gap: 5 bytes missing at stream offset 5"}]
    (tmp_path / "junk.pcap").write_bytes(b"not a pcap")
    [entry] = decode_pcap(tmp_path / "junk.pcap")
    assert "cannot read pcap" in entry["error"]
