"""The leak scan (tests.report.leakscan) finds card data in every form it looks for, names the
file and the card and never the value, and passes clean folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from sim.card.profile import load_profile
from tests.report import leakscan

GOOD = load_profile(leakscan.CARDS / "good.yaml")


@pytest.fixture(scope="module")
def needles() -> list[leakscan.Needle]:
    return leakscan.card_needles()


def test_pin_block_is_iso_format_0() -> None:
    # PIN field 041234FFFFFFFFFF XOR PAN field 0000198765432109 (12 digits before the check digit)
    assert leakscan.pin_block("1234", "4321987654321098").hex().upper() == "04122D789ABCDEF6"


@pytest.mark.parametrize(("content", "what"), [
    (b"log line pan=" + GOOD.pan.encode() + b" end", "full PAN (ASCII)"),
    (b"\x00\x10" + bytes.fromhex(GOOD.pan) + b"\x00", "full PAN (packed BCD)"),
    (b"field 2: " + GOOD.pan.encode().hex().encode(), None),  # hex of ASCII: not a PAN form
    (bytes.fromhex(GOOD.pan).hex().upper().encode(), "full PAN (packed BCD as hex)"),
    (f"{GOOD.pan}={GOOD.expiry}{GOOD.service_code}123".encode(), "track 2 data"),
    (leakscan.pin_block(GOOD.pin, GOOD.pan), "clear PIN block"),
    (leakscan.pin_block(GOOD.pin, GOOD.pan).hex().upper().encode(), "clear PIN block (hex)"),
])
def test_each_form_is_found_and_named(tmp_path: Path, needles: list[leakscan.Needle],
                                      content: bytes, what: str | None) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "evidence.bin").write_bytes(b"x" * 100 + content + b"y" * 100)
    findings, files = leakscan.scan([tmp_path], needles)
    assert files == 1
    got = {(f.card, f.what) for f in findings}
    if what is None:
        assert ("good", "full PAN (ASCII)") not in got
    else:
        assert ("good", what) in got
        assert all(GOOD.pan not in f.describe() for f in findings)


def test_a_pan_split_across_read_chunks_is_found(tmp_path: Path,
                                                needles: list[leakscan.Needle]) -> None:
    data = b"a" * (leakscan.CHUNK - 5) + GOOD.pan.encode() + b"b" * 10
    (tmp_path / "big.log").write_bytes(data)
    findings, _ = leakscan.scan([tmp_path], needles)
    assert ("good", "full PAN (ASCII)") in {(f.card, f.what) for f in findings}


def test_masked_forms_are_clean(tmp_path: Path, needles: list[leakscan.Needle]) -> None:
    masked = GOOD.pan[:6] + "******" + GOOD.pan[-4:]
    (tmp_path / "receipt.txt").write_text(f"CARD {masked}\nAMOUNT 12.30\n", encoding="utf-8")
    (tmp_path / "capture.bin").write_bytes(
        bytes.fromhex(GOOD.pan[:6] + "F" * (len(GOOD.pan) - 10) + GOOD.pan[-4:]))
    findings, files = leakscan.scan([tmp_path], needles)
    assert files == 2 and findings == []
    assert leakscan.main([str(tmp_path)]) == 0


def test_the_command_fails_on_a_leak_and_on_nothing_to_scan(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]
                                                            ) -> None:
    (tmp_path / "bad.txt").write_text(GOOD.pan, encoding="utf-8")
    assert leakscan.main([str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "LEAK" in out and "bad.txt: full PAN (ASCII) of card good" in out
    assert GOOD.pan not in out
    empty = tmp_path / "empty"
    empty.mkdir()
    assert leakscan.main([str(empty)]) == 1
    assert leakscan.main([str(tmp_path / "missing")]) == 1
