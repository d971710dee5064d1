"""A transcript recorded on a bench (here the virtual one) replays as a unit-test fixture: the
driver must write exactly what it wrote then, and understand what the terminal answered."""

from __future__ import annotations

from pathlib import Path

import pytest

from rigs.errors import ConfigError
from rigs.terminal import SerialTerminalLink
from rigs.transport import RecordingTransport, ScriptedTransport, load_script, save_transcript

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures/transcripts/ecr-login-status.jsonl"


def test_recorded_login_and_status_replay_exactly(tmp_path: Path) -> None:
    device = ScriptedTransport(load_script(FIXTURE), name="recorded terminal")
    link = SerialTerminalLink("terminal", device)
    link.open()
    try:
        outcome = link.login("01", "0000", timeout=1.0)
        status = link.status(timeout=1.0)
    finally:
        link.close()
    assert (status.state, status.operator, status.paper_present) == ("IDLE", "01", True)
    assert status.supply_volts == pytest.approx(7.40)
    assert outcome.ok and outcome.result == "OK"
    device.assert_done()


def test_a_different_request_fails_the_replay() -> None:
    device = ScriptedTransport(load_script(FIXTURE), name="recorded terminal")
    link = SerialTerminalLink("terminal", device)
    link.open()
    try:
        with pytest.raises(AssertionError, match="wrote .* expected"):
            link.login("02", "0000", timeout=1.0)
    finally:
        link.close()


def test_save_and_load_round_trip_merges_chunks(tmp_path: Path) -> None:
    rec = RecordingTransport(ScriptedTransport([("tx", b"\x02AB"), ("rx", b"\x06\x01")]))
    rec.open()
    rec.write(b"\x02A")
    rec.write(b"B")
    assert rec.read(1) + rec.read(1) == b"\x06\x01"
    path = tmp_path / "t.jsonl"
    save_transcript(rec.transcript, path)
    assert load_script(path) == [("tx", b"\x02AB"), ("rx", b"\x06\x01")]


def test_a_bad_record_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"t": 0, "dir": "tx", "hex": "02"}\n{"t": 0, "dir": "up", "hex": "02"}\n')
    with pytest.raises(ConfigError, match=r"bad.jsonl:2: dir must be tx or rx"):
        load_script(path)
