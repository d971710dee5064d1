"""A bench file naming a labgrid place, against a real coordinator, exporter and ser2net.

The farm (tests/farm/lab.py) runs on 127.0.0.1 only; every process is started here and stopped
by its PID at teardown.  Skipped, with the reason, only where labgrid or ser2net is missing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import serial
import yaml

from rigs.errors import ConfigError, DeviceStateError, NoResponse, RigError, TransportError
from rigs.labgrid import LeaseState, PlaceLease, read_farm_bench
from tests.farm.lab import LOOPBACK, STOP_BOUND, Farm, free_port, labgrid_missing

MISSING = labgrid_missing()
pytestmark = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")

ROUND_TRIP_BOUND = 5.0
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Farm]:
    lab = Farm(tmp_path_factory.mktemp("farm"))
    try:
        lab.start()
        yield lab
    except BaseException:
        print(lab.logs())
        raise
    finally:
        lab.stop()


@pytest.fixture(autouse=True)
def _place_free_around(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test starts and ends with the place free (a leak fails the test that leaked)."""
    if "farm" not in request.fixturenames:
        yield
        return
    lab: Farm = request.getfixturevalue("farm")
    assert lab.place_holder() == ("None", "None")
    yield
    assert lab.place_holder() == ("None", "None"), "the place was left acquired or reserved"


def bench_file(tmp_path: Path, farm: Farm, **labgrid: Any) -> Path:
    """A farm bench file: the labgrid section, and the rest as a lab writes it."""
    section: dict[str, Any] = {"coordinator": farm.coordinator, "tags": dict(farm.TAGS),
                               "acquire_timeout": 10, "connect_timeout": 5, "ready_timeout": 5,
                               "resources": {"terminal.port": "terminal",
                                             "cards.probe": {"name": "probe",
                                                             "cls": "NetworkSerialPort"},
                                             "power.resource": "psu"}}
    section.update(labgrid)
    section = {k: v for k, v in section.items() if v is not None}
    document = {
        "labgrid": section,
        "bench": {"name": "farm-pos", "kind": "lab"},
        "terminal": {"terminal_id": "10000001", "boot_timeout": 45,
                     "operators": {"operator": {"id": "01", "password": "0000"}}},
        "cards": {"bank": {"good": {"reader": "Reader 00 00", "pin": "1234"}}},
        "power": {"dialect": "keysight-e363xx", "channel": 2,
                  "limits": {"max_volts": 8.4, "max_amps": 2.0}},
    }
    path = tmp_path / "farm-bench.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def assert_rig_error_only(exc: BaseException) -> None:
    """The error and everything its traceback would show are the rig's: a usage problem never
    shows a traceback from inside labgrid or gRPC."""
    seen: BaseException | None = exc
    while seen is not None:
        assert isinstance(seen, RigError), f"{type(seen).__module__}.{type(seen).__name__}: {seen}"
        seen = seen.__cause__ or (None if seen.__suppress_context__ else seen.__context__)


def round_trip(url: str, payload: bytes) -> bytes:
    port = serial.serial_for_url(url, baudrate=115200, timeout=0.2)
    try:
        port.reset_input_buffer()
        port.write(payload)
        got = b""
        deadline = time.monotonic() + ROUND_TRIP_BOUND
        while len(got) < len(payload) and time.monotonic() < deadline:
            got += port.read(len(payload) - len(got))
        return got
    finally:
        port.close()


@pytest.mark.parametrize("how", ["tags", "place"])
def test_acquired_place_gives_the_complete_bench(farm: Farm, tmp_path: Path, how: str) -> None:
    extra = {"tags": None, "place": farm.PLACE} if how == "place" else {}
    lease = PlaceLease.from_file(bench_file(tmp_path, farm, **extra))
    started = time.monotonic()
    with lease:
        took = time.monotonic() - started
        config = lease.config
        assert lease.place == farm.PLACE
        assert config.terminal.port == f"rfc2217://{LOOPBACK}:{farm.terminal_port}?ign_set_control"
        assert config.cards is not None and config.power is not None
        assert config.cards.probe == f"socket://{LOOPBACK}:{farm.probe_port}"
        assert config.power.resource == farm.PSU
        # the rest of the bench file, as written
        assert config.bench.name == "farm-pos"
        assert config.terminal.terminal_id == "10000001"
        assert config.terminal.boot_timeout == 45
        assert config.power.channel == 2 and config.power.limits.max_volts == 8.4
        assert config.cards.bank["good"].reader == "Reader 00 00"
        assert [u.split(":")[0] for u in lease.unused] == [
            f"{farm.EXPORTER}/{farm.GROUP}/NetworkService/readers"]
        # bytes reach the far end of each pty through ser2net, and its answer comes back
        assert round_trip(config.terminal.port, b"status?") == b"STATUS?"
        assert farm.terminal is not None and bytes(farm.terminal.received).endswith(b"status?")
        assert round_trip(config.cards.probe, b"probe") == b"PROBE"
        # the coordinator says who holds it
        acquired, reservation = farm.place_holder()
        assert acquired == lease.identity and reservation != "None"
    assert lease.state is LeaseState.RELEASED
    assert farm.place_holder() == ("None", "None")
    assert took < 5, f"acquiring a free place took {took:.1f} s"


@pytest.mark.parametrize("exc", [RuntimeError("scenario blew up"), KeyboardInterrupt()])
def test_released_when_the_body_raises(farm: Farm, tmp_path: Path, exc: BaseException) -> None:
    lease = PlaceLease.from_file(bench_file(tmp_path, farm))
    with pytest.raises(type(exc)), lease:
        assert farm.place_holder()[0] == lease.identity
        raise exc
    assert lease.state is LeaseState.RELEASED
    assert farm.place_holder() == ("None", "None")


HOLDER = textwrap.dedent("""
    import sys, time
    from rigs.labgrid import PlaceLease
    with PlaceLease.from_file(sys.argv[1]) as lease:
        print("HELD", lease.place, flush=True)
        time.sleep(60)
""")


def test_released_on_sigterm(farm: Farm, tmp_path: Path) -> None:
    path = bench_file(tmp_path, farm)
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # bounded: the lease's own bounds (10 s, 5 s) end it
        if not line.startswith(f"HELD {farm.PLACE}"):
            proc.kill()
            out, err = proc.communicate(timeout=STOP_BOUND)
            pytest.fail(f"the holder did not hold the place: {line}{out}{err}")
        assert farm.place_holder()[0] != "None"
        os.kill(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=STOP_BOUND * 3)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(STOP_BOUND)
    assert proc.returncode != 0
    assert "KeyboardInterrupt: SIGTERM" in err
    assert farm.place_holder() == ("None", "None")


def test_busy_place_waits_then_fails_with_the_bound(farm: Farm, tmp_path: Path) -> None:
    farm.client("-p", farm.PLACE, "acquire", user="nightly-other")
    try:
        lease = PlaceLease.from_file(bench_file(tmp_path, farm, acquire_timeout=2))
        started = time.monotonic()
        with pytest.raises(NoResponse) as err, lease:
            pytest.fail("acquired a place someone else holds")
        waited = time.monotonic() - started
        assert 2.0 <= waited < 6.0, waited
        message = str(err.value)
        for part in (farm.coordinator, "bench=pos, terminal=t1", "within 2 s",
                     "labgrid.acquire_timeout", farm.PLACE, "acquired by", "nightly-other"):
            assert part in message, (part, message)
        acquired, reservation = farm.place_holder()
        assert acquired.endswith("/nightly-other") and reservation == "None"
        assert_rig_error_only(err.value)
        assert farm.reservations() == []  # ours was cancelled
    finally:
        farm.client("-p", farm.PLACE, "release", user="nightly-other")


def test_resources_held_by_another_place_are_named(farm: Farm, tmp_path: Path) -> None:
    farm.client("-p", farm.TWIN_PLACE, "acquire", user="nightly-other")
    try:
        lease = PlaceLease.from_file(bench_file(tmp_path, farm, place=farm.PLACE, tags=None))
        with pytest.raises(DeviceStateError) as err, lease:
            pytest.fail("acquired resources another place holds")
        message = str(err.value)
        for part in (farm.coordinator, f"acquire place '{farm.PLACE}'",
                     f"{farm.EXPORTER}/{farm.GROUP}/NetworkSerialPort/terminal by "
                     f"{farm.TWIN_PLACE}"):
            assert part in message, (part, message)
        assert_rig_error_only(err.value)
    finally:
        farm.client("-p", farm.TWIN_PLACE, "release", user="nightly-other")


def test_unknown_coordinator_fails_fast(tmp_path: Path, farm: Farm) -> None:
    nobody = f"{LOOPBACK}:{free_port()}"
    lease = PlaceLease.from_file(bench_file(tmp_path, farm, coordinator=nobody))
    started = time.monotonic()
    with pytest.raises(TransportError) as err, lease:
        pytest.fail("reached a coordinator that does not exist")
    assert time.monotonic() - started < 3.0
    assert nobody in str(err.value) and "labgrid-coordinator running" in str(err.value)
    assert_rig_error_only(err.value)
    assert lease.state is LeaseState.RELEASED


def test_unknown_tags_fail_fast_naming_the_places(farm: Farm, tmp_path: Path) -> None:
    lease = PlaceLease.from_file(bench_file(tmp_path, farm, tags={"bench": "atm"}))
    started = time.monotonic()
    with pytest.raises(ConfigError) as err, lease:
        pytest.fail("acquired a place without the tags")
    assert time.monotonic() - started < 3.0
    message = str(err.value)
    for part in (farm.coordinator, "has no place tagged bench=atm", "labgrid.tags",
                 f"{farm.PLACE} (bench=pos, terminal=t1; free)"):
        assert part in message, (part, message)
    assert_rig_error_only(err.value)


def test_exporter_down_fails_after_the_ready_bound_and_releases(farm: Farm,
                                                                tmp_path: Path) -> None:
    lease = PlaceLease.from_file(bench_file(tmp_path, farm, tags=dict(farm.GHOST_TAGS),
                                            ready_timeout=1))
    with pytest.raises(NoResponse) as err, lease:
        pytest.fail("a place whose exporter is down gave a bench")
    message = str(err.value)
    for part in (farm.coordinator, farm.GHOST_PLACE, "'terminal'", "terminal.port",
                 "exporter benchpc9 is not connected", "labgrid.ready_timeout"):
        assert part in message, (part, message)
        assert_rig_error_only(err.value)
    assert farm.place_holder(farm.GHOST_PLACE) == ("None", "None")


def test_resource_of_the_wrong_class_is_refused_and_released(farm: Farm, tmp_path: Path) -> None:
    lease = PlaceLease.from_file(bench_file(tmp_path, farm, resources={
        "terminal.port": "psu", "cards.probe": "probe", "power.resource": "psu"}))
    with pytest.raises(ConfigError) as err, lease:
        pytest.fail("a VISA instrument became a serial port")
    message = str(err.value)
    for part in (farm.coordinator, farm.PLACE, f"{farm.EXPORTER}/{farm.GROUP}/PyVISADevice/psu",
                 "cannot fill terminal.port", "NetworkSerialPort"):
        assert part in message, (part, message)
        assert_rig_error_only(err.value)


def test_bench_file_errors_come_before_the_coordinator(tmp_path: Path, farm: Farm) -> None:
    path = bench_file(tmp_path, farm)
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    document["terminal"]["port"] = "/dev/ttyUSB0"  # given twice: in the file and by the place
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"terminal.port is written in the file and "
                                          r"labgrid.resources.terminal.port"):
        read_farm_bench(path)


def test_unknown_place_fails_fast_naming_the_places(farm: Farm, tmp_path: Path) -> None:
    lease = PlaceLease.from_file(bench_file(tmp_path, farm, place="no-such-place", tags=None))
    with pytest.raises(ConfigError) as err, lease:
        pytest.fail("acquired a place that does not exist")
    message = str(err.value)
    for part in (farm.coordinator, "has no place 'no-such-place'", "labgrid.place",
                 f"{farm.PLACE} (bench=pos, terminal=t1; free)",
                 f"{farm.GHOST_PLACE} (bench=ghost; free)"):
        assert part in message, (part, message)
    assert_rig_error_only(err.value)
