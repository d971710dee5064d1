"""``python -m rigs.wireshark [--write | --check] [--output PATH]``: the Lua dissector.

Without an option the dissector's text goes to stdout.  ``--write`` writes the shipped file
(``rigs/wireshark/posrig_iso8583.lua``, or *PATH*); ``--check`` exits 1 when that file does not
match the dialect spec (regenerate it with ``--write``), 0 when it does.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rigs.wireshark import LUA_SCRIPT
from rigs.wireshark.generate import render, stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rigs.wireshark",
                                     description="Generate the Wireshark Lua dissector of the "
                                                 "bench's ISO 8583 framing from the dialect spec.")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="write the dissector file")
    mode.add_argument("--check", action="store_true",
                      help="exit 1 when the dissector file is stale")
    parser.add_argument("--output", type=Path, default=LUA_SCRIPT,
                        help=f"the dissector file (default {LUA_SCRIPT})")
    args = parser.parse_args(argv)
    path: Path = args.output
    if args.check:
        if stale(path):
            print(f"{path} is stale: it does not match the dialect spec in protocols/iso8583.py; "
                  f"run python -m rigs.wireshark --write", file=sys.stderr)
            return 1
        print(f"{path} matches the dialect spec")
        return 0
    text = render()
    if args.write:
        try:
            path.write_text(text, encoding="utf-8")
        except OSError as exc:
            print(f"cannot write {path}: {exc.strerror or exc}", file=sys.stderr)
            return 2
        print(f"wrote {path}")
        return 0
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
