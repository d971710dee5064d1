"""The virtual bench's ``host:`` section: the control socket is published as ``host.control``
(kept when the ledger is left out), the rig's bench file model accepts it, and the rules file
the bench starts the host with is valid.  No bench is started here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rigs.config import parse_bench
from sim import netns
from sim.bench import HOST_RULES, TERMINAL_PROFILE, BenchPaths, bench_document
from sim.host.rules import load_rules
from sim.terminal.profile import load_profile

CONTROL = Path("/work/reports/bench/host.ctl")
LEDGER = Path("/work/reports/bench/host.sqlite")


def _doc(**kwargs: Any) -> dict[str, Any]:
    args: dict[str, Any] = dict(
        profile=load_profile(TERMINAL_PROFILE), ecr_path="/dev/pts/7", probe_path="/dev/pts/8",
        pcsc_socket=None, readers={"good": "Virtual PCD 00 00"}, psu_port=40001,
        relay_port=40002, topo=netns.Topology.default(), host_addr="198.18.0.20:8583",
        ledger=LEDGER)
    args.update(kwargs)
    return bench_document(**args)


def test_host_control_is_published_and_parsed() -> None:
    doc = _doc(host_control=CONTROL)
    assert doc["host"] == {"address": "198.18.0.20:8583", "ledger": str(LEDGER),
                           "control": str(CONTROL)}
    host = parse_bench(doc, "virtual").host
    assert host is not None and host.control == str(CONTROL) and host.ledger == str(LEDGER)


def test_host_control_stays_without_the_ledger() -> None:
    doc = _doc(host_control=CONTROL, without=("ledger",))
    assert doc["host"] == {"address": "198.18.0.20:8583", "control": str(CONTROL)}
    host = parse_bench(doc, "virtual").host
    assert host is not None and host.ledger is None and host.control == str(CONTROL)


def test_no_control_key_unless_given() -> None:
    assert "control" not in _doc()["host"]
    host = parse_bench(_doc(), "virtual").host
    assert host is not None and host.control is None


def test_bench_paths_and_rules_file(tmp_path: Path) -> None:
    path = BenchPaths(tmp_path).host_control
    assert path.is_absolute() and path.name == "host.ctl" and len(str(path)) <= 107
    assert load_rules(HOST_RULES) == []
