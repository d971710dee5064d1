"""The control protocol (JSON lines) and the select loop, with fake ports (no root needed)."""

from __future__ import annotations

import json
import select
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from protocols.jsonlines import JsonLineBuffer, encode_line
from rigs.network.bridge import (
    BridgeCore,
    BridgeLoop,
    ControlSession,
    handle_request,
    listen_control,
)
from rigs.network.records import InjectorStats, RuleRecord

ETH = bytes.fromhex("020000000002" "020000000001" "0800")
WAIT_S = 2.0
PULL = {"kind": "cable_pull", "params": {"direction": "both"}}


def ask(core: BridgeCore, request: object, wall: float = 100.0) -> dict[str, Any]:
    answer = handle_request(core, request, wall)
    json.dumps(answer)  # every answer must be serialisable
    return answer


def test_ping_add_and_clear_answers() -> None:
    core = BridgeCore()
    answer = ask(core, {"op": "ping"})
    assert answer["ok"] is True and isinstance(answer["pid"], int) and answer["active"] == []
    added = ask(core, {"op": "add_rule", "rule": {"kind": "cable_pull"}}, 100.0)
    assert added["ok"] is True and added["id"] == 1 and added["state"] == "RUNNING"
    assert added["failure"] is None
    assert added["active"] == [{"id": 1, "spec": PULL}]  # defaults filled in
    record = RuleRecord.from_json(added["rule"])
    assert (record.id, record.armed, record.active) == (1, 100.0, True)
    assert [e.id for e in core.active()] == [1]

    ask(core, {"op": "add_rule", "rule": {"kind": "pull_on_request", "params": {}}})
    assert [a["id"] for a in ask(core, {"op": "ping"})["active"]] == [1, 2]
    cleared = ask(core, {"op": "clear_rule", "id": 1}, 101.0)
    assert cleared["rule"]["cleared"] == 101.0 and cleared["rule"]["active"] is False
    assert cleared["active"] == [{"id": 2, "spec": {"kind": "pull_on_request", "params": {}}}]
    everything = ask(core, {"op": "clear_rules"}, 102.0)
    assert [r["id"] for r in everything["cleared"]] == [2] and everything["active"] == []
    ledger = ask(core, {"op": "rules"})["rules"]
    assert [(r["id"], r["cleared"]) for r in ledger] == [(1, 101.0), (2, 102.0)]
    assert ask(core, {"op": "trips", "after": 0})["trips"] == []
    assert ask(core, {"op": "ping", "seq": 41})["seq"] == 41
    assert ask(core, {"op": "nope", "seq": 42})["seq"] == 42  # refusals too


@pytest.mark.parametrize(("request_", "error"), [
    ([1, 2], "a request is a JSON object, got list"),
    ({"op": "reboot"}, "unknown op 'reboot'; expected one of ping, add_rule, clear_rule"),
    ({"nop": 1}, "unknown op None"),
    ({"op": "set_mode", "mode": "CABLE_PULLED"}, "unknown op 'set_mode'"),
    ({"op": "add_rule"}, 'add_rule: a request needs "rule"'),
    ({"op": "add_rule", "rule": {"kind": "unplug"}},
     "add_rule: rule: kind 'unplug' is unknown; expected one of cable_pull, pull_on_request"),
    ({"op": "add_rule", "rule": {"kind": "cable_pull", "params": {"direction": "up"}}},
     "add_rule: rule: cable_pull.direction is 'up'; expected one of terminal_to_host, "
     "host_to_terminal, both"),
    ({"op": "add_rule", "rule": {"kind": "cable_pull", "params": {"speed": 3}}},
     "add_rule: rule: cable_pull has no parameter(s) ['speed']; it takes ['direction']"),
    ({"op": "add_rule", "rule": {"kind": "pull_on_request", "params": [1]}},
     "add_rule: rule: pull_on_request.params must be an object"),
    ({"op": "add_rule", "rule": {"kind": "supply_sag", "params": {"volts": 6.5}}},
     "add_rule: supply_sag(volts=6.5) is a power fault; this bridge injects network faults only"),
    ({"op": "add_rule", "rule": "cable_pull"}, "add_rule: rule: a fault is an object"),
    ({"op": "clear_rule", "id": "1"}, "clear_rule: 'id' must be a rule id (an integer), got '1'"),
    ({"op": "clear_rule", "id": 9}, "clear_rule: no rule #9 (rules kept: none)"),
    ({"op": "trips", "after": -1}, "trips: 'after' must be a trip number >= 0, got -1"),
    ({"op": "start_capture"}, "start_capture: 'path' must be a non-empty string, got None"),
    ({"op": "stop_capture"}, "stop_capture: no capture is running"),
    ({"op": "flush_capture"}, "flush_capture: no capture is running"),
])
def test_bad_requests_are_refused_with_a_reason(request_: object, error: str) -> None:
    core = BridgeCore()
    answer = ask(core, request_)
    assert answer["ok"] is False
    assert error in str(answer["error"])
    assert answer["state"] == "RUNNING" and answer["active"] == []
    assert core.ledger() == []


def test_a_session_answers_every_line_even_after_a_bad_one() -> None:
    core = BridgeCore()
    session = ControlSession(core)
    answers = session.feed(b'{"op":"ping","seq":1}\nnot json\n\xff\xfe\n[1]\n{"op":"pi', 1.0)
    assert [a["ok"] for a in answers] == [True, False, False, False]
    assert answers[0]["seq"] == 1
    assert "request refused: bridge control socket: a line that is not JSON" in answers[1]["error"]
    assert "a line that is not JSON" in answers[2]["error"]
    assert "a line is JSON list, expected an object" in answers[3]["error"]
    assert session.feed(b'ng"}\n', 2.0)[0]["pid"] > 0  # a request split across reads
    assert not session.broken
    answers = session.feed(b"x" * (70 * 1024), 3.0)
    assert answers[0]["ok"] is False and "longer than" in answers[0]["error"]
    assert session.broken


def test_stats_answer_shape(tmp_path: Path) -> None:
    core = BridgeCore()
    started = ask(core, {"op": "start_capture", "path": str(tmp_path / "c.pcap")})
    assert started["capture"] == {"seen": str(tmp_path / "c.pcap"),
                                  "delivered": str(tmp_path / "c.delivered.pcap"),
                                  "frames_seen": 0, "frames_delivered": 0}
    answer = ask(core, {"op": "stats"})
    directions = answer["directions"]
    assert set(directions) == {"terminal_to_host", "host_to_terminal"}
    assert answer["capture"] == started["capture"]
    assert (answer["deferred"], answer["trips_total"]) == (0, 0)
    stats = InjectorStats.from_json(answer)
    assert stats.capture is not None and stats.capture.delivered == tmp_path / "c.delivered.pcap"
    assert ask(core, {"op": "flush_capture"})["capture"]["frames_seen"] == 0
    assert ask(core, {"op": "stop_capture"})["capture"]["frames_delivered"] == 0
    assert ask(core, {"op": "stats"})["capture"] is None


# --- the loop, with socketpair "interfaces" ----------------------------------------------------


@dataclass
class PairPort:
    """One end of a SOCK_SEQPACKET socketpair is the bridge's port, the other the wire."""

    name: str
    sock: socket.socket

    def fileno(self) -> int:
        return self.sock.fileno()

    def recv_frame(self) -> bytes | None:
        return self.sock.recv(65535)

    def send_frame(self, frame: bytes) -> None:
        self.sock.send(frame)

    def close(self) -> None:
        self.sock.close()


@dataclass
class Rig:
    terminal_wire: socket.socket
    host_wire: socket.socket
    control: socket.socket

    def request(self, obj: dict[str, object]) -> dict[str, Any]:
        self.control.sendall(encode_line(obj))
        buffer = JsonLineBuffer("test client", max_line=1 << 24)
        while True:
            chunk = self.control.recv(65536)
            assert chunk, "bridge closed the control socket"
            answers = buffer.feed(chunk)
            if answers:
                assert len(answers) == 1
                return answers[0]


def recv_or_none(sock: socket.socket, wait_s: float) -> bytes | None:
    readable, _, _ = select.select([sock], [], [], wait_s)
    return sock.recv(65535) if readable else None


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    t_bridge, t_wire = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    h_bridge, h_wire = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ctl_path = tmp_path / "ctl"
    listener = listen_control(ctl_path)
    loop = BridgeLoop(BridgeCore(), PairPort("t", t_bridge), PairPort("h", h_bridge), listener)
    worker = threading.Thread(target=loop.run, daemon=True)
    worker.start()
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        client.settimeout(WAIT_S)
        client.connect(str(ctl_path))
        yield Rig(t_wire, h_wire, client)
    finally:
        loop.stop()
        worker.join(WAIT_S)
        assert not worker.is_alive(), f"bridge loop did not stop within {WAIT_S} s"
        loop.close()
        for s in (client, listener, t_bridge, t_wire, h_bridge, h_wire):
            s.close()


def test_loop_forwards_exact_frames_both_ways_and_pulls_the_cable(rig: Rig) -> None:
    to_host = ETH + b"request"
    to_terminal = ETH + b"response"
    rig.terminal_wire.send(to_host)
    assert recv_or_none(rig.host_wire, WAIT_S) == to_host
    rig.host_wire.send(to_terminal)
    assert recv_or_none(rig.terminal_wire, WAIT_S) == to_terminal

    added = rig.request({"op": "add_rule", "rule": PULL})
    assert added["active"] == [{"id": added["id"], "spec": PULL}]
    rig.terminal_wire.send(to_host)
    rig.host_wire.send(to_terminal)
    stats = rig.request({"op": "stats"})  # answered after both frames were handled (one loop)
    dirs = stats["directions"]
    assert dirs["terminal_to_host"]["frames_dropped"] == 1
    assert dirs["host_to_terminal"]["frames_dropped"] == 1
    assert dirs["terminal_to_host"]["frames_forwarded"] == 1

    assert rig.request({"op": "clear_rule", "id": added["id"]})["active"] == []
    rig.terminal_wire.send(to_host)
    assert recv_or_none(rig.host_wire, WAIT_S) == to_host
    # nothing left unread on either wire: the dropped frames never arrived
    assert recv_or_none(rig.host_wire, 0.05) is None
    assert recv_or_none(rig.terminal_wire, 0.05) is None


def test_loop_one_way_pull_and_rules_stamped_with_wall_time(rig: Rig) -> None:
    added = rig.request({"op": "add_rule", "rule": {
        "kind": "cable_pull", "params": {"direction": "host_to_terminal"}}})
    rig.terminal_wire.send(ETH + b"up")
    assert recv_or_none(rig.host_wire, WAIT_S) == ETH + b"up"
    rig.host_wire.send(ETH + b"down")
    assert recv_or_none(rig.terminal_wire, 0.1) is None
    (record,) = rig.request({"op": "rules"})["rules"]
    assert record["id"] == added["id"] and record["frames_acted"] == 1
    assert record["armed"] > 1.6e9  # the loop's wall clock


def test_loop_serves_several_requests_in_one_write_and_survives_a_bad_client(
        rig: Rig, tmp_path: Path) -> None:
    rig.control.sendall(b'{"op":"ping"}\n' + encode_line({"op": "add_rule", "rule": PULL}))
    buffer = JsonLineBuffer("test client")
    answers: list[dict[str, Any]] = []
    while len(answers) < 2:
        answers += buffer.feed(rig.control.recv(4096))
    first, second = answers
    assert first["ok"] and second["active"] == [{"id": 1, "spec": PULL}]

    other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    other.connect(str(tmp_path / "ctl"))
    other.sendall(b"garbage")
    other.close()  # a client that goes away mid-line must not disturb the bridge
    assert rig.request({"op": "ping"})["ok"] is True

    flooder = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    flooder.settimeout(WAIT_S)
    flooder.connect(str(tmp_path / "ctl"))
    try:
        flooder.sendall(b"y" * (70 * 1024))  # no newline: refused, then disconnected
        refusal = JsonLineBuffer("flooder").feed(flooder.recv(65536))
        assert refusal and "longer than" in refusal[0]["error"]
        try:  # closed by the bridge (a reset if it left the rest of the flood unread)
            assert recv_or_none(flooder, WAIT_S) == b""
        except ConnectionResetError:
            pass
    finally:
        flooder.close()
    assert rig.request({"op": "ping"})["ok"] is True
