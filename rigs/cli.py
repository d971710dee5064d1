"""``posrig``: the rig's one command.

    posrig bench up|down        the virtual bench (root: namespaces, pcscd)
    posrig doctor --bench FILE  each instrument: reachable, identity, nominal, limits
    posrig reset --bench FILE   restore a bench after a crashed run, saying what was active
    posrig steps                the step catalogue (English and zh-CN patterns, examples)
    posrig run                  the scenario suite with its report and summary
    posrig soak                 N mixed transactions with seeded faults, then the invariants

Every command exits non-zero on a problem with one clear line per problem, never a traceback.
``make run`` and ``make test`` stay the README's two commands; they use the same code.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from rigs.config import BenchConfig
from rigs.errors import ConfigError, RigError

if TYPE_CHECKING:
    from rigs.soak import SoakReport

SIM_BOUND = 180.0


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="log at INFO level to stderr")
def cli(verbose: bool) -> None:
    """The POS terminal test rig."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


# -- bench -----------------------------------------------------------------------------------------
@cli.group()
def bench() -> None:
    """The virtual bench: up (detached, until down) or down."""


def _sim(args: list[str]) -> int:
    cmd = [sys.executable, "-m", "sim", *args]
    try:
        return subprocess.call(cmd, stdin=subprocess.DEVNULL, timeout=SIM_BOUND)
    except subprocess.TimeoutExpired:
        click.echo(f"posrig bench: `{' '.join(cmd[1:])}` did not finish within "
                   f"{SIM_BOUND:.0f} s", err=True)
        return 1


@bench.command("up")
@click.option("--workdir", type=click.Path(path_type=Path), default=Path("reports/bench"),
              show_default=True, help="state, logs, ledgers")
@click.option("--bench-file", type=click.Path(path_type=Path), default=Path("reports/bench.yaml"),
              show_default=True, help="where the bench file of the virtual bench is written")
@click.option("--without", multiple=True, metavar="PART",
              help="leave a part out (ledger, network); repeatable")
@click.option("--bench-id", default="", metavar="ID",
              help="one of several benches side by side (give each its own --workdir)")
@click.option("--nominal/--as-is", default=True, show_default=True,
              help="restore the new bench to nominal (supply on, terminal booted and idle, "
                   "network passing), as a lab bench stands ready; --as-is leaves it cold")
def bench_up(workdir: Path, bench_file: Path, without: tuple[str, ...], bench_id: str,
             nominal: bool) -> None:
    """Bring the virtual bench up and write its bench file."""
    args = ["up", "--workdir", str(workdir), "--bench-file", str(bench_file)]
    for part in without:
        args += ["--without", part]
    if bench_id:
        args += ["--bench-id", bench_id]
    code = _sim(args)
    if code != 0 or not nominal:
        raise SystemExit(code)
    from rigs.bench import Bench

    with _bench(bench_file, "bench up") as config:
        bench_ = Bench(config, workdir=workdir.with_name(f"{workdir.name}-rig"))
        try:
            bench_.open()
            bench_.restore_nominal()
        except RigError as exc:
            click.echo(f"posrig bench up: the bench is up but not nominal: {exc}", err=True)
            raise SystemExit(1) from None
        finally:
            bench_.close()
    click.echo(f"posrig bench up: {config.bench.name} is nominal")
    raise SystemExit(0)


@bench.command("down")
@click.option("--workdir", type=click.Path(path_type=Path), default=Path("reports/bench"),
              show_default=True)
@click.option("--bench-id", default="", metavar="ID")
def bench_down(workdir: Path, bench_id: str) -> None:
    """Take the virtual bench down (whatever is left of it)."""
    raise SystemExit(_sim(["down", "--workdir", str(workdir),
                           *(["--bench-id", bench_id] if bench_id else [])]))


# -- doctor, reset -----------------------------------------------------------------------------------
@contextmanager
def _bench(bench_file: Path, command: str) -> Iterator[BenchConfig]:
    """The bench file's configuration; a labgrid place it names is held for the block (and
    released after it, whatever happens).  A bad file: one line, exit 2."""
    from rigs.labgrid import bench_from_file

    try:
        with bench_from_file(bench_file) as config:
            yield config
    except ConfigError as exc:
        click.echo(f"posrig {command}: {exc}", err=True)
        raise SystemExit(2) from None
    except RigError as exc:  # a place that cannot be had, a coordinator that does not answer
        click.echo(f"posrig {command}: {exc}", err=True)
        raise SystemExit(1) from None


@cli.command()
@click.option("--bench", "bench_file", type=click.Path(path_type=Path), required=True,
              metavar="FILE", help="the bench YAML")
@click.option("--workdir", type=click.Path(path_type=Path), default=Path("reports/doctor"),
              show_default=True, help="scratch directory for the drivers")
def doctor(bench_file: Path, workdir: Path) -> None:
    """Check each instrument of a bench: reachable, identity, nominal, limits."""
    from rigs.console import make_console
    from rigs.doctor import doctor as run_doctor
    from rigs.doctor import render

    with _bench(bench_file, "doctor") as config:
        findings = run_doctor(config, workdir.resolve())
    console = make_console()
    console.print(render(findings, config.bench.name))
    bad = [f for f in findings if not f.ok]
    console.print(f"{len(findings) - len(bad)} of {len(findings)} instruments OK"
                  + (f"; problems: {', '.join(f'{f.part} {f.verdict.value}' for f in bad)}"
                     if bad else ""), markup=False)
    raise SystemExit(1 if bad else 0)


@cli.command()
@click.option("--bench", "bench_file", type=click.Path(path_type=Path), required=True,
              metavar="FILE", help="the bench YAML")
@click.option("--workdir", type=click.Path(path_type=Path), default=Path("reports/reset"),
              show_default=True, help="scratch directory for the drivers")
def reset(bench_file: Path, workdir: Path) -> None:
    """Restore a bench to nominal, saying what was away from it."""
    from rigs.reset import reset_bench

    with _bench(bench_file, "reset") as config:
        report = reset_bench(config, workdir.resolve())
    click.echo(report.text())
    raise SystemExit(0 if report.ok else 1)


# -- steps, run -------------------------------------------------------------------------------------
@cli.command()
@click.option("--markdown", is_flag=True, help="markdown (what docs/steps.md holds)")
@click.option("--write", "write_to", type=click.Path(path_type=Path), default=None,
              help="write the markdown to this file")
@click.option("--check", "check", type=click.Path(path_type=Path), default=None,
              help="exit 1 when this file is not what would be written")
def steps(markdown: bool, write_to: Path | None, check: Path | None) -> None:
    """The step catalogue: every step pattern, its parameters and an example line."""
    from rigs.catalogue import main as catalogue_main

    args: list[str] = []
    if markdown:
        args.append("--markdown")
    if write_to is not None:
        args += ["--write", str(write_to)]
    if check is not None:
        args += ["--check", str(check)]
    raise SystemExit(catalogue_main(args))


@cli.command(context_settings={"ignore_unknown_options": True})
@click.option("--bench", "bench_file", default=None, metavar="FILE",
              help="bench YAML (default: bring the virtual bench up)")
@click.option("--reports", type=click.Path(path_type=Path), default=Path("reports"),
              show_default=True)
@click.argument("pytest_args", nargs=-1, type=click.UNPROCESSED)
def run(bench_file: str | None, reports: Path, pytest_args: tuple[str, ...]) -> None:
    """Run the scenario suite: HTML report, JUnit XML, history, coverage and a summary.
    Further arguments go to pytest (``posrig run -- -k stripe``)."""
    from rigs.report import main as report_main

    args = ["--reports", str(reports)]
    if bench_file:
        args += ["--bench", bench_file]
    raise SystemExit(report_main([*args, "--", *pytest_args] if pytest_args else args))


# -- soak -------------------------------------------------------------------------------------------
@cli.command()
@click.option("-n", "--count", type=click.IntRange(min=1), default=300, show_default=True,
              help="transactions")
@click.option("--seed", type=int, default=7, show_default=True,
              help="the plan's seed (the same seed, the same plan)")
@click.option("--settle-every", type=click.IntRange(min=1), default=20, show_default=True,
              help="a settlement (and the batch's checks) after this many transactions")
@click.option("--fault-ratio", type=click.FloatRange(0.0, 1.0), default=0.15, show_default=True,
              help="share of transactions with a fault")
@click.option("--fault", "faults", multiple=True, metavar="NAME",
              help="only these faults of the catalogue (repeatable): "
                   "power cut, brown-out, cable pull, response drop, corrupt byte, card pulled, "
                   "paper out")
@click.option("--bench", "bench_file", type=click.Path(path_type=Path), default=None,
              metavar="FILE", help="bench YAML (default: bring the virtual bench up)")
@click.option("--bench-id", default="", metavar="ID",
              help="the virtual bench's id, to soak beside other benches")
@click.option("--reports", type=click.Path(path_type=Path), default=Path("reports"),
              show_default=True, help="soak.json and soak/ (work folders, evidence) go here")
@click.option("--quiet", is_flag=True, help="no progress lines")
def soak(count: int, seed: int, settle_every: int, fault_ratio: float, faults: tuple[str, ...],
         bench_file: Path | None, bench_id: str, reports: Path, quiet: bool) -> None:
    """Soak with chaos: mixed transactions with faults at seeded protocol moments, restored
    as an operator would, then the invariants as a table (exit 1 on any violation)."""
    from rigs.bench import Bench
    from rigs.soak import CHAOS_BY_NAME, run_soak
    from rigs.virtualbench import virtual_bench

    unknown = [f for f in faults if f not in CHAOS_BY_NAME]
    if unknown:
        click.echo(f"posrig soak: --fault {', '.join(unknown)}: not in the catalogue "
                   f"({', '.join(CHAOS_BY_NAME)})", err=True)
        raise SystemExit(2)
    reports = reports.resolve()
    work = reports / "soak"

    def progress(line: str) -> None:
        click.echo(line)

    def soak_on(path: Path) -> SoakReport:
        with _bench(path, "soak") as config:
            return run_soak(Bench(config, workdir=work / "rig"), seed=seed, count=count,
                            settle_every=settle_every, fault_ratio=fault_ratio,
                            evidence_dir=work / "evidence", chaos_names=faults or None,
                            progress=None if quiet else progress)

    click.echo(f"posrig soak: {count} transactions, seed {seed}, a settlement every "
               f"{settle_every}, faults in {fault_ratio:.0%}")
    try:
        if bench_file is not None:
            report = soak_on(bench_file)
        else:
            with virtual_bench(work / "bench", bench_id=bench_id) as path:
                report = soak_on(path)
    except RigError as exc:
        click.echo(f"posrig soak: {exc}", err=True)
        raise SystemExit(1) from None
    out = reports / "soak.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report.to_json(), encoding="utf-8")
    click.echo(report.table())
    raise SystemExit(1 if report.violations or report.stopped else 0)


def main() -> None:
    cli(prog_name="posrig")


if __name__ == "__main__":
    main()
