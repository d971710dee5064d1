"""The host's control socket (sim.host.control) and its rig-side driver
(rigs.hostctl.SocketAcquirerControl), against a real host server on a temporary unix socket."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from protocols.errors import ConfigError, DeviceStateError, NoResponse, TransportError
from protocols.ledger import Totals
from rigs.errors import InstrumentError
from rigs.events import Source
from rigs.hostctl import ControlStatus, HostTotals, SocketAcquirerControl
from sim.host.control import CONTROL_OPS, handle_control
from sim.host.engine import AcquirerEngine, load_accounts, load_terminals
from sim.host.ledger import SqliteLedger
from sim.host.server import AcquirerServer
from tests.fakes import FakeEventSink

from .business import Wire
from .conftest import NOW, TID, counting_keys


@pytest.fixture
def hosted(config_dir: Path, short_dir: Path) -> Iterator[AcquirerServer]:
    ledger = SqliteLedger(short_dir / "host.db")
    engine = AcquirerEngine(load_terminals(config_dir / "terminals.yaml"),
                            load_accounts(config_dir / "cards"), ledger=ledger,
                            key_source=counting_keys())
    srv = AcquirerServer(engine, "127.0.0.1", 0, idle_timeout=2.0, clock=lambda: NOW,
                         control_path=short_dir / "host.ctl")
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
        ledger.close()


@pytest.fixture
def control(hosted: AcquirerServer) -> Iterator[SocketAcquirerControl]:
    assert hosted.control is not None
    ctl = SocketAcquirerControl("hostctl", hosted.control.path, reply_timeout=2.0)
    ctl.open()
    try:
        yield ctl
    finally:
        ctl.close()


def _lines(path: Path, *requests: bytes, answers: int) -> list[dict[str, Any]]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2.0)
        sock.connect(str(path))
        sock.sendall(b"".join(requests))
        buf = b""
        while buf.count(b"\n") < answers:
            chunk = sock.recv(65536)
            assert chunk, "the host closed the control socket"
            buf += chunk
    return [json.loads(line) for line in buf.splitlines()]


# -- the socket, raw -------------------------------------------------------------------------------

def test_control_socket_answers_json_lines(hosted: AcquirerServer) -> None:
    assert hosted.control is not None
    path = hosted.control.path
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    answers = _lines(
        path,
        b'{"op":"ping","seq":1}\n',
        b'not json\n',
        b'{"op":"frobnicate","seq":2}\n',
        b'{"op":"add_rule","seq":3,"rule":{"answer":{"response_code":"5"}}}\n',
        b'{"op":"add_rule","seq":4,"rule":{"match":{"mti":"0200"},"answer":{"drop":true},'
        b'"times":1}}\n',
        b'{"op":"totals","seq":5,"terminal_id":"10000001","batch_no":1}\n',
        b'{"op":"totals","seq":6,"terminal_id":"1","batch_no":"x"}\n',
        b'{"op":"disagree_next","seq":7,"terminal_id":"99999999"}\n',
        b'{"op":"rules","seq":8}\n',
        b'{"op":"reset","seq":9}\n',
        answers=10)
    assert answers[0] == {"ok": True, "seq": 1, "pid": os.getpid(), "added_rules": 0,
                          "disagreements": {}}
    assert answers[1]["ok"] is False and "not JSON" in answers[1]["error"]
    assert answers[2] == {"ok": False, "seq": 2, "error": (
        f"unknown op 'frobnicate'; expected one of {', '.join(CONTROL_OPS)}")}
    assert answers[3]["ok"] is False and answers[3]["error"] == (
        "add_rule: rule: host rule is not valid:\n  answer.response_code: expected a response "
        "code: 2 upper-case letters or digits, got '5'")
    assert answers[4] == {"ok": True, "seq": 4, "id": 1}
    assert answers[5] == {"ok": True, "seq": 5, "terminal_id": TID, "batch_no": "000001",
                          "source": "booked", "settled": False,
                          "totals": {"debit_count": 0, "debit_amount": 0, "credit_count": 0,
                                     "credit_amount": 0}}
    assert answers[6]["ok"] is False and "'terminal_id' must be 8 characters" in answers[6]["error"]
    assert answers[7]["ok"] is False and "not registered" in answers[7]["error"]
    assert answers[8]["rules"] == [{"id": 1, "source": "control", "used": 0, "spent": False,
                                    "match": {"mti": "0200"}, "answer": {"drop": True},
                                    "times": 1}]
    assert answers[9] == {"ok": True, "seq": 9, "cleared": [1], "disagreements": [],
                          "pin_tries_reset": []}


def test_handle_control_refuses_what_is_not_a_request(engine: AcquirerEngine) -> None:
    assert handle_control(engine, [1, 2]) == {
        "ok": False, "error": "a request is a JSON object, got list"}
    assert handle_control(engine, {"op": "add_rule", "seq": True})["ok"] is False
    assert "seq" not in handle_control(engine, {"op": "ping", "seq": "x"})


def test_stale_socket_file_is_replaced_and_removed_on_stop(config_dir: Path,
                                                           short_dir: Path) -> None:
    path = short_dir / "host.ctl"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()
    engine = AcquirerEngine(load_terminals(config_dir / "terminals.yaml"), {}, pan_salt=b"s")
    with AcquirerServer(engine, "127.0.0.1", 0, control_path=path) as srv:
        assert srv.control is not None and path.is_socket()
        assert _lines(path, b'{"op":"ping"}\n', answers=1)[0]["ok"] is True
    assert not path.exists()
    path.write_text("not a socket")
    with pytest.raises(TransportError, match="exists and is not a socket"):
        AcquirerServer(engine, "127.0.0.1", 0, control_path=path).start()


# -- the driver ----------------------------------------------------------------------------------

def test_driver_rules_disagreement_and_nominal(control: SocketAcquirerControl,
                                               hosted: AcquirerServer) -> None:
    events = FakeEventSink()
    control.event_sink = events
    assert control.is_nominal()
    status = control.status()
    assert status == ControlStatus(os.getpid(), 0, {}) and status.nominal
    rid = control.add_rule({"mti": "0200"}, {"response_code": "51"}, times=1)
    assert rid == 1 and not control.is_nominal()
    assert events.seen[-1] == (Source.ACQUIRER, "rule", "armed",
                               "host rule #1: mti=0200, response_code=51 (1 time(s))")
    control.clear_rules()
    assert control.is_nominal()
    assert events.seen[-1] == (Source.ACQUIRER, "rule", "cleared", "host rule #1")
    control.disagree_next(TID)
    assert control.status().disagreements == {TID: 1} and not control.is_nominal()
    control.add_rule({}, {"delay_s": 0.5})
    control.restore_nominal()
    assert control.is_nominal()
    assert hosted.engine.disagreements[TID] == 0 and hosted.engine.rules.added_in_force() == 0


def test_driver_rule_applies_to_the_next_request_over_tcp(control: SocketAcquirerControl,
                                                          hosted: AcquirerServer) -> None:
    wire = Wire(hosted.address)
    wire.sign_in()
    control.add_rule({"terminal_id": TID, "amount_min": 5000}, {"response_code": "51"})
    assert wire.sale(6000)["39"] == "51"
    assert wire.sale(1000)["39"] == "00"
    totals = control.totals(TID, "1")
    assert totals == HostTotals(1, 1000, 0, 0, terminal_id=TID, batch_no="000001",
                                source="booked", settled=False)
    assert isinstance(totals, Totals) and totals.debit_amount == 1000
    control.disagree_next(TID)
    assert wire.settle(Totals(1, 1000, 0, 0))["48"].endswith("2")
    assert control.status().disagreements == {}  # the disagreement was used
    assert not control.is_nominal()  # the rule (no times) is still in force
    control.clear_rules()
    assert control.is_nominal()


def test_driver_refusals_and_argument_checks(control: SocketAcquirerControl) -> None:
    with pytest.raises(ConfigError) as err:
        control.add_rule({"amout_min": 5}, {"drop": True})
    assert str(err.value) == ("SocketAcquirerControl(hostctl): add_rule(): the host refused the "
                              "rule: add_rule: rule: host rule is not valid:\n  match.amout_min: "
                              "unknown key (misspelt?)")
    with pytest.raises(ConfigError, match=r"times=...\) takes an integer >= 1 or None, got 0"):
        control.add_rule({}, {"drop": True}, times=0)
    with pytest.raises(ConfigError, match="disagree_next.. takes a terminal id of 8 characters"):
        control.disagree_next("1")
    with pytest.raises(ConfigError, match="batch number of up to 6 digits, got 'B1'"):
        control.totals(TID, "B1")
    with pytest.raises(InstrumentError, match="the host refused 'disagree_next': "
                                              "disagree_next..: terminal '99999999' is not "
                                              "registered; known: 10000001"):
        control.disagree_next("99999999")
    assert control.is_nominal()


def test_driver_closed_and_missing_socket(short_dir: Path) -> None:
    ctl = SocketAcquirerControl("hostctl", short_dir / "none.ctl")
    with pytest.raises(DeviceStateError) as err:
        ctl.totals(TID, "000001")
    assert str(err.value) == ("SocketAcquirerControl(hostctl): totals() needs an open session; "
                              "state is CLOSED")
    assert not ctl.is_nominal()
    with pytest.raises(TransportError, match=r"control socket .*none.ctl does not exist \(is "
                                             r"the host simulator running with --control"):
        ctl.open()


def test_driver_reconnects_when_the_host_restarted(config_dir: Path, short_dir: Path) -> None:
    path = short_dir / "host.ctl"
    engine = AcquirerEngine(load_terminals(config_dir / "terminals.yaml"), {}, pan_salt=b"s")
    ctl = SocketAcquirerControl("hostctl", path, reply_timeout=1.0)
    with AcquirerServer(engine, "127.0.0.1", 0, control_path=path):
        ctl.open()
        ctl.add_rule({}, {"delay_s": 1})
    engine2 = AcquirerEngine(load_terminals(config_dir / "terminals.yaml"), {}, pan_salt=b"s")
    with AcquirerServer(engine2, "127.0.0.1", 0, control_path=path):
        assert not ctl.is_nominal()  # the old connection broke
        ctl.restore_nominal()
        assert ctl.is_nominal()
    ctl.close()


# -- malformed answers and silence (a fake host) -----------------------------------------------------

def _fake_host(path: Path, reply: Callable[[dict[str, Any]], bytes | None]
               ) -> tuple[socket.socket, threading.Thread]:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)

    def run() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(3.0)
            buf = b""
            try:
                while True:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    buf += chunk
                    while b"\n" in buf:
                        line, buf = buf.split(b"\n", 1)
                        out = reply(json.loads(line))
                        if out is not None:
                            conn.sendall(out)
            except OSError:
                return

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return listener, thread


def _ping_ok(req: dict[str, Any]) -> bytes:
    return json.dumps({"ok": True, "seq": req["seq"], "pid": 1, "added_rules": 0,
                       "disagreements": {}}).encode() + b"\n"


@pytest.mark.parametrize("answer, message", [
    ({"terminal_id": TID, "batch_no": "000001", "source": "booked", "settled": False,
      "totals": {"debit_count": 1, "credit_count": 0, "credit_amount": 0}},
     "answer.totals.debit_amount is missing; expected an integer >= 0"),
    ({"terminal_id": TID, "batch_no": "000001", "source": "booked", "settled": False,
      "totals": {"debit_count": -1, "debit_amount": 0, "credit_count": 0, "credit_amount": 0}},
     "answer.totals.debit_count must be an integer >= 0, got -1"),
    ({"terminal_id": TID, "batch_no": "000001", "source": "guessed", "settled": False,
      "totals": {}}, "answer.source must be one of booked, uploaded, got 'guessed'"),
    ({"terminal_id": TID, "batch_no": "000001", "source": "booked", "settled": "no",
      "totals": {"debit_count": 0, "debit_amount": 0, "credit_count": 0, "credit_amount": 0}},
     "answer.settled must be true or false, got 'no'"),
    ({"totals": []}, "answer.totals must be an object, got []"),
])
def test_malformed_totals_answer_names_the_field(short_dir: Path, answer: dict[str, Any],
                                                 message: str) -> None:
    path = short_dir / "fake.ctl"

    def reply(req: dict[str, Any]) -> bytes:
        if req["op"] == "ping":
            return _ping_ok(req)
        return json.dumps({"ok": True, "seq": req["seq"], **answer}).encode() + b"\n"

    listener, _ = _fake_host(path, reply)
    ctl = SocketAcquirerControl("hostctl", path, reply_timeout=1.0)
    try:
        ctl.open()
        with pytest.raises(TransportError) as err:
            ctl.totals(TID, "000001")
        assert str(err.value) == (f"SocketAcquirerControl(hostctl): malformed answer to "
                                  f"'totals' from the host: {message}")
    finally:
        ctl.close()
        listener.close()


def test_malformed_ping_and_non_json_answers(short_dir: Path) -> None:
    path = short_dir / "fake.ctl"
    listener, _ = _fake_host(path, lambda req: b'{"ok": true, "pid": "x"}\n')
    ctl = SocketAcquirerControl("hostctl", path, reply_timeout=1.0)
    try:
        with pytest.raises(TransportError, match=r"does not answer ping: .*malformed answer to "
                                                 r"'ping' from the host: answer.pid must be an "
                                                 r"integer >= 0, got 'x'"):
            ctl.open()
    finally:
        listener.close()
    path.unlink()
    listener, _ = _fake_host(path, lambda req: b"garbage\n")
    try:
        with pytest.raises(TransportError, match="answered 'ping' with a malformed line"):
            ctl.open()
    finally:
        listener.close()


def test_a_silent_host_is_no_response_within_the_bound(short_dir: Path) -> None:
    path = short_dir / "fake.ctl"
    calls: list[str] = []

    def reply(req: dict[str, Any]) -> bytes | None:
        calls.append(req["op"])
        return _ping_ok(req) if req["op"] == "ping" else None

    listener, _ = _fake_host(path, reply)
    ctl = SocketAcquirerControl("hostctl", path, reply_timeout=0.3)
    try:
        ctl.open()
        started = time.monotonic()
        with pytest.raises(NoResponse, match=r"clear_rules\(\): no answer to 'clear_rules' from "
                                             r"the host within 0.3 s"):
            ctl.clear_rules()
        assert time.monotonic() - started < 2.0
        assert not ctl.is_nominal()  # the exchange broke the session
    finally:
        ctl.close()
        listener.close()
    assert calls == ["ping", "clear_rules"]
