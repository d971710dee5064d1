"""Steps that inject faults through the instruments: paper, supply voltage, network cable.

Every fault goes through ``bench.inject(FaultSpec)`` (recorded in the scenario's fault ledger,
armed / fired / cleared on the event stream) and every "the fault is gone" step through
``bench.clear_faults(kind)``.  Each When here returns the index of the terminal's event log at
the moment of the fault (``fault_mark``), so the Then that follows only accepts what the terminal
said afterwards.  Whatever a scenario leaves active is cleared when it ends (the bench is
restored to nominal and checked).
"""

from __future__ import annotations

from collections.abc import Callable

from pytest_bdd import given, then, when

from protocols.ecr import EventCode
from protocols.faults import Direction, FaultKind, FaultSpec
from rigs.bench import Bench
from rigs.capabilities import Capability, needs
from rigs.events import Event, Source, matching

EVENT_BOUND = 5.0


def _fault(bench: Bench, act: Callable[[], object]) -> int:
    """Do *act* and return the index of the terminal's event log just before it."""
    mark = len(bench.terminal.events)
    act()
    return mark


# -- printer paper (relay across the paper sensor) ---------------------------------------------
@needs(Capability.PAPER_SENSOR)
@when("the printer runs out of paper", target_fixture="fault_mark")
@when("打印机缺纸", target_fixture="fault_mark")
def paper_runs_out(bench: Bench) -> int:
    return _fault(bench, lambda: bench.inject(FaultSpec.of(FaultKind.PAPER_OUT)))


@needs(Capability.PAPER_SENSOR)
@when("paper is loaded into the printer", target_fixture="fault_mark")
@when("装入打印纸", target_fixture="fault_mark")
def paper_loaded(bench: Bench) -> int:
    return _fault(bench, lambda: bench.clear_faults(FaultKind.PAPER_OUT))


@then("the terminal reports that the printer is out of paper")
@then("终端提示打印机缺纸")
def reports_paper_out(bench: Bench, fault_mark: int) -> None:
    bench.terminal.wait_for_event(EventCode.PAPER_OUT, timeout=EVENT_BOUND, since=fault_mark)
    assert not bench.terminal.status().paper_present, "status still says paper is present"


@then("the terminal reports that paper is present")
@then("终端提示纸张已装好")
def reports_paper_ok(bench: Bench, fault_mark: int) -> None:
    bench.terminal.wait_for_event(EventCode.PAPER_OK, timeout=EVENT_BOUND, since=fault_mark)
    assert bench.terminal.status().paper_present, "status still says there is no paper"


# -- battery (the supply stands in for the battery pack) -------------------------------------------
@needs(Capability.POWER)
@when("the battery sags to the low-battery threshold", target_fixture="fault_mark")
@when("电池电压降到低电量阈值", target_fixture="fault_mark")
def battery_sags(bench: Bench) -> int:
    volts = bench.config.terminal.low_battery_volts
    return _fault(bench, lambda: bench.inject(FaultSpec.of(FaultKind.SUPPLY_SAG, volts=volts)))


@needs(Capability.POWER)
@when("the battery is back at its nominal voltage", target_fixture="fault_mark")
@when("电池电压恢复正常", target_fixture="fault_mark")
def battery_nominal(bench: Bench) -> int:
    return _fault(bench, lambda: bench.clear_faults(FaultKind.SUPPLY_SAG))


SAMPLE_BOUND = 2.0
"""Longest wait (s) for the supply's next samples (taken every 100 ms during a scenario)."""
RAIL_TOLERANCE = 0.05


@needs(Capability.POWER)
@then("the terminal warns that the battery is low")
@then("终端提示电量低")
def warns_low_battery(bench: Bench, fault_mark: int) -> None:
    bench.terminal.wait_for_event(EventCode.LOW_BATTERY, timeout=EVENT_BOUND, since=fault_mark)
    status = bench.terminal.status()
    assert status.battery_low, f"status says battery fine at {status.supply_volts:.2f} V"
    # Evidence outside the terminal's word: the supply measured the sagged rail at its output.
    low = bench.config.terminal.low_battery_volts
    sag = bench.faults.active(FaultKind.SUPPLY_SAG) or \
        bench.faults.active(FaultKind.BATTERY_DISCHARGE)
    assert sag, "no supply sag or discharge is active in the fault ledger"

    def sagged_sample(ev: Event) -> bool:
        volts = ev.data.get("volts")
        return (ev.t >= sag[-1].armed and isinstance(volts, float)
                and volts <= low + RAIL_TOLERANCE)

    bench.events.wait_for(lambda ev: matching(source=Source.POWER, kind="sample")(ev)
                          and sagged_sample(ev), SAMPLE_BOUND,
                          what=f"supply sample at or below {low + RAIL_TOLERANCE:.2f} V")


@then("the terminal no longer warns about the battery")
@then("终端不再提示电量低")
def battery_warning_gone(bench: Bench, fault_mark: int) -> None:
    bench.terminal.wait_for_event(EventCode.BATTERY_OK, timeout=EVENT_BOUND, since=fault_mark)
    assert not bench.terminal.status().battery_low, "status still says battery low"


# -- network cable (in-line injector) -----------------------------------------------------------
@needs(Capability.NETWORK)
@when("the network cable between the terminal and the acquirer is pulled")
@when("拔掉终端与收单机构之间的网线")
def cable_pulled(bench: Bench) -> None:
    bench.inject(FaultSpec.of(FaultKind.CABLE_PULL, direction=Direction.BOTH))


@needs(Capability.NETWORK)
@given("the network cable will be pulled as the terminal sends its next request to the acquirer")
@given("终端下次向收单机构发送请求时网线将被拔掉")
def cable_pull_armed(bench: Bench) -> None:
    bench.inject(FaultSpec.of(FaultKind.PULL_ON_REQUEST))


@needs(Capability.NETWORK, Capability.WIRE)
@then("the cable was pulled with the terminal's request on its way to the acquirer")
@then("网线在终端请求发往收单机构途中被拔掉")
def cable_pulled_in_flight(bench: Bench) -> None:
    network = bench.network
    trip = network.last_trip()
    assert trip is not None, ("the armed cable pull never tripped: the terminal sent no data "
                              "towards the acquirer")
    segment = trip.tcp
    assert trip.direction is Direction.TO_HOST and segment is not None, \
        f"the pull tripped on {trip.direction.value} {trip.frame}, not the terminal's request"
    port = bench.acquirer.host_port
    assert segment.dport == port and segment.carries_data, \
        f"the pull tripped on {trip.frame}, not a request to the acquirer (port {port})"
    assert segment.is_ack, f"{trip.frame}: the connection was not up when it tripped"
    assert network.is_cable_pulled(), "the cable is not pulled after the armed pull tripped"


@needs(Capability.NETWORK)
@when("the network cable is plugged back in")
@when("重新插上网线")
def cable_back(bench: Bench) -> None:
    cleared = bench.clear_faults(FaultKind.CABLE_PULL, FaultKind.PULL_ON_REQUEST)
    assert cleared, "no cable pull was active to plug back in"


@needs(Capability.WIRE)
@then("no sign-in request reached the acquirer")
@then("收单机构没有收到签到请求")
def no_sign_in_at_host(bench: Bench) -> None:
    seen = bench.acquirer.received("0800")
    assert not seen, (f"the acquirer received {len(seen)} sign-in(s) although the cable was "
                      f"pulled: {', '.join(m.describe() for m in seen)}")
    dropped = bench.network.stats().frames_dropped
    assert dropped > 0, "the injector dropped nothing, so the cable was not really pulled"
