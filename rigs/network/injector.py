"""Driver of the rig's in-line network injector (the bridge process of :mod:`rigs.network.bridge`).

The driver starts ``python -m rigs.network.bridge`` (inside ``ip netns exec NS`` when the bench
YAML gives a namespace), waits — bounded — for the bridge to report ready on an inherited pipe,
then talks to it over its unix control socket (JSON lines, :mod:`protocols.jsonlines`).  The
bridge dies with the driver's process: it asks for ``PR_SET_PDEATHSIG`` itself once started
(``--parent-pid``; ``ip netns exec`` execs, so the rig stays its parent).  No ``preexec_fn``:
Python code between fork and exec in the rig, which has threads, can deadlock or abort.

Faults are rules built from :class:`~protocols.faults.FaultSpec` (:meth:`apply` returns the
rule's id; several may be active at once).  Everything the driver returns is a typed record of
:mod:`rigs.network.records`; a malformed answer from the bridge is a
:class:`~protocols.errors.TransportError` naming the field.

Caveat: the parent-death signal fires when the *thread* that called :meth:`open` ends, so open
the injector from a thread that lives as long as the bench (the main thread, normally).
"""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from protocols.controlserver import UNIX_PATH_MAX
from protocols.faults import Direction, FaultKind, FaultSpec, Target
from protocols.masking import scrub
from rigs.driver import Driver, SessionState
from rigs.errors import ConfigError, DeviceStateError, NoResponse, TransportError
from rigs.events import Source
from rigs.jsonctl import ControlChannel
from rigs.network.bridge import BridgeState
from rigs.network.records import (
    FRAME_DIRECTIONS,
    ActiveRule,
    CapturePaths,
    InjectorStats,
    RuleRecord,
    Trip,
    active_from_json,
    carrier_from_json,
    covers,
    list_from_json,
)

log = logging.getLogger(__name__)
R = TypeVar("R")

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ANSWER_MAX = 16 * 1024 * 1024
"""Longest control answer accepted (the whole ledger: 200 rules x 50 trips fits)."""


class ScapyBridgeInjector(Driver):
    """The scapy in-line bridge between the terminal-side and the host-side interface."""

    start_timeout_s = 15.0
    """Bound of open(): process start, scapy import, interfaces, control socket."""
    reply_timeout_s = 2.0
    """Bound of one control request."""
    settle_timeout_s = 1.0
    """Bound of the wait for a bridge whose control socket broke to finish exiting."""
    stop_timeout_s = 5.0
    """Bound of close() waiting for the process after SIGTERM (then SIGKILL)."""

    def __init__(self, name: str, terminal_if: str, host_if: str, netns: str | None,
                 workdir: Path, python: str = sys.executable) -> None:
        super().__init__(name)
        for key, value in (("terminal_if", terminal_if), ("host_if", host_if)):
            if not value or len(value) > 15 or "/" in value or " " in value:
                raise ConfigError(f"{self!r}: {key}={value!r} is not an interface name; expected "
                                  "1..15 characters such as eth1 or r-term")
        if terminal_if == host_if:
            raise ConfigError(f"{self!r}: terminal_if and host_if are both {terminal_if!r}; "
                              "the bridge needs two interfaces")
        self.terminal_if = terminal_if
        self.host_if = host_if
        self.netns = netns
        self.workdir = Path(workdir)
        self.python = python
        self.control_path = self.workdir.resolve() / f"{name}.ctl"
        self.log_path = self.workdir / f"{name}-bridge.log"
        if len(str(self.control_path)) > UNIX_PATH_MAX:
            raise ConfigError(f"{self!r}: control socket path {self.control_path} has "
                              f"{len(str(self.control_path))} characters; a unix socket path "
                              f"has at most {UNIX_PATH_MAX}: use a shorter workdir")
        self._proc: subprocess.Popen[bytes] | None = None
        self._control = ControlChannel(repr(self), "the bridge", "injector control socket",
                                       reply_timeout_s=self.reply_timeout_s,
                                       max_line=ANSWER_MAX, closed_text=self._closed_text)

    # --- lifecycle ------------------------------------------------------------------------------

    def command(self) -> list[str]:
        """The argv that starts the bridge (without the ready fd)."""
        argv = [self.python, "-m", "rigs.network.bridge", "--terminal-if", self.terminal_if,
                "--host-if", self.host_if, "--control", str(self.control_path)]
        if self.netns:
            argv = ["ip", "netns", "exec", self.netns, *argv]
        return argv

    def open(self) -> None:
        if self.state is SessionState.OPEN:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        ready_r, ready_w = os.pipe()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
        argv = self.command() + ["--ready-fd", str(ready_w), "--parent-pid", str(os.getpid())]
        try:
            with open(self.log_path, "ab") as log_file:
                self._proc = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log_file,
                    pass_fds=(ready_w,), env=env)
        except OSError as exc:
            os.close(ready_r)
            raise TransportError(f"{self!r}: open() cannot start `{' '.join(argv)}`: "
                                 f"{exc}") from exc
        finally:
            os.close(ready_w)
        log.info("%r: started bridge pid %d: %s", self, self._proc.pid, " ".join(argv))
        try:
            line = self._await_ready(ready_r)
        finally:
            os.close(ready_r)
        if not line.startswith("ready"):
            self._reap(self.stop_timeout_s)
            why = self._exit_text()
            self._proc = None
            raise TransportError(f"{self!r}: open(): the bridge could not start: "
                                 f"{line or '(no report)'}; {why}")
        try:
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._control.attach(conn)
            conn.settimeout(self.reply_timeout_s)
            conn.connect(str(self.control_path))
            self.state = SessionState.OPEN
            self._request("open", {"op": "ping"})
        except (OSError, NoResponse, TransportError, DeviceStateError) as exc:
            self._terminate()
            raise TransportError(f"{self!r}: open(): the bridge reported ready but its control "
                                 f"socket {self.control_path} does not answer: {exc}") from exc
        log.info("%r: bridging %s ⇄ %s%s", self, self.terminal_if, self.host_if,
                 f" in netns {self.netns}" if self.netns else "")

    def _await_ready(self, fd: int) -> str:
        deadline = time.monotonic() + self.start_timeout_s
        data = b""
        while b"\n" not in data:
            left = deadline - time.monotonic()
            readable, _, _ = select.select([fd], [], [], max(0.0, left))
            if not readable:
                why = self._exit_text()
                self._terminate()
                raise NoResponse(f"{self!r}: open(): the bridge did not report ready within "
                                 f"{self.start_timeout_s:.1f} s; {why}")
            chunk = os.read(fd, 4096)
            if not chunk:
                break  # the process closed the pipe (exited) without a report
            data += chunk
        return data.decode("utf-8", "replace").strip()

    def close(self) -> None:
        self._control.detach()
        self._terminate()
        self.state = SessionState.CLOSED

    def _terminate(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("%r: bridge pid %d ignored SIGTERM for %.1f s; SIGKILL", self,
                            proc.pid, self.stop_timeout_s)
                proc.kill()
                self._reap(self.stop_timeout_s)
        log.info("%r: bridge pid %d exited with code %s", self, proc.pid, proc.returncode)
        self._proc = None

    def _reap(self, bound_s: float) -> None:
        if self._proc is None:
            return
        try:
            self._proc.wait(bound_s)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            try:
                self._proc.wait(bound_s)
            except subprocess.TimeoutExpired as exc:
                raise NoResponse(f"{self!r}: bridge pid {self._proc.pid} still alive "
                                 f"{bound_s:.1f} s after SIGKILL") from exc

    def _settle(self, proc: subprocess.Popen[bytes]) -> None:
        """The control socket broke: give a dying process a moment (bounded) to be reaped, so
        the error can say how it ended."""
        try:
            proc.wait(self.settle_timeout_s)
        except subprocess.TimeoutExpired:
            pass

    def _exit_text(self) -> str:
        proc = self._proc
        status = "not started" if proc is None else (
            "still running" if proc.poll() is None else f"exited with code {proc.returncode}")
        return f"bridge process {status}; log {self.log_path}: {self.log_tail()!r}"

    def log_tail(self, limit: int = 600) -> str:
        """The end of the bridge's stderr log (scrubbed), for error messages."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - limit))
                return scrub(f.read().decode("utf-8", "replace").strip())
        except OSError:
            return "(no log)"

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    # --- control --------------------------------------------------------------------------------

    def _request(self, operation: str, request: dict[str, Any]) -> dict[str, Any]:
        self.require_open(operation)
        proc = self._proc
        if proc is None or not self._control.connected or proc.poll() is not None:
            raise TransportError(f"{self!r}: {operation}() needs the bridge process; "
                                 f"{self._exit_text()}")
        self._control.reply_timeout_s = self.reply_timeout_s
        try:
            answer = self._control.exchange(operation, request)
        except OSError as exc:
            if isinstance(exc, NoResponse):
                raise
            self._settle(proc)
            raise TransportError(f"{self!r}: {operation}(): control socket {self.control_path} "
                                 f"failed: {exc}; {self._exit_text()}") from exc
        if answer.get("state") == BridgeState.FAILED.value:
            raise DeviceStateError(
                f"{self!r}: {operation}(): the bridge is FAILED (a bug in the injector, not an "
                f"injected fault): {answer.get('failure')}")
        if answer.get("ok") is not True:
            raise DeviceStateError(f"{self!r}: {operation}(): the bridge refused "
                                   f"{request['op']!r}: {answer.get('error')}")
        return answer

    def _closed_text(self) -> str:
        if self._proc is not None:
            self._settle(self._proc)
        return self._exit_text()

    def _parsed(self, op: str, parse: Callable[[], R]) -> R:
        return self._control.parsed(op, parse)

    def identity(self) -> str:
        return (f"bridge process {self.ping()} between {self.terminal_if} and {self.host_if}"
                + (f" in namespace {self.netns}" if self.netns else ""))

    def ping(self) -> int:
        """Round trip to the bridge; returns its pid."""
        answer = self._request("ping", {"op": "ping"})
        pid = answer.get("pid")
        if isinstance(pid, bool) or not isinstance(pid, int):
            raise TransportError(f"{self!r}: malformed answer to 'ping' from the bridge: pid "
                                 f"must be an integer, got {pid!r}")
        return pid

    # --- faults ---------------------------------------------------------------------------------

    def apply(self, spec: FaultSpec) -> int:
        """Arm *spec* as a new rule (after the active ones); returns its id."""
        return self._arm("apply", spec)

    def _arm(self, operation: str, spec: FaultSpec) -> int:
        if not isinstance(spec, FaultSpec):
            raise ConfigError(f"{self!r}: apply() takes a FaultSpec, got {type(spec).__name__}")
        if spec.target is not Target.NETWORK:
            raise ConfigError(f"{self!r}: apply({spec.describe()}): a {spec.target.value} fault; "
                              f"the network injector carries out network faults only")
        answer = self._request(operation, {"op": "add_rule", "rule": spec.to_json()})
        record = self._parsed("add_rule", lambda: RuleRecord.from_json(answer.get("rule"), "rule"))
        if answer.get("id") != record.id:
            raise TransportError(f"{self!r}: malformed answer to 'add_rule' from the bridge: id "
                                 f"must be {record.id} (the rule's id), got {answer.get('id')!r}")
        log.info("%r: rule #%d %s armed", self, record.id, spec.describe())
        self.event_sink.publish(Source.NETWORK, "fault", "armed", spec.describe(),
                                t=record.armed, data={"rule": record.id})
        return record.id

    def clear(self, rule_id: int) -> None:
        """Clear the active rule *rule_id* (an unknown or already cleared id is refused)."""
        if isinstance(rule_id, bool) or not isinstance(rule_id, int):
            raise ConfigError(f"{self!r}: clear() takes a rule id (int), got {rule_id!r}")
        answer = self._request("clear", {"op": "clear_rule", "id": rule_id})
        self._cleared([self._parsed("clear_rule",
                                    lambda: RuleRecord.from_json(answer.get("rule"), "rule"))])

    def clear_all(self) -> None:
        """Clear every active rule: everything is forwarded untouched again and the terminal's
        link is up (if it cannot be set up, the bridge refuses and every rule stays active)."""
        answer = self._request("clear_all", {"op": "clear_rules"})
        self._cleared(self._parsed("clear_rules", lambda: list_from_json(
            answer, "cleared", RuleRecord.from_json)))

    def _cleared(self, records: list[RuleRecord]) -> None:
        for record in records:
            log.info("%r: rule #%d %s cleared", self, record.id, record.current.describe())
            self.event_sink.publish(Source.NETWORK, "fault", "cleared", record.spec.describe(),
                                    t=record.cleared, data={"rule": record.id})

    def pull_cable(self, direction: Direction = Direction.BOTH) -> int:
        """Drop every frame travelling *direction* (both: as if the terminal's cable were
        pulled).  Returns the rule id."""
        return self._arm("pull_cable",
                         FaultSpec.of(FaultKind.CABLE_PULL, direction=Direction(direction).value))

    def pull_cable_on_next_request(self) -> int:
        """Arm a traffic-triggered pull: frames pass (ARP, the TCP handshake) until the terminal
        sends data towards the host; that segment is dropped and the rule becomes
        CABLE_PULL(both).  :meth:`last_trip` tells when and on which segment.  Returns the id."""
        return self._arm("pull_cable_on_next_request", FaultSpec.of(FaultKind.PULL_ON_REQUEST))

    def restore(self) -> None:
        """Forward everything again, the terminal's link up (:meth:`clear_all`)."""
        self.clear_all()

    def fault_ledger(self) -> list[RuleRecord]:
        """Every rule the bridge keeps (the latest 200), oldest first, active or cleared."""
        answer = self._request("fault_ledger", {"op": "rules"})
        return self._parsed("rules", lambda: list_from_json(answer, "rules", RuleRecord.from_json))

    def active(self) -> list[RuleRecord]:
        """The active rules, in the order they apply to each frame."""
        return [r for r in self.fault_ledger() if r.active]

    def _active_rules(self, operation: str) -> tuple[ActiveRule, ...]:
        answer = self._request(operation, {"op": "ping"})
        return self._parsed("ping", lambda: active_from_json(answer))

    def has_carrier(self) -> bool:
        """Whether the terminal's link is up: false while a CARRIER_LOSS rule is active (the
        bridge set its port facing the terminal down), or while setting it up again failed."""
        answer = self._request("has_carrier", {"op": "ping"})
        return self._parsed("ping", lambda: carrier_from_json(answer))

    def is_cable_pulled(self, direction: Direction = Direction.BOTH) -> bool:
        """Whether active CABLE_PULL rules drop every frame travelling *direction* (both: both
        ways, by one rule or two)."""
        wanted = [d for d in FRAME_DIRECTIONS if covers(Direction(direction), d)]
        reach = [Direction(r.spec.params["direction"])
                 for r in self._active_rules("is_cable_pulled")
                 if r.spec.kind is FaultKind.CABLE_PULL]
        return all(any(covers(r, d) for r in reach) for d in wanted)

    def trips(self, after: int = 0) -> list[Trip]:
        """The trips numbered above *after* (``n`` counts from 1 over the bridge's life; the
        ledger keeps the latest 50 of each of its 200 rules)."""
        if isinstance(after, bool) or not isinstance(after, int) or after < 0:
            raise ConfigError(f"{self!r}: trips(after=...) takes a trip number >= 0, got "
                              f"{after!r}")
        answer = self._request("trips", {"op": "trips", "after": after})
        return self._parsed("trips", lambda: list_from_json(answer, "trips", Trip.from_json))

    def last_trip(self) -> Trip | None:
        """The newest trip of a rule that is still active, or None (an armed fault that has not
        tripped yet, or every rule cleared)."""
        fired = [r.last_trip for r in self.active() if r.last_trip is not None]
        return max(fired, key=lambda t: t.n) if fired else None

    def publish_trips(self, after: int) -> int:
        """Publish every trip numbered above *after* as a ``fault``/``fired`` network event at
        the trip's wall time; returns the highest trip number seen (*after* if none)."""
        highest = after
        for trip in self.trips(after):
            highest = max(highest, trip.n)
            if trip.spec.kind is FaultKind.WATCH_MESSAGE:
                continue  # a note, not a fault (the bench published it live as "seen")
            became = f"; became {trip.became.describe()}" if trip.became is not None else ""
            self.event_sink.publish(
                Source.NETWORK, "fault", "fired",
                f"{trip.spec.describe()}: {trip.action.value} {trip.direction.value} "
                f"{trip.frame}{became}",
                t=trip.wall, data={"rule": trip.rule_id, "n": trip.n})
        return highest

    # --- capture and counters -------------------------------------------------------------------

    def start_capture(self, path: Path) -> None:
        """Write every frame seen (both directions, whatever became of it) to pcap *path*, and
        every frame delivered (sent out of a port) to ``PATH.delivered.pcap`` next to it."""
        target = Path(path).resolve()
        target.parent.mkdir(parents=True, exist_ok=True)
        self._request("start_capture", {"op": "start_capture", "path": str(target)})

    def _capture(self, operation: str, op: str) -> CapturePaths:
        answer = self._request(operation, {"op": op})
        return self._parsed(op, lambda: CapturePaths.from_json(answer.get("capture"), "capture"))

    def flush_capture(self) -> CapturePaths:
        """Flush both capture files (they stay open): decodable up to now, mid-scenario."""
        return self._capture("flush_capture", "flush_capture")

    def stop_capture(self) -> CapturePaths:
        """Stop the capture; both files are flushed and closed when this returns."""
        return self._capture("stop_capture", "stop_capture")

    def stats(self) -> InjectorStats:
        """Counters per direction (frames/bytes forwarded and dropped, …), deferred frames,
        the running capture and the number of trips so far."""
        answer = self._request("stats", {"op": "stats"})
        return self._parsed("stats", lambda: InjectorStats.from_json(answer, "stats"))

    # --- nominal --------------------------------------------------------------------------------

    def is_nominal(self) -> bool:
        """The bridge process is alive, answers, is not FAILED, has no active rule and the
        terminal's link is up."""
        if self.state is not SessionState.OPEN:
            return False
        try:
            answer = self._request("is_nominal", {"op": "ping"})
            rules = self._parsed("ping", lambda: active_from_json(answer))
            carrier = self._parsed("ping", lambda: carrier_from_json(answer))
        except (TransportError, NoResponse, DeviceStateError) as exc:
            log.warning("%r: not nominal: %s", self, exc)
            return False
        if not carrier and not rules:
            log.warning("%r: not nominal: the terminal's link %s is down with no rule active "
                        "(setting it up again failed; see %s)", self, self.terminal_if,
                        self.log_path)
        return carrier and not rules

    def restore_nominal(self) -> None:
        """Clear every rule and set the terminal's link up (raises if the bridge is dead or
        FAILED, or the link cannot be set up: not a state to hide)."""
        self.clear_all()
