"""The virtual bench end to end: up, every part answers through the rig's drivers, down leaves
nothing; a bench whose supervisor was killed is cleaned up by the next `sim up`, which says so."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rigs.bench import Bench
from rigs.config import load_bench
from rigs.errors import NoResponse

REPO = Path(__file__).resolve().parents[2]
BOUND = 120

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the virtual bench needs root")


def sim(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sim", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=BOUND, stdin=subprocess.DEVNULL)


def namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def bench_processes(workdir: Path) -> list[int]:
    """PIDs of live processes whose command line mentions *workdir* (ours only)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if str(workdir) in cmd and state != "Z":
            found.append(int(entry.name))
    return found


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    wd = tmp_path / "bench"
    try:
        yield wd
    finally:
        sim("down", "--workdir", str(wd))


def test_up_drive_every_part_down_leaves_nothing(workdir: Path, tmp_path: Path) -> None:
    bench_file = tmp_path / "bench.yaml"
    up = sim("up", "--workdir", str(workdir), "--bench-file", str(bench_file))
    assert up.returncode == 0, up.stderr
    assert {"dut", "acq", "rig", "pcsc"} <= namespaces()

    config = load_bench(bench_file)
    assert config.cards is not None and {"good", "mute"} <= set(config.cards.bank)
    assert config.cards.emulator is not None              # every other profile: the emulator
    assert config.cards.bank["good"].reader == "Virtual PCD 00 00"
    assert config.cards.bank["mute"].emulator == "mute"
    # libpcsclite takes its socket once per process and the card tests in this process use
    # their own pcscd: the card bank is driven by the feature suite, which runs in its own process.
    bench = Bench(config.model_copy(update={"cards": None}), workdir=tmp_path / "rig")
    bench.open()
    try:
        bench.restore_nominal()  # powers the terminal, which boots, and checks every part
        status = bench.terminal.status()
        assert status.state == "IDLE" and status.paper_present and not status.battery_low
        assert bench.power is not None and abs(bench.power.measure_voltage() - 7.40) < 0.01
        assert bench.power.measure_current() > 0  # the terminal draws current when on
        assert bench.network is not None and bench.network.is_nominal()

        # A traffic-triggered pull through the whole path; its trip is in the evidence.
        bench.begin_scenario("armed-pull")
        assert bench.terminal.login("01", "0000").ok
        bench.network.pull_cable_on_next_request()
        outcome = bench.terminal.sign_in(timeout=20.0)
        assert outcome.result == "COMMS_ERROR", outcome
        evidence = {e.name: e for e in bench.end_scenario()}
        trip = str(evidence["network faults tripped by traffic"].content)
        assert "pull_on_request() drop terminal_to_host TCP 198.18.0.10:" in trip
        assert "> 198.18.0.20:8583 [AP]" in trip and trip.count("\n") == 0
        assert trip.endswith("became cable_pull(direction=both)")
        assert "MTI 0800" in str(evidence["ISO 8583 messages sent (decoded, masked)"].content)
        # dropped by the armed pull: sent by the terminal, never delivered to the host
        assert "MTI 0800" not in str(
            evidence["ISO 8583 messages delivered by the injector (decoded, masked)"].content)
        faults = str(evidence["faults injected (armed, fired, cleared)"].content)
        assert "(no faults injected)" in faults  # driven directly, not through bench.inject
        timeline = str(evidence["timeline (every instrument, one clock)"].content)
        for seen in (r"terminal\s+request\s+SI", r"network\s+fault\s+fired",
                     r"network\s+iso8583\s+0800", r"power\s+sample\s+supply"):
            assert re.search(seen, timeline), f"{seen!r} not in the timeline:\n{timeline}"
        bench.restore_nominal()
        assert bench.network.is_nominal() and bench.terminal.sign_in(timeout=20.0).ok

        # Faults left in place (a failed or interrupted scenario): restore clears them all and
        # waits for the terminal to see each one gone before judging it.
        assert bench.switch is not None
        mark = len(bench.terminal.events)
        bench.switch.close_channel(bench.paper_channel())
        bench.power.sag_to(bench.config.terminal.low_battery_volts)
        bench.terminal.wait_for_event("PAPER_OUT", timeout=5.0, since=mark)
        bench.terminal.wait_for_event("LOW_BATTERY", timeout=5.0, since=mark)
        bench.restore_nominal()
        status = bench.terminal.status()
        assert status.paper_present and not status.battery_low and not status.card_present
        assert sorted(e.code for e in bench.terminal.events[mark:]
                      if e.code in ("PAPER_OK", "BATTERY_OK")) == ["BATTERY_OK", "PAPER_OK"]

        bench.power.output_off()
        # The supply really powers the terminal: it stops answering (bounded at 3 s, which a
        # loaded CI machine still meets; it takes milliseconds here).
        deadline = time.monotonic() + 3.0
        with pytest.raises(NoResponse):
            while time.monotonic() < deadline:
                bench.terminal.status(timeout=0.3)
        assert bench.power.measure_current() == 0
    finally:
        bench.close()

    down = sim("down", "--workdir", str(workdir))
    assert down.returncode == 0, down.stderr
    assert not ({"dut", "acq", "rig", "pcsc"} & namespaces())
    assert bench_processes(workdir) == []
    assert not bench_file.exists()


def test_next_up_cleans_what_a_killed_bench_left_and_says_so(workdir: Path,
                                                             tmp_path: Path) -> None:
    bench_file = tmp_path / "bench.yaml"
    assert sim("up", "--workdir", str(workdir), "--bench-file", str(bench_file)).returncode == 0
    state = json.loads((workdir / "state.json").read_text())
    os.kill(state["supervisor"]["pid"], signal.SIGKILL)  # no teardown at all

    again = sim("up", "--workdir", str(workdir), "--bench-file", str(bench_file))
    assert again.returncode == 0, again.stderr
    assert "cleaned up after an earlier run" in again.stdout
    assert "deleted netns dut" in again.stdout
    assert load_bench(bench_file).bench.kind == "virtual"
