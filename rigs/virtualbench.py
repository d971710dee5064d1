"""The virtual bench as the rig's tools start it: ``python -m sim`` in a subprocess (rigs/ never
imports sim/), bounded, with the rig's process named as the one whose death takes the bench
down (``--watch-pid``), so a killed run never leaves namespaces, pcscd or simulators behind."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rigs.errors import RigError

SIM_BOUND = 180.0
"""Bound on one ``python -m sim up|down`` (namespaces, pcscd, every simulator booted)."""


def run_sim(args: list[str], bound: float = SIM_BOUND) -> str:
    """``python -m sim *args*``; its standard output, or a RigError with what it said."""
    cmd = [sys.executable, "-m", "sim", *args]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=bound,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise RigError(f"`{' '.join(cmd[1:])}` did not finish within {bound:.0f} s") from None
    if done.returncode != 0:
        raise RigError(f"`{' '.join(cmd[1:])}` failed ({done.returncode}):\n"
                       f"{done.stdout}{done.stderr}".rstrip())
    return done.stdout


@contextmanager
def virtual_bench(workdir: Path, *, bench_id: str = "") -> Iterator[Path]:
    """Bring a virtual bench up in *workdir* for the block and yield its bench file; down after
    it, whatever happens.  *bench_id* names one of several benches side by side."""
    ident = ["--bench-id", bench_id] if bench_id else []
    bench_file = workdir.with_name(f"{workdir.name}.yaml")
    try:
        run_sim(["up", "--workdir", str(workdir), "--bench-file", str(bench_file),
                 "--watch-pid", str(os.getpid()), *ident])
        yield bench_file
    finally:
        run_sim(["down", "--workdir", str(workdir), *ident])
