"""carrier_loss without root: the rule, the core's carrier hook (when it is called, what its
failure does), the real hook's command against a stand-in ``ip``, and the select loop living
through ENETDOWN on a port whose link went down."""

from __future__ import annotations

import errno
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from protocols.faults import FaultKind, FaultSpec
from rigs.network.bridge import (
    DROP,
    LINK_KINDS,
    RULE_KINDS,
    BridgeCore,
    BridgeError,
    BridgeLoop,
    BridgeState,
    CarrierLoss,
    IpLink,
    LinkError,
    handle_request,
    listen_control,
)
from rigs.network.records import InjectorStats, carrier_from_json
from tests.network.test_control import PairPort, Rig, recv_or_none
from tests.network.test_rules import ARMED, H2T, T2H

ETH = bytes.fromhex("020000000002" "020000000001" "0800")
LOSS = FaultSpec.of(FaultKind.CARRIER_LOSS)
LOSS_JSON = {"kind": "carrier_loss", "params": {}}
WAIT_S = 2.0


class FakeLink:
    """A carrier hook that records its calls; ``fail`` makes the next calls raise as ``ip``
    would."""

    def __init__(self) -> None:
        self.calls: list[bool] = []
        self.fail = False

    def __call__(self, carrier: bool) -> None:
        if self.fail:
            way = "up" if carrier else "down"
            raise LinkError(f"r-term: `ip link set dev r-term {way}` failed with exit code 2: "
                            "RTNETLINK answers: Operation not permitted")
        self.calls.append(carrier)


def ask(core: BridgeCore, request: object, wall: float = 100.0) -> dict[str, Any]:
    answer = handle_request(core, request, wall)
    json.dumps(answer)
    return answer


def test_the_kind_has_no_parameters_and_its_rule_drops_every_frame_both_ways() -> None:
    assert dict(LOSS.params) == {} and LOSS.describe() == "carrier_loss()"
    assert LOSS.target.value == "network" and FaultKind.CARRIER_LOSS in LINK_KINDS
    rule = RULE_KINDS[FaultKind.CARRIER_LOSS](LOSS)
    assert isinstance(rule, CarrierLoss)
    for direction in (T2H, H2T):
        assert rule(direction, ETH + b"x", 0.0) == DROP
    with pytest.raises(Exception, match=r"carrier_loss has no parameter\(s\) \['direction'\]"):
        FaultSpec.of("carrier_loss", direction="both")


def test_the_link_goes_down_with_the_first_rule_and_up_with_the_last() -> None:
    link = FakeLink()
    core = BridgeCore(on_carrier=link)
    assert core.carrier and link.calls == []
    first = core.add_rule(LOSS, 1.0)
    assert link.calls == [False] and not core.carrier
    second = core.add_rule(LOSS, 2.0)
    pull = core.add_rule(FaultSpec.of("cable_pull"), 3.0)
    assert link.calls == [False]  # already down: not called again
    core.clear_rule(first.id, 4.0)
    assert link.calls == [False] and not core.carrier  # the other one still holds it down
    core.clear_rule(pull.id, 5.0)
    assert link.calls == [False]
    core.clear_rule(second.id, 6.0)
    assert link.calls == [False, True] and core.carrier
    assert core.handle(T2H, ETH + b"x", 7.0, 7.0) == [(T2H, ETH + b"x")]


def test_the_rule_drops_frames_while_active_and_clear_rules_sets_the_link_up_once() -> None:
    link = FakeLink()
    core = BridgeCore(on_carrier=link)
    core.add_rule(LOSS, 1.0)
    core.add_rule(LOSS, 1.0)
    assert core.handle(T2H, ETH + b"a", 1.0, 1.0) == []
    assert core.handle(H2T, ETH + b"b", 1.0, 1.0) == []
    assert (core.stats[T2H].frames_dropped, core.stats[H2T].frames_dropped) == (1, 1)
    assert len(core.clear_rules(2.0)) == 2
    assert link.calls == [False, True] and core.active() == []


def test_answers_say_whether_the_link_is_up() -> None:
    core = BridgeCore(on_carrier=FakeLink())
    assert ask(core, {"op": "ping"})["carrier"] is True
    added = ask(core, {"op": "add_rule", "rule": LOSS_JSON})
    assert added["ok"] and added["carrier"] is False
    assert added["active"] == [{"id": 1, "spec": LOSS_JSON}]
    assert carrier_from_json(ask(core, {"op": "ping"})) is False
    assert ask(core, {"op": "clear_rules"})["carrier"] is True


def test_a_failing_hook_refuses_the_add_naming_the_interface_and_the_error() -> None:
    link = FakeLink()
    link.fail = True
    core = BridgeCore(on_carrier=link)
    answer = ask(core, {"op": "add_rule", "rule": LOSS_JSON})
    assert answer["ok"] is False and answer["state"] == "RUNNING"
    assert answer["error"] == (
        "add_rule: carrier_loss(): setting the terminal's link down failed: r-term: "
        "`ip link set dev r-term down` failed with exit code 2: RTNETLINK answers: Operation "
        "not permitted")
    assert core.ledger() == [] and answer["active"] == [] and answer["carrier"] is True
    link.fail = False
    assert ask(core, {"op": "add_rule", "rule": LOSS_JSON})["id"] == 1  # ids are not spent


def test_a_failing_hook_on_clear_keeps_the_rule_active_and_the_link_down() -> None:
    link = FakeLink()
    core = BridgeCore(on_carrier=link)
    rule_id = ask(core, {"op": "add_rule", "rule": LOSS_JSON})["id"]
    other = ask(core, {"op": "add_rule", "rule": {"kind": "cable_pull"}})["id"]
    link.fail = True
    for request, op in (({"op": "clear_rule", "id": rule_id}, f"clear_rule: rule #{rule_id} "
                                                               "carrier_loss()"),
                        ({"op": "clear_rules"}, "clear_rules")):
        answer = ask(core, request)
        assert answer["ok"] is False and answer["carrier"] is False
        assert answer["error"].startswith(f"{op}: setting the terminal's link up failed: r-term: "
                                          "`ip link set dev r-term up` failed with exit code 2")
        assert [a["id"] for a in answer["active"]] == [rule_id, other]  # nothing cleared
    with pytest.raises(BridgeError, match="bridge shutdown: setting the terminal's link up"):
        core.close()
    link.fail = False
    assert [r["id"] for r in ask(core, {"op": "clear_rules"})["cleared"]] == [rule_id, other]
    assert link.calls == [False, True]


def test_closing_the_core_sets_the_link_up() -> None:
    link = FakeLink()
    core = BridgeCore(on_carrier=link)
    core.add_rule(LOSS, 1.0)
    core.close()
    assert link.calls == [False, True] and core.carrier
    core.close()
    assert link.calls == [False, True]  # nothing to do the second time


def test_a_rule_that_becomes_a_carrier_loss_takes_the_link_down() -> None:
    def becomes_loss(spec: FaultSpec) -> Any:
        from rigs.network.bridge import Verdict

        return lambda direction, frame, now: Verdict.drop_then(LOSS)

    link = FakeLink()
    core = BridgeCore({**RULE_KINDS, FaultKind.PULL_ON_REQUEST: becomes_loss}, on_carrier=link)
    entry = core.add_rule(ARMED, 1.0)
    assert link.calls == []
    assert core.handle(T2H, ETH + b"x", 1.0, 1.0) == []
    assert entry.current == LOSS and link.calls == [False] and core.state is BridgeState.RUNNING
    core.clear_rule(entry.id, 2.0)
    assert link.calls == [False, True]


# --- the real hook, with a stand-in `ip` ----------------------------------------------------------


def stand_in_ip(folder: Path, code: int = 0, stderr: str = "") -> str:
    script = folder / "ip"
    script.write_text(f'#!/bin/sh\necho "$@" >> {folder / "argv"}\n'
                      f'[ -n "{stderr}" ] && echo "{stderr}" >&2\nexit {code}\n')
    script.chmod(0o755)
    return str(script)


def test_ip_link_runs_ip_link_set_and_reports_a_failure_with_its_stderr(tmp_path: Path) -> None:
    link = IpLink("r-term", ip=stand_in_ip(tmp_path))
    link(False)
    link(True)
    assert (tmp_path / "argv").read_text().splitlines() == [
        "link set dev r-term down", "link set dev r-term up"]
    failing = IpLink("r-term", ip=stand_in_ip(tmp_path, 2, "Cannot find device r-term"))
    with pytest.raises(LinkError, match=r"^r-term: `\S+/ip link set dev r-term down` failed with "
                                        r"exit code 2: Cannot find device r-term$"):
        failing(False)
    with pytest.raises(LinkError, match=r"r-term: `/nonexistent/ip link set dev r-term up` "
                                        r"cannot run"):
        IpLink("r-term", ip="/nonexistent/ip")(True)


def test_ip_link_is_bounded(tmp_path: Path) -> None:
    script = tmp_path / "slow-ip"
    script.write_text("#!/bin/sh\nexec sleep 5\n")
    script.chmod(0o755)
    with pytest.raises(LinkError, match=r"did not finish within 0.2 s"):
        IpLink("r-term", ip=str(script), timeout_s=0.2)(False)


def test_ip_link_reads_the_interface_s_up_flag(tmp_path: Path) -> None:
    for name, flags in (("up0", "0x1003"), ("down0", "0x1002")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "flags").write_text(flags + "\n")
    assert IpLink("up0", sysfs=tmp_path).is_up() is True
    assert IpLink("down0", sysfs=tmp_path).is_up() is False
    with pytest.raises(LinkError, match=r"nope0: cannot read its flags from .*nope0/flags"):
        IpLink("nope0", sysfs=tmp_path).is_up()


# --- the loop: ENETDOWN on a port whose link went down ---------------------------------------------


class LinkDropPort(PairPort):
    """A socketpair port whose next receive fails with *errno_* while ``down`` is set (as a
    packet socket reports once when its interface goes down); the frame read is lost."""

    def __init__(self, name: str, sock: socket.socket, errno_: int) -> None:
        super().__init__(name, sock)
        self.errno = errno_
        self.down = threading.Event()

    def recv_frame(self) -> bytes | None:
        frame = super().recv_frame()
        if self.down.is_set():
            self.down.clear()
            raise OSError(self.errno, "Network is down")
        return frame


@pytest.fixture(params=[errno.ENETDOWN, errno.ENXIO], ids=["ENETDOWN", "ENXIO"])
def flaky(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Rig, LinkDropPort]]:
    t_bridge, t_wire = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    h_bridge, h_wire = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    port = LinkDropPort("t", t_bridge, request.param)
    listener = listen_control(tmp_path / "ctl")
    loop = BridgeLoop(BridgeCore(), port, PairPort("h", h_bridge), listener)
    worker = threading.Thread(target=loop.run, daemon=True)
    worker.start()
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        client.settimeout(WAIT_S)
        client.connect(str(tmp_path / "ctl"))
        yield Rig(t_wire, h_wire, client), port
    finally:
        loop.stop()
        worker.join(WAIT_S)
        assert not worker.is_alive(), f"bridge loop did not stop within {WAIT_S} s"
        loop.close()
        for s in (client, listener, t_bridge, t_wire, h_bridge, h_wire):
            s.close()


def test_a_link_down_receive_is_counted_and_frames_flow_again(
        flaky: tuple[Rig, LinkDropPort]) -> None:
    rig, port = flaky
    port.down.set()
    rig.terminal_wire.send(ETH + b"lost")
    answer = rig.request({"op": "stats"})
    assert answer["state"] == "RUNNING" and answer["failure"] is None
    stats = InjectorStats.from_json(answer)
    assert stats.to_host.recv_link_down == 1 and stats.to_terminal.recv_link_down == 0
    assert recv_or_none(rig.host_wire, 0.05) is None
    rig.terminal_wire.send(ETH + b"back")  # the port is still registered: the link is up again
    assert recv_or_none(rig.host_wire, WAIT_S) == ETH + b"back"
    rig.host_wire.send(ETH + b"reply")
    assert recv_or_none(rig.terminal_wire, WAIT_S) == ETH + b"reply"
    assert rig.request({"op": "ping"})["state"] == "RUNNING"


def test_any_other_receive_error_still_fails_the_bridge(tmp_path: Path) -> None:
    t_bridge, t_wire = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    h_bridge, h_wire = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    port = LinkDropPort("t", t_bridge, errno.EBADF)
    listener = listen_control(tmp_path / "ctl")
    core = BridgeCore()
    loop = BridgeLoop(core, port, PairPort("h", h_bridge), listener)
    try:
        port.down.set()
        t_wire.send(ETH + b"x")
        loop.run_once()
        assert core.state is BridgeState.FAILED
        assert core.failure == "receiving on t failed: [Errno 9] Network is down"
    finally:
        loop.close()
        for s in (listener, t_bridge, t_wire, h_bridge, h_wire):
            s.close()


def test_the_stats_record_reads_the_new_counter() -> None:
    core = BridgeCore()
    core.port_link_down(T2H, "r-term", OSError(errno.ENETDOWN, "Network is down"))
    stats = InjectorStats.from_json(core.snapshot())
    assert stats.to_host.recv_link_down == 1 and stats.to_terminal.recv_link_down == 0
