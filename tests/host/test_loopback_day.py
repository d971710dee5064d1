"""The business day through the real TCP server on 127.0.0.1: voids, refunds, reversals, batch
upload and settlement booked in the SQLite ledger and read back by the rig's reader; rules that
answer late (without holding up other connections) or never; ``python -m sim.host`` with
``--rules`` and ``--control``."""

from __future__ import annotations

import datetime as dt
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from protocols.iso8583 import encode_message
from protocols.ledger import LedgerRecord, Totals
from rigs.host import SqliteAcquirerLedger
from rigs.hostctl import SocketAcquirerControl
from sim.host.engine import AcquirerEngine, load_accounts, load_terminals
from sim.host.ledger import SqliteLedger
from sim.host.rules import RuleBook, parse_rule
from sim.host.server import AcquirerServer

from .business import Wire, roundtrip, sign_in_doc
from .conftest import PAN, TID, counting_keys

ROOT = Path(__file__).resolve().parents[2]
NOW = dt.datetime(2026, 3, 14, 15, 9, 26)
MMDD = NOW.strftime("%m%d")


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "ledger" / "host.db"


def _server(config_dir: Path, db_path: Path, **kw: object) -> tuple[AcquirerServer, SqliteLedger]:
    ledger = SqliteLedger(db_path)
    engine = AcquirerEngine(load_terminals(config_dir / "terminals.yaml"),
                            load_accounts(config_dir / "cards"), ledger=ledger,
                            key_source=counting_keys(), rules=RuleBook())
    srv = AcquirerServer(engine, "127.0.0.1", 0, idle_timeout=3.0, clock=lambda: NOW,
                         **kw)  # type: ignore[arg-type]
    srv.start()
    return srv, ledger


@pytest.fixture
def server(config_dir: Path, db_path: Path) -> Iterator[AcquirerServer]:
    srv, ledger = _server(config_dir, db_path)
    try:
        yield srv
    finally:
        srv.stop()
        ledger.close()


def test_business_day_over_tcp_and_the_rigs_reader(server: AcquirerServer,
                                                   db_path: Path) -> None:
    t = Wire(server.address)
    t.sign_in()
    a = t.sale(1000)
    a_stan = t.stan
    b = t.sale(2500)
    b_stan = t.stan
    t.sale(400)
    c_stan = t.stan
    assert (a["39"], b["39"]) == ("00", "00")
    assert t.void(ostan=c_stan, amount=400)["39"] == "00"
    assert t.void(ostan=c_stan, amount=400)["39"] == "12"
    assert t.refund(300, orrn=a["37"], odate=MMDD)["39"] == "00"
    r_stan = t.stan
    assert t.refund(800, orrn=a["37"], odate=MMDD)["39"] == "61"
    assert t.reverse(b_stan, reason="98")["39"] == "00"
    # the terminal still counts B (it never learnt of the reversal): not balanced, upload
    theirs = Totals(2, 3500, 1, 300)
    first = t.settle(theirs)
    assert first["39"] == "00" and first["48"] == Totals(1, 1000, 1, 300).field48("2")
    assert t.upload(a_stan, 1000, rrn=a["37"])["39"] == "00"
    assert t.upload(b_stan, 2500, rrn=b["37"])["39"] == "00"
    assert t.upload(r_stan, 300, proc="200000")["39"] == "00"  # the refund
    assert t.upload_end(3)["39"] == "00"
    second = t.settle(theirs)
    assert second["48"] == theirs.field48("1")
    t.batch = 2
    assert t.void(ostan=a_stan, obatch=1, amount=1000)["39"] == "12"  # settled
    with SqliteAcquirerLedger("host", db_path) as reader:
        assert isinstance(reader, SqliteAcquirerLedger)
        rows = reader.entries()
        sale_a = reader.find(stan=a_stan, kind="sale")[0]
        assert (sale_a.status, sale_a.booked, sale_a.batch_no) == ("booked", True, "000001")
        assert reader.find(stan=b_stan, kind="sale")[0].status == "reversed"
        assert reader.find(stan=c_stan, kind="sale")[0].status == "voided"
        void = [r for r in rows if r.kind == "void" and r.approved][0]
        assert (void.original_stan, void.original_id) == (f"{c_stan:06d}",
                                                          reader.find(stan=c_stan)[0].id)
        refund = [r for r in rows if r.kind == "refund" and r.approved][0]
        assert (refund.original_rrn, refund.amount_minor) == (a["37"], 300)
        rev = reader.find(kind="reversal")[0]
        assert (rev.status, rev.reason_code, rev.original_stan) == ("netted", "98",
                                                                    f"{b_stan:06d}")
        settlements = reader.find(kind="settlement", batch_no=1)
        assert [(s.status, s.reconciliation) for s in settlements] == [
            ("unbalanced", "2"), ("balanced", "1")]
        assert len(reader.find(kind="upload")) == 3
        text = reader.text()
        assert "reversed" in text and "voided" in text and "reconciliation 2" in text
        assert "621483******0017" in text
    for path in db_path.parent.iterdir():
        assert PAN.encode() not in path.read_bytes(), path


def _add(server: AcquirerServer, **raw: object) -> int:
    with server.lock:
        return server.engine.add_rule(parse_rule(raw, "test"))


def test_a_late_answer_does_not_hold_up_other_connections(
        server: AcquirerServer, monkeypatch: pytest.MonkeyPatch) -> None:
    t = Wire(server.address)
    t.sign_in()
    _add(server, match={"mti": "0200"}, answer={"delay_s": 1.0}, times=1)
    result: dict[str, object] = {}
    booked = threading.Event()  # the host booked the sale: its answer is being held now
    ledger = server.engine.ledger
    assert ledger is not None
    record = ledger.record

    def record_and_tell(rec: LedgerRecord) -> int:
        row = record(rec)
        if rec.mti == "0200":
            booked.set()
        return row

    monkeypatch.setattr(ledger, "record", record_and_tell)

    def late_sale() -> None:
        started = time.monotonic()
        result["resp"] = t.sale(1000)
        result["took"] = time.monotonic() - started

    thread = threading.Thread(target=late_sale)
    thread.start()
    assert booked.wait(2.0), "the sale did not reach the host within 2 s"
    started = time.monotonic()
    other = roundtrip(server.address, encode_message(sign_in_doc(tid="99999999")), 2.0)
    assert other["39"] == "97" and time.monotonic() - started < 0.5
    thread.join(5.0)
    assert not thread.is_alive()
    assert result["resp"]["39"] == "00"  # type: ignore[index]
    assert 1.0 <= float(result["took"]) < 2.5  # type: ignore[arg-type]
    started = time.monotonic()
    assert t.sale(1000)["39"] == "00" and time.monotonic() - started < 0.5  # once only


def test_a_delay_is_bounded_by_the_server(config_dir: Path, db_path: Path) -> None:
    srv, ledger = _server(config_dir, db_path, max_delay=0.3)
    try:
        t = Wire(srv.address)
        t.sign_in()
        _add(srv, match={"mti": "0200"}, answer={"delay_s": 30})
        started = time.monotonic()
        assert t.sale(1000)["39"] == "00"
        assert 0.3 <= time.monotonic() - started < 2.0
    finally:
        srv.stop()
        ledger.close()


def test_a_dropped_answer_is_booked_and_its_reversal_nets_it(server: AcquirerServer,
                                                             db_path: Path) -> None:
    t = Wire(server.address, timeout=0.5)
    t.sign_in()
    _add(server, match={"mti": "0200", "proc_code": "000000"}, answer={"drop": True}, times=1)
    with pytest.raises(TimeoutError):
        t.sale(1000)
    t.timeout = 3.0
    assert t.reverse(t.stan, reason="98")["39"] == "00"
    with SqliteAcquirerLedger("host", db_path) as reader:
        assert isinstance(reader, SqliteAcquirerLedger)
        sale = reader.find(kind="sale")[0]
        assert (sale.status, sale.rule_id, sale.rule_action) == ("reversed", 1, "drop")
        assert reader.find(kind="reversal")[0].status == "netted"
    assert server.engine.accounts[PAN].balance_minor == 1000000


# -- the entry point -------------------------------------------------------------------------------

def _start(argv: list[str]) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "sim.host", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, cwd=ROOT)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(5.0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5.0)


def test_python_m_sim_host_with_rules_and_control(config_dir: Path, tmp_path: Path,
                                                  short_dir: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text('rules:\n  - match: {mti: "0200", amount_min: 5000}\n'
                     '    answer: {response_code: "51"}\n')
    control = short_dir / "host.ctl"
    proc = _start(["--listen", "127.0.0.1:0", "--db", str(tmp_path / "m.db"),
                   "--terminals", str(config_dir / "terminals.yaml"),
                   "--cards-dir", str(config_dir / "cards"), "--rules", str(rules),
                   "--control", str(control), "--max-delay", "5"])
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 10.0)
        assert ready, "no READY line within 10 s"
        line = proc.stdout.readline().decode().strip()
        assert line.startswith("READY 127.0.0.1:")
        t = Wire(("127.0.0.1", int(line.rsplit(":", 1)[1])))
        t.sign_in()
        assert t.sale(6000)["39"] == "51"  # the file's rule
        with SocketAcquirerControl("hostctl", control) as ctl:
            assert isinstance(ctl, SocketAcquirerControl)
            assert ctl.is_nominal()  # the file's rules are the baseline
            ctl.add_rule({"mti": "0200"}, {"response_code": "05"}, times=1)
            assert t.sale(100)["39"] == "05"
            assert t.sale(100)["39"] == "00"
            assert ctl.totals(TID, "000001").debit_amount == 100
            ctl.restore_nominal()
    finally:
        _stop(proc)
    assert proc.returncode == 0
    assert not control.exists()
    assert proc.stderr is not None
    assert PAN not in proc.stderr.read().decode()


def test_python_m_sim_host_refuses_a_bad_rules_file(config_dir: Path, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - answer: {delay: 2}\n")
    proc = _start(["--listen", "127.0.0.1:0", "--db", str(tmp_path / "m.db"),
                   "--terminals", str(config_dir / "terminals.yaml"),
                   "--cards-dir", str(config_dir / "cards"), "--rules", str(rules)])
    try:
        _, err = proc.communicate(timeout=15.0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5.0)
    assert proc.returncode == 2
    text = err.decode()
    assert "host rules file is not valid" in text and "rules[0].answer.delay: unknown key" in text


def test_control_socket_path_too_long_is_refused(config_dir: Path) -> None:
    from protocols.errors import SimError

    engine = AcquirerEngine(load_terminals(config_dir / "terminals.yaml"), {}, pan_salt=b"s")
    with pytest.raises(SimError, match="a unix socket path has at most 107"):
        AcquirerServer(engine, "127.0.0.1", 0, control_path="/tmp/" + "x" * 120)
