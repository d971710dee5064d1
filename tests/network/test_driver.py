"""ScapyBridgeInjector against the real bridge program with fake ports (fake_bridge.py).

No root needed: the driver starts the process, waits for it, talks JSON lines, stops it; frames
travel over unix datagram sockets standing for the interfaces.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.utils import rdpcap

from protocols.faults import Direction, FaultKind, FaultSpec
from rigs.errors import ConfigError, DeviceStateError, NoResponse, TransportError
from rigs.events import EventStream, Source
from rigs.network import NetworkInjector, ScapyBridgeInjector
from rigs.network.records import Action, CapturePaths

HERE = Path(__file__).resolve().parent
FAKE = HERE / "fake_bridge.py"
ETH = bytes.fromhex("020000000002" "020000000001" "0800")
WAIT_S = 2.0
PULL = FaultSpec.of(FaultKind.CABLE_PULL, direction="both")
ARMED = FaultSpec.of(FaultKind.PULL_ON_REQUEST)
LOSS = FaultSpec.of(FaultKind.CARRIER_LOSS)


def tcp_frame(flags: str, payload: bytes = b"", seq: int = 1000) -> bytes:
    """A frame from the terminal to the acquirer's port."""
    return bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
                 / IP(src="198.18.0.10", dst="198.18.0.20")
                 / TCP(sport=40000, dport=8583, flags=flags, seq=seq) / payload)


def fake_python(folder: Path, *extra: str) -> str:
    """An executable standing for `python`: drops `-m rigs.network.bridge`, runs the fake."""
    script = folder / "fakepy"
    script.write_text(f'#!/bin/sh\nshift 2\nexec {sys.executable} {FAKE} "$@" {" ".join(extra)}\n')
    script.chmod(0o755)
    return str(script)


@dataclass
class Wires:
    terminal: socket.socket  # receives what the bridge sends toward the terminal
    host: socket.socket
    folder: Path

    def from_terminal(self, frame: bytes) -> None:
        self.terminal.sendto(frame, str(self.folder / "ft.in"))

    def from_host(self, frame: bytes) -> None:
        self.host.sendto(frame, str(self.folder / "fh.in"))


def recv_or_none(sock: socket.socket, wait_s: float) -> bytes | None:
    readable, _, _ = select.select([sock], [], [], wait_s)
    return sock.recv(65535) if readable else None


def make_wires(folder: Path) -> Wires:
    t = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    t.bind(str(folder / "ft.out"))
    h = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    h.bind(str(folder / "fh.out"))
    return Wires(t, h, folder)


@pytest.fixture
def wires(workdir: Path) -> Iterator[Wires]:
    w = make_wires(workdir)
    try:
        yield w
    finally:
        w.terminal.close()
        w.host.close()


@pytest.fixture
def injector(workdir: Path, wires: Wires) -> Iterator[ScapyBridgeInjector]:
    inj = ScapyBridgeInjector("net", "ft", "fh", None, workdir, python=fake_python(workdir))
    inj.open()
    try:
        yield inj
    finally:
        inj.close()


def test_is_a_network_injector_and_closed_methods_say_so(workdir: Path) -> None:
    inj = ScapyBridgeInjector("net", "ft", "fh", None, workdir)
    typed: NetworkInjector = inj  # the seam is checked by mypy
    assert typed is inj
    assert inj.is_nominal() is False
    with pytest.raises(DeviceStateError, match=r"pull_cable_on_next_request\(\) needs an open session"):
        inj.pull_cable_on_next_request()
    with pytest.raises(DeviceStateError,
                       match=r"ScapyBridgeInjector\(net\): pull_cable\(\) needs an open session; "
                             "state is CLOSED"):
        inj.pull_cable()
    assert inj.command() == [sys.executable, "-m", "rigs.network.bridge", "--terminal-if", "ft",
                             "--host-if", "fh", "--control", str(workdir.resolve() / "net.ctl")]
    in_ns = ScapyBridgeInjector("net", "r-term", "r-host", "rig", workdir)
    assert in_ns.command()[:4] == ["ip", "netns", "exec", "rig"]


def test_bad_configuration_is_refused_in_init(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'eth0/1' is not an interface name"):
        ScapyBridgeInjector("net", "eth0/1", "eth2", None, tmp_path)
    with pytest.raises(ConfigError, match="both 'eth1'"):
        ScapyBridgeInjector("net", "eth1", "eth1", None, tmp_path)
    with pytest.raises(ConfigError, match="at most 107"):
        ScapyBridgeInjector("net", "eth1", "eth2", None, tmp_path / ("x" * 120))


def test_forwards_exact_frames_pulls_and_restores(injector: ScapyBridgeInjector,
                                                   wires: Wires) -> None:
    request, response = ETH + b"req", ETH + b"resp"
    assert injector.is_nominal() and injector.active() == [] and not injector.is_cable_pulled()
    wires.from_terminal(request)
    assert recv_or_none(wires.host, WAIT_S) == request
    wires.from_host(response)
    assert recv_or_none(wires.terminal, WAIT_S) == response

    rule_id = injector.pull_cable()
    assert injector.is_cable_pulled() and not injector.is_nominal()
    assert [(r.id, r.spec) for r in injector.active()] == [(rule_id, PULL)]
    wires.from_terminal(request)
    wires.from_host(response)
    stats = injector.stats()
    assert stats.to_host.frames_dropped == 1
    assert stats.direction(Direction.TO_TERMINAL).frames_dropped == 1
    assert stats.to_host.bytes_forwarded == len(request)

    injector.restore_nominal()
    assert injector.is_nominal() and not injector.is_cable_pulled()
    wires.from_terminal(request)
    assert recv_or_none(wires.host, WAIT_S) == request
    assert recv_or_none(wires.host, 0.05) is None
    assert recv_or_none(wires.terminal, 0.05) is None


def test_one_way_pulls_and_two_rules_at_once(injector: ScapyBridgeInjector, wires: Wires) -> None:
    up, down = ETH + b"up", ETH + b"down"
    to_terminal = injector.pull_cable(Direction.TO_TERMINAL)
    assert injector.is_cable_pulled(Direction.TO_TERMINAL)
    assert not injector.is_cable_pulled(Direction.TO_HOST) and not injector.is_cable_pulled()
    wires.from_terminal(up)
    assert recv_or_none(wires.host, WAIT_S) == up
    wires.from_host(down)
    assert recv_or_none(wires.terminal, 0.1) is None

    to_host = injector.apply(FaultSpec.of("cable_pull", direction="terminal_to_host"))
    assert injector.is_cable_pulled()  # both ways, by two rules
    assert [r.id for r in injector.active()] == [to_terminal, to_host]
    injector.clear(to_terminal)  # the other one stays
    assert [r.id for r in injector.active()] == [to_host]
    wires.from_host(down)
    assert recv_or_none(wires.terminal, WAIT_S) == down
    wires.from_terminal(up)
    assert recv_or_none(wires.host, 0.1) is None
    with pytest.raises(DeviceStateError, match=rf"refused 'clear_rule': clear_rule: rule "
                                               rf"#{to_terminal} .* was already cleared"):
        injector.clear(to_terminal)
    injector.clear_all()
    assert injector.is_nominal()
    ledger = injector.fault_ledger()
    assert [(r.id, r.active, r.cleared is not None) for r in ledger] == [
        (to_terminal, False, True), (to_host, False, True)]
    assert ledger[0].armed <= ledger[0].cleared  # type: ignore[operator]


def test_carrier_loss_sets_the_link_down_until_cleared_and_is_not_nominal(
        injector: ScapyBridgeInjector, wires: Wires, workdir: Path) -> None:
    link = workdir / "ft.link"  # the fake bridge's terminal-side link
    assert injector.has_carrier() and injector.is_nominal()
    first = injector.apply(LOSS)
    second = injector.apply(LOSS)
    assert link.read_text() == "down" and not injector.has_carrier()
    assert not injector.is_nominal() and not injector.is_cable_pulled()
    wires.from_terminal(ETH + b"x")
    wires.from_host(ETH + b"y")
    assert recv_or_none(wires.host, 0.1) is None and recv_or_none(wires.terminal, 0.05) is None
    injector.clear(first)
    assert link.read_text() == "down" and not injector.is_nominal()
    injector.clear(second)
    assert link.read_text() == "up" and injector.has_carrier() and injector.is_nominal()
    injector.apply(LOSS)
    injector.restore_nominal()
    assert link.read_text() == "up" and injector.is_nominal()
    wires.from_terminal(ETH + b"z")
    assert recv_or_none(wires.host, WAIT_S) == ETH + b"z"


def test_a_link_that_cannot_be_set_is_a_refusal_naming_the_interface(workdir: Path) -> None:
    inj = ScapyBridgeInjector("net", "ft", "fh", None, workdir,
                              python=fake_python(workdir, "--fail-link"))
    inj.open()
    try:
        with pytest.raises(DeviceStateError, match=(
                r"refused 'add_rule': add_rule: carrier_loss\(\): setting the terminal's link "
                r"down failed: ft: `ip link set dev ft down` failed with exit code 2: RTNETLINK "
                r"answers: Operation not permitted")):
            inj.apply(LOSS)
        assert inj.active() == [] and inj.is_nominal()
    finally:
        inj.close()


def test_the_bridge_sets_a_terminal_link_left_down_up_as_it_starts(workdir: Path,
                                                                    wires: Wires) -> None:
    inj = ScapyBridgeInjector("net", "ft", "fh", None, workdir, python=fake_python(workdir))
    inj.open()
    try:
        inj.apply(LOSS)
        pid = inj.pid
        assert pid is not None and (workdir / "ft.link").read_text() == "down"
        os.kill(pid, signal.SIGKILL)  # a bridge killed while it held the link down
        with pytest.raises(TransportError):
            inj.ping()
    finally:
        inj.close()
    assert (workdir / "ft.link").read_text() == "down"
    again = ScapyBridgeInjector("net", "ft", "fh", None, workdir, python=fake_python(workdir))
    again.open()
    try:
        assert again.has_carrier() and again.is_nominal()
        again.apply(LOSS)
        assert (workdir / "ft.link").read_text() == "down"
    finally:
        again.close()  # SIGTERM: the bridge sets the link up as it stops
    assert (workdir / "ft.link").read_text() == "up"
    assert "ft is down" in again.log_tail(2000)


def test_apply_refuses_what_is_not_a_network_fault(injector: ScapyBridgeInjector) -> None:
    with pytest.raises(ConfigError, match=r"apply\(paper_out\(\)\): a switch fault; the network "
                                          r"injector carries out network faults only"):
        injector.apply(FaultSpec.of("paper_out"))
    with pytest.raises(ConfigError, match="takes a FaultSpec, got dict"):
        injector.apply({"kind": "cable_pull"})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="takes a rule id"):
        injector.clear("1")  # type: ignore[arg-type]
    assert injector.fault_ledger() == []


def test_pull_on_request_trips_and_every_step_is_published(injector: ScapyBridgeInjector,
                                                          wires: Wires) -> None:
    stream = EventStream()
    injector.event_sink = stream
    assert injector.event_sink is stream
    syn, request = tcp_frame("S"), tcp_frame("PA", b"\x00\x05hello", seq=4242)
    before = time.time()
    rule_id = injector.pull_cable_on_next_request()
    assert injector.last_trip() is None and injector.trips() == []
    wires.from_terminal(syn)
    assert recv_or_none(wires.host, WAIT_S) == syn
    wires.from_terminal(request)
    assert recv_or_none(wires.host, 0.1) is None  # the request was dropped
    trip = injector.last_trip()
    assert trip is not None and trip.rule_id == rule_id and trip.n == 1
    assert trip.direction is Direction.TO_HOST and trip.action is Action.DROP
    assert trip.tcp is not None and trip.tcp.carries_data and trip.tcp.dport == 8583
    assert trip.tcp.payload_len == 7 and trip.became == PULL and trip.spec == ARMED
    assert before <= trip.wall <= time.time()
    assert injector.is_cable_pulled() and injector.trips(after=1) == []
    (record,) = injector.active()
    assert (record.spec, record.current, record.fired) == (ARMED, PULL, (trip,))

    assert injector.publish_trips(0) == 1
    assert injector.publish_trips(1) == 1  # nothing new
    injector.restore()
    assert injector.last_trip() is None and [t.n for t in injector.trips()] == [1]
    events = [(e.source, e.kind, e.name, e.detail) for e in stream.events()]
    assert events == [
        (Source.NETWORK, "fault", "armed", "pull_on_request()"),
        (Source.NETWORK, "fault", "fired", f"pull_on_request(): drop terminal_to_host "
                                           f"{trip.frame}; became cable_pull(direction=both)"),
        (Source.NETWORK, "fault", "cleared", "pull_on_request()"),
    ]
    armed, fired, cleared = stream.events()
    assert armed.t == record.armed and fired.t == trip.wall and cleared.t >= fired.t
    assert fired.data == {"rule": rule_id, "n": 1}


def test_capture_is_flushed_by_stop_and_by_sigterm(injector: ScapyBridgeInjector, wires: Wires,
                                                   workdir: Path) -> None:
    frames = [ETH + bytes([i]) * 40 for i in range(3)]
    injector.start_capture(workdir / "a.pcap")
    wires.from_terminal(frames[0])
    assert recv_or_none(wires.host, WAIT_S) == frames[0]
    injector.pull_cable()
    wires.from_host(frames[1])  # dropped, still seen; not delivered
    mid = injector.flush_capture()  # decodable mid-capture
    assert mid == CapturePaths(workdir / "a.pcap", workdir / "a.delivered.pcap", 2, 1)
    assert [bytes(p) for p in rdpcap(str(mid.seen))] == frames[:2]
    assert [bytes(p) for p in rdpcap(str(mid.delivered))] == frames[:1]
    assert injector.stats().capture == mid
    assert injector.stop_capture() == mid
    assert [bytes(p) for p in rdpcap(str(workdir / "a.pcap"))] == frames[:2]

    injector.restore()
    injector.start_capture(workdir / "b.pcap")
    wires.from_terminal(frames[2])
    assert recv_or_none(wires.host, WAIT_S) == frames[2]
    injector.close()  # SIGTERM with a capture running: both files must be complete
    assert [bytes(p) for p in rdpcap(str(workdir / "b.pcap"))] == [frames[2]]
    assert [bytes(p) for p in rdpcap(str(workdir / "b.delivered.pcap"))] == [frames[2]]


def test_a_malformed_answer_is_a_transport_error_naming_the_field(
        injector: ScapyBridgeInjector, monkeypatch: pytest.MonkeyPatch) -> None:
    answers: dict[str, dict[str, Any]] = {
        "stats": {"directions": {"terminal_to_host": {}}, "deferred": 0},
        "rules": {"rules": [{"id": 1, "spec": {"kind": "cable_pull"}}]},
        "trips": {"trips": "none"},
        "flush_capture": {"capture": {"seen": "/a", "delivered": None}},
    }

    def fake(operation: str, request: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "state": "RUNNING", "failure": None, "active": [],
                **answers[request["op"]]}

    monkeypatch.setattr(injector, "_request", fake)
    with pytest.raises(TransportError, match=r"ScapyBridgeInjector\(net\): malformed answer to "
                       r"'stats' from the bridge: stats\.directions\.terminal_to_host\."
                       r"frames_forwarded must be an integer >= 0, got None"):
        injector.stats()
    with pytest.raises(TransportError, match=r"'rules' from the bridge: rules\[0\]\.fired must be a "
                                             r"list, got None"):
        injector.fault_ledger()
    with pytest.raises(TransportError, match=r"trips must be a list, got 'none'"):
        injector.trips()
    with pytest.raises(TransportError, match=r"capture\.delivered must be a string, got None"):
        injector.flush_capture()


def test_refusals_from_the_bridge_become_device_state_errors(
        injector: ScapyBridgeInjector) -> None:
    with pytest.raises(DeviceStateError, match="refused 'stop_capture': stop_capture: no capture"):
        injector.stop_capture()
    assert injector.is_nominal()  # a refused request does not break the bridge


def test_a_rule_bug_fails_loudly(workdir: Path, wires: Wires) -> None:
    inj = ScapyBridgeInjector("net", "ft", "fh", None, workdir,
                              python=fake_python(workdir, "--fail-on-pull"))
    inj.open()
    try:
        rule_id = inj.pull_cable()
        wires.from_terminal(ETH + b"x")
        with pytest.raises(DeviceStateError, match=r"the bridge is FAILED \(a bug in the injector, "
                           rf"not an injected fault\): rule #{rule_id} cable_pull\(direction=both\) "
                           r"raised ZeroDivisionError: a bug in a rule"):
            inj.stats()
        assert inj.is_nominal() is False
        with pytest.raises(DeviceStateError, match="FAILED"):
            inj.restore_nominal()
    finally:
        inj.close()


def test_open_reports_a_bridge_that_cannot_start(workdir: Path) -> None:
    inj = ScapyBridgeInjector("net", "ft", "fh", None, workdir, python="/bin/false")
    with pytest.raises(TransportError, match=r"the bridge could not start: \(no report\); "
                                             r"bridge process exited with code 1"):
        inj.open()
    assert inj.pid is None and inj.state.value == "CLOSED"


def test_open_reports_why_the_bridge_refused_to_start(workdir: Path) -> None:
    # the fake's "interface" ft cannot be bound: its inbox path is a directory
    (workdir / "ft.in").mkdir()
    inj = ScapyBridgeInjector("net", "ft", "fh", None, workdir, python=fake_python(workdir))
    try:
        with pytest.raises(TransportError, match=r"could not start: error cannot start bridging "
                                                 r"ft ⇄ fh: .*; bridge process exited with code 2"):
            inj.open()
    finally:
        (workdir / "ft.in").rmdir()


def test_open_is_bounded_when_the_bridge_never_reports(workdir: Path) -> None:
    script = workdir / "hang"
    script.write_text("#!/bin/sh\nexec sleep 30\n")
    script.chmod(0o755)
    inj = ScapyBridgeInjector("net", "ft", "fh", None, workdir, python=str(script))
    inj.start_timeout_s = 0.3
    started = time.monotonic()
    with pytest.raises(NoResponse, match=r"did not report ready within 0.3 s"):
        inj.open()
    assert time.monotonic() - started < 0.3 + inj.stop_timeout_s
    assert inj.pid is None  # the hung process was terminated and reaped


def test_a_dead_bridge_is_reported_with_its_exit(injector: ScapyBridgeInjector) -> None:
    pid = injector.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(TransportError, match=r"bridge process exited with code -9"):
        injector.pull_cable()
    assert injector.is_nominal() is False


def test_bridge_dies_with_its_parent(workdir: Path, wires: Wires) -> None:
    code = (
        "import sys; from pathlib import Path\n"
        "from rigs.network import ScapyBridgeInjector\n"
        f"inj = ScapyBridgeInjector('net', 'ft', 'fh', None, Path({str(workdir)!r}), "
        f"python={fake_python(workdir)!r})\n"
        "inj.open(); print(inj.pid, flush=True); sys.stdin.read()\n")
    parent = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, cwd=HERE.parents[1])
    try:
        assert parent.stdout is not None
        readable, _, _ = select.select([parent.stdout], [], [], 10.0)
        assert readable, "the parent did not start a bridge within 10 s"
        bridge_pid = int(parent.stdout.readline())
        pidfd = os.pidfd_open(bridge_pid)
        parent.kill()
        parent.wait(WAIT_S)
        gone, _, _ = select.select([pidfd], [], [], 5.0)
        os.close(pidfd)
        assert gone, f"bridge pid {bridge_pid} outlived its parent by 5 s"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(WAIT_S)
