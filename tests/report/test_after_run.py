"""The after-run checks (tests.report.after_run) on a made-up reports folder: each check passes
on good evidence and fails, naming the scenario, on bad."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from scapy.utils import wrpcap

from rigs.network.capture import redact_pcap
from tests.network.test_masked_capture import SIGN_IN, SIGN_IN_RESPONSE, Conn
from tests.report import after_run

needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None,
                                  reason="tshark is needed (apt-get install tshark)")


def _result(results: Path, name: str, attachments: list[tuple[str, str]],
            status: str = "passed") -> None:
    data = {"uuid": name, "name": name, "status": status, "labels": [],
            "attachments": [{"name": n, "source": s, "type": "x"} for n, s in attachments]}
    (results / f"{name}-result.json").write_text(json.dumps(data), encoding="utf-8")


def _capture(path: Path, payload: bytes, answer: bytes) -> None:
    c = Conn(40001, 8583, 1_700_000_000.0).open()
    c.send(True, payload)
    c.send(False, answer)
    c.close()
    raw = path.with_suffix(".raw.pcap")
    wrpcap(str(raw), c.pkts)
    redact_pcap(raw, path)
    raw.unlink()


@pytest.fixture
def reports(tmp_path: Path) -> Path:
    results = tmp_path / "allure-results"
    results.mkdir()
    return tmp_path


@needs_tshark
def test_captures_decode_with_the_dissector_and_a_broken_one_is_named(reports: Path) -> None:
    results = reports / "allure-results"
    _capture(results / "good.pcap", SIGN_IN, SIGN_IN_RESPONSE)
    _result(results, "signs in", [("network capture, frames seen (masked)", "good.pcap")])
    assert after_run.check_captures(reports) == (
        "1 of 1 captures with acquirer traffic decode into ISO 8583 messages")
    _capture(results / "bad.pcap", b"\x00\x30" + b"\x61" * 60, b"\x00\x10" + b"\x62" * 30)
    _result(results, "garbled", [("network capture, frames seen (masked)", "bad.pcap")])
    with pytest.raises(AssertionError, match=r"garbled: \d+ frames to port 8583, no ISO 8583 "
                                             r"message decoded"):
        after_run.check_captures(reports)


def test_a_scenario_that_sampled_the_supply_without_its_plot_is_named(reports: Path) -> None:
    results = reports / "allure-results"
    _result(results, "with plot", [("power supply trace (V, A every 100 ms)", "a.csv"),
                                   ("supply voltage and current, faults shaded", "a.png")])
    _result(results, "skipped one", [("power supply trace (V, A every 100 ms)", "b.csv")],
            status="skipped")
    assert after_run.check_plots(reports) == "1 scenarios that sampled the supply have their plot"
    _result(results, "no plot", [("power supply trace (V, A every 100 ms)", "c.csv")])
    with pytest.raises(AssertionError, match="1 scenario\\(s\\) sampled the supply without a "
                                             "plot: no plot"):
        after_run.check_plots(reports)


def test_missing_files_are_listed(reports: Path) -> None:
    with pytest.raises(AssertionError, match=r"missing: .*index.html.*junit.xml"):
        after_run.check_files(reports)
    assert after_run.main([str(reports)]) == 1
