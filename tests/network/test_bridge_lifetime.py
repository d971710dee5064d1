"""The bridge process dies with the rig: it asks for PR_SET_PDEATHSIG itself once started
(``--parent-pid``), since a ``preexec_fn`` in the rig (a threaded process: grpc's threads with a
labgrid place) once aborted a scenario and hung an interrupted one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BOUND_S = 30.0


def test_a_bridge_whose_rig_is_not_its_parent_exits_at_once_and_says_why(tmp_path: Path) -> None:
    ready_r, ready_w = os.pipe()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "rigs.network.bridge", "--terminal-if", "none0",
             "--host-if", "none1", "--control", str(tmp_path / "ctl"), "--ready-fd",
             str(ready_w), "--parent-pid", "1"],
            pass_fds=(ready_w,), capture_output=True, text=True, timeout=BOUND_S,
            stdin=subprocess.DEVNULL)
        os.close(ready_w)
        said = os.read(ready_r, 4096).decode()
    finally:
        os.close(ready_r)
    assert done.returncode == 2
    assert said == "error the rig (pid 1) exited before the bridge started\n"
    assert not (tmp_path / "ctl").exists()

