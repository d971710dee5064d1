"""Run the fuzz targets: ``python -m tests.fuzz [--target NAME ...] [--seconds S] [--runs N]``.

Each target runs in its own process under atheris (``tests/fuzz/child.py``) with libFuzzer's
``-max_total_time`` (and ``-runs``).  Seeds are read from ``fixtures/fuzz/<target>/`` (and its
``regressions/``); new interesting inputs go to ``reports/fuzz/<target>/corpus/``, never into
fixtures/, and a crashing input to ``reports/fuzz/<target>/crash-*`` (``timeout-*``,
``oom-*``), with libFuzzer's log beside it.  A table is printed (target, inputs executed,
seconds, corpus size, crashes) and written to ``reports/fuzz.json``; the exit code is 1 when a
target crashed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from tests.fuzz.targets import CORPUS, ROOT, TARGETS

REPORTS = ROOT / "reports"
ARTIFACT_PREFIXES = ("crash-", "timeout-", "oom-", "leak-", "slow-unit-")
#: libFuzzer's -timeout for one input (seconds): a slower input is a finding.
UNIT_TIMEOUT = 10
RSS_LIMIT_MB = 2048

_DONE_RE = re.compile(r"^#(\d+)\s+DONE\b.*?corp: (\d+)/", re.M)
_STATUS_RE = re.compile(r"^#(\d+)\s+\S+\s+.*?corp: (\d+)/", re.M)
_EXECUTED_RE = re.compile(r"^stat::number_of_executed_units:\s*(\d+)", re.M)


@dataclass
class Outcome:
    target: str
    executed: int
    seconds: float
    corpus: int
    seeds: int
    new_inputs: int
    crashes: int
    artifacts: list[str]
    exit_code: int
    log: str


def seed_files(target: str) -> list[Path]:
    """The seeds of *target*: its fixture files and its regression inputs."""
    folder = CORPUS / target
    files = [p for p in folder.glob("*") if p.is_file()]
    files += [p for p in (folder / "regressions").glob("*") if p.is_file()]
    return sorted(files)


def parse_log(text: str) -> tuple[int, int]:
    """(inputs executed, corpus size) from libFuzzer's output: the final stats, else the
    ``#N DONE`` line, else the last status line."""
    executed = corpus = 0
    statuses = _STATUS_RE.findall(text)
    if statuses:
        executed, corpus = int(statuses[-1][0]), int(statuses[-1][1])
    done = _DONE_RE.findall(text)
    if done:
        executed, corpus = int(done[-1][0]), int(done[-1][1])
    stat = _EXECUTED_RE.findall(text)
    if stat:
        executed = int(stat[-1])
    return executed, corpus


def run_target(name: str, seconds: int, runs: int | None, python: str) -> Outcome:
    work = REPORTS / "fuzz" / name
    corpus = work / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    for old in work.iterdir():
        if old.is_file() and old.name.startswith(ARTIFACT_PREFIXES):
            old.unlink()
    before = {p.name for p in corpus.iterdir()}
    seeds = CORPUS / name
    dirs = [str(corpus), str(seeds)]
    if (seeds / "regressions").is_dir():
        dirs.append(str(seeds / "regressions"))
    args = [python, "-m", "tests.fuzz.child", name, *dirs,
            f"-max_total_time={seconds}", f"-max_len={TARGETS[name].max_len}",
            f"-timeout={UNIT_TIMEOUT}", f"-rss_limit_mb={RSS_LIMIT_MB}",
            f"-artifact_prefix={work}{os.sep}", "-print_final_stats=1"]
    if runs is not None:
        args.append(f"-runs={runs}")
    started = time.monotonic()
    proc = subprocess.run(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, errors="replace",
                          timeout=seconds + UNIT_TIMEOUT * 6 + 120, check=False)
    elapsed = time.monotonic() - started
    (work / "libfuzzer.log").write_text(proc.stdout)
    executed, corpus_size = parse_log(proc.stdout)
    artifacts = sorted(str(p.relative_to(ROOT)) for p in work.iterdir()
                       if p.is_file() and p.name.startswith(ARTIFACT_PREFIXES))
    new_inputs = len({p.name for p in corpus.iterdir()} - before)
    crashed = bool(artifacts) or proc.returncode != 0
    return Outcome(name, executed, round(elapsed, 1), corpus_size, len(seed_files(name)),
                   new_inputs, len(artifacts) if artifacts else int(crashed), artifacts,
                   proc.returncode, str((work / "libfuzzer.log").relative_to(ROOT)))


def table(outcomes: list[Outcome]) -> str:
    head = ("target", "inputs executed", "seconds", "corpus", "seeds", "new", "crashes")
    rows = [head] + [(o.target, f"{o.executed:,}", f"{o.seconds:.1f}", str(o.corpus),
                      str(o.seeds), str(o.new_inputs), str(o.crashes)) for o in outcomes]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(r, widths, strict=True))) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", action="append", choices=sorted(TARGETS), metavar="NAME",
                        help=f"run only this target (repeatable); one of {', '.join(TARGETS)}")
    parser.add_argument("--seconds", type=int, default=60,
                        help="libFuzzer -max_total_time per target (default 60)")
    parser.add_argument("--runs", type=int, default=None,
                        help="libFuzzer -runs per target (stop after N inputs)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="targets run side by side (default 1)")
    args = parser.parse_args(argv)
    if args.seconds < 1:
        parser.error("--seconds must be at least 1")
    names = args.target or list(TARGETS)
    print(f"fuzzing {len(names)} target(s), {args.seconds} s each"
          + (f", at most {args.runs} inputs" if args.runs is not None else "")
          + f", {args.jobs} at a time", flush=True)
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = [pool.submit(run_target, n, args.seconds, args.runs, sys.executable)
                   for n in names]
        outcomes = []
        for future in futures:
            outcome = future.result()
            print(f"  {outcome.target}: {outcome.executed:,} inputs in {outcome.seconds:.1f} s, "
                  f"{outcome.crashes} crash(es)", flush=True)
            outcomes.append(outcome)
    print(table(outcomes))
    REPORTS.mkdir(exist_ok=True)
    report = {"seconds_per_target": args.seconds, "runs_per_target": args.runs,
              "targets": [asdict(o) for o in outcomes]}
    (REPORTS / "fuzz.json").write_text(json.dumps(report, indent=2) + "\n")
    crashed = [o for o in outcomes if o.crashes]
    for o in crashed:
        shown = ", ".join(o.artifacts) or f"exit code {o.exit_code}, no input saved"
        print(f"CRASH {o.target}: {shown} (log: {o.log})", file=sys.stderr)
    print(f"reports/fuzz.json written; {len(crashed)} target(s) crashed")
    return 1 if crashed else 0


if __name__ == "__main__":
    raise SystemExit(main())
