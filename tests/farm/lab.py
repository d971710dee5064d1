"""A labgrid farm in miniature, on loopback only, for the integration tests.

Everything here is started by the test process and stopped by its PID: a fake terminal on each
pseudo-terminal, ser2net bound to 127.0.0.1 exporting the ptys (RFC 2217 and raw TCP), a
labgrid coordinator listening on 127.0.0.1 (a port it chooses), and one exporter publishing
the ser2net ports, an instrument and a reader host as the resources of one bench.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import tty
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent
LOOPBACK = "127.0.0.1"
START_BOUND = 20.0
STOP_BOUND = 5.0
CLI_BOUND = 30.0


def ser2net_binary() -> str | None:
    found = shutil.which("ser2net")
    if found is None and os.path.exists("/usr/sbin/ser2net"):
        found = "/usr/sbin/ser2net"
    return found


def labgrid_missing() -> str | None:
    """Why the farm cannot be built here, or None."""
    try:
        import labgrid.remote.client  # noqa: F401
    except ImportError as exc:
        return f"labgrid is not installed ({exc}): pip install 'labgrid>=26,<27'"
    for tool in ("labgrid-coordinator", "labgrid-exporter", "labgrid-client"):
        if not (BIN / tool).exists():
            return f"{BIN / tool} is missing (labgrid installed without its commands?)"
    if ser2net_binary() is None:
        return "ser2net is not installed: apt-get install -y ser2net"
    return None


def free_port() -> int:
    """A TCP port free on loopback now (the kernel's choice)."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def listening(port: int) -> bool:
    """Whether something listens on 127.0.0.1:port (read from /proc: connecting would make
    ser2net open its device)."""
    want = f"0100007F:{port:04X}"
    for table in ("/proc/net/tcp",):
        with open(table, encoding="ascii") as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if cols[1] == want and cols[3] == "0A":
                    return True
    return False


def wait_until(what: str, ready: object, bound: float = START_BOUND) -> None:
    deadline = time.monotonic() + bound
    while not (ready() if callable(ready) else ready):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {bound:g} s")
        time.sleep(0.05)


@dataclass
class Proc:
    """A process this test started: its log file, stopped by its PID."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @classmethod
    def start(cls, name: str, cmd: list[str], workdir: Path,
              env: Mapping[str, str] | None = None) -> Proc:
        log = workdir / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=workdir,
                                     env=dict(env) if env is not None else None)
        return cls(name, popen, log)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def wait_for(self, marker: str, bound: float = START_BOUND) -> str:
        deadline = time.monotonic() + bound
        while marker not in self.text():
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} (pid {self.pid}) exited with "
                                   f"{self.popen.returncode} before {marker!r}:\n{self.text()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} (pid {self.pid}) did not say {marker!r} within "
                                   f"{bound:g} s:\n{self.text()}")
            time.sleep(0.05)
        return self.text()

    def stop(self) -> None:
        """SIGTERM to this PID, SIGKILL after a bound."""
        if self.popen.poll() is not None:
            return
        os.kill(self.pid, signal.SIGTERM)
        try:
            self.popen.wait(STOP_BOUND)
        except subprocess.TimeoutExpired:
            os.kill(self.pid, signal.SIGKILL)
            self.popen.wait(STOP_BOUND)


class FakeTerminal:
    """The far end of a pseudo-terminal: answers every byte in upper case (so an answer proves
    the bytes crossed ser2net and came back from here, not from an echo on the way)."""

    def __init__(self) -> None:
        self.master, self._slave = os.openpty()
        tty.setraw(self.master)
        tty.setraw(self._slave)
        self.path = os.ttyname(self._slave)
        self.received = bytearray()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"fake terminal {self.path}",
                                        daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.05)
            if not ready:
                continue
            try:
                data = os.read(self.master, 4096)
            except OSError:  # the slave side was closed and reopened by ser2net
                time.sleep(0.01)
                continue
            self.received += data
            os.write(self.master, data.upper())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(STOP_BOUND)
        os.close(self.master)
        os.close(self._slave)


@dataclass
class Farm:
    """The running farm: the coordinator's address, the ports, and the processes."""

    workdir: Path
    coordinator: str = ""
    terminal_port: int = 0
    probe_port: int = 0
    terminal: FakeTerminal | None = None
    probe: FakeTerminal | None = None
    procs: list[Proc] = field(default_factory=list)
    _channel: Any = None
    EXPORTER = "benchpc1"
    GROUP = "pos-1"
    PLACE = "bench-a"
    TAGS = {"bench": "pos", "terminal": "t1"}
    GHOST_PLACE = "bench-ghost"  # its exporter (benchpc9) never runs: "exporter down"
    GHOST_TAGS = {"bench": "ghost"}
    TWIN_PLACE = "bench-a-twin"  # matches bench-a's resources too (a place set up twice)
    PSU = "TCPIP0::127.0.0.1::5025::SOCKET"

    def start(self) -> None:
        self.terminal, self.probe = FakeTerminal(), FakeTerminal()
        self.terminal_port, self.probe_port = free_port(), free_port()
        self._start_ser2net()
        self._start_coordinator()
        self._start_exporter()
        self._create_places()

    def _start_ser2net(self) -> None:
        assert self.terminal is not None and self.probe is not None
        config = self.workdir / "ser2net.yaml"
        config.write_text(
            "%YAML 1.1\n---\n"
            + "".join(
                f"connection: &{name}\n"
                f"  accepter: {accepter}tcp,{LOOPBACK},{port}\n"
                f"  connector: serialdev(nouucplock=true),{pty.path},115200n81,local\n"
                f"  options:\n"
                f"    mdns: false\n"
                for name, accepter, port, pty in (
                    ("terminal", "telnet(rfc2217),", self.terminal_port, self.terminal),
                    ("probe", "", self.probe_port, self.probe)))
            , encoding="utf-8")
        binary = ser2net_binary()
        assert binary is not None
        proc = Proc.start("ser2net", [binary, "-n", "-c", str(config),
                                      "-P", str(self.workdir / "ser2net.pid")], self.workdir)
        self.procs.append(proc)
        def refused() -> bool:  # ser2net keeps running on a bad connection: read its log
            return proc.popen.poll() is not None or "Invalid" in proc.text()

        wait_until(f"ser2net listening on {self.terminal_port} and {self.probe_port}",
                   lambda: listening(self.terminal_port) and listening(self.probe_port)
                   or refused())
        if refused():
            raise RuntimeError(f"ser2net refused its configuration:\n{proc.text()}")

    def _start_coordinator(self) -> None:
        proc = Proc.start("coordinator", [str(BIN / "labgrid-coordinator"), "--listen",
                                          f"{LOOPBACK}:0"], self.workdir)
        self.procs.append(proc)
        said = proc.wait_for("listening on ")
        self.coordinator = said.split("listening on ", 1)[1].split()[0]
        assert self.coordinator.startswith(f"{LOOPBACK}:"), self.coordinator

    def _start_exporter(self) -> None:
        config = self.workdir / "exporter.yaml"
        config.write_text(
            f"{self.GROUP}:\n"
            f"  terminal:\n"
            f"    cls: NetworkSerialPort\n"
            f"    host: {LOOPBACK}\n"
            f"    port: {self.terminal_port}\n"
            f"    protocol: rfc2217\n"
            f"  probe:\n"
            f"    cls: NetworkSerialPort\n"
            f"    host: {LOOPBACK}\n"
            f"    port: {self.probe_port}\n"
            f"    protocol: raw\n"
            f"  psu:\n"
            f"    cls: PyVISADevice\n"
            f"    type: TCPIP0\n"
            f"    url: 127.0.0.1::5025::SOCKET\n"
            f"  readers:\n"
            f"    cls: NetworkService\n"
            f"    address: {LOOPBACK}\n"
            f"    username: pos\n", encoding="utf-8")
        proc = Proc.start("exporter", [str(BIN / "labgrid-exporter"), "--coordinator",
                                       self.coordinator, "--name", self.EXPORTER,
                                       "--hostname", LOOPBACK, str(config)], self.workdir)
        self.procs.append(proc)
        proc.wait_for("Exporter ready")

    def _create_places(self) -> None:
        for place, exporter, tags in ((self.PLACE, self.EXPORTER, self.TAGS),
                                      (self.GHOST_PLACE, "benchpc9", self.GHOST_TAGS)):
            self.client("-p", place, "create")
            self.client("-p", place, "add-match", f"{exporter}/*/*")
            self.client("-p", place, "set-tags", *(f"{k}={v}" for k, v in tags.items()))
        self.client("-p", self.TWIN_PLACE, "create")
        self.client("-p", self.TWIN_PLACE, "add-match", f"{self.EXPORTER}/*/*")

    def client(self, *args: str, user: str | None = None, check: bool = True) -> str:
        """``labgrid-client`` against this coordinator (as *user*, default: this user)."""
        env = dict(os.environ, LG_COORDINATOR=self.coordinator)
        if user is not None:
            env["LG_USERNAME"] = user
        done = subprocess.run([str(BIN / "labgrid-client"), *args], capture_output=True,
                              text=True, env=env, timeout=CLI_BOUND, stdin=subprocess.DEVNULL)
        if check and done.returncode != 0:
            raise RuntimeError(f"labgrid-client {' '.join(args)} failed ({done.returncode}):\n"
                               f"{done.stdout}{done.stderr}")
        return done.stdout + done.stderr

    def _stub(self) -> Any:
        """The coordinator's own gRPC service, asked directly (not through the rig's client)."""
        import grpc
        from labgrid.remote.generated import labgrid_coordinator_pb2_grpc

        if self._channel is None:
            self._channel = grpc.insecure_channel(self.coordinator)
        return labgrid_coordinator_pb2_grpc.CoordinatorStub(self._channel)

    def place_holder(self, place: str | None = None) -> tuple[str, str]:
        """(acquired by, reservation) of a place, "None" for neither, from the coordinator."""
        from labgrid.remote.generated import labgrid_coordinator_pb2 as pb2

        name = place or self.PLACE
        places = self._stub().GetPlaces(pb2.GetPlacesRequest(), timeout=CLI_BOUND).places
        found = [p for p in places if p.name == name]
        assert found, f"the coordinator has no place {name}"
        return (found[0].acquired or "None",
                found[0].reservation if found[0].HasField("reservation") else "None")

    def reservations(self) -> list[str]:
        """Every reservation the coordinator keeps: 'owner token state'."""
        from labgrid.remote.generated import labgrid_coordinator_pb2 as pb2

        got = self._stub().GetReservations(pb2.GetReservationsRequest(), timeout=CLI_BOUND)
        return [f"{r.owner} {r.token} {r.state}" for r in got.reservations]

    def stop(self) -> None:
        """Stop every process started, newest first, by PID; close the ptys."""
        problems = []
        if self._channel is not None:
            self._channel.close()
        for proc in reversed(self.procs):
            try:
                proc.stop()
            except OSError as exc:
                problems.append(f"{proc.name} (pid {proc.pid}): {exc}")
        for pty in (self.terminal, self.probe):
            if pty is not None:
                pty.close()
        if problems:
            raise RuntimeError("; ".join(problems))

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} (pid {p.pid}) ---\n{p.text()[-3000:]}" for p in self.procs)
