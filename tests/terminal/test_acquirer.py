"""The terminal's acquirer client against a scripted host on 127.0.0.1: the business-day
messages (reversal 0400, settlement 0500, batch upload 0320) exactly as docs/business-day.md
gives them, and every wait bounded."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from protocols.crypto import mac_x919
from protocols.errors import SimError
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
from protocols.transactions import REFUND, SALE, VOID, OriginalRef, SettlementTotals, UploadItem
from sim.terminal.acquirer import NO_LINK_TEXT, AcquirerClient, CommsError, WorkingKeys
from sim.terminal.netif import sysfs_carrier
from tests.terminal.fakes import PAN

TID, MID = "10000001", "898100012340001"
MAK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
KEYS = WorkingKeys(pik=bytes(range(16)), mak=MAK)
TRACK2 = PAN + "D30122010000000000"

Answer = Callable[[dict[str, str]], dict[str, str] | None]


@dataclass
class ScriptedHost:
    """Accepts connections, decodes each request, answers with ``answer(request)`` (MACed with
    MAK unless ``mac`` is False; None = never answer)."""

    answer: Answer
    mac: bool = True
    bad_mac: bool = False
    requests: list[dict[str, str]] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.1)
        self.address = self.sock.getsockname()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(2.0)
                framer = LengthFramer()
                frames: list[bytes] = []
                while not frames:
                    data = conn.recv(4096)
                    if not data:
                        break
                    frames = framer.feed(data)
                if not frames:
                    continue
                tpdu, header, payload = unframe(frames[0])
                req = decode_message(payload)
                self.requests.append(req)
                self.raw.append(payload)
                resp = self.answer(req)
                if resp is None:
                    self._stop.wait(3.0)
                    continue
                if self.mac:
                    out = encode_with_mac(resp, MAK)
                    if self.bad_mac:
                        out = out[:-1] + bytes([out[-1] ^ 1])
                else:
                    out = encode_message(resp)
                conn.sendall(frame(out, tpdu.swapped(), header))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)
        self.sock.close()


def echo(req: dict[str, str], mti: str, **extra: str) -> dict[str, str]:
    resp = {"t": mti, "39": "00", **{k: req[k] for k in ("11", "41", "42") if k in req}}
    resp.update(extra)
    return resp


@pytest.fixture
def host_factory() -> Iterator[Callable[..., ScriptedHost]]:
    hosts: list[ScriptedHost] = []

    def make(answer: Answer, **kw: bool) -> ScriptedHost:
        h = ScriptedHost(answer, **kw)
        hosts.append(h)
        return h

    yield make
    for h in hosts:
        h.close()


def client(host: ScriptedHost, response_timeout: float = 2.0) -> AcquirerClient:
    return AcquirerClient(host.address[0], host.address[1], terminal_id=TID, merchant_id=MID,
                          master_key=bytes(16), connect_timeout=1.0,
                          response_timeout=response_timeout)


def assert_mac(payload: bytes) -> None:
    assert payload[-8:] == mac_x919(MAK, payload[:-8]), "request MAC does not verify"


def test_reversal_of_a_chip_sale_repeats_its_fields(host_factory: Callable[..., ScriptedHost]
                                                    ) -> None:
    host = host_factory(lambda req: echo(req, "0410"))
    ans = client(host).reversal(SALE, keys=KEYS, stan=12, batch_no=3, amount_minor=3300,
                                reason="98", pan=PAN, expiry="3012", pan_seq="1",
                                track2_equivalent=TRACK2, entry_mode="051")
    assert ans.ok and ans.response_code == "00"
    (req,) = host.requests
    assert req["t"] == "0400"
    assert {k: req[k] for k in ("2", "3", "4", "11", "14", "22", "23", "25", "39", "41", "42",
                                "49", "60")} == {
        "2": PAN, "3": "000000", "4": "000000003300", "11": "000012", "14": "3012",
        "22": "051", "23": "001", "25": "00", "39": "98", "41": TID, "42": MID, "49": "156",
        "60": "2200000300050"}
    assert req["35"].startswith(PAN + "D3012")
    assert not {"52", "55", "26", "53", "61", "37"} & set(req)
    assert_mac(host.raw[0])


def test_reversal_of_a_void_carries_the_original_and_no_card(
        host_factory: Callable[..., ScriptedHost]) -> None:
    host = host_factory(lambda req: echo(req, "0410"))
    original = OriginalRef(stan="000012", batch_no="000003", rrn="000000001234", date="0504")
    client(host).reversal(VOID, keys=KEYS, stan=13, batch_no=3, amount_minor=3300,
                          reason="06", original=original)
    (req,) = host.requests
    assert (req["t"], req["3"], req["39"], req["61"], req["37"]) == (
        "0400", "200000", "06", "000003000012", "000000001234")
    assert not {"2", "14", "22", "35"} & set(req)


def test_refund_sends_61_with_date_and_void_without(host_factory: Callable[..., ScriptedHost]
                                                   ) -> None:
    host = host_factory(lambda req: echo(req, "0230" if req["t"] == "0220" else "0210",
                                         **{"37": "000000009999", "38": "654321", "13": "0505"}))
    c = client(host)
    original = OriginalRef(stan="000012", batch_no="000003", rrn="000000001234", date="0504")
    refund = c.financial(REFUND, keys=KEYS, stan=20, batch_no=3, amount_minor=500,
                         original=original)
    assert refund.approved and refund.host_date == "0505"
    void = c.financial(VOID, keys=KEYS, stan=21, batch_no=3, amount_minor=3300,
                       original=original)
    assert void.approved
    r, v = host.requests
    assert (r["t"], r["3"], r["61"], r["37"], r["60"][:2]) == (
        "0220", "200000", "0000030000120504", "000000001234", "25")
    assert (v["t"], v["3"], v["61"], v["37"], v["60"][:2]) == (
        "0200", "200000", "000003000012", "000000001234", "23")
    assert "2" not in r and "2" not in v


def test_settlement_sends_totals_and_reads_the_host_s(host_factory: Callable[..., ScriptedHost]
                                                      ) -> None:
    mine = SettlementTotals(2, 4100, 1, 500)
    host = host_factory(lambda req: echo(req, "0510", **{"48": mine.with_code("2").field48()}))
    res = client(host).settlement(keys=KEYS, stan=30, batch_no=3, operator="00", totals=mine)
    assert res.response_code == "00" and res.reconciliation_code == "2"
    assert res.host_totals is not None and res.host_totals.same_totals(mine)
    (req,) = host.requests
    assert {k: req[k] for k in ("t", "11", "41", "42", "48", "49", "60", "63")} == {
        "t": "0500", "11": "000030", "41": TID, "42": MID,
        "48": "002000000004100001000000000500" + "0", "49": "156", "60": "00000003201",
        "63": "00 "}
    assert_mac(host.raw[0])


def test_batch_upload_and_its_end(host_factory: Callable[..., ScriptedHost]) -> None:
    host = host_factory(lambda req: echo(req, "0330"))
    c = client(host)
    item = UploadItem(stan=12, proc_code="000000", amount_minor=2100, rrn="000000001234",
                      pan=PAN)
    assert "6212345678901234" not in repr(item)
    assert c.batch_upload(keys=KEYS, batch_no=3, item=item).ok
    assert c.batch_upload(keys=KEYS, batch_no=3, item=UploadItem(
        13, "200000", 500, "000000001235")).ok
    assert c.batch_upload_end(keys=KEYS, stan=31, batch_no=3, count=2).ok
    up, up2, end = host.requests
    assert {k: up[k] for k in ("t", "2", "3", "4", "11", "37", "41", "42", "60")} == {
        "t": "0320", "2": PAN, "3": "000000", "4": "000000002100", "11": "000012",
        "37": "000000001234", "41": TID, "42": MID, "60": "00000003201"}
    assert "2" not in up2 and up2["3"] == "200000"
    assert {k: end[k] for k in ("t", "11", "48", "60")} == {
        "t": "0320", "11": "000031", "48": "0002", "60": "00000003207"}
    for raw in host.raw:
        assert_mac(raw)


def test_bad_mac_on_an_approval_calls_for_a_reversal_06(
        host_factory: Callable[..., ScriptedHost]) -> None:
    host = host_factory(lambda req: echo(req, "0210", **{"37": "000000000001"}), bad_mac=True)
    with pytest.raises(CommsError, match="response MAC does not verify") as err:
        client(host).financial(VOID, keys=KEYS, stan=5, batch_no=1, amount_minor=100,
                               original=OriginalRef.by_trace(4))
    assert (err.value.stage, err.value.reversal) == ("response", "06")


def test_bad_mac_on_a_decline_calls_for_no_reversal(host_factory: Callable[..., ScriptedHost]
                                                   ) -> None:
    host = host_factory(lambda req: {**echo(req, "0210"), "39": "51"}, bad_mac=True)
    with pytest.raises(CommsError) as err:
        client(host).financial(VOID, keys=KEYS, stan=5, batch_no=1, amount_minor=100,
                               original=OriginalRef.by_trace(4))
    assert err.value.reversal == ""


def test_no_answer_is_bounded_and_calls_for_a_reversal_98(
        host_factory: Callable[..., ScriptedHost]) -> None:
    host = host_factory(lambda req: None)
    started = time.monotonic()
    with pytest.raises(CommsError, match=r"within 0.3 s") as err:
        client(host, response_timeout=0.3).financial(
            VOID, keys=KEYS, stan=5, batch_no=1, amount_minor=100,
            original=OriginalRef.by_trace(4))
    assert time.monotonic() - started < 2.0
    assert (err.value.stage, err.value.reversal) == ("response", "98")


def test_connect_refused_calls_for_no_reversal() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nobody listens there
    c = AcquirerClient("127.0.0.1", port, terminal_id=TID, merchant_id=MID,
                       master_key=bytes(16), connect_timeout=0.3, response_timeout=0.3)
    with pytest.raises(CommsError, match="connect") as err:
        c.settlement(keys=KEYS, stan=1, batch_no=1, operator="00", totals=SettlementTotals())
    assert (err.value.stage, err.value.reversal) == ("connect", "")


def test_no_carrier_fails_at_once_with_the_no_link_text_and_never_dials() -> None:
    dials: list[tuple[str, int]] = []
    asked: list[str] = []

    def dial(address: tuple[str, int], timeout: float) -> socket.socket:
        dials.append(address)
        raise AssertionError("dialled without a link")

    def no_carrier(ifname: str) -> bool:
        asked.append(ifname)
        return False

    c = AcquirerClient("198.18.0.20", 8583, terminal_id=TID, merchant_id=MID,
                       master_key=bytes(16), connect_timeout=3.0, response_timeout=5.0,
                       dial=dial, netif="term0", carrier=no_carrier)
    started = time.monotonic()
    with pytest.raises(CommsError) as err:
        c.sign_in(operator="01", stan=1, batch_no=1)
    assert time.monotonic() - started < 0.5  # at once, not after the 3 s connect timeout
    assert dials == [] and asked == ["term0"]
    assert (err.value.stage, err.value.reversal, err.value.display) == ("connect", "",
                                                                        NO_LINK_TEXT)
    assert str(err.value) == (f"{NO_LINK_TEXT}: AcquirerClient({TID}@198.18.0.20:8583): network "
                              "interface term0 has no carrier (link down); 198.18.0.20:8583 "
                              "not dialled")


def test_the_carrier_is_read_before_every_dial_and_a_link_lost_between_dials_says_so() -> None:
    carrier = iter([True, False])
    dials: list[float] = []

    def refused(address: tuple[str, int], timeout: float) -> socket.socket:
        dials.append(timeout)
        raise ConnectionRefusedError(111, "Connection refused")

    c = AcquirerClient("198.18.0.20", 8583, terminal_id=TID, merchant_id=MID,
                       master_key=bytes(16), connect_timeout=2.0, dial=refused, netif="term0",
                       carrier=lambda ifname: next(carrier))
    with pytest.raises(CommsError, match=r"has no carrier \(link down\); 198.18.0.20:8583 not "
                                         r"dialled again after 1 dial\(s\)$") as err:
        c.sign_in(operator="01", stan=1, batch_no=1)
    assert len(dials) == 1 and err.value.display == NO_LINK_TEXT
    without = AcquirerClient("198.18.0.20", 8583, terminal_id=TID, merchant_id=MID,
                             master_key=bytes(16), connect_timeout=0.15, dial=refused,
                             carrier=lambda ifname: False)  # no netif: no check
    with pytest.raises(CommsError, match="Connection refused") as err:
        without.sign_in(operator="01", stan=1, batch_no=1)
    assert err.value.display == ""


def test_sysfs_carrier_reads_the_interface_s_carrier_file(tmp_path: Path) -> None:
    for name, text in (("up0", "1\n"), ("down0", "0\n"), ("odd0", "2\n")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "carrier").write_text(text)
    assert sysfs_carrier("up0", tmp_path) is True
    assert sysfs_carrier("down0", tmp_path) is False
    with pytest.raises(SimError, match=r"carrier of odd0: .*odd0/carrier holds '2'; expected 0 "
                                       r"or 1"):
        sysfs_carrier("odd0", tmp_path)
    with pytest.raises(SimError, match=r"carrier of nope0: cannot read .*nope0/carrier"):
        sysfs_carrier("nope0", tmp_path)


def test_settlement_without_48_or_with_a_bad_48_is_a_comms_error(
        host_factory: Callable[..., ScriptedHost]) -> None:
    host = host_factory(lambda req: echo(req, "0510"))
    with pytest.raises(CommsError, match="answered 00 without field 48"):
        client(host).settlement(keys=KEYS, stan=1, batch_no=1, operator="00",
                                totals=SettlementTotals())
    host2 = host_factory(lambda req: echo(req, "0510", **{"48": "12"}))
    with pytest.raises(CommsError, match="field 48 settlement totals '12'"):
        client(host2).settlement(keys=KEYS, stan=1, batch_no=1, operator="00",
                                 totals=SettlementTotals())


def test_frame_header_roundtrip_sanity() -> None:
    """The scripted host answers with the request's TPDU swapped (as the real host does)."""
    t = Tpdu()
    assert t.swapped().swapped() == t and Header().to_bytes()[:2] == b"\x60\x31"
