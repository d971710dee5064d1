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

import pytest
from scapy.utils import rdpcap

from rigs.errors import ConfigError, DeviceStateError, NoResponse, TransportError
from rigs.network import Mode, NetworkInjector, ScapyBridgeInjector

HERE = Path(__file__).resolve().parent
FAKE = HERE / "fake_bridge.py"
ETH = bytes.fromhex("020000000002" "020000000001" "0800")
WAIT_S = 2.0


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
    assert injector.is_nominal() and injector.mode is Mode.PASS
    wires.from_terminal(request)
    assert recv_or_none(wires.host, WAIT_S) == request
    wires.from_host(response)
    assert recv_or_none(wires.terminal, WAIT_S) == response

    injector.pull_cable()
    assert injector.mode is Mode.CABLE_PULLED and not injector.is_nominal()
    wires.from_terminal(request)
    wires.from_host(response)
    stats = injector.stats()
    assert stats["directions"]["terminal_to_host"]["frames_dropped"] == 1
    assert stats["directions"]["host_to_terminal"]["frames_dropped"] == 1
    assert stats["directions"]["terminal_to_host"]["bytes_forwarded"] == len(request)

    injector.restore_nominal()
    assert injector.is_nominal()
    wires.from_terminal(request)
    assert recv_or_none(wires.host, WAIT_S) == request
    assert recv_or_none(wires.host, 0.05) is None
    assert recv_or_none(wires.terminal, 0.05) is None


def test_capture_is_flushed_by_stop_and_by_sigterm(injector: ScapyBridgeInjector, wires: Wires,
                                                   workdir: Path) -> None:
    frames = [ETH + bytes([i]) * 40 for i in range(3)]
    injector.start_capture(workdir / "a.pcap")
    wires.from_terminal(frames[0])
    assert recv_or_none(wires.host, WAIT_S) == frames[0]
    injector.pull_cable()
    wires.from_host(frames[1])  # dropped, still captured
    injector.stats()
    assert injector.stop_capture() == workdir / "a.pcap"
    assert [bytes(p) for p in rdpcap(str(workdir / "a.pcap"))] == frames[:2]

    injector.restore()
    injector.start_capture(workdir / "b.pcap")
    wires.from_terminal(frames[2])
    assert recv_or_none(wires.host, WAIT_S) == frames[2]
    injector.close()  # SIGTERM with a capture running: the file must be complete
    assert [bytes(p) for p in rdpcap(str(workdir / "b.pcap"))] == [frames[2]]


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
        inj.pull_cable()
        wires.from_terminal(ETH + b"x")
        with pytest.raises(DeviceStateError, match=r"the bridge is FAILED \(a bug in the injector, "
                           r"not an injected fault\): rule for mode CABLE_PULLED raised "
                           r"ZeroDivisionError: a bug in a rule"):
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
