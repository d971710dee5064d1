"""Steps that inject faults through the instruments: paper, supply voltage, network cable.

Every When here returns the index of the terminal's event log at the moment of the fault
(``fault_mark``), so the Then that follows only accepts what the terminal said afterwards.
Clearing happens in the scenario's steps where the procedure says so, and in any case when the
scenario ends (the bench is restored to nominal and checked).
"""

from __future__ import annotations

from collections.abc import Callable

from pytest_bdd import given, then, when

from rigs.bench import Bench
from rigs.network import Mode

EVENT_BOUND = 5.0


def _fault(bench: Bench, act: Callable[[], object]) -> int:
    """Do *act* and return the index of the terminal's event log just before it."""
    mark = len(bench.terminal.events)
    act()
    return mark


# -- printer paper (relay across the paper sensor) ---------------------------------------------
@when("the printer runs out of paper", target_fixture="fault_mark")
@when("打印机缺纸", target_fixture="fault_mark")
def paper_runs_out(bench: Bench) -> int:
    return _fault(bench, lambda: bench.need("switch").close_channel(bench.paper_channel()))


@when("paper is loaded into the printer", target_fixture="fault_mark")
@when("装入打印纸", target_fixture="fault_mark")
def paper_loaded(bench: Bench) -> int:
    return _fault(bench, lambda: bench.need("switch").open_channel(bench.paper_channel()))


@then("the terminal reports that the printer is out of paper")
@then("终端提示打印机缺纸")
def reports_paper_out(bench: Bench, fault_mark: int) -> None:
    bench.terminal.wait_for_event("PAPER_OUT", timeout=EVENT_BOUND, since=fault_mark)
    assert not bench.terminal.status().paper_present, "status still says paper is present"


@then("the terminal reports that paper is present")
@then("终端提示纸张已装好")
def reports_paper_ok(bench: Bench, fault_mark: int) -> None:
    bench.terminal.wait_for_event("PAPER_OK", timeout=EVENT_BOUND, since=fault_mark)
    assert bench.terminal.status().paper_present, "status still says there is no paper"


# -- battery (the supply stands in for the battery pack) -------------------------------------------
@when("the battery sags to the low-battery threshold", target_fixture="fault_mark")
@when("电池电压降到低电量阈值", target_fixture="fault_mark")
def battery_sags(bench: Bench) -> int:
    volts = bench.config.terminal.low_battery_volts
    return _fault(bench, lambda: bench.need("power").sag_to(volts))


@when("the battery is back at its nominal voltage", target_fixture="fault_mark")
@when("电池电压恢复正常", target_fixture="fault_mark")
def battery_nominal(bench: Bench) -> int:
    volts = bench.config.terminal.nominal_volts
    return _fault(bench, lambda: bench.need("power").set_voltage(volts))


@then("the terminal warns that the battery is low")
@then("终端提示电量低")
def warns_low_battery(bench: Bench, fault_mark: int) -> None:
    bench.terminal.wait_for_event("LOW_BATTERY", timeout=EVENT_BOUND, since=fault_mark)
    status = bench.terminal.status()
    assert status.battery_low, f"status says battery fine at {status.supply_volts:.2f} V"


@then("the terminal no longer warns about the battery")
@then("终端不再提示电量低")
def battery_warning_gone(bench: Bench, fault_mark: int) -> None:
    bench.terminal.wait_for_event("BATTERY_OK", timeout=EVENT_BOUND, since=fault_mark)
    assert not bench.terminal.status().battery_low, "status still says battery low"


# -- network cable (in-line injector) -----------------------------------------------------------
@when("the network cable between the terminal and the acquirer is pulled")
@when("拔掉终端与收单机构之间的网线")
def cable_pulled(bench: Bench) -> None:
    bench.need("network").pull_cable()


@given("the network cable will be pulled as the terminal sends its next request to the acquirer")
@given("终端下次向收单机构发送请求时网线将被拔掉")
def cable_pull_armed(bench: Bench) -> None:
    bench.need("network").pull_cable_on_next_request()


@then("the cable was pulled with the terminal's request on its way to the acquirer")
@then("网线在终端请求发往收单机构途中被拔掉")
def cable_pulled_in_flight(bench: Bench) -> None:
    network = bench.need("network")
    trip = network.last_trip()
    assert trip is not None, ("the armed cable pull never tripped: the terminal sent no data "
                              "towards the acquirer")
    tcp = trip["tcp"]
    assert trip["direction"] == "terminal_to_host" and tcp is not None, \
        f"the pull tripped on {trip['direction']} {trip['frame']}, not the terminal's request"
    assert tcp["dport"] == bench.host_port() and tcp["payload_len"] > 0, \
        f"the pull tripped on {trip['frame']}, not a request to the acquirer"
    assert tcp["flags"] & 0x10, f"{trip['frame']}: the connection was not up when it tripped"
    assert network.mode is Mode.CABLE_PULLED, f"the cable is {network.mode.value}, not pulled"


@when("the network cable is plugged back in")
@when("重新插上网线")
def cable_back(bench: Bench) -> None:
    bench.need("network").restore()


@then("no sign-in request reached the acquirer")
@then("收单机构没有收到签到请求")
def no_sign_in_at_host(bench: Bench) -> None:
    seen = [e for e in bench.host_entries_this_scenario() if e.mti == "0800"]
    assert not seen, f"the acquirer received {len(seen)} sign-in(s) although the cable was pulled"
    directions = bench.need("network").stats()["directions"]
    dropped = sum(d["frames_dropped"] for d in directions.values())
    assert dropped > 0, "the injector dropped nothing, so the cable was not really pulled"
