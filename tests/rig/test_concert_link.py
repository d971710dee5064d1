"""ConcertTerminalLink (rigs/concert.py) against a scripted transport — the exact bytes
exchanged in order, nothing left unread — what it cannot do reported as CapabilityMissing, the
test port doing the rest, and one real pty round trip with the simulated terminal's runner."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from protocols.concert import (
    ACK,
    ENQ,
    EOT,
    NAK,
    AnswerFlag,
    ConcertAnswer,
    ConcertRequest,
    LineTimers,
    PaymentMode,
    Status,
    TransactionKind,
    encode_frame,
    trace_private,
)
from protocols.ecr import Prompt, Result
from protocols.transactions import OriginalRef, TransactionTable, TransactionType, TxnType
from rigs.concert import ConcertTerminalLink
from rigs.errors import (
    CapabilityMissing,
    ConfigError,
    DecodeError,
    DeviceStateError,
    NoResponse,
)
from rigs.interfaces import TerminalLink
from rigs.registry import check_conforms
from rigs.terminal import Outcome, SerialTerminalLink, TerminalEvent
from rigs.transport import ScriptedTransport, serial_transport
from sim.terminal.concert import ConcertPort
from sim.terminal.firmware import TerminalFirmware
from sim.terminal.journal import MemoryJournal
from sim.terminal.nvram import MemoryNvram
from sim.terminal.runner import TerminalRunner
from sim.terminal.slot import HarnessSlot
from tests.terminal.fakes import MASKED, PAN, FakeHarnessPeer, FakeServices, fast_profile

E, A, N, T = bytes([ENQ]), bytes([ACK]), bytes([NAK]), bytes([EOT])
FAST = LineTimers(ack_timeout=0.05, enq_attempts=3, frame_attempts=3, receive_timeout=0.5)

#: PURCHASE of 10.00 (currency 156) from POS 01: protocol E+, short answer, at the end.  Its
#: LRC happens to be 03, the value of ETX: the byte after ETX is the LRC, whatever it is.
SALE_FRAME = bytes.fromhex(
    "02" "3031" "3030303031303030" "30" "31" "30" "313536" "20202020202020202020" "41303130"
    "42303130" "03" "03")


def answer_frame(status: str = "0", amount: int = 1000, private: str = "000002    ",
                 pos: str = "01", card_data: str | None = None) -> bytes:
    return encode_frame(ConcertAnswer(pos, Status(status), amount, PaymentMode.CARD, "156",
                                      private, card_data).encode())


def make(script: list[Any], **kw: Any) -> tuple[ConcertTerminalLink, ScriptedTransport]:
    t = ScriptedTransport(script, name="concert")
    kw.setdefault("timers", FAST)
    return ConcertTerminalLink("term", t, **kw), t


@pytest.fixture
def opened() -> Iterator[list[ConcertTerminalLink]]:
    links: list[ConcertTerminalLink] = []
    try:
        yield links
    finally:
        for link in links:
            link.close()


def settle(t: ScriptedTransport) -> None:
    """The reader answers asynchronously: wait (bounded) for the script to finish."""
    deadline = time.monotonic() + 1.0
    while True:
        try:
            t.assert_done()
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.005)  # polling a test double, not waiting for a device


def session(frame: bytes) -> list[Any]:
    """The register's session carrying *frame*, the terminal ACKing."""
    return [("tx", E), ("rx", A), ("tx", frame), ("rx", A), ("tx", T)]


def answered(frame: bytes) -> list[Any]:
    """The terminal's answer session, the register ACKing."""
    return [("rx", E), ("tx", A), ("rx", frame), ("tx", A), ("rx", T)]


def test_sale_exact_exchange(opened: list[ConcertTerminalLink]) -> None:
    assert SALE_FRAME == encode_frame(ConcertRequest(1000, "156").encode())
    link, t = make(session(SALE_FRAME) + answered(answer_frame()))
    opened.append(link)
    link.open()
    link.start_transaction(TxnType.SALE, 1000)
    out = link.wait_outcome(timeout=2.0)
    assert (out.result, out.ok, out.amount_minor, out.stan, out.masked_pan) == (
        "APPROVED", True, 1000, "000002", "")
    assert dict(out.fields) == {"concert_status": "0", "pos_number": "01", "payment_mode": "1",
                                "currency": "156", "private": "000002    ", "rep": ""}
    settle(t)
    lines = [line[12:] for line in link.transcript_text().splitlines()]  # after the time
    assert lines == [
        "rig → terminal  Concert ENQ", "terminal → rig  Concert ACK",
        "rig → terminal  Concert frame E+ POS 01 DEBIT 1000 156 CARD answer SHORT at "
        "END_OF_TRANSACTION auth TERMINAL_DECIDES private '          '",
        "terminal → rig  Concert ACK", "rig → terminal  Concert EOT",
        "terminal → rig  Concert ENQ", "rig → terminal  Concert ACK",
        "terminal → rig  Concert frame POS 01 ACCEPTED 1000 156 CARD private '000002    '",
        "rig → terminal  Concert ACK", "terminal → rig  Concert EOT"]
    assert link.is_nominal()


def test_refused_is_declined(opened: list[ConcertTerminalLink]) -> None:
    link, t = make(session(SALE_FRAME) + answered(answer_frame("7", private=" " * 10)))
    opened.append(link)
    link.open()
    link.start_transaction(TxnType.SALE, 1000)
    out = link.wait_outcome(timeout=2.0)
    assert (out.result, out.ok, out.stan, out.display) == (
        Result.DECLINED, False, "", "Concert status 7 REFUSED")
    settle(t)


def test_needs_open_session() -> None:
    link, _ = make([])
    with pytest.raises(DeviceStateError, match=r"ConcertTerminalLink\(term\): start_transaction\(\) "
                                               r"needs an open session; state is CLOSED"):
        link.start_transaction(TxnType.SALE, 100)


def test_nak_makes_the_link_send_the_frame_again(opened: list[ConcertTerminalLink]) -> None:
    link, t = make([("tx", E), ("rx", A), ("tx", SALE_FRAME), ("rx", N), ("tx", SALE_FRAME),
                    ("rx", A), ("tx", T)])
    opened.append(link)
    link.open()
    link.start_transaction(TxnType.SALE, 1000)
    settle(t)
    assert link.pending_transaction is not None


def test_enq_unanswered_gives_up_naming_the_bound(opened: list[ConcertTerminalLink]) -> None:
    link, t = make([("tx", E), ("tx", E), ("tx", E), ("tx", T)])
    opened.append(link)
    link.open()
    with pytest.raises(NoResponse) as info:
        link.start_transaction(TxnType.SALE, 1000)
    assert str(info.value) == (
        "ConcertTerminalLink(term): start_transaction(): the terminal did not take the "
        "PURCHASE request: term Concert line: no ACK to ENQ after 3 attempts (0.050 s each, "
        "0.150 s bound); sent EOT")
    settle(t)
    assert link.pending_transaction is None and link.is_nominal()


def test_a_bad_answer_is_naked_then_taken(opened: list[ConcertTerminalLink]) -> None:
    good = answer_frame()
    bad = good[:-1] + bytes([good[-1] ^ 0x01])
    link, t = make(session(SALE_FRAME) + [("rx", E), ("tx", A), ("rx", bad), ("tx", N),
                                          ("rx", good), ("tx", A), ("rx", T)])
    opened.append(link)
    link.open()
    link.start_transaction(TxnType.SALE, 1000)
    assert link.wait_outcome(timeout=2.0).ok
    settle(t)
    assert "bad frame: Concert frame: bad LRC" in link.transcript_text()


def test_refund_names_its_original_by_trace(opened: list[ConcertTerminalLink]) -> None:
    refund = encode_frame(ConcertRequest(400, "156", transaction=TransactionKind.CREDIT,
                                         private=trace_private("000002")).encode())
    assert refund[1:35] == b"0100000400011156000002    A010B010"
    link, t = make(session(refund) + answered(answer_frame(amount=400, private="000003    ")))
    opened.append(link)
    link.open()
    link.start_transaction(TxnType.REFUND, 400, original=OriginalRef.by_trace(2))
    assert (link.wait_outcome(timeout=2.0).stan, t.written.count(T)) == ("000003", 1)
    settle(t)


def test_void_without_amount_sends_zero(opened: list[ConcertTerminalLink]) -> None:
    void = encode_frame(b"0100000000012156000002    A010B010")
    link, t = make(session(void))
    opened.append(link)
    link.open()
    link.start_transaction(TxnType.VOID, None, original=OriginalRef.by_trace(2))
    settle(t)


@pytest.mark.parametrize("call,message", [
    (lambda link: link.start_transaction(TxnType.REFUND, 5,
                                         original=OriginalRef.by_rrn("000000001234", "0504")),
     r"names an original by its trace only \(the private field has 10 characters\); got RRN "
     r"000000001234 \(0504\)"),
    (lambda link: link.start_transaction(TxnType.REFUND, 5,
                                         original=OriginalRef.by_trace(2, batch_no=1)),
     r"by its trace only .* got TRACE 000002 BATCH 000001"),
    (lambda link: link.start_transaction(TxnType.SALE, 5, entry="qr", qr="merchant"),
     r"the Concert link does not offer QR payments"),
], ids=["rrn", "batch", "qr"])
def test_what_concert_cannot_carry_is_capability_missing(
        opened: list[ConcertTerminalLink], call: Callable[[ConcertTerminalLink], None],
        message: str) -> None:
    link, t = make([])
    opened.append(link)
    link.open()
    with pytest.raises(CapabilityMissing, match=message):
        call(link)
    t.assert_done()
    assert link.pending_transaction is None


def test_a_type_concert_has_not_is_capability_missing(opened: list[ConcertTerminalLink]) -> None:
    preauth = TransactionType(
        type="preauth",  # type: ignore[arg-type]  # a test-only type, not in TxnType
        ecr_code="PA", ecr_name="PRE_AUTH", mti="0100", proc_code="030000", condition_code="06",
        message_type_code="10", receipt_title="PRE-AUTH", needs_card=True,
        needs_original=False, needs_pin=True)
    link, _ = make([], transactions=TransactionTable((preauth,)))
    opened.append(link)
    link.open()
    with pytest.raises(CapabilityMissing, match=r"does not offer a preauth: Concert has no "
                                                r"transaction type for it"):
        link.start_transaction("preauth", 100)


def test_bad_arguments_are_config_errors(opened: list[ConcertTerminalLink]) -> None:
    link, _ = make([])
    opened.append(link)
    link.open()
    with pytest.raises(ConfigError, match=r"amount must be 1..99999999 minor units, got "
                                          r"100000000"):
        link.start_transaction(TxnType.SALE, 100_000_000)
    with pytest.raises(ConfigError, match=r"currency must be an ISO 4217 numeric code"):
        link.start_transaction(TxnType.SALE, 1, currency="EUR")
    with pytest.raises(ConfigError, match=r"entry must be one of chip, swipe, tap"):
        link.start_transaction(TxnType.SALE, 1, entry="manual")
    with pytest.raises(ConfigError, match=r"PURCHASE takes no original"):
        link.start_transaction(TxnType.SALE, 1, original=OriginalRef.by_trace(1))
    with pytest.raises(ConfigError, match=r"pos_number must be 2 digits, got '1'"):
        make([], pos_number="1")


NO_TEST_PORT: list[tuple[str, Callable[[ConcertTerminalLink], object], str]] = [
    ("status", lambda link: link.status(), "a terminal status"),
    ("wait_ready", lambda link: link.wait_ready(1.0), "a terminal status"),
    ("login", lambda link: link.login("01", "0000"), "operator login"),
    ("logout", lambda link: link.logout(), "operator logout"),
    ("sign_in", lambda link: link.sign_in(), "sign-in"),
    ("cancel", lambda link: link.cancel(), "cancelling a transaction"),
    ("enter_pin", lambda link: link.enter_pin("1234"), "PIN keys"),
    ("press_key", lambda link: link.press_key("1"), "keypad keys"),
    ("sign", lambda link: link.sign(), "the signature pad"),
    ("wait_for_event", lambda link: link.wait_for_event("READY", 1.0), "display events"),
    ("wait_for_prompt_or_outcome",
     lambda link: link.wait_for_prompt_or_outcome(("ENTER_PIN",), 1.0),
     r"prompts \(display events\)"),
    ("reprint", lambda link: link.reprint(), "receipts"),
    ("query", lambda link: link.query(1), "transaction queries"),
    ("totals", lambda link: link.totals(), "totals"),
    ("settle", lambda link: link.settle(), "settlement"),
    ("unlock", lambda link: link.unlock("01"), "operator unlock"),
    ("set_parameter", lambda link: link.set_parameter("clock", ""), "parameters"),
    ("shutdown", lambda link: link.shutdown(), "shutdown"),
]


@pytest.mark.parametrize("op,call,what", NO_TEST_PORT, ids=[c[0] for c in NO_TEST_PORT])
def test_without_a_test_port_the_rest_is_capability_missing(
        opened: list[ConcertTerminalLink], op: str, call: Callable[[ConcertTerminalLink], object],
        what: str) -> None:
    link, t = make([])
    opened.append(link)
    link.open()
    with pytest.raises(CapabilityMissing, match=(
            rf"^ConcertTerminalLink\(term\): the Concert link does not offer {what} \({op}\(\)\); "
            rf"Concert only starts a transaction and reports its status, and this bench wires "
            rf"no test port$")):
        call(link)
    assert (link.events, link.receipts) == ([], [])  # the bench's evidence reads them
    t.assert_done()


def test_wait_outcome_bounds(opened: list[ConcertTerminalLink]) -> None:
    link, t = make(session(SALE_FRAME))
    opened.append(link)
    link.open()
    with pytest.raises(DeviceStateError, match=r"wait_outcome\(\) with no transaction pending"):
        link.wait_outcome(timeout=0.1)
    link.start_transaction(TxnType.SALE, 1000)
    with pytest.raises(NoResponse, match=r"^ConcertTerminalLink\(term\): wait_outcome\(\): no "
                                         r"Concert answer to the PURCHASE \(sale\) within 0.2 s$"):
        link.wait_outcome(timeout=0.2)
    with pytest.raises(DeviceStateError, match=r"while a PURCHASE \(sale\) is pending"):
        link.start_transaction(TxnType.SALE, 1000)
    settle(t)


@pytest.mark.parametrize("frame,message", [
    (answer_frame(pos="02"), r"the answer names POS 02, this register is POS 01"),
    (answer_frame("9"), r"field status is 9 \(HANDLED: no transaction result\) in the answer to "
                        r"a PURCHASE that asked for the answer at the end of the transaction"),
], ids=["other-pos", "status-9"])
def test_answers_that_are_not_this_outcome(opened: list[ConcertTerminalLink], frame: bytes,
                                           message: str) -> None:
    link, t = make(session(SALE_FRAME) + answered(frame))
    opened.append(link)
    link.open()
    link.start_transaction(TxnType.SALE, 1000)
    with pytest.raises(DecodeError, match=message):
        link.wait_outcome(timeout=2.0)
    settle(t)


def test_card_data_stays_masked(opened: list[ConcertTerminalLink]) -> None:
    asked = encode_frame(ConcertRequest(1000, "156",
                                        answer_flag=AnswerFlag.WITH_CARD_DATA).encode())
    link, t = make(session(asked) + answered(answer_frame(card_data=f"{PAN} 3012".ljust(55))),
                   answer_flag=AnswerFlag.WITH_CARD_DATA)
    opened.append(link)
    link.open()
    link.start_transaction(TxnType.SALE, 1000)
    out = link.wait_outcome(timeout=2.0)
    assert (out.masked_pan, out.fields["rep"]) == (MASKED, f"{MASKED} 3012")
    settle(t)
    assert PAN not in link.transcript_text() and PAN not in repr(out)


def test_an_answer_nobody_waits_for_is_acked_and_dropped(
        opened: list[ConcertTerminalLink], caplog: pytest.LogCaptureFixture) -> None:
    master, slave = os.openpty()  # a real line: the terminal speaks first
    try:
        link = ConcertTerminalLink("term", serial_transport(os.ttyname(slave)), timers=FAST)
        opened.append(link)
        link.open()
        for sent, expected in ((E, A), (answer_frame(), A)):
            os.write(master, sent)
            assert read_exactly(master, 1, bound=1.0) == expected
        os.write(master, T)
        deadline = time.monotonic() + 1.0
        while "dropped" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.01)  # the reader logs asynchronously
        assert "answer with no transaction pending dropped: POS 01 ACCEPTED" in caplog.text
    finally:
        link.close()
        os.close(slave)
        os.close(master)


def read_exactly(fd: int, n: int, bound: float) -> bytes:
    """*n* bytes from *fd* within *bound* seconds (what the link wrote on the line)."""
    out = b""
    deadline = time.monotonic() + bound
    os.set_blocking(fd, False)
    while len(out) < n and time.monotonic() < deadline:
        try:
            out += os.read(fd, n - len(out))
        except BlockingIOError:
            time.sleep(0.005)
    return out


def test_it_is_a_terminal_link() -> None:
    link, _ = make([])
    as_interface: TerminalLink = link  # the static check (mypy)
    check_conforms(as_interface, TerminalLink, "terminal.driver")  # the bench's check


# -- with the terminal's test port ------------------------------------------------------------

class RecordingSink:
    def __init__(self) -> None:
        self.published: list[tuple[str, str]] = []

    def publish(self, source: object, kind: str, name: str, detail: str = "", *,
                t: float | None = None, data: object = None) -> None:
        self.published.append((kind, name))


class FakeTestPort:
    """The test port's link, recording what the Concert link hands it."""

    def __init__(self) -> None:
        self.name = "test-port"
        self.calls: list[str] = []
        self.events: list[TerminalEvent] = []
        self.receipts: list[str] = ["receipt"]
        self.event_sink: Any = None
        self.nominal = True

    def __getattr__(self, attr: str) -> Any:
        def call(*args: object, **kwargs: object) -> object:
            self.calls.append(attr)
            if attr == "cancel":
                return Outcome(result="OK", ok=True)
            return None
        return call

    def is_nominal(self) -> bool:
        return self.nominal

    def transcript_text(self) -> str:
        return "KY(KEY) k=*\n"


def test_the_test_port_does_what_concert_cannot(opened: list[ConcertTerminalLink]) -> None:
    port = FakeTestPort()
    sink = RecordingSink()
    link, t = make(session(SALE_FRAME) + answered(answer_frame()),
                   test_port=port)  # type: ignore[arg-type]
    opened.append(link)
    link.event_sink = sink
    link.open()
    link.login("01", "0000")
    link.start_transaction(TxnType.SALE, 1000)
    port.events.append(TerminalEvent("PROGRESS", Prompt.ENTER_PIN, "INPUT PIN", 0.0))
    got = link.wait_for_prompt_or_outcome((Prompt.ENTER_PIN,), timeout=1.0)
    assert isinstance(got, tuple) and got[0] == 0
    link.enter_pin("1234")
    out = link.wait_for_prompt_or_outcome((Prompt.SIGNATURE,), timeout=2.0, since=1)
    assert isinstance(out, Outcome) and out.ok
    assert port.calls == ["open", "login", "enter_pin"] and port.event_sink is sink
    assert sink.published == [("request", "PU"), ("response", "PU")]
    assert link.receipts == ["receipt"]
    assert link.transcript_text().endswith("--- test port ---\nKY(KEY) k=*\n")
    settle(t)
    link.close()
    assert port.calls[-1] == "close"


def test_restore_cancels_on_the_test_port_and_drops_what_does_not_come(
        opened: list[ConcertTerminalLink]) -> None:
    port = FakeTestPort()
    link, t = make(session(SALE_FRAME), test_port=port,  # type: ignore[arg-type]
                   restore_bound=0.2)
    opened.append(link)
    link.open()
    link.start_transaction(TxnType.SALE, 1000)
    link.restore_nominal()
    assert port.calls == ["open", "cancel", "restore_nominal"]
    assert link.pending_transaction is None and link.is_nominal()
    port.nominal = False
    assert not link.is_nominal()
    settle(t)


# -- a real pty round trip: the rig's links and the simulated terminal's runner -----------------

class PtyTerminal:
    """The runner (fake kernel and acquirer) on two ptys — the test port and the Concert
    port — and a harness socketpair; what a bench would wire, without the bench."""

    def __init__(self) -> None:
        self.ecr_master, self.ecr_slave = os.openpty()
        self.concert_master, self.concert_slave = os.openpty()
        bench_sock, self.term_sock = socket.socketpair()
        self.peer = FakeHarnessPeer(bench_sock)
        self.services: list[FakeServices] = []
        fw = TerminalFirmware(fast_profile(), MemoryNvram(), journal=MemoryJournal())

        def make_services(slot: HarnessSlot) -> Any:  # FakeServices, the runner's Services
            svc = FakeServices(slot)
            self.services.append(svc)
            return svc

        self.runner = TerminalRunner(ecr_fd=self.ecr_master, harness=self.term_sock, firmware=fw,
                                     make_services=make_services, concert_fd=self.concert_master,
                                     concert=ConcertPort(transactions=fw.transactions))
        self.thread = threading.Thread(target=self.runner.run, daemon=True)

    def start(self) -> None:
        self.thread.start()
        self.peer.send(t="rail", volts=7.40)
        self.peer.send(t="paper", present=True)

    def close(self) -> None:
        self.runner.stop()
        self.thread.join(timeout=2.0)
        self.peer.close()
        self.term_sock.close()
        for fd in (self.ecr_slave, self.ecr_master, self.concert_slave, self.concert_master):
            os.close(fd)


@pytest.fixture
def pty_terminal() -> Iterator[PtyTerminal]:
    term = PtyTerminal()
    term.start()
    try:
        yield term
    finally:
        term.close()


def test_pty_round_trip_purchase_and_refund(pty_terminal: PtyTerminal, tmp_path: Path) -> None:
    test_port = SerialTerminalLink("test-port", serial_transport(os.ttyname(
        pty_terminal.ecr_slave)))
    link = ConcertTerminalLink("concert", serial_transport(os.ttyname(
        pty_terminal.concert_slave), baudrate=9600), test_port=test_port)
    link.open()
    try:
        assert link.wait_ready(timeout=3.0).state == "IDLE"
        assert link.login("01", "0000").ok and link.sign_in(timeout=3.0).ok
        mark = len(link.events)
        link.start_transaction(TxnType.SALE, 2500)
        got = link.wait_for_prompt_or_outcome((Prompt.INSERT_CARD,), timeout=3.0, since=mark)
        assert isinstance(got, tuple)
        pty_terminal.peer.send(t="card", present=True)
        got = link.wait_for_prompt_or_outcome((Prompt.ENTER_PIN,), timeout=3.0, since=got[0] + 1)
        assert isinstance(got, tuple)
        link.enter_pin("2468")
        sale = link.wait_outcome(timeout=5.0)
        assert (sale.result, sale.ok, sale.amount_minor, sale.stan) == (
            "APPROVED", True, 2500, "000002")
        pty_terminal.peer.send(t="card", present=False)
        link.start_transaction(TxnType.REFUND, 1000, original=OriginalRef.by_trace(sale.stan))
        refund = link.wait_outcome(timeout=5.0)
        assert (refund.result, refund.amount_minor, refund.stan) == ("APPROVED", 1000, "000003")
        auth = [j for j in pty_terminal.services[0].jobs if type(j).__name__ == "AuthJob"]
        assert [(j.txn_type.type, j.amount_minor) for j in auth] == [
            (TxnType.SALE, 2500), (TxnType.REFUND, 1000)]
        text = link.transcript_text()
        assert "Concert frame POS 01 ACCEPTED 2500 156 CARD private '000002    '" in text
        assert "KY(KEY) k=*" in text and PAN not in text
        started = time.monotonic()
        link.restore_nominal()
        assert link.is_nominal() and time.monotonic() - started < 1.0
    finally:
        link.close()
