"""``posrig doctor --bench FILE``: check a bench before a night's run, one verdict per line.

For each instrument the bench file names, in the order the bench opens them: can it be
reached (opened within its driver's bounds), who is it (``*IDN?`` of a SCPI instrument, the
ATR in each PC/SC reader, the terminal's model, firmware and serial number from STATUS, the
injector's process), is it nominal (the uniform ``is_nominal()``; the terminal's state and fault
codes), and the limits configured for it (the supply's).  Nothing is changed on the bench: a
doctor reads; ``posrig reset`` restores.

A problem is a line with its verdict and the reason, never a traceback; the exit code is 0 when
every line is OK, 1 otherwise, 2 when the bench file itself is wrong.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rigs.bench import Bench
from rigs.config import BenchConfig
from rigs.errors import NoResponse, RigError


class Verdict(enum.StrEnum):
    OK = "OK"
    NOT_NOMINAL = "NOT NOMINAL"
    UNREACHABLE = "UNREACHABLE"
    ERROR = "ERROR"


@dataclass(frozen=True)
class Finding:
    part: str
    driver: str
    verdict: Verdict
    identity: str = ""
    state: str = ""
    limits: str = ""
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.verdict is Verdict.OK


def _part_name(bench: Bench, instrument: Any) -> str:
    """The bench file's section an instrument comes from (its driver's name otherwise)."""
    for section in ("terminal", "cards", "power", "switch", "network"):
        if getattr(bench, f"_{section}", None) is instrument or (
                section == "terminal" and bench.terminal is instrument):
            return section
    name = type(instrument).__name__.lower()
    if "qr" in name:
        return "qr"
    if "ledger" in name or "control" in name:
        return "host"
    return str(getattr(instrument, "name", name))


def _identity(instrument: Any) -> str:
    identify: Callable[[], str] | None = getattr(instrument, "identity", None)
    if callable(identify):
        return identify()
    idn = getattr(instrument, "idn", None)
    return str(idn) if idn else ""


def _limits(bench: Bench, part: str) -> str:
    cfg = bench.config
    if part == "power" and cfg.power is not None:
        lim = cfg.power.limits
        return (f"max {lim.max_volts:g} V, {lim.max_amps:g} A; nominal "
                f"{cfg.terminal.nominal_volts:.2f} V")
    if part == "terminal":
        return f"boot within {cfg.terminal.boot_timeout:g} s"
    return ""


def examine(bench: Bench) -> list[Finding]:
    """Open, identify and judge each instrument on its own (one unreachable instrument does not
    hide the others), then close what was opened."""
    findings: list[Finding] = []
    for instrument in bench.instruments():
        part = _part_name(bench, instrument)
        driver = repr(instrument)
        try:
            instrument.open()
        except RigError as exc:
            findings.append(Finding(part, driver, Verdict.UNREACHABLE, reason=str(exc)))
            continue
        except Exception as exc:  # a driver's bug: said as such, never a traceback
            findings.append(Finding(part, driver, Verdict.ERROR,
                                    reason=f"rig bug: {type(exc).__name__}: {exc}"))
            continue
        try:
            identity = _identity(instrument)
            nominal = instrument.is_nominal()
            state = "nominal" if nominal else "not nominal"
            reason = ""
            if part == "terminal":
                st = bench.terminal.status()
                problems = [f"state {st.state}"] if st.state != "IDLE" else []
                if st.faults:
                    problems.append(f"fault codes {','.join(st.faults)}")
                state = f"state {st.state}" + (f", faults {','.join(st.faults)}"
                                               if st.faults else "")
                nominal = nominal and not problems
                reason = "; ".join(problems)
            elif not nominal:
                reason = "away from nominal: posrig reset --bench FILE restores it"
            verdict = Verdict.OK if nominal else Verdict.NOT_NOMINAL
            findings.append(Finding(part, driver, verdict, identity, state,
                                    _limits(bench, part), reason))
        except NoResponse as exc:  # opened, but it does not answer (a terminal switched off)
            findings.append(Finding(part, driver, Verdict.UNREACHABLE, reason=str(exc)))
        except RigError as exc:
            findings.append(Finding(part, driver, Verdict.ERROR, reason=str(exc)))
        except Exception as exc:
            findings.append(Finding(part, driver, Verdict.ERROR,
                                    reason=f"rig bug: {type(exc).__name__}: {exc}"))
        finally:
            try:
                instrument.close()
            except RigError:
                pass
    return findings


def doctor(config: BenchConfig, workdir: Path) -> list[Finding]:
    bench = Bench(config, workdir=workdir)
    return examine(bench)


def render(findings: Sequence[Finding], bench_name: str) -> Any:
    """A rich table: one instrument a line, its verdict first."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"bench {bench_name}", expand=False)
    for col in ("verdict", "part", "driver", "identity", "state", "limits", "reason"):
        table.add_column(col, overflow="fold")
    styles = {Verdict.OK: "green", Verdict.NOT_NOMINAL: "yellow",
              Verdict.UNREACHABLE: "bold red", Verdict.ERROR: "bold red"}
    for f in findings:
        table.add_row(Text(f.verdict.value, style=styles[f.verdict]), f.part, f.driver,
                      f.identity, f.state, f.limits, f.reason)
    return table


__all__ = ["Finding", "Verdict", "doctor", "examine", "render"]
