"""The virtual bench supervisor: brings every simulated device up behind its real interface,
wires them to each other as a physical bench is wired, and takes everything down again.

One process (``python -m sim serve``, started detached by ``python -m sim up``) owns:

- the network namespaces (``sim.netns``), the acquirer host process in ``acq`` and, next to
  it on the same address, the QR payment platform (``sim.qr``; own log, ledger and control
  socket, published as the bench file's ``qr`` section);
- a private pcscd with vpcd readers and the virtual EMV cards (``sim.pcsc``, ``sim.card``):
  the good card fixed on reader 00 00, the card emulator on 00 01 loading every other profile
  of fixtures/cards on request (its control socket is the bench file's ``cards.emulator``);
- the SCPI power supply and relay unit servers on 127.0.0.1 (``sim.scpi``);
- the ECR pty and the probe-link pty, kept open across terminal power cycles;
- the terminal firmware process, started in ``dut`` once the supply rail has been at or above
  brown-out for the power-on reset time, SIGKILLed the moment it goes off or sags below
  brown-out, and when the firmware says it switched itself off (started again above the
  profile's restart voltage); the decisions are :class:`sim.powerpath.TerminalPowerPath`'s;
- the harness between the firmware and the bench (rail voltage, the printer's lines through the
  relay unit, card slot).

Parts can be left out (``python -m sim up --without ledger,network``, :data:`PARTS`): without
``ledger`` the bench file has no ``host.ledger`` (the rig cannot read the acquirer's ledger, as in
a lab); without ``network`` it has no ``network`` section and the rig runs no injector, so the
terminal is cabled straight to the host through a kernel bridge in the rig namespace
(``netns.create(topo, kernel_bridge=True)``), as a lab without an injector is.

The terminal's IDs, operators and supply thresholds in the bench file come from the terminal
profile (fixtures/terminal/profile.yaml) and the card PINs from the card profiles, so each fact
is written once.

Everything it starts is recorded in ``state.json`` (with the parts left out) so a run that was
killed can be cleaned up by the next one.

All decisions about the terminal's power are taken on one thread, the main loop, which is also
the thread that forks children (their death signal is tied to it).
"""

from __future__ import annotations

import logging
import os
import queue
import re
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
import tty
from collections.abc import Callable, Collection, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from protocols.errors import ConfigError, DecodeError, NoResponse, SimError
from protocols.jsonlines import JsonLineBuffer, encode_line
from protocols.qr import DEFAULT_PORT as QR_PORT
from sim import netns
from sim.card.profile import load_profile as load_card_profile
from sim.powerpath import Boot, Kill, PowerAction, Rail, TerminalPowerPath
from sim.procs import (
    ProcRecord,
    StateFile,
    kill,
    records_from_json,
    records_to_json,
    spawn,
    spawn_until_ready,
)
from sim.terminal.profile import BROWNOUT_VOLTS, Profile, load_profile

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
HOST_PORT = 8583
TERMINAL_PROFILE = REPO / "fixtures/terminal/profile.yaml"
CARDS_DIR = REPO / "fixtures/cards"
HOST_RULES = REPO / "fixtures/host/rules.yaml"
#: Cards on a reader of their own; every other profile of CARDS_DIR goes through the emulator.
FIXED_CARDS = ("good",)
#: The emulator's card when the bench comes up (the card reader 00 01 held before it existed).
EMULATOR_INITIAL = "mute"
QR_TERMINALS = REPO / "fixtures/qr/terminals.yaml"
QR_RULES = REPO / "fixtures/qr/rules.yaml"
#: Parts of the virtual bench that ``--without`` can leave out.
PARTS = ("ledger", "network")
#: Bench-file roles (terminal.operators) and the profile role each one takes its operator from.
BENCH_ROLES = ("operator", "admin")
PCSC_NS = "pcsc"
BENCH_ID = re.compile(r"^[a-z0-9]{1,6}$")
"""A bench id (``sim up --bench-id``): several virtual benches side by side on one PC."""


def check_bench_id(bench_id: str) -> str:
    if bench_id and not BENCH_ID.match(bench_id):
        raise ConfigError(f"bench id {bench_id!r}: 1 to 6 lower-case letters or digits "
                          f"expected (it prefixes namespace and interface names)")
    return bench_id


def bench_topology(bench_id: str = "") -> netns.Topology:
    """The namespaces and interfaces of bench *bench_id*: the contract names without an id,
    names prefixed ``pb<id>`` with one (addresses stay the contract ones: they only exist
    inside the bench's own namespaces, so benches never collide)."""
    check_bench_id(bench_id)
    return netns.Topology.with_prefix(f"pb{bench_id}") if bench_id else (
        netns.Topology.default())


def pcsc_namespace(bench_id: str = "") -> str:
    """The card namespace of bench *bench_id* (its pcscd, vpcd ports and card processes)."""
    check_bench_id(bench_id)
    return f"pb{bench_id}{PCSC_NS}" if bench_id else PCSC_NS
STATE_NAME = "state.json"
READY_BOUND = 30.0
#: Relay unit wiring of the virtual bench: the terminal line each channel is wired across
#: (bench file ``switch.channels``); closed, the line reads the fault.
RELAY_WIRING: Mapping[str, int] = MappingProxyType({
    "paper_sensor": 1, "paper_near_end": 2, "printer_presence": 3})
#: The harness message (docs/internals.md) each wired line gives, closed or open.
LINE_MESSAGES: Mapping[str, Callable[[bool], dict[str, Any]]] = MappingProxyType({
    "paper_sensor": lambda closed: {"t": "paper", "present": not closed},
    "paper_near_end": lambda closed: {"t": "paper_low", "low": closed},
    "printer_presence": lambda closed: {"t": "printer", "present": not closed},
})


@dataclass
class BenchPaths:
    workdir: Path

    @property
    def state(self) -> Path:
        return self.workdir / STATE_NAME

    @property
    def terminal_state(self) -> Path:
        return self.workdir / "terminal"

    @property
    def ledger(self) -> Path:
        return self.workdir / "host.sqlite"

    @property
    def host_control(self) -> Path:
        """The host simulator's control socket (absolute: the rig connects to it by path)."""
        return self.workdir.resolve() / "host.ctl"

    @property
    def card_control(self) -> Path:
        """The card emulator's control socket (absolute: the rig connects to it by path)."""
        return self.workdir.resolve() / "cards.ctl"

    @property
    def qr_ledger(self) -> Path:
        return self.workdir / "qr.sqlite"

    @property
    def qr_control(self) -> Path:
        """The QR platform's control socket (absolute: the rig connects to it by path)."""
        return self.workdir.resolve() / "qr.ctl"

    def log(self, name: str) -> Path:
        return self.workdir / f"{name}.log"


@dataclass
class Harness:
    """The firmware's end of the wiring: a socket carrying JSON lines (docs/internals.md)."""

    sock: socket.socket
    lines: JsonLineBuffer = field(default_factory=lambda: JsonLineBuffer("harness", require="t"))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, msg: dict[str, Any]) -> None:
        data = encode_line(msg)
        with self.lock:
            try:
                self.sock.sendall(data)
            except OSError as exc:  # the terminal just lost power: nothing is listening
                log.debug("harness send %s dropped: %s", msg.get("t"), exc)

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        """Whole messages received so far; a bad line is a DecodeError (and is consumed)."""
        return self.lines.feed(data)


def check_parts(without: Collection[str]) -> tuple[str, ...]:
    """The parts to leave out, validated against :data:`PARTS` (sorted, no duplicates)."""
    unknown = sorted(set(without) - set(PARTS))
    if unknown:
        raise ConfigError(f"--without: unknown part(s) {', '.join(unknown)}; expected some of "
                          f"{', '.join(PARTS)}")
    return tuple(sorted(set(without)))


class VirtualBench:
    """Owns the simulated devices; :meth:`run` is the daemon's life."""

    def __init__(self, workdir: Path, bench_file: Path, *, watch_pid: int | None = None,
                 topology: netns.Topology | None = None, python: str = sys.executable,
                 without: Collection[str] = (), bench_id: str = "") -> None:
        self.bench_id = check_bench_id(bench_id)
        self.pcsc_ns = pcsc_namespace(bench_id)
        self.paths = BenchPaths(workdir)
        self.without = check_parts(without)
        self.kernel_bridge = "network" in self.without  # no injector: a kernel path instead
        self.bench_file = bench_file
        self.watch_pid = watch_pid
        self.topo = topology or bench_topology(bench_id)
        self.python = python
        self.records: list[ProcRecord] = []
        self.sel = selectors.DefaultSelector()
        self.calls: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self.stopping = False
        self.firmware: subprocess.Popen[bytes] | None = None
        self.firmware_record: ProcRecord | None = None
        self.harness: Harness | None = None
        self.power_path: TerminalPowerPath | None = None  # built from the profile (build())
        self.lines_closed = {name: False for name in RELAY_WIRING}  # relay state per line
        self._closers: list[Callable[[], object]] = []

    # -- thread-safe entry points (SCPI server threads, signal handlers) ---------------------
    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run *fn* on the main loop thread."""
        self.calls.put(fn)
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass

    # -- bring-up --------------------------------------------------------------------------
    def build(self) -> dict[str, Any]:
        """Create every part; returns the bench YAML document. On failure undoes what it made."""
        from sim.pcsc import PcscDaemon
        from sim.probe import SimProbe
        from sim.psu import SimPowerSupply
        from sim.relay import SimRelayUnit
        from sim.scpi import ScpiTcpServer

        profile = load_profile(TERMINAL_PROFILE)  # a bad profile stops here, before anything runs
        self.power_path = TerminalPowerPath(brownout_volts=BROWNOUT_VOLTS,
                                            restart_volts=profile.restart_volts,
                                            power_on_reset_s=profile.power_on_reset_s)
        self.paths.workdir.mkdir(parents=True, exist_ok=True)
        self.paths.terminal_state.mkdir(exist_ok=True)
        netns.create(self.topo, kernel_bridge=self.kernel_bridge)
        self._closers.append(lambda: netns.destroy(self.topo))

        # Acquirer host in its namespace.
        host_addr = f"{self.topo.host_ip}:{HOST_PORT}"
        _, host_rec, _ = spawn_until_ready(
            "host", ["ip", "netns", "exec", self.topo.acq_ns, self.python, "-m", "sim.host",
                     "--listen", host_addr, "--db", str(self.paths.ledger),
                     "--terminals", str(REPO / "fixtures/host/terminals.yaml"),
                     "--cards-dir", str(CARDS_DIR), "--rules", str(HOST_RULES),
                     "--control", str(self.paths.host_control)],
            log_file=self.paths.log("host"), marker=b"READY", bound=READY_BOUND, cwd=REPO)
        self._record(host_rec)
        self._closers.append(lambda: kill(host_rec, grace=2.0))

        # The QR payment platform next to the host, on the acquirer's address.
        qr_addr = f"{self.topo.host_ip}:{QR_PORT}"
        _, qr_rec, _ = spawn_until_ready(
            "qr", ["ip", "netns", "exec", self.topo.acq_ns, self.python, "-m", "sim.qr",
                   "--listen", qr_addr, "--ledger", str(self.paths.qr_ledger),
                   "--terminals", str(QR_TERMINALS), "--rules", str(QR_RULES),
                   "--control", str(self.paths.qr_control)],
            log_file=self.paths.log("qr"), marker=b"READY", bound=READY_BOUND, cwd=REPO)
        self._record(qr_rec)
        self._closers.append(lambda: kill(qr_rec, grace=2.0))

        # Cards: a private pcscd (own mount and network namespace) with two vpcd readers; one
        # process hosts the fixed card on the first and the card emulator on the second.
        self.pcscd = PcscDaemon(self.paths.workdir / "pcscd", netns_name=self.pcsc_ns)
        self.pcscd.start()
        self._closers.append(self.pcscd.stop)
        self._record(ProcRecord("pcscd", self.pcscd.pid, _start_time(self.pcscd.pid), ["pcscd"]))
        fixed, emulated = card_bank_names(CARDS_DIR)
        argv = ["ip", "netns", "exec", self.pcsc_ns, self.python, "-m", "sim.card"]
        for slot, card in enumerate(fixed):
            argv += ["--vpcd", f"127.0.0.1:{self.pcscd.port_base + slot}",
                     "--profile", str(CARDS_DIR / f"{card}.yaml")]
        emulator_reader = self.pcscd.reader_names[len(fixed)]
        argv += ["--emulator", f"127.0.0.1:{self.pcscd.port_base + len(fixed)}",
                 "--profiles-dir", str(CARDS_DIR), "--initial", EMULATOR_INITIAL,
                 "--control", str(self.paths.card_control)]
        _, cards_rec, _ = spawn_until_ready("cards", argv, log_file=self.paths.log("cards"),
                                            marker=b"ready", bound=READY_BOUND, cwd=REPO)
        self._record(cards_rec)
        self._closers.append(lambda: kill(cards_rec, grace=2.0))
        readers = dict(zip(fixed, self.pcscd.reader_names, strict=False))
        card_emulator = {"control": str(self.paths.card_control), "reader": emulator_reader,
                         "profiles": {name: name for name in emulated}}

        # ECR pty and probe-link pty: the rig opens the slave paths.
        self.ecr_master, ecr_path = self._pty("ecr")
        self.concert_master, concert_path = self._pty("concert")  # the cash-register port
        self.probe_master, probe_path = self._pty("probe")
        self.probe = SimProbe()
        self.sel.register(self.probe_master, selectors.EVENT_READ, self._on_probe_bytes)
        self.sel.register(self.ecr_master, selectors.EVENT_READ, self._on_ecr_while_off)
        self.sel.register(self.concert_master, selectors.EVENT_READ,
                          self._on_concert_while_off)

        # Power supply and relay unit: SCPI over TCP on loopback.
        self.psu = SimPowerSupply()
        self.relay = SimRelayUnit()
        self.psu_server = ScpiTcpServer(self.psu, name="psu",
                                        after=self._psu_after)
        self.relay_server = ScpiTcpServer(self.relay, name="relay",
                                          after=self._relay_after)
        for server in (self.psu_server, self.relay_server):
            server.start()
            self._closers.append(server.stop)

        self.sel.register(self._wake_r, selectors.EVENT_READ, self._on_wake)
        if self.watch_pid is not None:
            self._watch_fd = os.pidfd_open(self.watch_pid)
            self.sel.register(self._watch_fd, selectors.EVENT_READ, self._on_watched_exit)

        return bench_document(
            profile=profile, ecr_path=ecr_path, probe_path=probe_path, concert_path=concert_path,
            pcsc_socket=self.pcscd.client_socket, readers=readers, card_emulator=card_emulator,
            psu_port=self.psu_server.port, relay_port=self.relay_server.port, topo=self.topo,
            host_addr=host_addr, ledger=self.paths.ledger, without=self.without,
            name=f"virtual-{self.bench_id}" if self.bench_id else "virtual",
            host_control=self.paths.host_control,
            qr=qr_section(qr_addr, self.paths.qr_ledger, self.paths.qr_control))

    def _pty(self, name: str) -> tuple[int, str]:
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no line discipline before the rig opens it
        os.set_blocking(master, False)
        path = os.ttyname(slave)
        link = self.paths.workdir / name
        link.unlink(missing_ok=True)
        link.symlink_to(path)
        def close_pty() -> None:
            os.close(master)
            os.close(slave)

        self._closers.append(close_pty)
        return master, path

    def _record(self, record: ProcRecord) -> None:
        self.records.append(record)
        self._save_state()

    def _save_state(self) -> None:
        StateFile(self.paths.state).write({
            "supervisor": {"pid": os.getpid(), "started": _start_time(os.getpid())},
            "processes": records_to_json([r for r in self.records if r.alive()]),
            "topology": asdict(self.topo), "bench_id": self.bench_id,
            "pcsc_ns": self.pcsc_ns,
            "without": list(self.without),
            "kernel_bridge": self.kernel_bridge,
            "bench_file": str(self.bench_file),
        })

    # -- the terminal's power ----------------------------------------------------------------
    def _set_load(self, state: str | None) -> None:
        with self.psu_server.lock:
            try:
                self.psu.load_state = state
            except SimError as exc:
                log.error("terminal reported a load the supply does not model: %s", exc)

    def _psu_after(self, psu: Any) -> None:
        """In the SCPI server thread, under its lock: sample the rail now, act on the main loop.
        Sampling here keeps every transition, so an OUTP OFF;OUTP ON pair always power-cycles
        the terminal however fast it comes."""
        volts = float(psu.rail_volts)
        self.call_soon(lambda: self._on_rail(volts))

    def _on_psu_changed(self) -> None:
        with self.psu_server.lock:
            volts = float(self.psu.rail_volts)
        self._on_rail(volts)

    def _power(self) -> TerminalPowerPath:
        if self.power_path is None:
            raise SimError("VirtualBench: the terminal's power path needs build() first")
        return self.power_path

    def _on_rail(self, volts: float) -> None:
        self._do_power(self._power().rail(volts, time.monotonic()))

    def _do_power(self, actions: list[PowerAction]) -> None:
        """Carry out what the power path decided."""
        for action in actions:
            if isinstance(action, Boot):
                self._power_up(action)
            elif isinstance(action, Kill):
                self._power_down(action.why)
                self._on_psu_changed()  # nothing draws current now: the rail may come back
            elif isinstance(action, Rail) and self.harness is not None:
                self.harness.send({"t": "rail", "volts": round(action.volts, 3)})

    def _power_up(self, boot: Boot) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sel.unregister(self.ecr_master)  # the firmware reads the ECR line from now on
        self.sel.unregister(self.concert_master)  # and its Concert port
        argv = ["ip", "netns", "exec", self.topo.dut_ns, self.python, "-m", "sim.terminal",
                "--ecr-fd", str(self.ecr_master), "--harness-fd", str(theirs.fileno()),
                "--concert-fd", str(self.concert_master),
                "--state-dir", str(self.paths.terminal_state),
                "--profile", str(REPO / "fixtures/terminal/profile.yaml"),
                "--host", f"{self.topo.host_ip}:{HOST_PORT}", "--netif", self.topo.term_if,
                "--qr-platform", f"{self.topo.host_ip}:{QR_PORT}",
                "--qr-terminals", str(QR_TERMINALS)]
        os.set_blocking(self.ecr_master, True)
        os.set_blocking(self.concert_master, True)
        try:
            self.firmware, self.firmware_record = spawn(
                "terminal", argv, log_file=self.paths.log("terminal"),
                pass_fds=(self.ecr_master, self.concert_master, theirs.fileno()), cwd=REPO)
        finally:
            os.set_blocking(self.ecr_master, False)
            os.set_blocking(self.concert_master, False)
            theirs.close()
        self._record(self.firmware_record)
        self.harness = Harness(ours)
        ours.setblocking(False)
        self.sel.register(ours, selectors.EVENT_READ, self._on_harness)
        self._set_load("booting")
        if boot.attempt > 1:
            log.warning("terminal power-up attempt %d at %.2f V (pid %d): the last one died "
                        "booting", boot.attempt, boot.volts, self.firmware.pid)
        else:
            log.info("terminal powered up at %.2f V (pid %d)", boot.volts, self.firmware.pid)
        self.harness.send({"t": "rail", "volts": round(boot.volts, 3)})
        for name, closed in self.lines_closed.items():
            self.harness.send(LINE_MESSAGES[name](closed))
        for msg in self.probe.harness_connected(time.monotonic()).harness_out:
            self.harness.send(msg)

    def _power_down(self, why: str) -> None:
        if self.firmware is None:
            return
        assert self.firmware_record is not None
        kill(self.firmware_record)  # SIGKILL at once: no goodbye, as when the battery is pulled
        self.firmware.wait(timeout=5)
        log.info("terminal lost power (%s%s)", why, self._current_limit_note())
        self.firmware = None
        self.firmware_record = None
        if self.harness is not None:
            self.sel.unregister(self.harness.sock)
            self.harness.sock.close()
            self.harness = None
        self.sel.register(self.ecr_master, selectors.EVENT_READ, self._on_ecr_while_off)
        self.sel.register(self.concert_master, selectors.EVENT_READ,
                          self._on_concert_while_off)
        self._set_load(None)
        self._write_probe(self.probe.harness_disconnected(time.monotonic()).link_out)
        self._save_state()

    def _current_limit_note(self) -> str:
        """Why the rail sagged, when the supply is in current limit (said in the log)."""
        with self.psu_server.lock:
            if not self.psu.constant_current:
                return ""
            return (f"; the supply is in current limit: {self.psu.amps_limit:.2f} A, the "
                    f"terminal draws {self.psu.load_demand_amps:.2f} A "
                    f"{self.psu.load_state}")

    def _on_firmware_exit(self) -> None:
        """The process ended: first what it said before it went (a ``power_off`` notice),
        then, if it just died, a crash."""
        while self.harness is not None:
            try:
                data = self.harness.sock.recv(65536)
            except BlockingIOError:
                break
            except OSError:
                data = b""
            if not data:
                break
            self._harness_messages(data)
        self._firmware_gone()

    def _firmware_gone(self) -> None:
        if self.firmware is None:
            return
        code = self.firmware.poll()
        log.error("terminal firmware ended by itself (exit code %s; see terminal.log)", code)
        self._do_power(self._power().exited(code))

    # -- the printer's lines ------------------------------------------------------------------
    def _relay_after(self, relay: Any) -> None:
        """Sampled in the SCPI server thread (see _psu_after): each wired channel closed makes
        its line read the fault (:data:`RELAY_WIRING`): no paper, paper low, no printer."""
        closed = {name: bool(relay.closed(ch)) for name, ch in RELAY_WIRING.items()}
        self.call_soon(lambda: self._on_lines(closed))

    def _on_lines(self, closed: Mapping[str, bool]) -> None:
        for name, now_closed in closed.items():
            if now_closed != self.lines_closed[name]:
                self.lines_closed[name] = now_closed
                if self.harness is not None:
                    self.harness.send(LINE_MESSAGES[name](now_closed))

    # -- the probe and the harness -----------------------------------------------------------
    def _on_probe_bytes(self) -> None:
        try:
            data = os.read(self.probe_master, 4096)
        except BlockingIOError:
            return
        except OSError:  # EIO: nobody has the slave open right now
            return
        out = self.probe.feed_link(data, time.monotonic())
        self._write_probe(out.link_out)
        if self.harness is not None:
            for msg in out.harness_out:
                self.harness.send(msg)

    def _write_probe(self, data: bytes) -> None:
        if data:
            try:
                os.write(self.probe_master, data)
            except OSError as exc:
                log.warning("probe link write of %d bytes failed: %s", len(data), exc)

    def _on_ecr_while_off(self) -> None:
        self._drop_while_off(self.ecr_master)

    def _on_concert_while_off(self) -> None:
        self._drop_while_off(self.concert_master)

    @staticmethod
    def _drop_while_off(master: int) -> None:
        try:  # an unpowered terminal's UART loses what the rig sends
            os.read(master, 4096)
        except (BlockingIOError, OSError):
            pass

    def _on_harness(self) -> None:
        assert self.harness is not None
        try:
            data = self.harness.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._firmware_gone()
            return
        self._harness_messages(data)

    def _harness_messages(self, data: bytes) -> None:
        assert self.harness is not None
        try:
            messages = self.harness.feed(data)
        except DecodeError as exc:  # a firmware bug: say so, keep the bench up
            log.error("%s", exc)
            return
        for msg in messages:
            if self.harness is None:  # a message before this one cut the power
                log.info("terminal: harness message %r after its power went: dropped",
                         msg.get("t"))
                continue
            if msg["t"] == "load":
                state = str(msg.get("state", "idle"))
                self._set_load(state)
                if state != "booting":
                    self._power().booted()
                self._on_psu_changed()  # in constant current the rail follows the load
            elif msg["t"] == "power_off":
                log.warning("terminal switched itself off (%s at %s V)", msg.get("reason"),
                            msg.get("volts"))
                self._do_power(self._power().powered_off(str(msg.get("reason"))))
            else:
                out = self.probe.feed_harness(msg, time.monotonic())
                self._write_probe(out.link_out)
                for reply in out.harness_out:
                    self.harness.send(reply)

    def _on_wake(self) -> None:
        try:
            os.read(self._wake_r, 4096)
        except BlockingIOError:
            pass
        while True:
            try:
                fn = self.calls.get_nowait()
            except queue.Empty:
                return
            fn()

    def _on_watched_exit(self) -> None:
        log.warning("process %s that owns this bench has exited: tearing the bench down",
                    self.watch_pid)
        self.stopping = True

    # -- life --------------------------------------------------------------------------------
    def run(self, ready: Callable[[str], None]) -> None:
        """Build, announce readiness, serve until SIGTERM/SIGINT or the watched process ends."""
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, lambda *_: self.call_soon(self._stop))
        try:
            write_bench_file(self.bench_file, self.build())
            ready(f"ok {self.bench_file}")
            self._loop()
        except BaseException as exc:
            ready(f"error {exc}")
            raise
        finally:
            self.teardown()

    def _stop(self) -> None:
        self.stopping = True

    def _registered(self, key: selectors.SelectorKey) -> bool:
        """Whether *key* is still what the selector holds for its file."""
        try:
            current = self.sel.get_key(key.fileobj)
        except (KeyError, ValueError):  # unregistered, or its file closed meanwhile
            return False
        return current.data is key.data

    def _loop(self) -> None:
        while not self.stopping:
            deadlines = [t for t in (self.probe.next_deadline(), self._power().next_deadline())
                         if t is not None]
            timeout = 0.5 if not deadlines else min(0.5, max(0.0, min(deadlines)
                                                             - time.monotonic()))
            for key, _ in self.sel.select(timeout=timeout):
                # A handler earlier in this batch may have unregistered this one's file (the
                # terminal lost power: its harness socket closed): a stale event is dropped.
                if self._registered(key):
                    key.data()
            self._do_power(self._power().tick(time.monotonic()))  # the power-on reset ended
            if self.firmware is not None and self.firmware.poll() is not None:
                self._on_firmware_exit()
            out = self.probe.poll(time.monotonic())
            self._write_probe(out.link_out)
            if self.harness is not None:
                for msg in out.harness_out:
                    self.harness.send(msg)

    def teardown(self) -> list[str]:
        done = []
        if self.firmware_record is not None:
            kill(self.firmware_record)
            done.append("terminal firmware")
        for closer in reversed(self._closers):
            try:
                closer()
            except Exception as exc:  # keep tearing down; report every failure
                log.error("teardown step %s failed: %s", getattr(closer, "__name__", closer), exc)
        self._closers.clear()
        StateFile(self.paths.state).remove()
        self.bench_file.unlink(missing_ok=True)
        return done


def bench_document(*, profile: Profile, ecr_path: str, probe_path: str,
                   concert_path: str | None = None,
                   pcsc_socket: str | None, readers: dict[str, str], psu_port: int,
                   relay_port: int, topo: netns.Topology, host_addr: str, ledger: Path,
                   without: Collection[str] = (), host_control: Path | None = None,
                   qr: Mapping[str, str] | None = None, name: str = "virtual",
                   card_emulator: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The bench YAML document of a running virtual bench (what the rig loads).

    Terminal IDs, operators and thresholds come from the terminal *profile*, card PINs from the
    card profiles; parts in *without* (:data:`PARTS`) are left out of the document.
    *host_control*: the host simulator's control socket, published as ``host.control`` (a
    capability of its own: it stays when the ledger is left out).  *qr*: the QR platform's
    section (:func:`qr_section`), published as ``qr`` (its ledger left out with the host's).
    *card_emulator*: ``control`` (socket path), ``reader`` and ``profiles`` (bank card name →
    profile the emulator loads for it), published as ``cards.emulator`` and one bank entry
    ``{emulator: <profile>, pin}`` per card."""
    parts = check_parts(without)
    doc: dict[str, Any] = {
        "bench": {"name": name, "kind": "virtual"},
        "terminal": {
            "port": ecr_path, "baudrate": 115200,
            **({"concert_port": concert_path, "concert_baudrate": 9600} if concert_path
               else {}),
            **_terminal_facts(profile),
            "boot_timeout": 15.0,
            "operators": _bench_operators(profile),
        },
        "cards": {
            "probe": probe_path,
            "pcsc_socket": pcsc_socket,
            "bank": {name: _bank_entry(name, reader) for name, reader in readers.items()},
        },
        "power": {
            "resource": f"TCPIP0::127.0.0.1::{psu_port}::SOCKET",
            "dialect": "keysight-e36xx", "channel": 1,
            "limits": {"max_volts": 8.40, "max_amps": 2.00}, "current_limit": 2.00,
        },
        "switch": {
            "resource": f"TCPIP0::127.0.0.1::{relay_port}::SOCKET",
            "channels": dict(RELAY_WIRING),
        },
    }
    if card_emulator is not None:
        for name, card_profile in card_emulator["profiles"].items():
            doc["cards"]["bank"][name] = _bank_entry(name, card_profile, emulated=True)
        doc["cards"]["emulator"] = {"control": card_emulator["control"],
                                    "reader": card_emulator["reader"]}
    if "network" not in parts:
        doc["network"] = {"terminal_if": topo.rig_term_if, "host_if": topo.rig_host_if,
                          "netns": topo.rig_ns}
    doc["host"] = {"address": host_addr}
    if "ledger" not in parts:
        doc["host"]["ledger"] = str(ledger)
    if host_control is not None:
        doc["host"]["control"] = str(host_control)
    if qr is not None:
        doc["qr"] = {k: v for k, v in qr.items() if not (k == "ledger" and "ledger" in parts)}
    return doc


def qr_section(address: str, ledger: Path, control: Path) -> dict[str, str]:
    """The bench file's ``qr`` section: the QR platform's address, ledger and control socket
    (the ledger is left out with ``--without ledger``, as the host's is)."""
    return {"address": address, "ledger": str(ledger), "control": str(control)}


def write_bench_file(path: Path, doc: dict[str, Any]) -> None:
    """Write the bench YAML document (with its header comment)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# Written by `python -m sim up`: the virtual bench, valid while it runs.\n"
                    + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))


def _terminal_facts(profile: Profile) -> dict[str, Any]:
    """The bench file's terminal IDs and supply thresholds, from the terminal profile."""
    return {"terminal_id": profile.terminal_id, "merchant_id": profile.merchant_id,
            "nominal_volts": profile.nominal_volts, "low_battery_volts": profile.low_battery_volts}


def _bench_operators(profile: Profile) -> dict[str, dict[str, str]]:
    """Bench-file ``terminal.operators`` (role → {id, password}): for each of
    :data:`BENCH_ROLES`, the profile's first operator with that role."""
    creds = profile.role_credentials()
    missing = [role for role in BENCH_ROLES if role not in creds]
    if missing:
        raise ConfigError(f"{TERMINAL_PROFILE}: operators: no operator with role "
                          f"{', '.join(missing)}; the bench file needs one of each of "
                          f"{', '.join(BENCH_ROLES)}")
    return {role: {"id": creds[role][0], "password": creds[role][1]} for role in BENCH_ROLES}


def card_bank_names(cards_dir: Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(cards on a fixed reader, cards through the emulator): :data:`FIXED_CARDS`, then every
    other profile of *cards_dir* by file name."""
    names = sorted(p.stem for p in cards_dir.glob("*.yaml"))
    missing = [name for name in FIXED_CARDS if name not in names]
    if missing:
        raise ConfigError(f"{cards_dir}: no profile for the fixed card(s) {', '.join(missing)}")
    if EMULATOR_INITIAL not in names:
        raise ConfigError(f"{cards_dir}: no profile {EMULATOR_INITIAL!r} for the emulator to "
                          f"start with")
    return FIXED_CARDS, tuple(n for n in names if n not in FIXED_CARDS)


def _bank_entry(name: str, place: str, *, emulated: bool = False) -> dict[str, str]:
    """A bank entry: the card's reader, or (*emulated*) the profile the emulator loads."""
    entry = {"emulator": place} if emulated else {"reader": place}
    pin = _card_pin(name)
    if pin is not None:
        entry["pin"] = pin
    return entry


def _card_pin(name: str) -> str | None:
    """The test card's PIN, as a lab's card sheet gives it (from the card profile)."""
    path = CARDS_DIR / f"{name}.yaml"
    return load_card_profile(path).pin if path.exists() else None


def _start_time(pid: int) -> int | None:
    from sim.procs import start_time

    return start_time(pid)


# -- used by `python -m sim up/down` ------------------------------------------------------------
def cleanup_leftovers(workdir: Path, topology: netns.Topology | None = None, *,
                      bench_id: str = "") -> list[str]:
    """End what an earlier bench left behind (by recorded PID) and remove its namespaces (the
    topology recorded in state.json, kernel bridge included when the bench ran without its
    network injector; without a record, bench *bench_id*'s own names — never another
    bench's)."""
    said: list[str] = []
    state = StateFile(workdir / STATE_NAME).read()
    recorded: netns.Topology | None = None
    pcsc_ns = pcsc_namespace(bench_id)
    if state:
        recorded = _recorded_topology(state.get("topology"))
        if isinstance(state.get("pcsc_ns"), str) and state["pcsc_ns"]:
            pcsc_ns = str(state["pcsc_ns"])
        if state.get("kernel_bridge"):
            log.info("the earlier bench ran without %s (a kernel bridge in the rig namespace)",
                     state.get("without"))
        sup = state.get("supervisor") or {}
        if isinstance(sup, dict) and sup.get("pid"):
            rec = ProcRecord("supervisor", int(sup["pid"]), sup.get("started"), [])
            if kill(rec, grace=15.0):
                said.append(f"stopped bench supervisor pid {rec.pid}")
        for rec in records_from_json(state.get("processes")):
            if kill(rec):
                said.append(f"killed leftover {rec.name} pid {rec.pid}")
        StateFile(workdir / STATE_NAME).remove()
    topo = topology or recorded or bench_topology(bench_id)
    for item in netns.destroy(topo):
        said.append(item)
    said.extend(_destroy_pcsc_namespace(pcsc_ns))
    return said


def _recorded_topology(raw: object) -> netns.Topology | None:
    """The topology a state.json recorded, or None when it is absent or unreadable."""
    if not isinstance(raw, dict):
        return None
    try:
        return netns.Topology(**raw)
    except (TypeError, SimError) as exc:
        log.warning("state.json: recorded topology unusable (%s); using the default", exc)
        return None


def _destroy_pcsc_namespace(name: str = PCSC_NS) -> list[str]:
    """The card namespace is pcscd's own (sim.pcsc); remove it if a killed run left it."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10)
    if name not in listed.stdout.split():
        return []
    pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True,
                          timeout=10).stdout.split()
    said = []
    for pid in pids:
        rec = ProcRecord(f"process in netns {name}", int(pid), _start_time(int(pid)), [])
        if kill(rec):
            said.append(f"killed pid {pid} in netns {name}")
    subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
    return [*said, f"deleted netns {name}"]


def start_detached(workdir: Path, bench_file: Path, *, watch_pid: int | None,
                   bound: float = READY_BOUND, python: str = sys.executable,
                   without: Collection[str] = (), bench_id: str = "") -> str:
    """Start the supervisor in its own session and wait (bounded) until it says it is ready."""
    parts = check_parts(without)
    workdir.mkdir(parents=True, exist_ok=True)
    r, w = os.pipe()
    argv = [python, "-m", "sim", "serve", "--workdir", str(workdir), "--bench-file",
            str(bench_file), "--ready-fd", str(w)]
    if watch_pid is not None:
        argv += ["--watch-pid", str(watch_pid)]
    if parts:
        argv += ["--without", ",".join(parts)]
    if check_bench_id(bench_id):
        argv += ["--bench-id", bench_id]
    with open(workdir / "supervisor.log", "ab") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                pass_fds=(w,), cwd=REPO, start_new_session=True)
    os.close(w)
    try:
        sel = selectors.DefaultSelector()
        sel.register(r, selectors.EVENT_READ)
        deadline = time.monotonic() + bound
        buf = b""
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(timeout=left):
                proc.kill()
                raise NoResponse(f"virtual bench not ready within {bound:.0f} s "
                                 f"(see {workdir}/supervisor.log)")
            chunk = os.read(r, 4096)
            if not chunk:
                break
            buf += chunk
    finally:
        os.close(r)
    line = buf.decode(errors="replace").strip()
    if not line.startswith("ok"):
        proc.wait(timeout=bound)
        tail = _tail(workdir / "supervisor.log")
        raise SimError(f"virtual bench failed to start: {line or 'supervisor exited'}\n{tail}")
    return line[3:]


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
