"""AcquirerServer + AcquirerClient over 127.0.0.1, the SQLite ledger, the rig's ledger reader,
and the ``python -m sim.host`` entry point."""

from __future__ import annotations

import datetime as dt
import os
import select
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from protocols.errors import DeviceStateError, TransportError
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
from rigs.host import SqliteAcquirerLedger
from sim.card.profile import profile_from_dict
from sim.host.engine import AcquirerEngine, load_accounts, load_terminals
from sim.host.ledger import SqliteLedger
from sim.host.server import AcquirerServer
from sim.terminal.acquirer import AcquirerClient, AuthResult, CommsError, WorkingKeys
from tests.cards.slots import chip_read

from .conftest import MID, PAN, PIN, TID, TMK, card_yaml, counting_keys

ROOT = Path(__file__).resolve().parents[2]
TRACK2 = f"{PAN}D30122201234567890F"
#: Field 55 of a real chip read of the test card (its ARQC verifies at the issuer).
ICC = chip_read(profile_from_dict(yaml.safe_load(card_yaml(PAN)))).icc_data


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "ledger" / "host.db"


@pytest.fixture
def server(config_dir: Path, db_path: Path) -> Iterator[AcquirerServer]:
    ledger = SqliteLedger(db_path)
    engine = AcquirerEngine(load_terminals(config_dir / "terminals.yaml"),
                            load_accounts(config_dir / "cards"), ledger=ledger,
                            key_source=counting_keys())
    srv = AcquirerServer(engine, "127.0.0.1", 0, idle_timeout=2.0,
                         clock=lambda: dt.datetime(2026, 3, 14, 15, 9, 26))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
        ledger.close()


def client(address: tuple[str, int]) -> AcquirerClient:
    return AcquirerClient(address[0], address[1], terminal_id=TID, merchant_id=MID,
                          master_key=TMK)


def purchase(c: AcquirerClient, keys: WorkingKeys, stan: int, pin: str | None = PIN,
             amount: int = 2500) -> AuthResult:
    return c.purchase(keys=keys, stan=stan, batch_no=1, amount_minor=amount, pan=PAN,
                      expiry="3012", pan_seq="1", track2_equivalent=TRACK2, icc_data=ICC,
                      pin=pin)


def test_sign_in_then_purchase_over_loopback(server: AcquirerServer, db_path: Path) -> None:
    c = client(server.address)
    si = c.sign_in(operator="01", stan=1, batch_no=1)
    assert si.response_code == "00" and si.keys is not None and si.batch_no == 1
    assert si.host_datetime == "0314150926"
    assert "pik=<16 bytes>" in repr(si.keys)
    ok = c.purchase(keys=si.keys, stan=2, batch_no=1, amount_minor=2500, pan=PAN,
                    expiry="3012", pan_seq="1", track2_equivalent=TRACK2, icc_data=ICC, pin=PIN)
    assert ok.approved and ok.response_code == "00" and ok.host_message == "APPROVED"
    assert ok.stan == 2 and ok.auth_code and ok.rrn and len(ok.rrn) == 12
    bad = purchase(c, si.keys, 3, pin="999999")
    assert (bad.response_code, bad.approved, bad.host_message) == ("55", False, "WRONG PIN")

    with SqliteAcquirerLedger("host", db_path) as ledger:
        assert isinstance(ledger, SqliteAcquirerLedger)
        rows = ledger.entries()
        assert [(r.mti, r.response_code) for r in rows] == [("0800", "00"), ("0200", "00"),
                                                             ("0200", "55")]
        assert rows[1].pan_masked == "621483******0017" and rows[1].amount_minor == 2500
        assert rows[1].approved and rows[1].auth_code == ok.auth_code
        assert ledger.find(stan=3, terminal_id=TID)[0].response_code == "55"
        assert ledger.last() == rows[2]
        assert ledger.entries(since_id=rows[1].id) == [rows[2]]
        assert ledger.mark() == rows[2].id
        assert ledger.is_nominal()
        assert "621483******0017" in ledger.text()

    # No full PAN (nor track data) anywhere in the ledger's files.
    for path in db_path.parent.iterdir():
        data = path.read_bytes()
        assert PAN.encode() not in data, path
        assert b"D3012220" not in data


def test_not_signed_in_then_sign_in_recovers(server: AcquirerServer) -> None:
    c = client(server.address)
    stale = WorkingKeys(bytes(range(16)), bytes(range(16, 32)))
    res = purchase(c, stale, 2)
    assert res.response_code == "22" and not res.approved
    assert c.last_header is not None and c.last_header.processing_requirement == 3
    si = c.sign_in(operator="01", stan=3, batch_no=1)
    assert si.keys is not None
    assert purchase(c, si.keys, 4).approved


def test_several_messages_on_one_connection(server: AcquirerServer) -> None:
    doc = {"t": "0800", "41": TID, "42": MID, "60": "00000001004", "63": "01 "}
    one = frame(encode_message({**doc, "11": "000001"}), Tpdu(), Header())
    two = frame(encode_message({**doc, "11": "000002"}), Tpdu(), Header())
    with socket.create_connection(server.address, timeout=2.0) as sock:
        sock.sendall(one + two)
        framer, frames = LengthFramer(), list[bytes]()
        while len(frames) < 2:
            data = sock.recv(4096)
            assert data, "server closed early"
            frames += framer.feed(data)
    stans = [decode_message(unframe(f)[2])["11"] for f in frames]
    assert stans == ["000001", "000002"]


def test_garbage_closes_the_connection_and_server_survives(server: AcquirerServer) -> None:
    with socket.create_connection(server.address, timeout=2.0) as sock:
        sock.sendall(b"\xff\xff garbage")
        assert sock.recv(100) == b""
    si = client(server.address).sign_in(operator="01", stan=1, batch_no=1)
    assert si.response_code == "00"


def test_connect_refused_names_host_port_and_timeout() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = AcquirerClient("127.0.0.1", port, terminal_id=TID, merchant_id=MID, master_key=TMK,
                       connect_timeout=0.5)
    with pytest.raises(CommsError) as err:
        c.sign_in(operator="01", stan=1, batch_no=1)
    assert err.value.stage == "connect"
    assert f"127.0.0.1:{port}" in str(err.value) and "0.5 s" in str(err.value)
    dials = int(str(err.value).split(" dial(s)")[0].rsplit(" ", 1)[1])
    assert dials >= 2, "a refused dial is redialled until the connect timeout"


def test_connect_redials_after_a_fast_failure_until_the_host_listens() -> None:
    """The cable-back race: a dial that fails at once ('No route to host' on the bench when the
    last ARP probe went out while the cable was pulled) is redialled within the connect timeout
    instead of failing the sign-in."""
    dials: list[float] = []
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)  # handshake completes in the backlog; nobody answers

        def dial(address: tuple[str, int], timeout: float) -> socket.socket:
            dials.append(timeout)
            if len(dials) == 1:
                raise OSError(113, "No route to host")
            return socket.create_connection(address, timeout=timeout)

        c = AcquirerClient(*listener.getsockname(), terminal_id=TID, merchant_id=MID,
                           master_key=TMK, connect_timeout=3.0, response_timeout=0.2, dial=dial)
        with pytest.raises(CommsError) as err:
            c.sign_in(operator="01", stan=1, batch_no=1)
    assert err.value.stage == "response"  # connected on the second dial
    assert len(dials) == 2 and 2.0 < dials[1] < dials[0] <= 3.0  # one deadline for all dials


def test_silent_host_times_out_with_bound_in_message() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)  # handshake completes in the backlog; nobody ever answers
        port = listener.getsockname()[1]
        c = AcquirerClient("127.0.0.1", port, terminal_id=TID, merchant_id=MID,
                           master_key=TMK, response_timeout=0.2)
        with pytest.raises(CommsError) as err:
            c.sign_in(operator="01", stan=1, batch_no=1)
    assert err.value.stage == "response"
    assert str(err.value) == (f"AcquirerClient({TID}@127.0.0.1:{port}): no complete response "
                              f"from 127.0.0.1:{port} within 0.2 s (0 bytes received)")


def test_an_abandoned_exchange_is_reset_not_left_to_retransmit() -> None:
    """A client that gives up resets the connection: a request still queued (a cable pulled)
    must not reach the host late, after the terminal moved on."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        c = AcquirerClient("127.0.0.1", port, terminal_id=TID, merchant_id=MID,
                           master_key=TMK, response_timeout=0.2)
        with pytest.raises(CommsError):
            c.sign_in(operator="01", stan=1, batch_no=1)
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(2.0)
            with pytest.raises(ConnectionResetError):
                while conn.recv(4096):  # whatever arrived, then the reset (not an orderly FIN)
                    pass


def _one_shot_host(reply: bytes | None) -> tuple[socket.socket, threading.Thread, list[bytes]]:
    """Accept one connection, read one frame, send *reply*(request) bytes, close."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    seen: list[bytes] = []

    def run() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(2.0)
            framer = LengthFramer()
            frames: list[bytes] = []
            while not frames:
                data = conn.recv(4096)
                if not data:
                    return
                frames = framer.feed(data)
            seen.append(frames[0])
            if reply is not None:
                conn.sendall(reply)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return listener, t, seen


def test_response_with_bad_mac_is_a_comms_error() -> None:
    mak = bytes(range(16, 32))
    resp = {"t": "0210", "3": "000000", "4": "000000002500", "11": "000002", "37": "000000000001",
            "38": "123456", "39": "00", "41": TID, "42": MID}
    reply = frame(encode_with_mac(resp, bytes(range(32, 48))), Tpdu(), Header())
    listener, thread, seen = _one_shot_host(reply)
    try:
        c = client(listener.getsockname())
        with pytest.raises(CommsError) as err:
            purchase(c, WorkingKeys(bytes(range(16)), mak), 2)
        assert err.value.stage == "response" and "MAC does not verify" in str(err.value)
        thread.join(2.0)
        req = decode_message(unframe(seen[0])[2])
        assert req["t"] == "0200" and req["11"] == "000002" and req["2"] == PAN
        assert req["55"] == ICC.hex().upper() and req["35"] == TRACK2.rstrip("F")
        assert req["60"] == "2200000100050" and req["53"] == "2600000000000000"
    finally:
        listener.close()


def test_host_closing_without_answer_is_a_comms_error() -> None:
    listener, thread, _ = _one_shot_host(None)
    try:
        with pytest.raises(CommsError, match="closed the connection after 0 bytes"):
            client(listener.getsockname()).sign_in(operator="01", stan=1, batch_no=1)
        thread.join(2.0)
    finally:
        listener.close()


def test_ledger_reader_refuses_missing_file_and_closed_use(tmp_path: Path) -> None:
    reader = SqliteAcquirerLedger("host", tmp_path / "none.db")
    with pytest.raises(TransportError, match="does not exist"):
        reader.open()
    with pytest.raises(DeviceStateError) as err:
        reader.entries()
    assert str(err.value) == ("SqliteAcquirerLedger(host): entries() needs an open session; "
                              "state is CLOSED")
    assert not reader.is_nominal()


def test_python_m_sim_host(config_dir: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sim.host", "--listen", "127.0.0.1:0", "--db",
         str(tmp_path / "m.db"), "--terminals", str(config_dir / "terminals.yaml"),
         "--cards-dir", str(config_dir / "cards")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 10.0)
        assert ready, "no READY line within 10 s"
        line = proc.stdout.readline().decode().strip()
        assert line.startswith("READY 127.0.0.1:")
        port = int(line.rsplit(":", 1)[1])
        si = client(("127.0.0.1", port)).sign_in(operator="01", stan=1, batch_no=1)
        assert si.response_code == "00"
    finally:
        proc.terminate()
        try:
            proc.wait(5.0)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5.0)
    assert proc.returncode == 0
    assert proc.stderr is not None
    assert PAN not in proc.stderr.read().decode()
