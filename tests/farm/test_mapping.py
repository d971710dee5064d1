"""The labgrid section of a bench file, the mapping of a place's resources to bench keys, and
the lease's bounded waits — without a coordinator (the mapping is a pure function; the lease
gets a fake coordinator and a fake clock)."""

from __future__ import annotations

import signal
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from rigs.config import load_bench
from rigs.errors import ConfigError, NoResponse, TransportError
from rigs.labgrid import (
    DEFAULT_PORT,
    LeaseState,
    NotReady,
    PlaceLease,
    PlaceState,
    PlaceView,
    ReservationState,
    ReservationView,
    ResourceView,
    read_farm_bench,
    resolve,
    split_bench,
)

REPO = Path(__file__).resolve().parents[2]
EXPORTER = "benchpc1"


def document(**labgrid: Any) -> dict[str, Any]:
    section: dict[str, Any] = {"coordinator": "127.0.0.1:20408", "tags": {"bench": "pos"},
                               "resources": {"terminal.port": "terminal"}}
    section.update(labgrid)
    data = {"labgrid": {k: v for k, v in section.items() if v is not None},
            "bench": {"name": "farm-pos"},
            "terminal": {"terminal_id": "10000001"}}
    if "power.resource" in (section.get("resources") or {}):
        data["power"] = {"limits": {"max_volts": 8.4, "max_amps": 2.0}}
    return data


def resource(cls: str, name: str, params: Mapping[str, Any], *, avail: bool = True,
             present: bool = True, extra: Mapping[str, Any] | None = None) -> ResourceView:
    return ResourceView(EXPORTER, "pos-1", cls, name, name, MappingProxyType(dict(params)),
                        MappingProxyType(dict(extra or {})), avail, "bench-a", present)


def place_state(*resources: ResourceView, exporters: tuple[str, ...] = (EXPORTER,)) -> PlaceState:
    place = PlaceView("bench-a", MappingProxyType({"bench": "pos"}), (f"{EXPORTER}/pos-1/*",),
                      "vm/ci", "TOKEN", 0.0)
    return PlaceState(place, resources, frozenset(exporters))


TERMINAL = resource("NetworkSerialPort", "terminal", {"host": "127.0.0.1", "port": 4001})


# -- the section ------------------------------------------------------------------------------

@pytest.mark.parametrize("change, problem", [
    ({"place": "bench-a"}, "labgrid: give the place to acquire (place: name) or the tags"),
    ({"tags": None}, "labgrid: give the place to acquire"),
    ({"tags": {"Bench": "pos"}}, "labgrid.tags: tag key 'Bench'"),
    ({"tags": {"bench": "two words"}}, "labgrid.tags: tag bench: value 'two words'"),
    ({"tags": {}}, "labgrid.tags: give at least one tag"),
    ({"resources": {"printer.port": "x"}}, "labgrid.resources.printer.port (the key itself): "
                                           "expected one of 'terminal.port'"),
    ({"resources": {"terminal.port": {}}}, "labgrid.resources.terminal.port: give the "
                                           "resource's name, its class (cls), or both"),
    ({"acquire_timeout": 0}, "labgrid.acquire_timeout: must be > 0"),
    ({"coordinator": "ws://127.0.0.1:20408/ws"}, "labgrid.coordinator: 'ws://127.0.0.1:20408/ws' "
                                                 "is not a coordinator address"),
    ({"place_name": "x"}, "labgrid.place_name: unknown key"),
])
def test_section_errors_name_the_key(change: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        split_bench(document(**change), "farm.yaml")
    assert str(err.value).startswith("farm.yaml: bench file is not valid:")
    assert problem in str(err.value)


@pytest.mark.parametrize("environment, expected", [
    (None, f"127.0.0.1:{DEFAULT_PORT}"),
    ("127.0.0.1", f"127.0.0.1:{DEFAULT_PORT}"),
    ("farm-coordinator:20999", "farm-coordinator:20999"),
])
def test_coordinator_defaults_to_lg_coordinator(monkeypatch: pytest.MonkeyPatch,
                                                environment: str | None, expected: str) -> None:
    if environment is None:
        monkeypatch.delenv("LG_COORDINATOR", raising=False)
    else:
        monkeypatch.setenv("LG_COORDINATOR", environment)
    farm = split_bench(document(coordinator=None), "farm.yaml")
    assert farm.labgrid is not None and farm.labgrid.coordinator == expected


def test_a_key_from_the_place_may_not_be_written_too() -> None:
    data = document()
    data["terminal"]["port"] = "/dev/ttyUSB0"
    with pytest.raises(ConfigError, match="farm.yaml: terminal.port is written in the file and "
                                          "labgrid.resources.terminal.port takes it from the "
                                          "place too; keep one of them"):
        split_bench(data, "farm.yaml")


def test_the_rest_of_the_file_is_checked_before_any_coordinator() -> None:
    data = document()
    data["terminal"]["terminal_id"] = "123"
    data["power"] = {"limits": {"max_volts": -1, "max_amps": 2.0}}
    with pytest.raises(ConfigError) as err:
        split_bench(data, "farm.yaml")
    assert "terminal.terminal_id: expected a terminal ID" in str(err.value)
    assert "power.limits.max_volts: must be > 0" in str(err.value)
    assert "power.resource" in str(err.value)  # power is not mapped from the place here


def test_a_file_without_the_section_is_the_local_bench() -> None:
    path = REPO / "fixtures" / "benches" / "example-lab.yaml"
    farm = read_farm_bench(path)
    assert farm.labgrid is None
    assert farm.local_config() == load_bench(path)
    with pytest.raises(ConfigError, match="no labgrid section"):
        PlaceLease(farm)


# -- resources → bench keys -------------------------------------------------------------------

def farm_with(**resources: Any) -> Any:
    return split_bench(document(resources=resources), "farm.yaml")


@pytest.mark.parametrize("params, url", [
    ({"host": "127.0.0.1", "port": 4001}, "rfc2217://127.0.0.1:4001?ign_set_control"),
    ({"host": "127.0.0.1", "port": 4001, "protocol": "rfc2217"},
     "rfc2217://127.0.0.1:4001?ign_set_control"),
    ({"host": "127.0.0.1", "port": 4002, "protocol": "raw"}, "socket://127.0.0.1:4002"),
])
def test_network_serial_port_becomes_the_url(params: dict[str, Any], url: str) -> None:
    res = resource("NetworkSerialPort", "terminal", params)
    done = resolve(farm_with(**{"terminal.port": "terminal"}), place_state(res))
    assert done.config.terminal.port == url
    assert done.config.bench.name == "farm-pos" and done.config.terminal.terminal_id == "10000001"
    assert [str(m) for m in done.mapped] == [
        f"terminal.port = {url} (from {EXPORTER}/pos-1/NetworkSerialPort/terminal)"]


def test_a_serial_port_whose_ser2net_is_not_started_yet_is_not_ready() -> None:
    res = resource("NetworkSerialPort", "terminal", {"host": "127.0.0.1", "port": None})
    with pytest.raises(NotReady, match="has no TCP port yet"):
        resolve(farm_with(**{"terminal.port": "terminal"}), place_state(res))


def test_unknown_serial_protocol_is_refused() -> None:
    res = resource("NetworkSerialPort", "terminal", {"host": "h", "port": 1, "protocol": "ssh"})
    with pytest.raises(ConfigError, match="protocol 'ssh'; terminal.port can use raw or rfc2217"):
        resolve(farm_with(**{"terminal.port": "terminal"}), place_state(res))


@pytest.mark.parametrize("params, visa", [
    ({"type": "TCPIP0", "url": "127.0.0.1::5025::SOCKET"}, "TCPIP0::127.0.0.1::5025::SOCKET"),
    ({"type": "TCPIP0", "url": "127.0.0.1"}, "TCPIP0::127.0.0.1::INSTR"),
    ({"type": "TCPIP", "url": "127.0.0.1::inst0::INSTR", "backend": "@py"},
     "TCPIP::127.0.0.1::inst0::INSTR"),
])
def test_pyvisa_device_becomes_the_resource_string(params: dict[str, Any], visa: str) -> None:
    psu = resource("PyVISADevice", "psu", params)
    done = resolve(farm_with(**{"terminal.port": "terminal", "power.resource": "psu"}),
                   place_state(TERMINAL, psu))
    assert done.config.power is not None and done.config.power.resource == visa


def test_pyvisa_device_that_is_no_visa_resource_says_what_was_expected() -> None:
    psu = resource("PyVISADevice", "psu", {"type": "TCPIP0", "url": "a b"})
    with pytest.raises(ConfigError) as err:
        resolve(farm_with(**{"terminal.port": "terminal", "power.resource": "psu"}),
                place_state(TERMINAL, psu))
    assert "benchpc1/pos-1/PyVISADevice/psu" in str(err.value)
    assert "TCPIP0::host::5025::SOCKET" in str(err.value)


def test_pyvisa_simulation_backend_is_refused() -> None:
    psu = resource("PyVISADevice", "psu", {"type": "TCPIP0", "url": "h", "backend": "@sim"})
    with pytest.raises(ConfigError, match="VISA backend '@sim'"):
        resolve(farm_with(**{"terminal.port": "terminal", "power.resource": "psu"}),
                place_state(TERMINAL, psu))


def test_siglent_power_port_gives_resource_channel_and_dialect() -> None:
    spd = resource("NetworkPowerPort", "psu", {"model": "siglent", "host": "127.0.0.1",
                                               "index": "2"})
    done = resolve(farm_with(**{"terminal.port": "terminal", "power.resource": "psu"}),
                   place_state(TERMINAL, spd))
    power = done.config.power
    assert power is not None
    assert (power.resource, power.channel, power.dialect) == (
        "TCPIP0::127.0.0.1::INSTR", 2, "siglent-spd")


def test_siglent_power_port_contradicting_the_file_is_refused() -> None:
    data = document(resources={"terminal.port": "terminal", "power.resource": "psu"})
    data["power"]["dialect"] = "keysight-e36xx"
    spd = resource("NetworkPowerPort", "psu", {"model": "siglent", "host": "h", "index": "1"})
    with pytest.raises(ConfigError, match="farm.yaml: power.dialect is 'keysight-e36xx', but "
                                          ".*implies 'siglent-spd'"):
        resolve(split_bench(data, "farm.yaml"), place_state(TERMINAL, spd))


@pytest.mark.parametrize("target", ["power.resource", "switch.resource"])
def test_an_outlet_is_no_scpi_instrument(target: str) -> None:
    outlet = resource("NetworkPowerPort", "outlet", {"model": "netio", "host": "h", "index": "1"})
    data = document(resources={"terminal.port": "terminal", target: "outlet"})
    if target == "switch.resource":
        data["switch"] = {"channels": {"paper_sensor": 1}}
    with pytest.raises(ConfigError) as err:
        resolve(split_bench(data, "farm.yaml"), place_state(TERMINAL, outlet))
    message = str(err.value)
    for part in ("labgrid coordinator 127.0.0.1:20408, place 'bench-a'",
                 "NetworkPowerPort of model 'netio'", f"{target} needs a SCPI instrument",
                 "PyVISADevice"):
        assert part in message, (part, message)


def test_a_serial_key_cannot_take_an_instrument() -> None:
    psu = resource("PyVISADevice", "psu", {"type": "TCPIP0", "url": "h"})
    with pytest.raises(ConfigError, match="cannot fill terminal.port: terminal.port is a serial "
                                          "port URL .* made from NetworkSerialPort, not "
                                          "PyVISADevice"):
        resolve(farm_with(**{"terminal.port": "psu"}), place_state(psu))


def test_an_isolated_exporter_is_refused() -> None:
    res = resource("NetworkSerialPort", "terminal", {"host": "127.0.0.1", "port": 4001},
                   extra={"proxy_required": True, "proxy": "benchpc1.lab"})
    with pytest.raises(ConfigError, match="isolated exporter .* SSH proxy \\(benchpc1.lab\\)"):
        resolve(farm_with(**{"terminal.port": "terminal"}), place_state(res))


def test_missing_resource_names_what_the_place_has() -> None:
    probe = resource("NetworkSerialPort", "probe", {"host": "h", "port": 1})
    with pytest.raises(NotReady) as err:
        resolve(farm_with(**{"terminal.port": "terminal"}), place_state(probe))
    assert ("no resource 'terminal' for terminal.port; it has 'probe' (NetworkSerialPort)"
            in str(err.value))


def test_no_resources_and_exporter_gone_says_exporter_down() -> None:
    with pytest.raises(NotReady) as err:
        resolve(farm_with(**{"terminal.port": "terminal"}), place_state(exporters=()))
    assert ("it has no resources: none of its matches (benchpc1/pos-1/*) is published; exporter "
            "benchpc1 is not connected (exporter down?)") in str(err.value)


@pytest.mark.parametrize("present, avail, problem", [
    (False, False, "is gone: its exporter 'benchpc1' is not connected"),
    (True, False, "is not available: its exporter does not see the device"),
])
def test_orphaned_or_absent_resource_is_not_ready(present: bool, avail: bool, problem: str) -> None:
    res = resource("NetworkSerialPort", "terminal", {"host": "h", "port": 1}, avail=avail,
                   present=present)
    with pytest.raises(NotReady, match=problem):
        resolve(farm_with(**{"terminal.port": "terminal"}), place_state(res))


def test_two_resources_for_one_key_is_ambiguous() -> None:
    other = resource("NetworkSerialPort", "probe", {"host": "h", "port": 2})
    with pytest.raises(ConfigError, match="labgrid.resources.terminal.port matches 2 resources"):
        resolve(farm_with(**{"terminal.port": {"cls": "NetworkSerialPort"}}),
                place_state(TERMINAL, other))


def test_resources_not_used_are_listed_with_why() -> None:
    readers = resource("NetworkService", "readers", {"address": "127.0.0.1", "username": "pos"})
    outlet = resource("NetworkPowerPort", "outlet", {"model": "netio", "host": "h", "index": 1})
    done = resolve(farm_with(**{"terminal.port": "terminal"}),
                   place_state(TERMINAL, readers, outlet))
    assert done.unused == (
        "benchpc1/pos-1/NetworkService/readers: not used — a host the rig does not reach through "
        "labgrid (the PC/SC readers and the injector's NICs are used where the job runs: run it "
        "on that host)",
        "benchpc1/pos-1/NetworkPowerPort/outlet: not used — a switched outlet; the rig's power "
        "part is a SCPI supply")


# -- the lease, on a fake coordinator ---------------------------------------------------------

class FakeCoordinator:
    """Plays the coordinator: one place, a reservation that stays *states* in turn."""

    def __init__(self, address: str, *, timeout: float, states: list[ReservationState],
                 release_fails: bool = False, log: list[str]) -> None:
        self.address, self.timeout = address, timeout
        self.states, self.release_fails, self.log = states, release_fails, log
        self.is_open = False
        self.identity = "vm/ci"
        self.place = PlaceView("bench-a", MappingProxyType({"bench": "pos"}),
                               (f"{EXPORTER}/pos-1/*",), "vm/other", None, 0.0)

    def open(self) -> None:
        self.is_open = True
        self.log.append("open")

    def close(self) -> None:
        self.is_open = False
        self.log.append("close")

    def places(self) -> dict[str, PlaceView]:
        return {"bench-a": self.place}

    def reserve(self, filters: Mapping[str, str], priority: float = 0.0) -> ReservationView:
        self.log.append(f"reserve {dict(filters)}")
        return ReservationView("TOKEN", ReservationState.WAITING, None, self.identity)

    def poll(self, token: str) -> ReservationView:
        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        place = None if state is ReservationState.WAITING else "bench-a"
        return ReservationView(token, state, place, self.identity)

    def cancel(self, token: str) -> None:
        self.log.append(f"cancel {token}")

    def acquire(self, place: str) -> None:
        self.log.append(f"acquire {place}")
        self.place = PlaceView("bench-a", self.place.tags, self.place.matches, self.identity,
                               "TOKEN", 0.0)

    def place_state(self, name: str) -> PlaceState:
        return PlaceState(self.place, (TERMINAL,), frozenset({EXPORTER}))

    def release(self, place: str) -> None:
        self.log.append(f"release {place}")
        if self.release_fails:
            raise TransportError(f"labgrid coordinator {self.address}: coordinator not reachable")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def lease_on(states: list[ReservationState], log: list[str], *, release_fails: bool = False,
             acquire_timeout: float = 30) -> PlaceLease:
    clock = FakeClock()
    farm = split_bench(document(acquire_timeout=acquire_timeout), "farm.yaml")

    def factory(address: str, *, timeout: float) -> FakeCoordinator:
        return FakeCoordinator(address, timeout=timeout, states=states,
                               release_fails=release_fails, log=log)

    return PlaceLease(farm, session_factory=factory, clock=clock, sleep=clock.sleep)


def test_the_wait_for_a_busy_place_is_bounded_and_says_who_holds_it() -> None:
    log: list[str] = []
    lease = lease_on([ReservationState.WAITING], log, acquire_timeout=30)
    with pytest.raises(NoResponse) as err:
        lease.acquire()
    assert str(err.value) == (
        "labgrid coordinator 127.0.0.1:20408: a place tagged bench=pos did not become free "
        "within 30 s (labgrid.acquire_timeout): bench-a (bench=pos; acquired by vm/other since "
        f"{__import__('datetime').datetime.fromtimestamp(0.0):%Y-%m-%d %H:%M:%S})")
    assert log == ["open", "reserve {'bench': 'pos'}", "cancel TOKEN", "close"]
    assert lease.state is LeaseState.RELEASED


def test_an_allocated_place_is_acquired_mapped_and_released() -> None:
    log: list[str] = []
    before = signal.getsignal(signal.SIGTERM)
    with lease_on([ReservationState.WAITING, ReservationState.ALLOCATED], log) as lease:
        assert signal.getsignal(signal.SIGTERM) != before  # SIGTERM now unwinds the run
        assert lease.config.terminal.port == "rfc2217://127.0.0.1:4001?ign_set_control"
        assert lease.describe()[0] == ("labgrid: place 'bench-a' acquired on 127.0.0.1:20408 "
                                       "as vm/ci")
    assert signal.getsignal(signal.SIGTERM) == before
    assert log == ["open", "reserve {'bench': 'pos'}", "acquire bench-a", "release bench-a",
                   "cancel TOKEN", "close"]
    with pytest.raises(Exception, match="needs a held place; state is RELEASED"):
        _ = lease.config
    lease.release()  # idempotent
    assert log[-1] == "close" and log.count("close") == 1


def test_a_failed_release_says_how_to_free_the_place() -> None:
    log: list[str] = []
    lease = lease_on([ReservationState.ALLOCATED], log, release_fails=True)
    with pytest.raises(TransportError) as err, lease:
        pass
    assert ("place 'bench-a' may still be acquired by vm/ci" in str(err.value)
            and "labgrid-client -x 127.0.0.1:20408 -p bench-a release-from vm/ci"
            in str(err.value))
    assert "; on a new connection: " in str(err.value)  # tried once more on a fresh session
    assert log.count("release bench-a") == 2


def test_a_failed_release_never_hides_why_the_run_ended() -> None:
    log: list[str] = []
    lease = lease_on([ReservationState.ALLOCATED], log, release_fails=True)
    with pytest.raises(RuntimeError) as err, lease:
        raise RuntimeError("terminal did not boot")
    assert str(err.value) == "terminal did not boot"
    assert any("may still be acquired" in note for note in getattr(err.value, "__notes__", []))
