"""Rules are pure functions; the core applies them, counts, defers, captures, and fails loudly."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from scapy.utils import rdpcap

from rigs.network.bridge import (
    DROP,
    FORWARD,
    MODE_RULES,
    Action,
    BridgeCore,
    BridgeError,
    BridgeState,
    Direction,
    Mode,
    Verdict,
    cable_pulled_rule,
    pass_rule,
)

T2H, H2T = Direction.TO_HOST, Direction.TO_TERMINAL
ETH = bytes.fromhex("020000000002" "020000000001" "0800")
FRAME = ETH + b"\x45" + bytes(19) + b"payload"
OTHER = ETH + b"\x45" + bytes(19) + b"reply"


def test_pass_forwards_and_cable_pulled_drops_in_both_directions() -> None:
    for direction in Direction:
        assert pass_rule(direction, FRAME, 0.0) == FORWARD
        assert cable_pulled_rule(direction, FRAME, 0.0) == DROP
    assert MODE_RULES[Mode.PASS] is pass_rule
    assert MODE_RULES[Mode.CABLE_PULLED] is cable_pulled_rule
    with pytest.raises(TypeError):
        MODE_RULES[Mode.PASS] = cable_pulled_rule  # type: ignore[index]


def test_core_pass_forwards_exact_bytes_and_counts_per_direction() -> None:
    core = BridgeCore()
    assert core.handle(T2H, FRAME, 1.0, 1000.0) == [(T2H, FRAME)]
    assert core.handle(H2T, OTHER, 1.0, 1000.0) == [(H2T, OTHER)]
    snap = core.snapshot()["directions"]
    assert snap["terminal_to_host"]["frames_forwarded"] == 1
    assert snap["terminal_to_host"]["bytes_forwarded"] == len(FRAME)
    assert snap["host_to_terminal"]["bytes_forwarded"] == len(OTHER)
    assert snap["host_to_terminal"]["frames_dropped"] == 0


def test_core_cable_pulled_drops_and_counts_then_restores() -> None:
    core = BridgeCore()
    core.set_mode(Mode.CABLE_PULLED)
    assert core.handle(T2H, FRAME, 1.0, 1000.0) == []
    assert core.handle(H2T, OTHER, 1.0, 1000.0) == []
    core.set_mode(Mode.PASS)
    assert core.handle(T2H, FRAME, 2.0, 1001.0) == [(T2H, FRAME)]
    s = core.stats
    assert (s[T2H].frames_dropped, s[T2H].bytes_dropped) == (1, len(FRAME))
    assert (s[H2T].frames_dropped, s[H2T].bytes_dropped) == (1, len(OTHER))
    assert s[T2H].frames_forwarded == 1 and s[H2T].frames_forwarded == 0


def test_replace_and_defer_verdicts_are_applied() -> None:
    corrupted = FRAME[:-1] + b"X"

    def corrupt_last_byte(direction: Direction, frame: bytes, now: float) -> Verdict:
        return Verdict.replace(frame[:-1] + b"X") if direction is T2H else FORWARD

    def delay_100ms(direction: Direction, frame: bytes, now: float) -> Verdict:
        return Verdict.defer(now + 0.1)

    core = BridgeCore({Mode.PASS: corrupt_last_byte, Mode.CABLE_PULLED: delay_100ms})
    assert core.handle(T2H, FRAME, 0.0, 0.0) == [(T2H, corrupted)]
    assert core.handle(H2T, OTHER, 0.0, 0.0) == [(H2T, OTHER)]
    assert core.stats[T2H].frames_replaced == 1

    core.set_mode(Mode.CABLE_PULLED)
    assert core.handle(T2H, FRAME, 10.0, 0.0) == []
    assert core.handle(H2T, OTHER, 10.05, 0.0) == []
    assert core.next_deadline() == pytest.approx(10.1)
    assert core.release(10.09) == []
    assert core.release(10.1) == [(T2H, FRAME)]
    assert core.release(10.2) == [(H2T, OTHER)]
    assert core.next_deadline() is None
    assert core.stats[T2H].frames_deferred == 1


def test_a_rule_that_raises_marks_the_core_failed_and_drops_loudly() -> None:
    pan_frame = ETH + b"4761739001010119"  # payload must never reach the failure text

    def broken(direction: Direction, frame: bytes, now: float) -> Verdict:
        raise KeyError("oops")

    core = BridgeCore({Mode.PASS: broken, Mode.CABLE_PULLED: cable_pulled_rule})
    assert core.handle(T2H, pan_frame, 0.0, 0.0) == []
    assert core.state is BridgeState.FAILED
    assert core.failure is not None
    assert "rule for mode PASS raised KeyError" in core.failure
    assert "4761739001010119" not in core.failure
    assert "34 37 36 31" not in core.failure  # nor its hex
    # FAILED is sticky: even a now-harmless mode drops, so nothing looks like it works
    core.set_mode(Mode.CABLE_PULLED)
    core.set_mode(Mode.PASS)
    assert core.handle(H2T, OTHER, 1.0, 0.0) == []
    assert core.state is BridgeState.FAILED
    assert core.stats[H2T].frames_dropped == 1


def test_a_malformed_verdict_is_a_failure_not_a_fault() -> None:
    core = BridgeCore({Mode.PASS: lambda d, f, n: Verdict.replace(b"short"),
                       Mode.CABLE_PULLED: cable_pulled_rule})
    assert core.handle(T2H, FRAME, 0.0, 0.0) == []
    assert core.state is BridgeState.FAILED
    assert "REPLACE verdict carries 5 bytes" in (core.failure or "")


def test_capture_writes_every_frame_seen_forwarded_or_dropped(tmp_path: Path) -> None:
    core = BridgeCore()
    path = tmp_path / "cap.pcap"
    core.start_capture(path)
    core.handle(T2H, FRAME, 0.0, 1700000000.25)
    core.set_mode(Mode.CABLE_PULLED)
    core.handle(H2T, OTHER, 0.0, 1700000001.5)
    assert core.stop_capture() == (path, 2)
    packets = rdpcap(str(path))
    assert [bytes(p) for p in packets] == [FRAME, OTHER]
    assert float(packets[0].time) == pytest.approx(1700000000.25)
    header = path.read_bytes()[:24]
    assert struct.unpack("<IHHiIII", header) == (0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)


def test_capture_refusals_name_the_problem(tmp_path: Path) -> None:
    core = BridgeCore()
    with pytest.raises(BridgeError, match="no capture is running"):
        core.stop_capture()
    with pytest.raises(BridgeError, match="must be absolute"):
        core.start_capture(Path("relative.pcap"))
    with pytest.raises(BridgeError, match="cannot write"):
        core.start_capture(tmp_path / "missing-dir" / "x.pcap")
    core.start_capture(tmp_path / "a.pcap")
    with pytest.raises(BridgeError, match="is running; stop it first"):
        core.start_capture(tmp_path / "b.pcap")
    core.close()
    assert core.capture is None


def test_verdict_helpers() -> None:
    assert Verdict.replace(bytearray(b"abc")) == Verdict(Action.REPLACE, data=b"abc")
    assert Verdict.defer(2.5).until == 2.5
