"""The typed records at the injector's process boundary: round trip, and a malformed answer is a
TransportError naming the field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from protocols.errors import TransportError
from protocols.faults import Direction, FaultKind, FaultSpec
from rigs.network.records import (
    Action,
    ActiveRule,
    CapturePaths,
    DirectionStats,
    InjectorStats,
    RuleRecord,
    TcpSegment,
    Trip,
    active_from_json,
    covers,
    delivered_path,
)

SEGMENT = TcpSegment("198.18.0.10", "198.18.0.20", 40000, 8583, 0x18, 4242, 77, 66)
ARMED = FaultSpec.of(FaultKind.PULL_ON_REQUEST)
PULLED = FaultSpec.of(FaultKind.CABLE_PULL, direction="both")
TRIP = Trip(3, 1, ARMED, 1001.5, Direction.TO_HOST, SEGMENT.describe(), SEGMENT, Action.DROP,
            PULLED)
RECORD = RuleRecord(1, ARMED, PULLED, 1000.0, (TRIP,), 1, 4, None, True)


def test_records_round_trip_through_json() -> None:
    assert TcpSegment.from_json(SEGMENT.to_json()) == SEGMENT
    assert Trip.from_json(TRIP.to_json()) == TRIP
    assert RuleRecord.from_json(RECORD.to_json()) == RECORD
    paths = CapturePaths(Path("/x/a.pcap"), Path("/x/a.delivered.pcap"), 5, 4)
    assert CapturePaths.from_json(paths.to_json()) == paths
    no_tcp = Trip(4, 2, PULLED, 1.0, Direction.TO_TERMINAL, "60-byte frame", None, Action.DROP)
    assert Trip.from_json(no_tcp.to_json()) == no_tcp


def test_segment_properties_hide_the_flag_bits() -> None:
    assert SEGMENT.carries_data and SEGMENT.is_ack and SEGMENT.is_psh
    assert not (SEGMENT.is_syn or SEGMENT.is_fin or SEGMENT.is_rst)
    assert SEGMENT.flag_names == ("PSH", "ACK")
    rst = TcpSegment("a", "b", 1, 2, 0x14, 0, 0, 0)
    assert rst.is_rst and not rst.carries_data and rst.flag_names == ("RST", "ACK")


def test_direction_helpers() -> None:
    assert covers(Direction.BOTH, Direction.TO_HOST) and covers(Direction.TO_HOST, Direction.TO_HOST)
    assert not covers(Direction.TO_TERMINAL, Direction.TO_HOST)
    assert delivered_path(Path("/r/x.pcap")) == Path("/r/x.delivered.pcap")
    assert delivered_path(Path("/r/x.cap")) == Path("/r/x.cap.delivered.pcap")


def broken(obj: dict[str, Any], path: tuple[str | int, ...], value: object) -> dict[str, Any]:
    """A deep copy of *obj* with the item at *path* set to *value* (or removed if ...)."""
    out = copy.deepcopy(obj)
    target: Any = out
    for key in path[:-1]:
        target = target[key]
    if value is ...:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return out


@pytest.mark.parametrize(("path", "value", "message"), [
    (("id",), "1", r"rule\.id must be an integer >= 1, got '1'"),
    (("id",), True, r"rule\.id must be an integer >= 1, got True"),
    (("armed",), None, r"rule\.armed must be a number, got None"),
    (("cleared",), ..., r"rule\.cleared must be a number or null, got '\(missing\)'"),
    (("active",), 1, r"rule\.active must be true or false, got 1"),
    (("fired",), {}, r"rule\.fired must be a list, got \{\}"),
    (("fired", 0, "tcp", "sport"), "x", r"rule\.fired\[0\]\.tcp\.sport must be an integer >= 0"),
    (("fired", 0, "direction"), "sideways",
     r"rule\.fired\[0\]\.direction must be one of terminal_to_host, host_to_terminal, both, "
     r"got 'sideways'"),
    (("fired", 0, "action"), "explode", r"rule\.fired\[0\]\.action must be one of forward, drop"),
    (("fired", 0, "n"), 0, r"rule\.fired\[0\]\.n must be an integer >= 1, got 0"),
    (("spec", "kind"), "teleport", r"rule\.spec: kind 'teleport' is unknown"),
    (("current", "params", "direction"), "up",
     r"rule\.current: cable_pull\.direction is 'up'; expected one of"),
    (("fired", 0, "became"), 3, r"rule\.fired\[0\]\.became: a fault is an object"),
])
def test_a_malformed_rule_record_names_the_field(path: tuple[str | int, ...], value: object,
                                                 message: str) -> None:
    with pytest.raises(TransportError, match=message):
        RuleRecord.from_json(broken(RECORD.to_json(), path, value), "rule")


def test_malformed_stats_capture_and_active_list_name_the_field() -> None:
    stats = {"directions": {"terminal_to_host": DirectionStats().__dict__,
                            "host_to_terminal": DirectionStats(frames_dropped=2).__dict__},
             "deferred": 0, "capture": None, "trips_total": 0, "ok": True}
    parsed = InjectorStats.from_json(stats)
    assert parsed.direction(Direction.TO_TERMINAL).frames_dropped == 2
    assert parsed.to_host == DirectionStats() and parsed.capture is None
    with pytest.raises(ValueError, match="counters are kept per direction"):
        parsed.direction(Direction.BOTH)
    with pytest.raises(TransportError, match=r"answer\.directions\.host_to_terminal\.send_errors "
                                             r"must be an integer >= 0, got -1"):
        InjectorStats.from_json(broken(stats, ("directions", "host_to_terminal", "send_errors"),
                                       -1), "answer")
    with pytest.raises(TransportError, match=r"stats\.directions\.terminal_to_host must be an "
                                             r"object, got None"):
        InjectorStats.from_json(broken(stats, ("directions", "terminal_to_host"), ...))
    with pytest.raises(TransportError, match=r"stats\.capture\.frames_delivered must be an "
                                             r"integer"):
        InjectorStats.from_json(broken(stats, ("capture",), {"seen": "/a", "delivered": "/b",
                                                             "frames_seen": 1}))
    with pytest.raises(TransportError, match=r"capture\.seen must be a string, got 7"):
        CapturePaths.from_json({"seen": 7})
    answer = {"active": [{"id": 2, "spec": PULLED.to_json()}]}
    assert active_from_json(answer) == (ActiveRule(2, PULLED),)
    with pytest.raises(TransportError, match=r"answer\.active\[0\]\.id must be an integer >= 1"):
        active_from_json({"active": [{"spec": PULLED.to_json()}]})
    with pytest.raises(TransportError, match=r"answer\.active must be a list, got None"):
        active_from_json({})
    with pytest.raises(TransportError, match="trip must be an object, got 'nonsense'"):
        Trip.from_json("nonsense")
