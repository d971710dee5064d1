"""Root only: card faults carried out by the real relay (private pcscd + vpcd card process +
PcscCardBank + SimProbe on a pty), each reaching the terminal's chip kernel."""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable

import pytest

from protocols.apdu import INS_READ_RECORD
from protocols.faults import FaultKind, FaultSpec
from protocols.probe import StatusFlag
from rigs.cardfaults import CardMessage, CardVerdict
from rigs.cards import PcscCardBank
from rigs.errors import InstrumentError
from rigs.events import EventStream, Source, matching
from sim.card.emv import load_profile
from sim.terminal.emv import CardError, CardRead, run_chip_transaction
from tests.cards.conftest import GOOD, PcscBench, needs_root, open_relay
from tests.cards.probe_host import HarnessSlot, PtyProbeHost

pytestmark = needs_root

PAN = load_profile(GOOD).pan


class TimedSlot(HarnessSlot):
    """The kernel's slot, keeping what the kernel sent and got, and how long each took."""

    def __init__(self, host: PtyProbeHost) -> None:
        super().__init__(host)
        self.exchanges: list[tuple[bytes, bytes | str, float]] = []   # (C-APDU, R-APDU|error, s)
        self.atr_s: float | None = None

    def power_on(self, timeout: float) -> bytes:
        start = time.monotonic()
        try:
            return super().power_on(timeout)
        finally:
            self.atr_s = time.monotonic() - start

    def transmit(self, capdu: bytes, timeout: float) -> bytes:
        start = time.monotonic()
        try:
            rapdu = super().transmit(capdu, timeout)
        except CardError as exc:
            self.exchanges.append((capdu, exc.reason, time.monotonic() - start))
            raise
        self.exchanges.append((capdu, rapdu, time.monotonic() - start))
        return rapdu

    def responses_to(self, ins: int) -> list[bytes]:
        return [r for c, r, _ in self.exchanges if c[1] == ins and isinstance(r, bytes)]


def _run(slot: HarnessSlot) -> CardRead:
    return run_chip_transaction(
        slot, amount_minor=12_345, txn_date=datetime.date(2025, 6, 30),
        unpredictable_number=bytes.fromhex("A1B2C3D4"), timeout=2.0)


def _insert_good(bank: PcscCardBank, host: PtyProbeHost) -> EventStream:
    stream = EventStream()
    bank.event_sink = stream
    assert host.expect("card", 1.0) == {"t": "card", "present": False}   # at connect
    bank.insert("good")
    assert host.expect("card", 1.0) == {"t": "card", "present": True}
    return stream


def _trips(stream: EventStream, kind: FaultKind) -> list[str]:
    return [e.detail for e in stream.events(matching(source=Source.CARDS, kind="fault",
                                                     name=kind.value))]


def _no_card_data(bank: PcscCardBank, stream: EventStream) -> None:
    for text in (bank.trace_text(), stream.timeline(), bank.faults_text()):
        assert PAN not in text and PAN not in text.replace(" ", "")


def test_mute_kernel_gets_no_atr_and_the_reader_is_not_touched(
        relay: tuple[PcscCardBank, PtyProbeHost]) -> None:
    bank, host = relay
    stream = _insert_good(bank, host)
    rule = bank.apply(FaultSpec.of(FaultKind.CARD_MUTE))
    assert not bank.is_nominal()
    with pytest.raises(CardError) as err:
        _run(HarnessSlot(host))
    assert err.value.reason == "mute"
    text = bank.trace_text()
    assert "fault #1 card_mute: power on answered mute (no ATR)" in text
    assert "card fault, no ATR → mute" in text and "PC/SC" not in text   # pcscd not asked
    assert not stream.events(matching(source=Source.CARDS, kind="atr", name="ATR"))
    assert _trips(stream, FaultKind.CARD_MUTE) == ["fault #1 card_mute: power on answered mute "
                                                   "(no ATR)"]
    (record,) = bank.fault_ledger()
    assert record.id == rule and record.active and len(record.fired) == 1
    assert record.fired[0] == pytest.approx(time.time(), abs=5.0)   # wall time

    bank.clear(rule)                          # the same card answers again
    read = _run(HarnessSlot(host))
    assert read.cryptogram_type == "ARQC"
    assert not bank.fault_ledger()[0].active
    bank.restore_nominal()
    assert bank.is_nominal()


def test_card_pulled_at_generate_ac(relay: tuple[PcscCardBank, PtyProbeHost]) -> None:
    bank, host = relay
    stream = _insert_good(bank, host)
    bank.apply(FaultSpec.of(FaultKind.CARD_PULLED, ins="GENERATE AC", nth=1))
    slot = TimedSlot(host)
    with pytest.raises(CardError) as err:
        _run(slot)
    assert err.value.reason == "absent"
    assert slot.exchanges[-1][0][1] == 0xAE and slot.exchanges[-1][1] == "absent"
    assert host.expect("card", 2.0) == {"t": "card", "present": False}   # card-detect opened
    assert bank.inserted is None
    bank.restore_nominal()                     # waits for the REMOVE; nothing left to do
    assert not bank.probe_flags & StatusFlag.CARD_PRESENT

    text = bank.trace_text()
    assert ("fault #1 card_pulled: the card left the slot at GENERATE AC #1 (answered absent, "
            "card-detect opens)") in text
    assert "card fault: good left the slot → absent" in text
    assert "card pulled by a fault: REMOVE to the probe" in text
    commands = stream.events(matching(source=Source.CARDS, kind="c-apdu"))
    assert commands[-1].name == "GENERATE AC"
    (trip,) = stream.events(matching(source=Source.CARDS, kind="fault", name="card_pulled"))
    assert trip.seq > commands[-1].seq and trip.data["rule"] == 1
    (record,) = bank.fault_ledger()
    assert record.fired == [trip.t] and not record.active
    _no_card_data(bank, stream)

    bank.insert("good")                        # the card goes back in and works
    assert host.expect("card", 1.0) == {"t": "card", "present": True}
    assert _run(HarnessSlot(host)).cryptogram_type == "ARQC"


def test_card_pulled_at_the_second_read_record(relay: tuple[PcscCardBank, PtyProbeHost]
                                               ) -> None:
    bank, host = relay
    _insert_good(bank, host)
    bank.apply(FaultSpec.of(FaultKind.CARD_PULLED, ins="READ RECORD", nth=2))
    slot = TimedSlot(host)
    with pytest.raises(CardError) as err:
        _run(slot)
    assert err.value.reason == "absent"
    reads = [(c[1], r) for c, r, _ in slot.exchanges if c[1] == INS_READ_RECORD]
    assert [r for _, r in reads][1] == "absent" and isinstance(reads[0][1], bytes)
    assert host.expect("card", 2.0) == {"t": "card", "present": False}


def test_status_word_6985_to_generate_ac(relay: tuple[PcscCardBank, PtyProbeHost]) -> None:
    bank, host = relay
    stream = _insert_good(bank, host)
    bank.apply(FaultSpec.of(FaultKind.CARD_STATUS_WORD, ins="GENERATE AC", sw="6985"))
    slot = TimedSlot(host)
    with pytest.raises(CardError) as err:
        _run(slot)
    assert err.value.reason == "sw 6985"
    assert slot.responses_to(0xAE) == [bytes.fromhex("6985")]     # the SW alone
    (trip,) = _trips(stream, FaultKind.CARD_STATUS_WORD)
    assert trip.startswith("fault #1 card_status_word: GENERATE AC answered 6985 instead of "
                           "9000, ")
    text = bank.trace_text()
    assert trip in text and "(card fault: the card answered 9000 with" in text
    last_rapdu = [e for e in bank.trace() if e.kind == "R-APDU"][-1]
    assert last_rapdu.data == bytes.fromhex("6985")
    r_events = stream.events(matching(source=Source.CARDS, kind="r-apdu"))
    assert r_events[-1].name == "6985" and r_events[-1].detail.startswith("to GENERATE AC")
    _no_card_data(bank, stream)


def test_corrupt_read_record_data(relay: tuple[PcscCardBank, PtyProbeHost]) -> None:
    bank, host = relay
    stream = _insert_good(bank, host)
    clean = TimedSlot(host)
    _run(clean)
    bank.apply(FaultSpec.of(FaultKind.CARD_CORRUPT, ins="READ RECORD", offset=2, times=1))
    damaged = TimedSlot(host)
    with pytest.raises(CardError) as err:     # the kernel meets the damaged record
        _run(damaged)
    before, after = clean.responses_to(INS_READ_RECORD), damaged.responses_to(INS_READ_RECORD)
    assert len(after) >= 1
    diffs = [i for i, (a, b) in enumerate(zip(before[0], after[0], strict=True)) if a != b]
    assert diffs == [2] and after[0][2] == before[0][2] ^ 0xFF    # one data byte, SW kept
    assert after[0][-2:] == bytes.fromhex("9000")
    assert after[1:] == before[1:len(after)]                      # times=1
    assert err.value.reason == "unsupported"
    (trip,) = _trips(stream, FaultKind.CARD_CORRUPT)
    assert trip == (f"fault #1 card_corrupt: READ RECORD response data byte 2 of "
                    f"{len(before[0]) - 2} flipped (XOR FF), SW 9000 kept")
    _no_card_data(bank, stream)


def test_slow_answers_come_100_ms_late(relay: tuple[PcscCardBank, PtyProbeHost]) -> None:
    bank, host = relay
    stream = _insert_good(bank, host)
    bank.apply(FaultSpec.of(FaultKind.CARD_SLOW, ms=100.0))
    slot = TimedSlot(host)
    read = _run(slot)
    assert read.cryptogram_type == "ARQC"
    assert slot.atr_s is not None and slot.atr_s >= 0.1
    assert len(slot.exchanges) >= 6
    assert all(elapsed >= 0.1 for _, _, elapsed in slot.exchanges), slot.exchanges
    trips = _trips(stream, FaultKind.CARD_SLOW)
    assert trips[0] == "fault #1 card_slow: ATR held 100 ms"
    assert len(trips) == len(slot.exchanges) + 1
    # The trace and the stream date each answer when it went to the terminal.
    entries = [e for e in bank.trace() if e.kind in ("C-APDU", "R-APDU")]
    pairs = list(zip(entries[::2], entries[1::2], strict=True))
    assert all(c.kind == "C-APDU" and r.kind == "R-APDU" and r.t - c.t >= 0.1
               for c, r in pairs)


def test_slow_past_the_probe_retry_answers_each_command_once(
        relay: tuple[PcscCardBank, PtyProbeHost]) -> None:
    """700 ms > the probe's 0.5 s retry: each request is re-sent while its answer is held; the
    card is asked once and the probe gets one answer."""
    bank, host = relay
    _insert_good(bank, host)
    bank.apply(FaultSpec.of(FaultKind.CARD_SLOW, ms=700.0))
    slot = TimedSlot(host)
    read = _run(slot)
    assert read.cryptogram_type == "ARQC"
    sent = [c for c, _, _ in slot.exchanges]
    trace = bank.trace()
    assert [e.data for e in trace if e.kind == "C-APDU"] == sent          # one per command
    assert sum(e.kind == "R-APDU" for e in trace) == len(sent)
    assert sum(e.kind == "ATR" for e in trace) == 1
    retries = [e.note for e in trace if "while its answer is held" in e.note]
    assert len(retries) >= len(sent) + 1      # POWER_ON and every CAPDU were re-sent once
    assert all(elapsed >= 0.7 for _, _, elapsed in slot.exchanges)
    assert not host.probe.link_errors and bank.relay_error is None


def test_slow_past_the_probe_bound_is_mute_and_the_late_answer_harms_nothing(
        relay: tuple[PcscCardBank, PtyProbeHost]) -> None:
    """2 s > the probe's bound (3 tries, 1.5 s): the terminal gets mute; the ATR sent late
    carries a stale SEQ, the probe ignores it, and the relay stays healthy."""
    bank, host = relay
    stream = _insert_good(bank, host)
    rule = bank.apply(FaultSpec.of(FaultKind.CARD_SLOW, ms=2000.0))
    slot = TimedSlot(host)
    with pytest.raises(CardError) as err:
        _run(slot)
    assert err.value.reason == "mute" and slot.atr_s is not None and slot.atr_s >= 1.5
    bank.clear(rule)
    assert _run(HarnessSlot(host)).cryptogram_type == "ARQC"
    stream.wait_for(matching(source=Source.CARDS, kind="atr", name="ATR"), 2.0,
                    since=stream.mark(), what="the late ATR")
    trace = bank.trace()
    (held,) = [e.t for e in trace if e.note == "fault #1 card_slow: ATR held 2000 ms"]
    atrs = [e.t - held for e in trace if e.kind == "ATR"]
    assert len(atrs) == 2 and max(atrs) >= 2.0      # the late one is traced when it was sent
    assert bank.relay_error is None and not host.probe.link_errors
    bank.restore_nominal()
    assert bank.is_nominal()


def test_a_rule_raising_kills_the_relay_and_is_no_fault(
        pcsc_bench: PcscBench) -> None:
    def broken(spec: FaultSpec) -> Callable[[CardMessage], CardVerdict]:
        def rule(msg: CardMessage) -> CardVerdict:
            raise ZeroDivisionError("division by zero")
        return rule

    with open_relay(pcsc_bench, fault_rules={FaultKind.CARD_MUTE: broken}) as (bank, host):
        stream = _insert_good(bank, host)
        bank.apply(FaultSpec.of(FaultKind.CARD_MUTE))
        with pytest.raises(CardError):          # the probe gives up on the dead relay
            _run(HarnessSlot(host))
        assert bank.relay_error is not None
        assert str(bank.relay_error) == ("card fault rule #1 card_mute() raised "
                                         "ZeroDivisionError: division by zero at power on of "
                                         "power on")
        assert not stream.events(matching(kind="fault"))     # never a trip
        assert not bank.is_nominal()
        with pytest.raises(InstrumentError, match="relay thread is dead"):
            bank.restore_nominal()
