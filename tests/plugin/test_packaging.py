"""The wheel ``pip install .`` installs: the ``posrig`` command, the pytest plugin's entry point,
the step library and the data the rig reads at run time (the procedure catalogue, the
Wireshark dissector).  Built without its dependencies, from this checkout."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_carries_the_command_the_plugin_the_steps_and_the_data(tmp_path: Path) -> None:
    source = tmp_path / "src"  # a copy: building writes build/ and *.egg-info next to the code
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".tox", ".venv*", "node_modules", "reports", "build", "*.egg-info",
        "__pycache__", ".mypy_cache", ".ruff_cache"))
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                           "--no-build-isolation", "-q", "-w", str(tmp_path), str(source)],
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = tmp_path.glob("posrig-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        entry_points = next(zf.read(n).decode() for n in names
                            if n.endswith(".dist-info/entry_points.txt"))
    assert "[console_scripts]\nposrig = rigs.cli:main" in entry_points
    assert "[pytest11]\nrigs.plugin = rigs.plugin" in entry_points
    for needed in ("rigs/plugin.py", "rigs/procedures.md", "rigs/wireshark/posrig_iso8583.lua",
                   "steps/__init__.py", "steps/purchase_steps.py", "protocols/ecr.py",
                   "sim/bench.py"):
        assert needed in names, f"{needed} is not in the wheel"
