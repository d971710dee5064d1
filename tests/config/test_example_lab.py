"""fixtures/benches/example-lab.yaml is what a lab copies: it must load and agree with itself."""

from __future__ import annotations

from pathlib import Path

from rigs.config import load_bench
from rigs.power import DIALECTS, ScpiPowerSupply
from rigs.scpi import FakeScpiTransport

LAB = Path(__file__).resolve().parents[2] / "fixtures/benches/example-lab.yaml"


def test_example_lab_loads() -> None:
    config = load_bench(LAB)
    assert config.bench.kind == "lab"
    assert config.cards is not None and config.power is not None and config.network is not None
    assert set(config.terminal.operators) == {"operator", "admin"}
    assert config.host is not None and config.host.ledger is None  # a lab reads no ledger


def test_example_lab_psu_dialect_row_accepts_its_channel_and_limits() -> None:
    config = load_bench(LAB)
    power = config.power
    assert power is not None
    row = DIALECTS[power.dialect]
    assert "E36300" in row.family and 1 <= power.channel <= row.channels
    psu = ScpiPowerSupply("psu", FakeScpiTransport([]), max_volts=power.limits.max_volts,
                          max_amps=power.limits.max_amps,
                          nominal_volts=config.terminal.nominal_volts,
                          dialect=power.dialect, channel=power.channel)
    assert psu.scpi_fields["ch"] == power.channel
    assert power.current_limit is not None and power.current_limit <= power.limits.max_amps
    assert config.terminal.low_battery_volts < config.terminal.nominal_volts \
        <= power.limits.max_volts


def test_every_key_of_the_example_is_commented() -> None:
    """A lab copies this file: every key line carries a comment or sits under one."""
    lines = LAB.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or ":" not in stripped:
            continue
        commented = "#" in line or (i > 0 and lines[i - 1].strip().startswith("#"))
        section = not line.startswith(" ") and stripped.endswith(":")
        assert commented or section, f"line {i + 1} has no comment: {line!r}"
