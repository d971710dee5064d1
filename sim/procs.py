"""Child processes of the virtual bench: started with a death signal, recorded, ended by PID.

Every process the bench starts is written to the state file with its PID, its start time (from
/proc, so a recycled PID is never mistaken for ours) and its command line.  ``sim up`` and
``sim down`` use that record to end what an earlier, killed run left behind, and say so.
"""

from __future__ import annotations

import json
import logging
import os
import select
import selectors
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

from protocols.errors import NoResponse, SimError

log = logging.getLogger(__name__)

DEATH_SIGNAL = ("setpriv", "--pdeathsig", "KILL", "--")
"""The prefix that gives a child its death signal (``PR_SET_PDEATHSIG``): util-linux's setpriv
(Essential in Debian) asks for it and execs the command, so the PID is the command's and no
Python runs between fork and exec (a ``preexec_fn`` is unsafe in a process with threads)."""


def _command(name: str, argv: Sequence[str], die_with_parent: bool) -> list[str]:
    """*argv* as started, with the death-signal prefix; a program that is not there is named."""
    if not argv:
        raise SimError(f"cannot start {name}: empty command")
    for exe in (argv[0], DEATH_SIGNAL[0]) if die_with_parent else (argv[0],):
        if shutil.which(exe) is None:
            raise SimError(f"cannot start {name} ({exe}): no such program on PATH")
    return [*DEATH_SIGNAL, *argv] if die_with_parent else list(argv)


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


@dataclass
class ProcRecord:
    name: str
    pid: int
    started: int | None
    argv: list[str]

    def alive(self) -> bool:
        """True while *this* process (same PID and same start time) exists and is not a zombie."""
        st = start_time(self.pid)
        if st is None or st != self.started:
            return False
        try:
            state = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return False
        return state != "Z"


def spawn(name: str, argv: Sequence[str], *, log_file: Path, pass_fds: Sequence[int] = (),
          cwd: Path | None = None, env: dict[str, str] | None = None,
          die_with_parent: bool = True) -> tuple[subprocess.Popen[bytes], ProcRecord]:
    """Start *argv*; its output goes to *log_file*.  Call from a thread that lives as long as the
    bench (the death signal fires when the *thread* that forked the child ends)."""
    out: IO[bytes] = open(log_file, "ab")
    try:
        proc = subprocess.Popen(_command(name, argv, die_with_parent), stdin=subprocess.DEVNULL,
                                stdout=out, stderr=out, pass_fds=tuple(pass_fds), cwd=cwd,
                                env=env)
    except OSError as exc:
        raise SimError(f"cannot start {name} ({argv[0]}): {exc.strerror}") from None
    finally:
        out.close()
    return proc, ProcRecord(name, proc.pid, start_time(proc.pid), list(argv))


def spawn_until_ready(name: str, argv: Sequence[str], *, log_file: Path, marker: bytes,
                      bound: float, cwd: Path | None = None
                      ) -> tuple[subprocess.Popen[bytes], ProcRecord, str]:
    """Start *argv* and wait (bounded) for a stdout line starting with *marker*; the rest of its
    stdout and all its stderr go to *log_file*.  Returns the line after the marker."""
    command = _command(name, argv, True)
    out = open(log_file, "ab")
    try:
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=out, cwd=cwd)
    except OSError as exc:
        out.close()
        raise SimError(f"cannot start {name} ({argv[0]}): {exc.strerror}") from None
    record = ProcRecord(name, proc.pid, start_time(proc.pid), list(argv))
    assert proc.stdout is not None
    stdout = proc.stdout
    deadline = time.monotonic() + bound
    line = b""
    sel = selectors.DefaultSelector()
    sel.register(stdout, selectors.EVENT_READ)
    try:
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(timeout=left):
                kill(record)
                raise NoResponse(f"{name} did not say {marker.decode()} within {bound:.0f} s "
                                 f"(see {log_file})")
            chunk = os.read(stdout.fileno(), 1)
            if not chunk:
                raise SimError(f"{name} exited with code {proc.wait(timeout=bound)} before "
                               f"saying {marker.decode()} (see {log_file})")
            line += chunk
    finally:
        sel.close()
    if not line.startswith(marker):
        kill(record)
        raise SimError(f"{name} said {line[:80]!r} instead of {marker.decode()} (see {log_file})")

    def drain() -> None:  # keep the pipe flowing into the log for the process's life
        with out:
            for chunk in iter(lambda: os.read(stdout.fileno(), 4096), b""):
                out.write(chunk)
                out.flush()

    threading.Thread(target=drain, name=f"{name}-stdout", daemon=True).start()
    return proc, record, line[len(marker):].decode(errors="replace").strip()


def kill(record: ProcRecord, *, grace: float = 0.0, bound: float = 5.0) -> bool:
    """End a recorded process by PID: SIGTERM and *grace* seconds, then SIGKILL.  Returns whether
    it was still ours and running.  Waits at most *bound* seconds for it to be gone."""
    if not record.alive():
        return False
    try:
        os.kill(record.pid, signal.SIGTERM if grace > 0 else signal.SIGKILL)
    except ProcessLookupError:
        return False
    if grace > 0 and not wait_gone(record, grace):
        try:
            os.kill(record.pid, signal.SIGKILL)
        except ProcessLookupError:
            return True
    if not wait_gone(record, bound):
        raise NoResponse(f"{record.name} (pid {record.pid}) still running {bound:.1f} s after SIGKILL")
    return True


def wait_gone(record: ProcRecord, bound: float) -> bool:
    """Wait (pidfd, bounded) until the process has exited; reaps it if it is our child."""
    try:
        fd = os.pidfd_open(record.pid)
    except ProcessLookupError:
        return True
    try:
        if record.alive():
            select.select([fd], [], [], bound)
        try:
            os.waitpid(record.pid, os.WNOHANG)
        except ChildProcessError:
            pass
    finally:
        os.close(fd)
    return not record.alive()  # an exited process not yet reaped is a zombie: not alive


class StateFile:
    """JSON record of what a running bench consists of (processes, namespaces, ptys)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, data: dict[str, object]) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, self.path)

    def read(self) -> dict[str, object] | None:
        try:
            return json.loads(self.path.read_text())  # type: ignore[no-any-return]
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable state file %s (%s)", self.path, exc)
            return None

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def records_to_json(records: Sequence[ProcRecord]) -> list[dict[str, object]]:
    return [asdict(r) for r in records]


def records_from_json(items: object) -> list[ProcRecord]:
    out = []
    for item in items if isinstance(items, list) else []:
        try:
            out.append(ProcRecord(str(item["name"]), int(item["pid"]),
                                  None if item["started"] is None else int(item["started"]),
                                  list(item["argv"])))
        except (KeyError, TypeError, ValueError):
            log.warning("ignoring malformed process record %r", item)
    return out
