"""``python -m rigs reset --bench FILE``: restore a bench after the rig process died.

Until the ``posrig`` command exists this is its ``reset``: it says what it found away from
nominal, restores every instrument and checks it; exit status 0 when the bench is nominal
afterwards, 1 when it is not (the reason is printed), 2 on a bad bench file.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from rigs.config import load_bench
from rigs.errors import RigError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rigs", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    reset = sub.add_parser("reset", help="restore a bench to nominal and say what was active")
    reset.add_argument("--bench", type=Path, required=True, metavar="FILE",
                       help="the bench YAML of the bench to reset")
    reset.add_argument("--workdir", type=Path, default=Path("reports/reset"),
                       help="scratch directory for the drivers (default: %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    from rigs.reset import reset_bench

    try:
        config = load_bench(args.bench)
    except RigError as exc:
        print(f"rigs reset: {exc}")
        return 2
    report = reset_bench(config, args.workdir.resolve())
    print(report.text())
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
