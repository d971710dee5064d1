"""Faults armed on the event stream: the nth matching event fires them (after a delay), firing
and clearing are in the ledger, a failing fire function fails the scenario, a trigger that never
matched is disarmed by the restore."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from protocols.errors import ConfigError
from protocols.faults import FaultKind, FaultSpec
from rigs.errors import TriggerError
from rigs.events import EventStream, Source, matching
from rigs.triggers import Armer, Trigger, on_apdu, on_current_above, on_mti, on_terminal
from tests.rig.test_bench_facade import FULL, FakeInstrument, fake_bench


def test_trigger_matches_source_name_and_threshold() -> None:
    stream = EventStream()
    seen: list[str] = []
    trig = on_current_above(1.0)
    stream.subscribe(lambda ev: seen.append(ev.name) if trig.matches(ev) else None)
    stream.publish(Source.POWER, "sample", "supply", data={"volts": 7.4, "amps": 0.12})
    stream.publish(Source.POWER, "sample", "supply", data={"volts": 7.4, "amps": True})
    stream.publish(Source.TERMINAL, "event", "PRINTING", data={"amps": 5.0})
    stream.publish(Source.POWER, "sample", "supply", data={"volts": 7.4, "amps": 1.2})
    assert seen == ["supply"]
    assert "draws >= 1 A" in trig.describe()


def test_trigger_refuses_nonsense() -> None:
    with pytest.raises(ConfigError, match="nth must be >= 1"):
        Trigger(nth=0)
    with pytest.raises(ConfigError, match="delay_ms must be within"):
        Trigger(delay_ms=-1)
    with pytest.raises(ConfigError, match="threshold needs value_key"):
        Trigger(at_least=1.0)


def test_nth_occurrence_fires_once_in_a_worker() -> None:
    stream = EventStream()
    armer = Armer(stream)
    fired: list[tuple[str, str]] = []
    done = threading.Event()

    def fire(ev: object) -> None:
        fired.append((threading.current_thread().name, getattr(ev, "name", "")))
        done.set()

    armer.arm(on_apdu("GENERATE AC", nth=2), fire)
    for ins in ("SELECT", "GENERATE AC", "READ RECORD", "GENERATE AC", "GENERATE AC"):
        stream.publish(Source.CARDS, "c-apdu", ins)
    assert done.wait(2.0)
    armer.settle()
    assert len(fired) == 1 and fired[0][1] == "GENERATE AC"
    assert fired[0][0].startswith("trigger-")  # not the publisher's thread
    armer.raise_errors()


def test_delay_and_disarm_before_the_delay_ends() -> None:
    stream = EventStream()
    armer = Armer(stream)
    fired: list[object] = []
    armed = armer.arm(on_terminal("PRINTING", delay_ms=10_000), fired.append)
    stream.publish(Source.TERMINAL, "progress", "PRINTING")
    assert armer.disarm(armed) is False  # it matched; the delayed firing is cancelled
    armer.settle(bound_s=2.0)
    assert fired == [] and armer.errors() == []


def test_an_exception_in_the_fire_function_is_raised_at_the_end() -> None:
    stream = EventStream()
    armer = Armer(stream)

    def broken(ev: object) -> None:
        raise ValueError("relay unit unreachable")

    armer.arm(on_terminal("PRINTING"), broken)
    stream.publish(Source.TERMINAL, "progress", "PRINTING")
    armer.settle()
    with pytest.raises(TriggerError, match="when the terminal shows PRINTING could not be "
                                           "fired: ValueError: relay unit unreachable"):
        armer.raise_errors()


def test_bench_arm_fires_through_the_instrument_and_records_it(tmp_path: Path) -> None:
    bench, log, _ = fake_bench(FULL, tmp_path)
    rec = bench.arm(FaultSpec.of(FaultKind.PAPER_OUT), on_terminal("PRINTING"))
    assert rec.active and not rec.fired and "switch.close_channel(3,)" not in log
    fired = bench.events.mark()
    bench.events.publish(Source.TERMINAL, "progress", "PRINTING")
    bench.events.wait_for(matching(source=Source.FAULT, kind="fired"), 2.0, since=fired)
    assert "switch.close_channel(3,)" in log and rec.fired
    armed = bench.events.find(matching(source=Source.FAULT, kind="armed"))
    assert armed is not None and "when the terminal shows PRINTING" in armed.detail
    assert "when the terminal shows PRINTING" in bench.faults.text()
    bench.clear_fault(rec)
    assert "switch.open_channel(3,)" in log and not rec.active


def test_bench_disarms_a_trigger_that_never_matched(tmp_path: Path) -> None:
    bench, log, _ = fake_bench(FULL, tmp_path)
    rec = bench.arm(FaultSpec.of(FaultKind.POWER_CUT), on_terminal("PRINTING"))
    bench.clear_fault(rec)
    assert rec.cleared_by == "step: disarmed before its trigger matched"
    bench.events.publish(Source.TERMINAL, "progress", "PRINTING")
    bench.armer.settle()
    assert not any("output_off" in e for e in log)


def test_bench_restore_cancels_what_is_armed(tmp_path: Path) -> None:
    bench, log, _ = fake_bench(FULL, tmp_path)
    rec = bench.arm(FaultSpec.of(FaultKind.POWER_CUT), on_terminal("PRINTING"))
    bench.restore_nominal()
    bench.events.publish(Source.TERMINAL, "progress", "PRINTING")
    bench.armer.settle()
    assert not any("output_off" in e for e in log)
    assert not rec.active and rec.cleared_by == "bench restored to nominal"


def test_one_shot_power_faults_are_over_when_applied(tmp_path: Path) -> None:
    bench, log, _ = fake_bench(FULL, tmp_path)
    dip = bench.inject(FaultSpec.of(FaultKind.BROWNOUT_DIP, volts=6.1, ms=100))
    cycle = bench.inject(FaultSpec.of(FaultKind.POWER_CYCLE, off_ms=300))
    limit = bench.inject(FaultSpec.of(FaultKind.CURRENT_LIMIT, amps=0.2))
    assert "power.dip(6.1, 100.0)" in log and "power.power_cycle(300.0,)" in log
    assert dip.fired and not dip.active and cycle.cleared_by == "over by itself"
    assert limit.active
    bench.clear_fault(limit)
    assert "power.set_current_limit(2.0,)" in log


def test_card_faults_go_to_the_card_bank(tmp_path: Path) -> None:
    bench, log, _ = fake_bench(FULL, tmp_path)
    rec = bench.inject(FaultSpec.of(FaultKind.CARD_PULLED, ins="GENERATE AC"))
    assert rec.remote_id == 3 and not rec.fired and any(e.startswith("cards.apply") for e in log)
    bench.clear_fault(rec)
    assert "cards.clear(3,)" in log


class FakeWire(FakeInstrument):
    """An injector that noted one 0200 crossing (trip 7) after the bench armed its watch."""

    def __init__(self, log: list[str]) -> None:
        super().__init__("network", log)
        self.applied: list[FaultSpec] = []
        self.cleared: list[int] = []
        self.noted = False

    def apply(self, spec: FaultSpec) -> int:
        self.applied.append(spec)
        return 41

    def clear(self, rule_id: int) -> None:
        self.cleared.append(rule_id)

    def trips(self, after: int = 0) -> list[object]:
        from types import SimpleNamespace

        from protocols.faults import Direction

        if not self.noted:
            return []
        return [SimpleNamespace(n=7, rule_id=41, wall=1_800_000_000.0, frame="0200 frame",
                                direction=Direction.TO_HOST)][:1 if after < 7 else 0]


def test_bench_arms_on_a_message_type_through_the_injectors_watch(tmp_path: Path) -> None:
    bench, log, made = fake_bench(FULL, tmp_path)
    wire = FakeWire(log)
    bench._network = wire  # type: ignore[assignment]
    rec = bench.arm(FaultSpec.of(FaultKind.POWER_CUT), on_mti("0200"))
    assert [s.describe() for s in wire.applied] == ["watch_message(mti=0200)"]
    assert not any("output_off" in e for e in log)
    mark = bench.events.mark()
    wire.noted = True
    seen = bench.events.wait_for(matching(source=Source.NETWORK, kind="seen", name="0200"),
                                 2.0, since=mark)
    assert seen.t == 1_800_000_000.0  # the wire's time, not the poll's
    bench.events.wait_for(matching(source=Source.FAULT, kind="fired"), 2.0, since=mark)
    assert any("output_off" in e for e in log) and rec.fired
    bench.restore_nominal()
    assert wire.cleared == [41]  # the watch is gone with the scenario
