"""Every seed of fixtures/fuzz/<target>/ and every crash input kept in its regressions/ replayed
through its target without atheris: the input parses or is refused with the project's own
error; nothing else.  A regression input that still crashes is listed in :data:`KNOWN` with
the finding, as a strict xfail: when the bug is fixed the test passes and says to move it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.fuzz.seeds import GENERATORS
from tests.fuzz.targets import CORPUS, FIXTURES, TARGETS

#: (target, regression file name) → the finding it reproduces (still open).
KNOWN: dict[tuple[str, str], str] = {}


def _cases() -> list[object]:
    cases: list[object] = []
    for name in TARGETS:
        folder = CORPUS / name
        for path in sorted(p for p in folder.glob("*") if p.is_file()):
            cases.append(pytest.param(name, path, id=f"{name}/{path.name}"))
        for path in sorted(p for p in (folder / "regressions").glob("*") if p.is_file()):
            reason = KNOWN.get((name, path.name))
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            cases.append(pytest.param(name, path, id=f"{name}/regressions/{path.name}",
                                      marks=marks))
    return cases


@pytest.mark.parametrize("target, path", _cases())
def test_input_keeps_the_contract(target: str, path: Path) -> None:
    TARGETS[target].check(path.read_bytes())


def test_every_target_has_seeds_and_a_generator() -> None:
    assert set(GENERATORS) == set(TARGETS)
    empty = [n for n in TARGETS if not any(p.is_file() for p in (CORPUS / n).glob("*"))]
    assert not empty, f"targets without seeds (run python -m tests.fuzz.seeds): {empty}"


def test_known_findings_name_existing_files() -> None:
    missing = [k for k in KNOWN if not (CORPUS / k[0] / "regressions" / k[1]).is_file()]
    assert not missing


_DIGIT_RUN = re.compile(rb"(?<![0-9])[3-6][0-9]{12,18}(?![0-9])")


def _pan_like(data: bytes) -> list[bytes]:
    """Digit runs that could be a card number (13-19 digits, payment-card major industry
    identifier 3-6), as ASCII text or as byte-aligned BCD (not the hex of printable text)."""
    runs = _DIGIT_RUN.findall(data)
    text = data.hex().encode()
    for m in _DIGIT_RUN.finditer(text):
        raw = bytes.fromhex(m.group()[:len(m.group()) // 2 * 2].decode())
        if m.start() % 2 == 0 and not all(0x20 <= b <= 0x7E for b in raw):
            runs.append(m.group())
    return runs


def _fixture_pans() -> set[bytes]:
    pans = set()
    for card in (FIXTURES / "cards").glob("*.yaml"):
        m = re.search(r'^pan:\s*"?(\d+)"?', card.read_text(), re.M)
        if m:
            pans.add(m.group(1).encode())
    return pans


def _luhn(digits: bytes) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ch - 0x30
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def test_seeds_carry_no_card_number_but_the_fixture_test_cards() -> None:
    """A PAN-like digit run (13-19 digits passing Luhn), as text or as BCD, is one of the
    fixture test cards' PANs."""
    pans = _fixture_pans()
    assert pans
    strange = []
    for path in CORPUS.rglob("*"):
        if not path.is_file():
            continue
        data = path.read_bytes()
        for run in _pan_like(data):
            if _luhn(run) and not any(p in run or run in p for p in pans):
                strange.append(f"{path.relative_to(CORPUS)}: {run[:6].decode()}…")
    assert not strange, strange
