"""SerialTerminalLink against ScriptedTransport: the exact bytes exchanged, nothing left unread."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from protocols import ecr
from protocols.ecr import EventCode, Key, MsgCode, Prompt
from protocols.transactions import TRANSACTIONS, OriginalRef, TransactionTable
from rigs.errors import ConfigError, DecodeError, DeviceStateError, NoResponse
from rigs.terminal import Outcome, SerialTerminalLink, TxnType
from rigs.transport import ScriptedTransport
from tests.terminal.fakes import REFUND, TEST_TABLE, FakeTxn


def frame(seq: int, mtype: str, **fields: str) -> bytes:
    return ecr.encode_frame(seq, ecr.encode_message(ecr.Message(mtype, fields)))


def ack(seq: int) -> bytes:
    return bytes([0x06, seq])


NAK = b"\x15"
ST_REQ0 = bytes.fromhex("02 0002 00 5354 03 06")  # STATUS, SEQ 00: LRC 00^02^00^53^54^03
ST_RESP = dict(rc="OK", state="IDLE", signed_in="1", operator="01", paper="1", battery_low="0",
               volts="7.40", batch="000002", faults="PAPER_OUT,CARD_ERROR")


def make(script: list, *, ack_timeout: float = 0.5, max_retries: int = 3,
         transactions: TransactionTable = TRANSACTIONS
         ) -> tuple[SerialTerminalLink, ScriptedTransport]:
    t = ScriptedTransport(script, name="ecr")
    link = SerialTerminalLink("term", t, ack_timeout=ack_timeout, max_retries=max_retries,
                              transactions=transactions)
    return link, t


@pytest.fixture
def opened() -> Iterator[list[SerialTerminalLink]]:
    links: list[SerialTerminalLink] = []
    try:
        yield links
    finally:
        for link in links:
            link.close()


def settle(t: ScriptedTransport) -> None:
    """The reader thread ACKs asynchronously: wait (bounded) for the script to finish."""
    deadline = time.monotonic() + 1.0
    while True:
        try:
            t.assert_done()
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.005)  # polling a test double, not waiting for a device


def test_status_exact_exchange(opened: list[SerialTerminalLink]) -> None:
    assert frame(0, "ST") == ST_REQ0
    link, t = make([("tx", ST_REQ0), ("rx", ack(0) + frame(0, "ST", **ST_RESP)), ("tx", ack(0))])
    opened.append(link)
    link.open()
    st = link.status()
    assert (st.state, st.signed_in, st.operator, st.paper_present, st.battery_low,
            st.supply_volts, st.batch_no, st.fault_codes) == (
        "IDLE", True, "01", True, False, 7.40, "000002", ("PAPER_OUT", "CARD_ERROR"))
    settle(t)
    assert link.transcript_text().splitlines()[0].endswith("rig → terminal  [00] ST(STATUS)")


def test_needs_open_session() -> None:
    link, _ = make([])
    with pytest.raises(DeviceStateError,
                       match=r"SerialTerminalLink\(term\): status\(\) needs an open session; "
                             r"state is CLOSED"):
        link.status()


def test_nak_makes_the_driver_retransmit(opened: list[SerialTerminalLink]) -> None:
    link, t = make([("tx", ST_REQ0), ("rx", NAK), ("tx", ST_REQ0),
                    ("rx", ack(0) + frame(0, "ST", **ST_RESP)), ("tx", ack(0))])
    opened.append(link)
    link.open()
    assert link.status().state == "IDLE"
    settle(t)


def test_ack_timeout_retransmits_then_fails_naming_the_bound(
        opened: list[SerialTerminalLink]) -> None:
    link, t = make([("tx", ST_REQ0)] * 4, ack_timeout=0.05, max_retries=3)
    opened.append(link)
    link.open()
    with pytest.raises(NoResponse) as info:
        link.status(timeout=2.0)
    assert str(info.value) == (
        "SerialTerminalLink(term): status(): terminal did not acknowledge STATUS: no ACK for "
        "SEQ 00 after 4 attempts (0.050 s each, 0.200 s bound)")
    settle(t)


def test_silent_terminal_response_timeout(opened: list[SerialTerminalLink]) -> None:
    link, t = make([("tx", ST_REQ0), ("rx", ack(0))])
    opened.append(link)
    link.open()
    with pytest.raises(NoResponse, match=r"status\(\): no STATUS response within 0.2 s"):
        link.status(timeout=0.2)
    settle(t)


def test_bad_lrc_from_terminal_is_naked_then_accepted(opened: list[SerialTerminalLink]) -> None:
    good = frame(0, "ST", **ST_RESP)
    bad = good[:-1] + bytes([good[-1] ^ 0xFF])
    link, t = make([("tx", ST_REQ0), ("rx", ack(0) + bad), ("tx", NAK), ("rx", good),
                    ("tx", ack(0))])
    opened.append(link)
    link.open()
    assert link.status().state == "IDLE"
    settle(t)
    assert "bad frame: ECR frame: bad LRC" in link.transcript_text()


def test_duplicate_event_acked_twice_delivered_once(opened: list[SerialTerminalLink]) -> None:
    ev = frame(3, "EV", code="PAPER_OUT", text="打印机缺纸 PAPER OUT")
    link, t = make([("tx", ST_REQ0), ("rx", ack(0) + frame(0, "ST", **ST_RESP) + ev + ev),
                    ("tx", ack(0)), ("tx", ack(3)), ("tx", ack(3))])
    opened.append(link)
    link.open()  # flushes stale input: the terminal speaks after our first request
    link.status()
    got = link.wait_for_event(EventCode.PAPER_OUT, timeout=1.0)
    assert (got.kind, got.text) == ("EVENT", "打印机缺纸 PAPER OUT")
    settle(t)
    assert [e.code for e in link.events] == ["PAPER_OUT"]


def test_purchase_pin_masked_in_transcript(opened: list[SerialTerminalLink]) -> None:
    pu = frame(0, "PU", amt="100", cur="156", entry="chip")
    script: list = [("tx", pu), ("rx", ack(0) + frame(0, "PG", code="ENTER_PIN")),
                    ("tx", ack(0))]
    for seq, key in enumerate(["4", "3", "2", "1", Key.ENTER], start=1):
        script += [("tx", frame(seq, MsgCode.KEY, k=key)), ("rx", ack(seq))]
    final = frame(1, "PU", rc="APPROVED", hrc="00", stan="000007", rrn="000000000001",
                  auth="654321", pan="621234******1234", amt="100", cur="156")
    script += [("rx", frame(2, "PR", copy="merchant", text="CARD 621234******1234") + final),
               ("tx", ack(2) + ack(1))]
    link, t = make(script)
    opened.append(link)
    link.open()
    link.start_purchase(100)
    link.wait_for_event(Prompt.ENTER_PIN, timeout=1.0)
    link.enter_pin("4321")
    out = link.wait_outcome(timeout=1.0)
    assert (out.result, out.ok, out.response_code, out.stan, out.rrn, out.auth_code,
            out.masked_pan, out.amount_minor) == ("APPROVED", True, "00", "000007",
                                                  "000000000001", "654321",
                                                  "621234******1234", 100)
    settle(t)
    assert link.receipts == ["CARD 621234******1234"]
    text = link.transcript_text()
    assert text.count("KY(KEY) k=*") == 4 and "KY(KEY) k=ENTER" in text
    raw = b"".join(r.data for r in link.transcript.snapshot())
    assert b"k=4" not in raw and b"k=3" not in raw and b"k=*" in raw
    assert link.is_nominal()


def test_reboot_mid_purchase_does_not_wedge(opened: list[SerialTerminalLink]) -> None:
    pu = frame(0, "PU", amt="100", cur="156", entry="chip")
    link, t = make([("tx", pu), ("rx", ack(0) + frame(0, "RD", fw="SIM-1.0")), ("tx", ack(0))])
    opened.append(link)
    link.open()
    link.start_purchase(100)
    assert not link.is_nominal()
    t0 = time.monotonic()
    with pytest.raises(DeviceStateError, match="rebooted"):
        link.wait_outcome(timeout=5.0)
    assert time.monotonic() - t0 < 1.0
    assert link.is_nominal()
    settle(t)


def test_unpowered_terminal_waits_time_out_with_bound(opened: list[SerialTerminalLink]) -> None:
    link, t = make([])
    opened.append(link)
    link.open()
    with pytest.raises(NoResponse, match=r"no READY event within 0.1 s \(since #0; seen: none\)"):
        link.wait_for_event(EventCode.READY, timeout=0.1)
    with pytest.raises(DeviceStateError, match="no transaction pending"):
        link.wait_outcome(timeout=0.1)
    t.assert_done()


# ------------------------------------------------------------------ generic transactions

def test_second_transaction_type_with_original_exact_bytes(
        opened: list[SerialTerminalLink]) -> None:
    """A test-only row (injected table) goes through the same driver code as the sale."""
    rf = frame(0, "RF", amt="500", cur="156", entry="chip", orrn="000000001234", odate="0504")
    final = frame(1, "RF", rc="APPROVED", hrc="00", stan="000009", rrn="000000000077",
                  pan="621234******1234", amt="500", cur="156")
    link, t = make([("tx", rf), ("rx", ack(0) + frame(0, "PG", code="INSERT_CARD")),
                    ("tx", ack(0)), ("rx", final), ("tx", ack(1))], transactions=TEST_TABLE)
    opened.append(link)
    link.open()
    link.start_transaction(FakeTxn.REFUND, 500,
                           original=OriginalRef.by_rrn("000000001234", "0504"))
    assert link.pending_transaction is REFUND and not link.is_nominal()
    with pytest.raises(DeviceStateError,
                       match=r"start_transaction\(sale\) while a REFUND \(refund\) is pending"):
        link.start_purchase(100)
    got = link.wait_for_prompt_or_outcome((Prompt.INSERT_CARD,), timeout=1.0)
    assert not isinstance(got, Outcome) and got[1].code == Prompt.INSERT_CARD
    out = link.wait_for_prompt_or_outcome((Prompt.ENTER_PIN,), timeout=1.0, since=got[0] + 1)
    assert isinstance(out, Outcome)
    assert (out.result, out.ok, out.stan, out.rrn, out.amount_minor) == (
        "APPROVED", True, "000009", "000000000077", 500)
    settle(t)
    assert "RF(REFUND) amt=500 cur=156 entry=chip orrn=000000001234 odate=0504" in \
        link.transcript_text()
    assert link.is_nominal() and link.pending_transaction is None
    with pytest.raises(DeviceStateError, match=r"wait_for_prompt_or_outcome\(\) with no "
                                               r"transaction pending"):
        link.wait_for_prompt_or_outcome((Prompt.INSERT_CARD,), timeout=0.1)


def test_transaction_arguments_checked_before_sending(opened: list[SerialTerminalLink]) -> None:
    link, t = make([], transactions=TEST_TABLE)
    opened.append(link)
    link.open()
    with pytest.raises(ConfigError, match=r"start_transaction\(sale\) PURCHASE takes no "
                                          r"original transaction; got TRACE 000007"):
        link.start_transaction(TxnType.SALE, 100, original=OriginalRef.by_trace(7))
    with pytest.raises(ConfigError, match=r"no type 'balance'; known: sale, refund, void"):
        link.start_transaction("balance", 100)
    with pytest.raises(ConfigError, match=r"start_transaction\(refund\) amount must be > 0"):
        link.start_transaction(FakeTxn.REFUND, 0)
    assert link.is_nominal()
    t.assert_done()


def test_reboot_mid_transaction_names_the_type(opened: list[SerialTerminalLink]) -> None:
    vd = frame(0, "VD", amt="100", cur="156", entry="chip", ostan="000003")
    link, t = make([("tx", vd), ("rx", ack(0) + frame(0, "RD", fw="SIM-1.0")), ("tx", ack(0))],
                   transactions=TEST_TABLE)
    opened.append(link)
    link.open()
    link.start_transaction(FakeTxn.VOID, 100, original=OriginalRef.by_trace(3))
    with pytest.raises(DeviceStateError, match=r"rebooted \(READY\) during the VOID \(void\)"):
        link.wait_outcome(timeout=5.0)
    assert link.is_nominal()
    settle(t)


# ------------------------------------------------------------------ fault codes (TS-17)

def test_status_fault_codes_are_typed(opened: list[SerialTerminalLink]) -> None:
    resp = dict(ST_RESP, faults="E01,E03,E11,COMMS_ERROR", printer="0", paper_low="1")
    link, t = make([("tx", ST_REQ0), ("rx", ack(0) + frame(0, "ST", **resp)), ("tx", ack(0))])
    opened.append(link)
    link.open()
    st = link.status()
    assert st.faults == (ecr.FaultCode.PRINTER_MISSING, ecr.FaultCode.PAPER_LOW,
                         ecr.FaultCode.BATTERY_LOW)
    assert st.fault_codes == ("E01", "E03", "E11", "COMMS_ERROR")  # the field as sent
    assert (st.printer_present, st.paper_low) == (False, True)
    settle(t)


def test_status_without_the_new_fields_reads_as_before(opened: list[SerialTerminalLink]) -> None:
    link, t = make([("tx", ST_REQ0), ("rx", ack(0) + frame(0, "ST", **ST_RESP)), ("tx", ack(0))])
    opened.append(link)
    link.open()
    st = link.status()
    assert (st.faults, st.printer_present, st.paper_low) == ((), True, False)
    settle(t)


def test_unknown_fault_code_in_status_is_a_decode_error(opened: list[SerialTerminalLink]) -> None:
    resp = dict(ST_RESP, faults="E02,E99")
    link, t = make([("tx", ST_REQ0), ("rx", ack(0) + frame(0, "ST", **resp)), ("tx", ack(0))])
    opened.append(link)
    link.open()
    with pytest.raises(DecodeError, match=r"ECR message ST: field faults: unknown fault "
                                              r"code 'E99'; known: E01, E02, E03, E11, E12"):
        link.status()
    settle(t)


def test_ready_and_events_carry_their_fault_codes(opened: list[SerialTerminalLink]) -> None:
    rd = frame(0, "RD", fw="SIM-1.1", tid="10000001", text="欢迎使用 WELCOME", faults="E01,E11")
    ev = frame(1, "EV", code="PRINTER_MISSING", text="打印机未连接 PRINTER MISSING", fault="E01")
    bad = frame(2, "EV", code="PAPER_OUT", text="打印机缺纸 PAPER OUT", fault="E77")
    off = frame(3, "EV", code="SHUTDOWN", text="电量耗尽 关机 BATTERY EMPTY: SHUTTING DOWN",
                fault="E12", reason="cutoff", faults="E12")
    link, t = make([("tx", ST_REQ0), ("rx", ack(0) + frame(0, "ST", **ST_RESP) + rd + ev + bad
                                      + off),
                    ("tx", ack(0)), ("tx", ack(0)), ("tx", ack(1)), ("tx", ack(2)),
                    ("tx", ack(3))])
    opened.append(link)
    link.open()
    link.status()
    got = link.wait_for_event(EventCode.SHUTDOWN, timeout=1.0)
    assert got.faults == (ecr.FaultCode.BATTERY_CRITICAL,)
    settle(t)
    by_code = {e.code: e for e in link.events}
    assert by_code["READY"].faults == (ecr.FaultCode.PRINTER_MISSING,
                                       ecr.FaultCode.BATTERY_LOW)
    assert by_code["PRINTER_MISSING"].faults == (ecr.FaultCode.PRINTER_MISSING,)
    assert by_code["PAPER_OUT"].faults == ()  # an unknown code is logged, the event kept
    assert link.is_nominal()  # the reader lives on
