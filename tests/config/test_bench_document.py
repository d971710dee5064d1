"""The virtual bench's bench file takes the terminal's facts from the terminal profile and the card
PINs from the card profiles; ``--without`` leaves parts out.  No bench is started here: the
document is built from its inputs."""

from __future__ import annotations

import argparse
import dataclasses
import socket
from pathlib import Path
from typing import Any

import pytest
import yaml

from protocols.errors import ConfigError, DecodeError
from rigs.config import parse_bench
from sim import netns
from sim.__main__ import _parts
from sim.bench import (
    BROWNOUT_VOLTS,
    LINE_MESSAGES,
    RELAY_WIRING,
    TERMINAL_PROFILE,
    Harness,
    bench_document,
    check_parts,
    write_bench_file,
)
from sim.terminal.firmware import SENSORS
from sim.terminal.profile import Operator, load_profile

READERS = {"good": "Virtual PCD 00 00", "mute": "Virtual PCD 00 01"}
LEDGER = Path("/work/reports/bench/host.sqlite")


def _doc(**kwargs: Any) -> dict[str, Any]:
    args: dict[str, Any] = dict(
        profile=load_profile(TERMINAL_PROFILE), ecr_path="/dev/pts/7", probe_path="/dev/pts/8",
        pcsc_socket="/proc/42/root/run/pcscd/pcscd.comm", readers=READERS, psu_port=40001,
        relay_port=40002, topo=netns.Topology.default(), host_addr="198.18.0.20:8583",
        ledger=LEDGER)
    args.update(kwargs)
    return bench_document(**args)


def _before() -> dict[str, Any]:
    """The document as sim/bench.py wrote it before its facts came from the profiles."""
    return {
        "bench": {"name": "virtual", "kind": "virtual"},
        "terminal": {
            "port": "/dev/pts/7", "baudrate": 115200,
            "terminal_id": "10000001", "merchant_id": "898100012340001",
            "nominal_volts": 7.40, "low_battery_volts": 6.80,
            "boot_timeout": 15.0,
            "operators": {"operator": {"id": "01", "password": "0000"},
                          "admin": {"id": "00", "password": "123456"}},
        },
        "cards": {
            "probe": "/dev/pts/8",
            "pcsc_socket": "/proc/42/root/run/pcscd/pcscd.comm",
            "bank": {"good": {"reader": "Virtual PCD 00 00", "pin": "123456"},
                     "mute": {"reader": "Virtual PCD 00 01", "pin": "123456"}},
        },
        "power": {
            "resource": "TCPIP0::127.0.0.1::40001::SOCKET",
            "dialect": "keysight-e36xx", "channel": 1,
            "limits": {"max_volts": 8.40, "max_amps": 2.00}, "current_limit": 2.00,
        },
        "switch": {
            "resource": "TCPIP0::127.0.0.1::40002::SOCKET",
            "channels": {"paper_sensor": 1, "paper_near_end": 2, "printer_presence": 3},
        },
        "network": {"terminal_if": "r-term", "host_if": "r-host", "netns": "rig"},
        "host": {"address": "198.18.0.20:8583", "ledger": str(LEDGER)},
    }


def _dump(doc: dict[str, Any]) -> str:
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


def test_default_bench_file_is_unchanged(tmp_path: Path) -> None:
    assert _dump(_doc()) == _dump(_before())
    path = tmp_path / "bench.yaml"
    write_bench_file(path, _doc())
    assert path.read_text().startswith("# Written by `python -m sim up`")
    assert parse_bench(yaml.safe_load(path.read_text())).bench.kind == "virtual"


def test_without_ledger_and_network() -> None:
    no_ledger = _doc(without=["ledger"])
    assert no_ledger["host"] == {"address": "198.18.0.20:8583"} and "network" in no_ledger
    no_network = _doc(without=["network"])
    assert "network" not in no_network and no_network["host"]["ledger"] == str(LEDGER)
    neither = _doc(without=["network", "ledger"])
    assert "network" not in neither and "ledger" not in neither["host"]
    config = parse_bench(neither)
    assert config.network is None and config.host is not None and config.host.ledger is None
    expected = _before()
    del expected["network"]
    del expected["host"]["ledger"]
    assert _dump(neither) == _dump(expected)


def test_without_parts_are_checked() -> None:
    assert check_parts(["network", "ledger", "network"]) == ("ledger", "network")
    with pytest.raises(ConfigError, match="unknown part"):
        check_parts(["printer"])
    assert _parts("ledger,network") == ["ledger", "network"]
    with pytest.raises(argparse.ArgumentTypeError, match="expected one or more of ledger, network"):
        _parts("ledger,printer")


def test_terminal_facts_follow_the_profile() -> None:
    profile = dataclasses.replace(
        load_profile(TERMINAL_PROFILE), terminal_id="10000002", nominal_volts=7.2,
        low_battery_volts=6.5,
        operators={"07": Operator("7777", "operator"), "08": Operator("8888", "operator"),
                   "09": Operator("999999", "admin")})
    terminal = _doc(profile=profile)["terminal"]
    assert terminal["terminal_id"] == "10000002"
    assert (terminal["nominal_volts"], terminal["low_battery_volts"]) == (7.2, 6.5)
    assert terminal["operators"] == {"operator": {"id": "07", "password": "7777"},
                                     "admin": {"id": "09", "password": "999999"}}
    assert BROWNOUT_VOLTS < profile.low_battery_volts
    no_admin = dataclasses.replace(profile, operators={"07": Operator("7777", "operator")})
    with pytest.raises(ConfigError, match="no operator with role admin"):
        _doc(profile=no_admin)


def test_harness_speaks_json_lines() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        harness = Harness(ours)
        harness.send({"t": "rail", "volts": 7.4})
        assert theirs.recv(100) == b'{"t":"rail","volts":7.4}\n'
        assert harness.feed(b'{"t":"load","state":"idle"}\n{"t":"ca') == \
            [{"t": "load", "state": "idle"}]
        assert harness.feed(b'pdu","data":"00a4"}\n') == [{"t": "capdu", "data": "00a4"}]
        with pytest.raises(DecodeError, match="harness: an object without the key 't'"):
            harness.feed(b'{"volts":1}\n')
        assert harness.feed(b'{"t":"load","state":"card"}\n') == [{"t": "load", "state": "card"}]


def test_relay_wiring_is_published_and_speaks_the_firmwares_sensors() -> None:
    """Each wired relay channel is in the bench file, and what it makes the terminal read, open
    and closed, is a harness message the firmware's sensor table knows (closed = the fault)."""
    assert _doc()["switch"]["channels"] == dict(RELAY_WIRING) == {
        "paper_sensor": 1, "paper_near_end": 2, "printer_presence": 3}
    assert set(LINE_MESSAGES) == set(RELAY_WIRING)
    for name in RELAY_WIRING:
        for closed in (False, True):
            msg = LINE_MESSAGES[name](closed)
            sensor = SENSORS[msg["t"]]
            assert (msg[sensor.key] == sensor.failing) is closed, (name, closed, msg)
    assert {LINE_MESSAGES[n](True)["t"] for n in RELAY_WIRING} == set(SENSORS)
