"""Driver of the rig's in-line network injector (the bridge process of :mod:`rigs.network.bridge`).

The driver starts ``python -m rigs.network.bridge`` (inside ``ip netns exec NS`` when the bench
YAML gives a namespace), waits — bounded — for the bridge to report ready on an inherited pipe,
then talks to it over its unix control socket (JSON lines).  The bridge dies with the driver's
process (``PR_SET_PDEATHSIG``, which survives the exec of ``ip netns exec``).

Caveat: the parent-death signal fires when the *thread* that called :meth:`open` ends, so open
the injector from a thread that lives as long as the bench (the main thread, normally).
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Protocol

from protocols.masking import scrub
from rigs.driver import Driver, SessionState
from rigs.errors import ConfigError, DeviceStateError, NoResponse, TransportError
from rigs.network.bridge import BridgeState, Mode

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
UNIX_PATH_MAX = 107
PROJECT_ROOT = Path(__file__).resolve().parents[2]


class NetworkInjector(Protocol):
    """What the bench façade and the steps use of a network fault injector."""

    name: str

    def open(self) -> None: ...

    def close(self) -> None: ...

    def pull_cable(self) -> None: ...

    def pull_cable_on_next_request(self) -> None: ...

    def last_trip(self) -> dict[str, Any] | None: ...

    def trips(self, after: int = 0) -> list[dict[str, Any]]: ...

    def restore(self) -> None: ...

    @property
    def mode(self) -> Mode: ...

    def start_capture(self, path: Path) -> None: ...

    def stop_capture(self) -> Path: ...

    def stats(self) -> dict[str, Any]: ...

    def is_nominal(self) -> bool: ...

    def restore_nominal(self) -> None: ...


def _die_with_parent() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


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
        self._conn: socket.socket | None = None
        self._rbuf = bytearray()
        self._capture_path: Path | None = None

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
        argv = self.command() + ["--ready-fd", str(ready_w)]
        try:
            with open(self.log_path, "ab") as log_file:
                self._proc = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log_file,
                    pass_fds=(ready_w,), preexec_fn=_die_with_parent, env=env)
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
            self._conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._conn.settimeout(self.reply_timeout_s)
            self._conn.connect(str(self.control_path))
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
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._terminate()
        self._capture_path = None
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
        proc, conn = self._proc, self._conn
        if proc is None or conn is None or proc.poll() is not None:
            raise TransportError(f"{self!r}: {operation}() needs the bridge process; "
                                 f"{self._exit_text()}")
        try:
            conn.sendall(json.dumps(request).encode() + b"\n")
            answer = self._read_line(operation, request["op"])
        except OSError as exc:
            self._settle(proc)
            raise TransportError(f"{self!r}: {operation}(): control socket {self.control_path} "
                                 f"failed: {exc}; {self._exit_text()}") from exc
        if answer.get("state") == BridgeState.FAILED.value:
            raise DeviceStateError(
                f"{self!r}: {operation}(): the bridge is FAILED (a bug in the injector, not an "
                f"injected fault): {answer.get('failure')}")
        if not answer.get("ok"):
            raise DeviceStateError(f"{self!r}: {operation}(): the bridge refused "
                                   f"{request['op']!r}: {answer.get('error')}")
        return answer

    def _read_line(self, operation: str, op: str) -> dict[str, Any]:
        conn = self._conn
        assert conn is not None
        deadline = time.monotonic() + self.reply_timeout_s
        while b"\n" not in self._rbuf:
            left = deadline - time.monotonic()
            readable, _, _ = select.select([conn], [], [], max(0.0, left))
            if not readable:
                raise NoResponse(f"{self!r}: {operation}(): no answer to {op!r} from the bridge "
                                 f"within {self.reply_timeout_s:.1f} s")
            chunk = conn.recv(65536)
            if not chunk:
                if self._proc is not None:
                    self._settle(self._proc)
                raise TransportError(f"{self!r}: {operation}(): the bridge closed its control "
                                     f"socket; {self._exit_text()}")
            self._rbuf += chunk
        line, _, rest = bytes(self._rbuf).partition(b"\n")
        self._rbuf[:] = rest
        try:
            answer = json.loads(line)
        except ValueError as exc:
            raise TransportError(f"{self!r}: {operation}(): the bridge answered {op!r} with "
                                 f"something that is not JSON: {line[:200]!r}") from exc
        if not isinstance(answer, dict):
            raise TransportError(f"{self!r}: {operation}(): answer to {op!r} is not an object")
        return answer

    def _set_mode(self, operation: str, mode: Mode) -> None:
        answer = self._request(operation, {"op": "set_mode", "mode": mode.value})
        if answer.get("mode") != mode.value:
            raise DeviceStateError(f"{self!r}: {operation}(): asked for mode {mode.value}, the "
                                   f"bridge reports {answer.get('mode')}")
        log.info("%r: mode %s", self, mode.value)

    # --- the surface used by the bench ------------------------------------------------------------

    def ping(self) -> int:
        """Round trip to the bridge; returns its pid."""
        return int(self._request("ping", {"op": "ping"})["pid"])

    def pull_cable(self) -> None:
        """Drop every frame in both directions (as if the terminal's cable were pulled)."""
        self._set_mode("pull_cable", Mode.CABLE_PULLED)

    def pull_cable_on_next_request(self) -> None:
        """Arm a traffic-triggered pull: frames pass (ARP, the TCP handshake) until the terminal
        sends data towards the host; that segment is dropped and the cable is pulled from then
        on.  :meth:`last_trip` tells when and on which segment it happened."""
        self._set_mode("pull_cable_on_next_request", Mode.PULL_ON_REQUEST)

    def last_trip(self) -> dict[str, Any] | None:
        """The traffic-triggered switch since the mode was last set (``from``, ``to``,
        ``direction``, ``frame`` description, ``tcp`` header fields, ``wall`` time), or None
        if the armed fault has not tripped."""
        trip = self._request("last_trip", {"op": "stats"}).get("trip")
        return trip if isinstance(trip, dict) else None

    def trips(self, after: int = 0) -> list[dict[str, Any]]:
        """The traffic-triggered switches numbered above *after* (the bridge keeps the latest
        100; each has ``n``, counted from 1 since the bridge started)."""
        trips = self._request("trips", {"op": "stats"}).get("trips") or []
        return [t for t in trips if isinstance(t, dict) and int(t.get("n", 0)) > after]

    def restore(self) -> None:
        """Forward everything again."""
        self._set_mode("restore", Mode.PASS)

    @property
    def mode(self) -> Mode:
        return Mode(self._request("mode", {"op": "stats"})["mode"])

    def start_capture(self, path: Path) -> None:
        """Write every frame seen (both directions, forwarded or dropped) to pcap *path*."""
        target = Path(path).resolve()
        target.parent.mkdir(parents=True, exist_ok=True)
        self._request("start_capture", {"op": "start_capture", "path": str(target)})
        self._capture_path = target

    def stop_capture(self) -> Path:
        """Stop the capture; the file is flushed and closed when this returns."""
        answer = self._request("stop_capture", {"op": "stop_capture"})
        self._capture_path = None
        return Path(answer["path"])

    def stats(self) -> dict[str, Any]:
        """Counters per direction (frames/bytes forwarded and dropped, …), mode, state, capture."""
        answer = self._request("stats", {"op": "stats"})
        answer.pop("ok", None)
        return answer

    def is_nominal(self) -> bool:
        """The bridge process is alive, answers, is not FAILED and forwards everything."""
        if self.state is not SessionState.OPEN:
            return False
        try:
            return self.mode is Mode.PASS
        except (TransportError, NoResponse, DeviceStateError) as exc:
            log.warning("%r: not nominal: %s", self, exc)
            return False

    def restore_nominal(self) -> None:
        """Back to PASS (raises if the bridge is dead or FAILED: that is not a state to hide)."""
        self.restore()
