"""``posrig doctor`` on a bench file pointing at absent hardware: one clear line per problem,
exit 1, never a traceback; a bad bench file exits 2.  (The virtual bench's all-OK verdict is
checked in tests/bench/test_doctor_bench.py.)"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _doctor(tmp_path: Path, bench: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "bench.yaml"
    path.write_text(bench, encoding="utf-8")
    return subprocess.run([sys.executable, "-m", "rigs", "doctor", "--bench", str(path),
                           "--workdir", str(tmp_path / "work")], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL,
                          env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})


def test_absent_hardware_is_one_clear_line_per_instrument(tmp_path: Path) -> None:
    port = _closed_port()
    done = _doctor(tmp_path, f"""\
bench: {{name: absent-lab, kind: lab}}
terminal: {{port: "socket://127.0.0.1:{port}"}}
power: {{resource: "TCPIP0::127.0.0.1::{port}::SOCKET", limits: {{max_volts: 8.4, max_amps: 2.0}}}}
switch: {{resource: "TCPIP0::127.0.0.1::{port}::SOCKET", channels: {{paper_sensor: 1}}}}
""")
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "Traceback" not in out and "rig bug" not in out
    for part in ("terminal", "power", "switch"):
        assert any(part in line and "UNREACHABLE" in line for line in out.splitlines()), \
            f"no UNREACHABLE line for {part}:\n{out}"
    assert "0 of 3 instruments OK" in out
    assert "Connection refused" in out


def test_a_bad_bench_file_exits_2_naming_the_key(tmp_path: Path) -> None:
    done = _doctor(tmp_path, "bench: {name: x, kind: lab}\nterminal: {port: COM3}\n")
    assert done.returncode == 2
    assert "terminal.port: 'COM3' is not a serial port URL" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr
