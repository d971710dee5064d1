"""The bench façade with fake instruments built through the registry's seam: implementations
chosen by the bench file, one nominal loop, faults through the instrument that carries them out,
parts the bench lacks reported as CapabilityMissing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from protocols.faults import FaultKind, FaultSpec
from rigs.bench import Bench, missing_for_tags
from rigs.capabilities import Capability
from rigs.config import BenchConfig, parse_bench
from rigs.errors import BenchNotNominal, CapabilityMissing, ConfigError
from rigs.events import NULL_SINK, EventSink, Source, matching
from rigs.interfaces import SwitchUnit
from rigs.registry import BuildContext, build, check_conforms

LAB = {"bench": {"name": "fake", "kind": "lab"}, "terminal": {"port": "loop://"}}


class FakeInstrument:
    """Records calls into a shared log; ``nominal`` says what is_nominal() answers."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log
        self.event_sink: EventSink = NULL_SINK
        self.nominal = True
        self.nominal_volts = 7.4

    def __repr__(self) -> str:
        return f"Fake({self.name})"

    def __getattr__(self, attr: str) -> Any:
        def call(*args: object, **kwargs: object) -> object:
            self.log.append(f"{self.name}.{attr}{args if args else ''}")
            return 3 if attr == "apply" else None
        return call

    def is_nominal(self) -> bool:
        self.log.append(f"{self.name}.is_nominal")
        return self.nominal

    def restore_nominal(self) -> None:
        self.log.append(f"{self.name}.restore_nominal")

    def fault_ledger(self) -> list[Any]:
        return []


def fake_bench(doc: dict[str, Any], tmp_path: Path) -> tuple[Bench, list[str], dict[str, Any]]:
    log: list[str] = []
    made: dict[str, Any] = {}

    def builder(slot: str, section: Any, ctx: BuildContext) -> Any:
        made[slot] = FakeInstrument(slot, log)
        return made[slot]

    return Bench(parse_bench(doc, "test"), workdir=tmp_path, build=builder), log, made


FULL = {**LAB,
        "cards": {"probe": "loop://", "bank": {"good": {"reader": "R0", "pin": "1234"}}},
        "power": {"resource": "TCPIP0::198.18.3.10::5025::SOCKET", "dialect": "keysight-e36xx",
                  "limits": {"max_volts": 8.4, "max_amps": 2.0}},
        "switch": {"resource": "TCPIP0::198.18.3.11::5025::SOCKET",
                   "channels": {"paper_sensor": 3}},
        "network": {"terminal_if": "eth1", "host_if": "eth2"},
        "host": {"address": "198.18.4.20:8583", "ledger": "/tmp/none.sqlite"}}


def test_restore_is_one_loop_terminal_last(tmp_path: Path) -> None:
    bench, log, _ = fake_bench(FULL, tmp_path)
    bench.restore_nominal()
    restores = [e.split(".")[0] for e in log if e.endswith("restore_nominal")]
    assert restores == ["ledger", "network", "switch", "cards", "power", "terminal"]
    assert sum(e.endswith("is_nominal") for e in log) == 6


def test_an_instrument_not_nominal_breaks_the_bench_once(tmp_path: Path) -> None:
    bench, _, made = fake_bench(FULL, tmp_path)
    made["switch"].nominal = False
    with pytest.raises(BenchNotNominal, match=r"Fake\(switch\) is not nominal after restoring"):
        bench.restore_nominal()
    made["switch"].nominal = True
    with pytest.raises(BenchNotNominal, match="could not be returned to nominal"):
        bench.restore_nominal()  # broken stays broken: later scenarios would lie


def test_faults_go_through_their_instrument_and_are_cleared_by_the_restore(
        tmp_path: Path) -> None:
    bench, log, _ = fake_bench(FULL, tmp_path)
    paper = bench.inject(FaultSpec.of(FaultKind.PAPER_OUT))
    sag = bench.inject(FaultSpec.of(FaultKind.SUPPLY_SAG, volts=6.8))
    pull = bench.inject(FaultSpec.of(FaultKind.PULL_ON_REQUEST))
    assert "switch.close_channel(3,)" in log and "power.sag_to(6.8,)" in log
    assert pull.remote_id == 3 and not pull.fired and paper.fired and sag.fired
    bench.clear_faults(FaultKind.SUPPLY_SAG)
    assert "power.set_voltage(7.4,)" in log and not sag.active
    bench.restore_nominal()
    assert not bench.faults.active()
    assert paper.cleared_by == "bench restored to nominal"
    kinds = [(e.kind, e.name) for e in bench.events.events(matching(source=Source.FAULT))]
    assert ("cleared", "paper_out") in kinds and ("armed", "pull_on_request") in kinds


def test_missing_parts_are_capability_missing_and_tags_skip(tmp_path: Path) -> None:
    bench, _, _ = fake_bench(LAB, tmp_path)
    for part in ("cards", "power", "switch", "network"):
        with pytest.raises(CapabilityMissing):
            getattr(bench, part)
    with pytest.raises(CapabilityMissing, match="host.ledger"):
        bench.acquirer.booked()
    with pytest.raises(CapabilityMissing, match="'network' section"):
        bench.acquirer.received("0800")
    with pytest.raises(CapabilityMissing, match="'switch' section"):
        bench.inject(FaultSpec.of(FaultKind.PAPER_OUT))
    assert not bench.has(Capability.LEDGER) and bench.has(Capability.LAB)
    config: BenchConfig = bench.config
    assert missing_for_tags(config, {"ledger", "printer", "fault"}) == [
        "@ledger needs host.ledger in the bench file (the acquirer host's ledger; usually only "
        "the virtual bench has one)",
        "@printer needs switch.channels.paper_sensor in the bench file (a relay across the "
        "printer's paper sensor)"]


def test_bench_file_chooses_the_implementation(tmp_path: Path) -> None:
    doc = {**LAB, "switch": {"resource": "TCPIP0::198.18.3.11::5025::SOCKET",
                             "channels": {"paper_sensor": 1},
                             "driver": "tests.rig.test_bench_facade:lab_relay"}}
    config = parse_bench(doc, "test")
    relay = build("switch", config.switch, BuildContext(config, tmp_path))
    assert isinstance(relay, LabRelay)
    doc["switch"]["driver"] = "tests.rig.test_bench_facade:half_relay"  # type: ignore[index]
    config = parse_bench(doc, "test")
    with pytest.raises(ConfigError, match=r"switch.driver: the driver built HalfRelay, which "
                                          r"lacks clear_trace, close_channel, is_closed, "
                                          r"open_all, open_channel, trace_text of the SwitchUnit"):
        build("switch", config.switch, BuildContext(config, tmp_path))
    doc["switch"]["driver"] = "serial"  # type: ignore[index]
    config = parse_bench(doc, "test")
    with pytest.raises(ConfigError, match=r"switch.driver: 'serial' is not a known driver; "
                                          r"expected one of \['scpi'\]"):
        build("switch", config.switch, BuildContext(config, tmp_path))


class HalfRelay:
    """A lab driver that forgot most of the interface."""

    def __init__(self) -> None:
        self.name = "half"
        self.event_sink: EventSink = NULL_SINK

    def open(self) -> None: ...

    def close(self) -> None: ...

    def is_nominal(self) -> bool:
        return True

    def restore_nominal(self) -> None: ...


class LabRelay(HalfRelay):
    """A lab's own relay board driver (not SCPI)."""

    def close_channel(self, channel: int) -> None: ...

    def open_channel(self, channel: int) -> None: ...

    def is_closed(self, channel: int) -> bool:
        return False

    def open_all(self) -> None: ...

    def clear_trace(self) -> None: ...

    def trace_text(self) -> str:
        return ""


def lab_relay(section: Any, ctx: BuildContext) -> LabRelay:
    return LabRelay()


def half_relay(section: Any, ctx: BuildContext) -> HalfRelay:
    return HalfRelay()


def test_lab_relay_satisfies_the_interface_statically() -> None:
    relay: SwitchUnit = LabRelay()
    check_conforms(relay, SwitchUnit, "switch.driver")


def test_a_plot_that_cannot_be_drawn_costs_only_the_picture(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A font matplotlib had cached and that is gone (FileNotFoundError from inside it) once
    failed every scenario of a run: the picture is said not drawn, the rest of the evidence
    stays."""
    import rigs.plots

    def gone(*args: object, **kwargs: object) -> bytes:
        raise FileNotFoundError(2, "No such file or directory", "/tmp/x/LastResortHE-Regular.ttf")

    monkeypatch.setattr(rigs.plots, "power_png", gone)
    bench, _, made = fake_bench(FULL, tmp_path)
    bench.open()
    made["terminal"].events = []
    pictures = bench._pictures()
    assert [(e.name, e.kind) for e in pictures] == [("pictures not drawn", "text")]
    assert "LastResortHE-Regular.ttf" in str(pictures[0].content)
