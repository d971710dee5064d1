"""``python -m sim up | down | serve`` — bring the virtual bench up and down.

``up`` cleans what an earlier run left behind (and says so), starts the supervisor detached, waits
until every device answers, and prints the bench file the rig loads.  ``down`` stops it and removes
everything it made.  ``serve`` is the supervisor itself (``up`` runs it).

``up --without ledger`` / ``--without network`` (repeatable, or a comma list) leaves parts out: no
``host.ledger`` in the bench file; no ``network`` section, the terminal cabled straight to the host
through a kernel bridge (no injector), as a lab without one.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from protocols.errors import RigError

DEFAULT_WORKDIR = Path("reports/bench")
DEFAULT_BENCH_FILE = Path("reports/bench.yaml")


def _need_root() -> None:
    if os.geteuid() != 0:
        raise RigError("the virtual bench needs root (network namespaces, veth pairs, pcscd in a "
                       "private mount namespace); run as root, e.g. with sudo")


def _parts(text: str) -> list[str]:
    """One ``--without`` value: a part or a comma list of parts."""
    from sim.bench import PARTS

    parts = [p.strip() for p in text.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if not parts or unknown:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected one or more of {', '.join(PARTS)} (comma separated)")
    return parts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sim", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("up", "down", "serve"):
        p = sub.add_parser(name)
        p.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR,
                       help="state, logs, ledger, NVRAM (default: %(default)s)")
        p.add_argument("--bench-id", default="", metavar="ID",
                       help="one of several benches side by side: its namespaces, interfaces "
                            "and card namespace are named after ID (1-6 of a-z 0-9); give "
                            "each its own --workdir")
        if name != "down":
            p.add_argument("--bench-file", type=Path, default=DEFAULT_BENCH_FILE,
                           help="where to write the bench YAML (default: %(default)s)")
            p.add_argument("--watch-pid", type=int, default=None,
                           help="tear the bench down when this process exits")
            p.add_argument("--without", type=_parts, action="append", default=[],
                           metavar="PART[,PART]",
                           help="leave parts out: ledger (no host.ledger in the bench file), "
                                "network (no injector; terminal and host joined by a kernel "
                                "bridge); repeatable")
    sub.choices["serve"].add_argument("--ready-fd", type=int, required=True)
    args = parser.parse_args(argv)

    from sim import bench

    workdir = args.workdir.resolve()
    without = sorted({part for group in getattr(args, "without", []) for part in group})
    try:
        _need_root()
        if args.cmd == "up":
            for line in bench.cleanup_leftovers(workdir, bench_id=args.bench_id):
                print(f"sim up: cleaned up after an earlier run: {line}")
            path = bench.start_detached(workdir, args.bench_file.resolve(),
                                        watch_pid=args.watch_pid, without=without,
                                        bench_id=args.bench_id)
            left_out = f" (without {', '.join(without)})" if without else ""
            print(f"sim up: virtual bench ready{left_out}; bench file {path}")
        elif args.cmd == "down":
            said = bench.cleanup_leftovers(workdir, bench_id=args.bench_id)
            for line in said:
                print(f"sim down: {line}")
            print("sim down: nothing of the virtual bench is left" if said else
                  "sim down: no virtual bench was running")
        else:
            logging.basicConfig(level=logging.INFO,  # the daemon's own entry point, not a library
                                format="%(asctime)s %(name)s %(levelname)s %(message)s")
            ready_fd = args.ready_fd

            def ready(line: str) -> None:
                nonlocal ready_fd
                if ready_fd >= 0:
                    os.write(ready_fd, (line.replace("\n", " ") + "\n").encode())
                    os.close(ready_fd)
                    ready_fd = -1

            bench.VirtualBench(workdir, args.bench_file.resolve(), watch_pid=args.watch_pid,
                               without=without, bench_id=args.bench_id).run(ready)
    except RigError as exc:
        print(f"sim {args.cmd}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
