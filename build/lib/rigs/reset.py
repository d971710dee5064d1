"""Put a bench back to nominal after the rig process died with faults active.

``python -m rigs reset --bench FILE`` (``posrig reset`` once the command exists) opens every
instrument the bench file names, says what it finds away from nominal (the injector's active
rules, the supply off or not at its nominal voltage, relays closed, a card left in the slot, the
terminal not idle or showing faults), restores the bench with the same loop the plugin runs
between scenarios, and checks it again.  It is the tool for the morning after a crashed nightly
run: on a lab bench the instruments keep their state when the rig is killed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rigs.bench import Bench
from rigs.capabilities import Capability
from rigs.config import BenchConfig
from rigs.errors import RigError

VOLTS_TOLERANCE = 0.02


@dataclass
class ResetReport:
    bench: str
    found: list[str] = field(default_factory=list)
    """What was away from nominal before the reset, one line per finding."""
    problems: list[str] = field(default_factory=list)
    """What could not be restored (empty: the bench is nominal)."""

    @property
    def ok(self) -> bool:
        return not self.problems

    def text(self) -> str:
        lines = [f"bench {self.bench}:"]
        if self.found:
            lines.append("  found away from nominal:")
            lines += [f"    - {line}" for line in self.found]
        else:
            lines.append("  found nothing away from nominal")
        if self.problems:
            lines.append("  NOT restored:")
            lines += [f"    - {line}" for line in self.problems]
        else:
            lines.append("  restored: every instrument is nominal")
        return "\n".join(lines)


def _survey(bench: Bench) -> list[str]:
    """What each instrument shows away from nominal, in words (reads only)."""
    found: list[str] = []
    cfg = bench.config
    if bench.has(Capability.NETWORK):
        for rule in bench.network.active():
            found.append(f"network injector: rule #{rule.id} {rule.spec.describe()} active")
    if bench.has(Capability.POWER):
        power = bench.power
        if not power.output:
            found.append("power supply: output off")
        else:
            volts = power.measure_voltage()
            if abs(volts - power.nominal_volts) > VOLTS_TOLERANCE * power.nominal_volts:
                found.append(f"power supply: rail at {volts:.2f} V, nominal "
                             f"{power.nominal_volts:.2f} V")
    if cfg.switch is not None:
        for name, channel in sorted(cfg.switch.channels.items()):
            if bench.switch.is_closed(channel):
                found.append(f"relay unit: channel {channel} ({name}) closed")
    if bench.has(Capability.CARDS) and not bench.cards.is_nominal():
        found.append("card bank: a card is in the terminal's slot")
    try:
        status = bench.terminal.status()
    except RigError as exc:
        found.append(f"terminal: does not answer ({exc})")
    else:
        if status.state != "IDLE":
            found.append(f"terminal: state {status.state}")
        if status.reversal_pending:
            found.append("terminal: a reversal is pending (it sends it at its next host "
                         "contact)")
    return found


def reset_bench(config: BenchConfig, workdir: Path) -> ResetReport:
    """Open the bench *config* describes, survey it, restore it, check it."""
    report = ResetReport(config.bench.name)
    bench = Bench(config, workdir=workdir)
    try:
        bench.open()
    except RigError as exc:
        report.problems.append(f"cannot open the bench: {exc}")
        return report
    try:
        try:
            report.found = _survey(bench)
        except RigError as exc:
            report.found.append(f"survey stopped: {exc}")
        try:
            bench.restore_nominal()
        except RigError as exc:
            report.problems.append(str(exc))
    finally:
        bench.close()
    return report
