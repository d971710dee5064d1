"""sim.netns: the virtual bench topology (root only; unique names, always destroyed)."""

from __future__ import annotations

import json
import os
import select
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from protocols.errors import SimError
from sim import netns
from sim.netns import Topology
from tests.network.bench_helpers import (
    connect_fails,
    exchange,
    listen_in_host_ns,
    needs_root,
    unique_topology,
)


def ip_json(*args: str) -> list[dict[str, Any]]:
    done = subprocess.run(["ip", "-j", *args], capture_output=True, text=True, timeout=10,
                          check=True)
    result = json.loads(done.stdout or "[]")
    assert isinstance(result, list)
    return result


def test_default_topology_is_the_contract_one() -> None:
    t = Topology.default()
    assert (t.dut_ns, t.acq_ns, t.rig_ns) == ("dut", "acq", "rig")
    assert (t.term_if, t.rig_term_if, t.host_if, t.rig_host_if) == (
        "term0", "r-term", "host0", "r-host")
    assert (t.terminal_ip, t.host_ip, t.prefix_len) == ("198.18.0.10", "198.18.0.20", 24)


def test_test_topologies_never_use_the_integration_names() -> None:
    t = Topology.with_prefix("nt1234a")
    assert t.namespaces == ("nt1234adut", "nt1234aacq", "nt1234arig")
    assert max(len(name) for _, name in t.links) <= 15
    assert t.bridge_if == "nt1234abr" and Topology.default().bridge_if == "r-br"
    with pytest.raises(SimError, match="would give the integration run's namespace names"):
        Topology.with_prefix("")
    with pytest.raises(SimError, match="term_if='a-very-long-prefixt0' is not a usable"):
        Topology.with_prefix("a-very-long-prefix")


def test_without_root_every_operation_says_root_is_needed() -> None:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: drop privileges, try, report, exit without running pytest teardown
        message = "no error"
        try:
            os.setegid(65534)
            os.seteuid(65534)
            netns.create(unique_topology())
        except SimError as exc:
            message = str(exc)
        except BaseException as exc:  # noqa: BLE001 - report anything to the parent
            message = repr(exc)
        os.write(write_end, message.encode())
        os._exit(0)
    os.close(write_end)
    try:
        _, status = os.waitpid(pid, 0)
        message = os.read(read_end, 4096).decode()
    finally:
        os.close(read_end)
    assert status == 0
    assert message == ("netns: create() needs root to manage network namespaces; "
                       "running as euid 65534")


@pytest.fixture
def topo() -> Iterator[Topology]:
    t = unique_topology()
    try:
        yield t
    finally:
        if os.geteuid() == 0:
            netns.destroy(t)


@needs_root
def test_create_builds_the_contract_shape_and_destroy_removes_it(topo: Topology) -> None:
    assert not netns.exists(topo) and netns.leftovers(topo) == []
    netns.create(topo)
    assert netns.exists(topo)
    dut = {a["ifname"]: a for a in ip_json("-n", topo.dut_ns, "addr")}
    assert dut["lo"]["operstate"] == "UNKNOWN"  # lo is up (loopback reports UNKNOWN)
    assert "UP" in dut["lo"]["flags"]
    addrs = [(i["local"], i["prefixlen"]) for i in dut[topo.term_if]["addr_info"]
             if i["family"] == "inet"]
    assert addrs == [(topo.terminal_ip, 24)]
    rig = {a["ifname"]: a for a in ip_json("-n", topo.rig_ns, "addr")}
    assert set(rig) == {"lo", topo.rig_term_if, topo.rig_host_if}
    for end in (topo.rig_term_if, topo.rig_host_if):
        assert rig[end]["addr_info"] == []  # no address at all, not even IPv6 link-local
    assert ip_json("-n", topo.rig_ns, "link", "show", "type", "bridge") == []
    features = subprocess.run(["ip", "netns", "exec", topo.acq_ns, "ethtool", "-k",
                               topo.host_if], capture_output=True, text=True, timeout=10,
                              check=True).stdout
    assert "tx-checksumming: off" in features
    assert ip_json("link", "show", "dev", "lo") and not any(
        link["ifname"] in (topo.term_if, topo.host_if) for link in ip_json("link"))

    removed = netns.destroy(topo)
    assert removed == [f"deleted netns {ns}" for ns in topo.namespaces]
    assert netns.leftovers(topo) == [] and not netns.exists(topo)


@needs_root
def test_create_over_leftovers_cleans_first_and_warns(topo: Topology,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    subprocess.run(["ip", "netns", "add", topo.rig_ns], check=True, timeout=10)
    assert netns.leftovers(topo) == [f"netns {topo.rig_ns}"]
    netns.create(topo)
    assert netns.exists(topo)
    assert "leftovers of an earlier bench found (netns " in caplog.text


@needs_root
def test_destroy_kills_what_runs_inside(topo: Topology) -> None:
    netns.create(topo)
    sleeper = subprocess.Popen(["ip", "netns", "exec", topo.dut_ns, "sh", "-c",
                                "echo in; exec sleep 60"], stdout=subprocess.PIPE)
    try:
        assert sleeper.stdout is not None
        readable, _, _ = select.select([sleeper.stdout], [], [], 5.0)
        assert readable and sleeper.stdout.readline() == b"in\n", "not started within 5 s"
        removed = netns.destroy(topo)
        assert f"killed pid {sleeper.pid} in netns {topo.dut_ns}" in removed
        assert sleeper.wait(5) == -9
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait(5)


@needs_root
def test_partial_failure_removes_what_was_made_and_names_the_command(topo: Topology) -> None:
    broken = Topology(**{**topo.__dict__, "host_ip": "198.18.0.999"})
    with pytest.raises(SimError, match=r"`ip -n \S+acq addr add 198.18.0.999/24 dev \S+h0` failed "
                                       r"with exit code \d+: .*198.18.0.999"):
        netns.create(broken)
    assert netns.leftovers(broken) == []


@needs_root
def test_a_kernel_bridge_cables_the_terminal_straight_to_the_host(topo: Topology) -> None:
    netns.create(topo)  # first without: still no kernel path
    assert not netns.has_kernel_bridge(topo)
    server = listen_in_host_ns(topo)
    try:
        failed, _ = connect_fails(topo, 0.5)
        assert failed, "terminal reached the host without bridge nor injector: a kernel path"
    finally:
        server.close()

    netns.create(topo, kernel_bridge=True)  # over the leftovers: rebuilt with the bridge
    assert netns.exists(topo) and netns.has_kernel_bridge(topo)
    (bridge,) = ip_json("-n", topo.rig_ns, "-d", "link", "show", "type", "bridge")
    assert bridge["ifname"] == topo.bridge_if and "UP" in bridge["flags"]
    info = bridge["linkinfo"]["info_data"]
    assert info["stp_state"] == 0 and info["forward_delay"] == 0
    rig = {a["ifname"]: a for a in ip_json("-n", topo.rig_ns, "addr")}
    assert rig[topo.bridge_if]["addr_info"] == []  # silent: not even an IPv6 link-local
    for end in (topo.rig_term_if, topo.rig_host_if):
        assert rig[end]["master"] == topo.bridge_if and rig[end]["addr_info"] == []
    server = listen_in_host_ns(topo)
    try:  # no injector runs: the kernel forwards
        assert exchange(topo, server, b"\x00\x05hello", 2.0) == b"\x00\x05hello"
    finally:
        server.close()
    removed = netns.destroy(topo)
    assert removed == [f"deleted netns {ns}" for ns in topo.namespaces]
    assert netns.leftovers(topo) == []
