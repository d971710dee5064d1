"""The control protocol (JSON lines) and the select loop, with fake ports (no root needed)."""

from __future__ import annotations

import json
import select
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from rigs.network.bridge import BridgeCore, BridgeLoop, Mode, handle_request, listen_control

ETH = bytes.fromhex("020000000002" "020000000001" "0800")
WAIT_S = 2.0


def ask(core: BridgeCore, line: bytes) -> dict[str, object]:
    answer = handle_request(core, line)
    json.dumps(answer)  # every answer must be serialisable
    return answer


def test_ping_and_set_mode_answers() -> None:
    core = BridgeCore()
    answer = ask(core, b'{"op":"ping"}')
    assert answer["ok"] is True and isinstance(answer["pid"], int)
    assert ask(core, b'{"op":"set_mode","mode":"CABLE_PULLED"}') == {
        "ok": True, "state": "RUNNING", "failure": None, "mode": "CABLE_PULLED"}
    assert core.mode is Mode.CABLE_PULLED


@pytest.mark.parametrize(("line", "error"), [
    (b"not json", "request is not a JSON line"),
    (b"\xff\xfe", "request is not a JSON line"),
    (b"[1, 2]", "a request is a JSON object, got list"),
    (b'{"op":"reboot"}', "unknown op 'reboot'; expected one of ping, set_mode, start_capture"),
    (b'{"nop":1}', "unknown op None"),
    (b'{"op":"set_mode","mode":"UNPLUGGED"}',
     "set_mode: mode 'UNPLUGGED' is unknown; expected one of PASS, CABLE_PULLED"),
    (b'{"op":"start_capture"}', "start_capture: 'path' must be a non-empty string, got None"),
    (b'{"op":"stop_capture"}', "stop_capture: no capture is running"),
])
def test_bad_requests_are_refused_with_a_reason(line: bytes, error: str) -> None:
    core = BridgeCore()
    answer = ask(core, line)
    assert answer["ok"] is False
    assert error in str(answer["error"])
    assert answer["state"] == "RUNNING" and answer["mode"] == "PASS"


def test_stats_answer_shape(tmp_path: Path) -> None:
    core = BridgeCore()
    ask(core, json.dumps({"op": "start_capture", "path": str(tmp_path / "c.pcap")}).encode())
    answer = ask(core, b'{"op":"stats"}')
    directions = answer["directions"]
    assert isinstance(directions, dict)
    assert set(directions) == {"terminal_to_host", "host_to_terminal"}
    assert answer["capture"] == {"path": str(tmp_path / "c.pcap"), "frames": 0}
    assert ask(core, b'{"op":"stop_capture"}')["frames"] == 0


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

    def request(self, obj: dict[str, object]) -> dict[str, object]:
        self.control.sendall(json.dumps(obj).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = self.control.recv(4096)
            assert chunk, "bridge closed the control socket"
            data += chunk
        answer = json.loads(data)
        assert isinstance(answer, dict)
        return answer


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

    assert rig.request({"op": "set_mode", "mode": "CABLE_PULLED"})["mode"] == "CABLE_PULLED"
    rig.terminal_wire.send(to_host)
    rig.host_wire.send(to_terminal)
    stats = rig.request({"op": "stats"})  # answered after both frames were handled (one loop)
    dirs = stats["directions"]
    assert isinstance(dirs, dict)
    assert dirs["terminal_to_host"]["frames_dropped"] == 1
    assert dirs["host_to_terminal"]["frames_dropped"] == 1
    assert dirs["terminal_to_host"]["frames_forwarded"] == 1

    rig.request({"op": "set_mode", "mode": "PASS"})
    rig.terminal_wire.send(to_host)
    assert recv_or_none(rig.host_wire, WAIT_S) == to_host
    # nothing left unread on either wire: the dropped frames never arrived
    assert recv_or_none(rig.host_wire, 0.05) is None
    assert recv_or_none(rig.terminal_wire, 0.05) is None


def test_loop_serves_several_requests_in_one_write_and_survives_a_bad_client(
        rig: Rig, tmp_path: Path) -> None:
    rig.control.sendall(b'{"op":"ping"}\n{"op":"set_mode","mode":"CABLE_PULLED"}\n')
    data = b""
    while data.count(b"\n") < 2:
        data += rig.control.recv(4096)
    first, second = (json.loads(x) for x in data.splitlines())
    assert first["ok"] and second["mode"] == "CABLE_PULLED"

    other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    other.connect(str(tmp_path / "ctl"))
    other.sendall(b"garbage")
    other.close()  # a client that goes away mid-line must not disturb the bridge
    assert rig.request({"op": "ping"})["ok"] is True
