"""The bench's child processes get their death signal without Python code between fork and exec
(setpriv asks for it, then execs the command under the same PID), and die with the process
that started them."""

from __future__ import annotations

import os
import select
import subprocess
import sys
from pathlib import Path

import pytest

from protocols.errors import SimError
from sim.procs import ProcRecord, kill, spawn, spawn_until_ready, start_time

BOUND_S = 10.0

_STARTER = """
import sys
from pathlib import Path
from sim.procs import spawn
proc, rec = spawn("sleeper", ["sleep", "300"], log_file=Path(sys.argv[1]))
print(rec.pid, rec.started, flush=True)
sys.stdin.read()  # ends when the test closes our stdin
"""


def test_a_child_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    starter = subprocess.Popen([sys.executable, "-c", _STARTER, str(tmp_path / "sleeper.log")],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                               cwd=Path(__file__).resolve().parents[2])
    assert starter.stdin is not None and starter.stdout is not None
    child: ProcRecord | None = None
    try:
        ready, _, _ = select.select([starter.stdout], [], [], BOUND_S)
        assert ready, f"the starter named no child within {BOUND_S:.0f} s"
        pid_text, started_text = starter.stdout.readline().split()
        child = ProcRecord("sleeper", int(pid_text), int(started_text), ["sleep", "300"])
        pidfd = os.pidfd_open(child.pid)
        try:
            assert child.alive(), "the child was not running before its parent exited"
            starter.stdin.close()  # the starter exits
            assert starter.wait(timeout=BOUND_S) == 0
            readable, _, _ = select.select([pidfd], [], [], BOUND_S)
        finally:
            os.close(pidfd)
        assert readable, f"the child (pid {child.pid}) outlived its parent by {BOUND_S:.0f} s"
        assert not child.alive()
    finally:
        if starter.poll() is None:
            starter.kill()
            starter.wait(timeout=BOUND_S)
        if child is not None:
            kill(child)  # only if it is still ours and running (a failed run leaves it)


def test_the_recorded_pid_is_the_commands_own(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "import signal; print('READY now', flush=True); signal.pause()"]
    proc, rec, rest = spawn_until_ready("echoer", argv, log_file=tmp_path / "echoer.log",
                                        marker=b"READY", bound=BOUND_S)
    try:
        assert rest == "now"
        assert rec.pid == proc.pid and rec.started == start_time(proc.pid)
        cmdline = Path(f"/proc/{rec.pid}/cmdline").read_bytes().split(b"\0")[:-1]
        assert [c.decode() for c in cmdline] == argv, "the PID is not the command's own"
        assert rec.argv == argv
    finally:
        assert kill(rec)
        proc.wait(timeout=BOUND_S)


@pytest.mark.parametrize("starter", ["spawn", "spawn_until_ready"])
def test_a_program_that_is_not_there_is_named(tmp_path: Path, starter: str) -> None:
    with pytest.raises(SimError, match=r"cannot start ghost \(no-such-program-here\): no such "
                                       r"program on PATH"):
        if starter == "spawn":
            spawn("ghost", ["no-such-program-here"], log_file=tmp_path / "ghost.log")
        else:
            spawn_until_ready("ghost", ["no-such-program-here"], log_file=tmp_path / "g.log",
                              marker=b"READY", bound=BOUND_S)
