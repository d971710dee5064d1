"""``python -m tests.report.leakscan reports``: after a full run, look for card data in every
file under the given folders (the report, its raw results and attachments, the bench's work
folder with its logs and databases) and fail when any is found.

What is looked for, for every card profile of fixtures/cards:

* the full PAN as ASCII digits, and packed BCD (two digits a byte, an odd length padded with
  ``0`` or ``F`` either side) as raw bytes and as hex text;
* the track 2 data (``PAN=YYMM`` + service code, and the chip's ``PAN D YYMM`` form) as text and
  packed;
* the clear PIN block (ISO 9564 format 0: the PIN field XOR the PAN field) as bytes and as hex,
  and the PIN field itself.

Findings name the file, the card and what was found, never the value.  The exit code is 1 when
anything was found, 0 when the folders are clean (and they must hold files: an empty folder
proves nothing).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from sim.card.profile import CardProfile, load_profile

REPO = Path(__file__).resolve().parents[2]
CARDS = REPO / "fixtures" / "cards"
CHUNK = 1 << 20


@dataclass(frozen=True)
class Needle:
    card: str
    what: str
    data: bytes


@dataclass(frozen=True)
class Finding:
    path: Path
    card: str
    what: str

    def describe(self) -> str:
        return f"{self.path}: {self.what} of card {self.card}"


def packed(digits: str) -> list[bytes]:
    """*digits* as packed BCD; an odd count padded with 0 or F at either end."""
    digits = digits.upper()
    if len(digits) % 2 == 0:
        return [bytes.fromhex(digits)]
    return [bytes.fromhex(pad + digits) for pad in "0F"] + \
        [bytes.fromhex(digits + pad) for pad in "0F"]


def pin_block(pin: str, pan: str) -> bytes:
    """The clear ISO 9564 format 0 PIN block of *pin* for *pan*."""
    pin_field = bytes.fromhex(f"0{len(pin):X}{pin}".ljust(16, "F"))
    pan_field = bytes.fromhex("0000" + pan[-13:-1])
    return bytes(a ^ b for a, b in zip(pin_field, pan_field, strict=True))


def needles(card: CardProfile) -> Iterator[Needle]:
    name, pan = card.name, card.pan
    yield Needle(name, "full PAN (ASCII)", pan.encode())
    for form in packed(pan):
        yield Needle(name, "full PAN (packed BCD)", form)
        yield Needle(name, "full PAN (packed BCD as hex)", form.hex().encode())
        yield Needle(name, "full PAN (packed BCD as hex)", form.hex().upper().encode())
    tail = f"{card.expiry}{card.service_code}"
    for sep in ("=", "D", "d"):
        yield Needle(name, "track 2 data", f"{pan}{sep}{tail}".encode())
    for form in packed(f"{pan}D{tail}"):
        yield Needle(name, "track 2 data (packed)", form)
        yield Needle(name, "track 2 data (packed, as hex)", form.hex().upper().encode())
    block = pin_block(card.pin, pan)
    yield Needle(name, "clear PIN block", block)
    yield Needle(name, "clear PIN block (hex)", block.hex().encode())
    yield Needle(name, "clear PIN block (hex)", block.hex().upper().encode())
    field = f"0{len(card.pin):X}{card.pin}".ljust(16, "F")
    yield Needle(name, "PIN field", field.encode())


def card_needles(cards_dir: Path = CARDS) -> list[Needle]:
    out: list[Needle] = []
    for path in sorted(cards_dir.glob("*.yaml")):
        out.extend(needles(load_profile(path)))
    return out


def scan(roots: Iterable[Path], found_in: list[Needle]) -> tuple[list[Finding], int]:
    """Every finding under *roots* and how many files were read."""
    longest = max(len(n.data) for n in found_in)
    findings: list[Finding] = []
    files = 0
    for root in roots:
        for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
            files += 1
            hits: set[tuple[str, str]] = set()
            tail = b""
            try:
                with path.open("rb") as f:
                    while chunk := f.read(CHUNK):
                        window = tail + chunk
                        for n in found_in:
                            if n.data in window:
                                hits.add((n.card, n.what))
                        tail = window[-(longest - 1):]
            except OSError as exc:
                findings.append(Finding(path, "-", f"unreadable ({exc.strerror})"))
                continue
            findings += [Finding(path, card, what) for card, what in sorted(hits)]
    return findings, files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.report.leakscan", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("roots", type=Path, nargs="*", default=[Path("reports")])
    parser.add_argument("--cards", type=Path, default=CARDS)
    args = parser.parse_args(argv)
    missing = [str(r) for r in args.roots if not r.is_dir()]
    if missing:
        print(f"leak scan: no such folder: {', '.join(missing)}", file=sys.stderr)
        return 1
    wanted = card_needles(args.cards)
    findings, files = scan(args.roots, wanted)
    cards = len({n.card for n in wanted})
    if not files:
        print(f"leak scan: no file under {', '.join(map(str, args.roots))}: nothing proven",
              file=sys.stderr)
        return 1
    for finding in findings:
        print(f"LEAK {finding.describe()}")
    print(f"leak scan: {files} files under {', '.join(map(str, args.roots))}, {cards} cards, "
          f"{len(wanted)} patterns: {len(findings)} finding(s)")
    return 1 if findings else 0


if __name__ == "__main__":
    raise SystemExit(main())
