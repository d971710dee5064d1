"""The bench supervisor's main loop drops an event whose file an earlier handler of the same
batch unregistered: the terminal losing power (its harness socket closed) while the harness had
bytes waiting crashed the whole virtual bench once (a CI run of the power-cut test)."""

from __future__ import annotations

import socket
from pathlib import Path

from sim.bench import VirtualBench


def test_a_handler_unregistering_a_later_one_in_the_same_batch_drops_its_event(
        tmp_path: Path) -> None:
    bench = VirtualBench(tmp_path, tmp_path / "bench.yaml")
    a_ours, a_theirs = socket.socketpair()
    b_ours, b_theirs = socket.socketpair()
    ran: list[str] = []

    def power_lost() -> None:  # as _power_down does with the harness socket
        ran.append("a")
        bench.sel.unregister(b_ours)
        b_ours.close()

    def harness() -> None:
        raise AssertionError("a handler ran for a socket unregistered earlier in the batch")

    try:
        bench.sel.register(a_ours, 1, power_lost)
        bench.sel.register(b_ours, 1, harness)
        a_theirs.send(b"x")
        b_theirs.send(b"y")
        events = bench.sel.select(timeout=1.0)
        assert len(events) == 2
        for key, _ in sorted(events, key=lambda e: e[0].data is harness):  # a's first
            if bench._registered(key):
                key.data()
        assert ran == ["a"]
    finally:
        for s in (a_ours, a_theirs, b_theirs):
            s.close()
        bench.sel.close()
