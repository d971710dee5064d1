"""The event stream, fault specs and the fault ledger: pure, no bench."""

from __future__ import annotations

import threading

import pytest

from protocols.errors import ConfigError, NoResponse
from protocols.faults import Direction, FaultKind, FaultSpec, Target, parse_spec
from rigs.events import EventStream, Source, matching
from rigs.faults import FaultLedger


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        self.now += 0.5
        return self.now


def test_stream_find_since_and_timeline_in_time_order() -> None:
    stream = EventStream(clock=Clock())
    stream.publish(Source.TERMINAL, "event", "PAPER_OUT", "打印机缺纸 PAPER OUT")
    mark = stream.mark()
    stream.publish(Source.NETWORK, "iso8583", "0200", "late message", t=1_600_000_000.0)
    stream.publish(Source.TERMINAL, "event", "PAPER_OK")
    assert stream.find(matching(name="PAPER_OUT"), since=mark) is None
    assert stream.find(matching(source=Source.TERMINAL), since=mark).name == "PAPER_OK"  # type: ignore[union-attr]
    lines = stream.timeline().splitlines()
    assert [n for line in lines for n in ("0200", "PAPER_OUT", "PAPER_OK") if f" {n}" in line] \
        == ["0200", "PAPER_OUT", "PAPER_OK"]


def test_stream_masks_card_numbers_in_details() -> None:
    stream = EventStream()
    stream.publish(Source.CARDS, "apdu", "READ RECORD", "5A 6212345678901234 9000")
    assert "6212345678901234" not in stream.timeline()
    assert "621234******1234" in stream.timeline()


def test_wait_for_is_bounded_and_names_the_bound() -> None:
    stream = EventStream()
    stream.publish(Source.POWER, "set", "voltage", "7.4 V")
    with pytest.raises(NoResponse, match=r"no LOW_BATTERY within 0.1 s .*latest: power:voltage"):
        stream.wait_for(matching(name="LOW_BATTERY"), 0.1, what="LOW_BATTERY")


def test_wait_for_wakes_on_publish() -> None:
    stream = EventStream()
    mark = stream.mark()
    timer = threading.Timer(0.05, stream.publish, (Source.SWITCH, "relay", "close", "ch1"))
    timer.start()
    ev = stream.wait_for(matching(source=Source.SWITCH, name={"close", "open"}), 5.0, since=mark)
    assert ev.detail == "ch1"
    timer.join()


def test_timeline_folds_repeated_samples() -> None:
    stream = EventStream(clock=Clock())
    for _ in range(5):
        stream.publish(Source.POWER, "sample", "supply", "7.40 V 0.120 A")
    stream.publish(Source.POWER, "sample", "supply", "6.80 V 0.120 A")
    text = stream.timeline()
    assert text.count("7.40 V") == 1 and "(×5" in text and "6.80 V" in text


@pytest.mark.parametrize(("raw", "match"), [
    ({"kind": "cable_cut"}, r"kind 'cable_cut' is unknown; expected one of cable_pull"),
    ({"kind": "cable_pull", "params": {"dir": "both"}},
     r"cable_pull has no parameter\(s\) \['dir'\]; it takes \['direction'\]"),
    ({"kind": "cable_pull", "params": {"direction": "up"}},
     r"cable_pull.direction is 'up'; expected one of terminal_to_host, host_to_terminal, both"),
    ({"kind": "supply_sag"}, r"supply_sag.volts is required"),
    ({"kind": "supply_sag", "params": {"volts": "low"}}, r"supply_sag.volts must be a float"),
    ({"kind": "supply_sag", "params": {"volts": True}}, r"supply_sag.volts must be a float"),
    ({"kind": "paper_out", "extra": 1}, r"unknown key\(s\) \['extra'\]"),
    (["paper_out"], r"a fault is an object"),
    ({"kind": "delay", "params": {"ms": "nan"}}, r"delay.ms must be a finite number, got 'nan'"),
    ({"kind": "supply_sag", "params": {"volts": float("inf")}},
     r"supply_sag.volts must be a finite number, got inf"),
])
def test_bad_fault_spec_names_kind_and_parameter(raw: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_spec(raw, "step")


def test_fault_spec_defaults_and_target() -> None:
    spec = FaultSpec.of(FaultKind.CABLE_PULL)
    assert spec.params["direction"] == Direction.BOTH and spec.target is Target.NETWORK
    assert parse_spec(spec.to_json()) == spec
    assert FaultSpec.of("supply_sag", volts="6.8").params["volts"] == 6.8


def test_fault_ledger_records_and_publishes_armed_fired_cleared() -> None:
    stream = EventStream(clock=Clock())
    ledger = FaultLedger(stream, clock=Clock())
    sag = ledger.armed(FaultSpec.of(FaultKind.SUPPLY_SAG, volts=6.8), fires_now=True)
    armed = ledger.armed(FaultSpec.of(FaultKind.PULL_ON_REQUEST), fires_now=False, remote_id=7)
    assert sag.fired and not armed.fired and armed.remote_id == 7
    ledger.fired(armed, 1_700_000_100.0)
    ledger.fired(armed, 1_700_000_100.0)  # the same trip read twice is one firing
    ledger.cleared(sag, "step")
    ledger.cleared(sag, "bench restored to nominal")  # cleared once, by the first
    assert [r.kind for r in ledger.active()] == [FaultKind.PULL_ON_REQUEST]
    assert armed.fired == [1_700_000_100.0] and sag.cleared_by == "step"
    names = [(e.kind, e.name) for e in stream.events(matching(source=Source.FAULT))]
    assert names == [("armed", "supply_sag"), ("fired", "supply_sag"),
                     ("armed", "pull_on_request"), ("fired", "pull_on_request"),
                     ("cleared", "supply_sag")]
    text = ledger.text()
    assert "supply_sag(volts=6.8)" in text and "cleared" in text and "(step)" in text
