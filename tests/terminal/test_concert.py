"""The Concert protocol (docs/ecr-concert.md): the codec's exact bytes, LRC and field checks,
the line discipline on either side (NAK and retry, time-out bounds), and the simulated
terminal's Concert port driving a real TerminalFirmware through a purchase and a refund — all
pure, time passed in, no pty."""

from __future__ import annotations

import functools
import operator
from typing import Any

import pytest

from protocols.concert import (
    ACK,
    ANSWER_LONG,
    ANSWER_SHORT,
    ENQ,
    EOT,
    NAK,
    REQUEST_E,
    REQUEST_E_PLUS,
    AnswerFlag,
    Authorization,
    ConcertAnswer,
    ConcertLine,
    ConcertRequest,
    Delay,
    Delivered,
    Failed,
    LineState,
    LineTimers,
    PaymentMode,
    Received,
    Rejected,
    Status,
    TransactionKind,
    decode_frame,
    describe_stream,
    encode_frame,
    lrc,
    private_trace,
    split_stream,
    trace_private,
)
from protocols.ecr import Key, Message, MsgCode
from protocols.errors import ConfigError, DecodeError, FramingError
from sim.terminal.concert import ConcertPort, answer_of
from sim.terminal.firmware import Action, State
from tests.terminal.fakes import MASKED, PAN, Day, FakeCard, codes, ecr_out, final

E, A, N, T = bytes([ENQ]), bytes([ACK]), bytes([NAK]), bytes([EOT])

#: Worked example: E+ debit of 10.00 EUR from register 01, short answer wanted, answer at the
#: end, the terminal decides on authorisation, no private data.
DEBIT_PAYLOAD = b"0100001000010978          A010B010"
DEBIT_FRAME = bytes.fromhex("02" "3031" "3030303031303030" "30" "31" "30" "393738"
                            "20202020202020202020" "41303130" "42303130" "03" "07")
#: Its answer: accepted, 10.00 EUR by card, the private field echoed.
ANSWER_PAYLOAD = b"0100000100019780123456789"
ANSWER_FRAME = bytes.fromhex("02" "3031" "30" "3030303031303030" "31" "393738"
                             "30313233343536373839" "03" "35")


def xor(data: bytes) -> int:
    """The LRC computed independently of the module under test."""
    return functools.reduce(operator.xor, data, 0)


# -- records -----------------------------------------------------------------------------------

def test_worked_example_request_exact_bytes() -> None:
    request = ConcertRequest(1000, "978")
    assert request.encode() == DEBIT_PAYLOAD and request.version == "E+"
    assert encode_frame(DEBIT_PAYLOAD) == DEBIT_FRAME
    assert DEBIT_FRAME[-1] == xor(DEBIT_FRAME[1:-1]) == lrc(DEBIT_PAYLOAD + b"\x03") == 0x07
    assert ConcertRequest.decode(decode_frame(DEBIT_FRAME)) == request


def test_worked_example_answer_exact_bytes() -> None:
    answer = ConcertAnswer("01", Status.ACCEPTED, 1000, PaymentMode.CARD, "978", "0123456789")
    assert answer.encode() == ANSWER_PAYLOAD and len(ANSWER_PAYLOAD) == ANSWER_SHORT.size == 25
    assert encode_frame(ANSWER_PAYLOAD) == ANSWER_FRAME
    assert ANSWER_FRAME[-1] == xor(ANSWER_FRAME[1:-1])
    assert ConcertAnswer.decode(ANSWER_PAYLOAD) == answer


def test_layout_sizes_match_the_published_lengths() -> None:
    assert (REQUEST_E.size, REQUEST_E_PLUS.size, ANSWER_SHORT.size, ANSWER_LONG.size) == (
        26, 34, 25, 80)


def test_protocol_e_request_has_no_delay_nor_authorization() -> None:
    request = ConcertRequest(1, "978", transaction="1",  # type: ignore[arg-type]  # coerced
                             delay=None, authorization=None)
    payload = request.encode()
    assert payload == b"0100000001011978          " and request.version == "E"
    back = ConcertRequest.decode(payload)
    assert back == request and back.transaction is TransactionKind.CREDIT


def test_e_plus_options_round_trip() -> None:
    request = ConcertRequest(99_999_999, "840", pos_number="42",
                             transaction=TransactionKind.CANCEL, payment_mode=PaymentMode.CHEQUE,
                             answer_flag=AnswerFlag.WITH_CARD_DATA, private="ABC-123 xy",
                             delay=Delay.IMMEDIATE, authorization=Authorization.FORCED)
    assert request.encode() == b"42999999991C2840ABC-123 xyA011B011"
    assert ConcertRequest.decode(request.encode()) == request


def test_answer_with_card_data_keeps_the_card_number_out_of_repr_and_text() -> None:
    rep = f"{PAN} 3012".ljust(55)
    answer = ConcertAnswer("01", Status.ACCEPTED, 2500, PaymentMode.CARD, "978",
                           card_data=rep)
    payload = answer.encode()
    assert len(payload) == 80 and payload[12:67] == rep.encode()
    assert ConcertAnswer.decode(payload) == answer
    assert PAN not in repr(answer) and PAN not in answer.describe()
    assert answer.masked_card_data == f"{MASKED} 3012"


REQ_FIELDS = [  # (field, byte positions, replacement at its start)
    ("pos_number", (0, 1), b"0A"),
    ("amount", (2, 9), b"0000100x"),
    ("answer_flag", (10, 10), b"2"),
    ("payment_mode", (11, 11), b"Z"),
    ("transaction_type", (12, 12), b"3"),
    ("currency", (13, 15), b"97E"),
    ("authorization", (30, 33), b"B013"),
    ("delay", (26, 29), b"A012"),
]


@pytest.mark.parametrize("name,span,bad", REQ_FIELDS, ids=[f[0] for f in REQ_FIELDS])
def test_every_request_field_is_checked_naming_it_and_its_bytes(
        name: str, span: tuple[int, int], bad: bytes) -> None:
    start, end = span
    payload = DEBIT_PAYLOAD[:start] + bad + DEBIT_PAYLOAD[start + len(bad):]
    with pytest.raises(DecodeError) as info:
        ConcertRequest.decode(payload)
    text = str(info.value)
    assert text.startswith(f"Concert request (protocol E+): field {name} (payload bytes "
                           f"{start}-{end}) must be "), text
    assert f"; payload {payload[:4].hex(' ')}" in text and "(34 bytes)" in text


def test_a_prefix_that_is_not_there_is_named() -> None:
    payload = DEBIT_PAYLOAD[:26] + b"X010" + DEBIT_PAYLOAD[30:]
    with pytest.raises(DecodeError, match=r"field delay \(payload bytes 26-29\) must start with "
                                          r"'A01', got 'X01'"):
        ConcertRequest.decode(payload)


def test_a_control_byte_in_the_private_field_is_named_by_position() -> None:
    payload = DEBIT_PAYLOAD[:20] + b"\x1c" + DEBIT_PAYLOAD[21:]
    with pytest.raises(DecodeError, match=r"^Concert request \(protocol E\+\): byte 20 \(field "
                                          r"private\) is 1c, not printable ASCII; payload 30 31"):
        ConcertRequest.decode(payload)


def test_wrong_lengths_say_what_is_expected() -> None:
    with pytest.raises(DecodeError, match=r"Concert request: payload is 33 bytes; expected 26 "
                                          r"\(protocol E\) or 34 \(protocol E\+\)"):
        ConcertRequest.decode(DEBIT_PAYLOAD[:-1])
    with pytest.raises(DecodeError, match=r"Concert answer: payload is 24 bytes; expected 25 or "
                                          r"80 \(with REP\)"):
        ConcertAnswer.decode(ANSWER_PAYLOAD[:-1])


def test_answer_status_and_card_data_errors_hide_the_card_data() -> None:
    rep = f"{PAN}".ljust(55)
    good = ConcertAnswer("01", Status.ACCEPTED, 1, PaymentMode.CARD, "978",
                         card_data=rep).encode()
    with pytest.raises(DecodeError) as info:
        ConcertAnswer.decode(good[:2] + b"5" + good[3:])
    text = str(info.value)
    assert "field status (payload bytes 2-2) must be one of '0', '7', '9', got '5'" in text
    assert "2a 2a 2a" in text  # REP blanked in the dump
    assert PAN not in text and PAN.encode().hex(" ") not in text and "36 32 31 32" not in text
    with pytest.raises(DecodeError) as info:
        ConcertAnswer("01", Status.ACCEPTED, 1, PaymentMode.CARD, "978",
                      card_data=PAN)  # 16 characters, not 55
    assert str(info.value) == ("Concert answer with card data: field rep (payload bytes 12-66) "
                               "must be 55 printable ASCII characters, got <16 characters, not "
                               "shown>")


def test_construction_checks_values_and_enums() -> None:
    with pytest.raises(DecodeError, match=r"field amount must be 0..99999999 minor units "
                                          r"\(8 digits\), got 100000000"):
        ConcertRequest(100_000_000)
    with pytest.raises(DecodeError, match=r"field payment_mode must be one of '1', '2'"):
        ConcertRequest(1, payment_mode="Q")  # type: ignore[arg-type]
    with pytest.raises(DecodeError, match=r"delay and authorization go together"):
        ConcertRequest(1, delay=None)
    with pytest.raises(DecodeError, match=r"field private \(payload bytes 16-25\) must be 10 "
                                          r"printable ASCII characters, got 'short'"):
        ConcertRequest(1, private="short")
    with pytest.raises(DecodeError, match=r"field currency \(payload bytes 13-15\)"):
        ConcertRequest(1, currency="EUR")


def test_private_field_trace_convention() -> None:
    assert trace_private("000123") == "000123    "
    assert private_trace("000123    ") == "000123"
    assert private_trace("000123   x") is None and private_trace(" " * 10) is None
    with pytest.raises(DecodeError, match="a trace is 6 digits, got '123'"):
        trace_private("123")


# -- framing -----------------------------------------------------------------------------------

def test_frame_errors_name_the_byte() -> None:
    with pytest.raises(FramingError, match=r"bad LRC at byte 36, expected 07, got 08; frame 02 30"):
        decode_frame(DEBIT_FRAME[:-1] + b"\x08")
    with pytest.raises(FramingError, match=r"expected ETX \(03\) at byte 35, got 30"):
        decode_frame(DEBIT_FRAME[:-2] + b"0\x07")
    with pytest.raises(FramingError, match=r"expected STX \(02\) at byte 0"):
        decode_frame(DEBIT_FRAME[1:])
    with pytest.raises(FramingError, match=r"byte 5 is 05, not printable ASCII"):
        decode_frame(DEBIT_FRAME[:5] + E + DEBIT_FRAME[6:])
    with pytest.raises(FramingError, match=r"encode\(\) payload byte 2 is 03"):
        encode_frame(b"01\x03")


def test_a_frame_over_the_payload_limit_is_refused_on_decode_as_on_encode() -> None:
    """Fuzz finding concert_stream/payload-over-limit: an 82-byte payload decoded, and the
    encoder then refused it (limit 80)."""
    body = b"0" * 82 + b"\x03"
    with pytest.raises(FramingError, match=r"payload of 82 bytes from byte 1, limit is 80"):
        decode_frame(b"\x02" + body + bytes([lrc(body)]))
    with pytest.raises(FramingError, match=r"encode\(\) payload is 82 bytes, limit is 80"):
        encode_frame(b"0" * 82)


def test_frame_error_dump_blanks_the_card_data() -> None:
    payload = ConcertAnswer("01", Status.ACCEPTED, 1, PaymentMode.CARD, "978",
                            card_data=PAN.ljust(55)).encode()
    frame = encode_frame(payload)
    with pytest.raises(FramingError) as info:
        decode_frame(frame[:-1] + bytes([frame[-1] ^ 1]))
    assert "bad LRC" in str(info.value) and "36 32 31 32 33 34" not in str(info.value)


def test_stream_description_and_chunking() -> None:
    stream = E + DEBIT_FRAME + T
    items, rest = split_stream(stream[:10])
    assert items == [E] and rest == DEBIT_FRAME[:9]
    items, rest = split_stream(rest + stream[10:])
    assert items == [DEBIT_FRAME, T] and rest == b""
    assert describe_stream(stream + b"zz", "register") == [
        "ENQ", "frame E+ POS 01 DEBIT 1000 978 CARD answer SHORT at END_OF_TRANSACTION auth "
        "TERMINAL_DECIDES private '          '", "EOT", "garbage 7a 7a (2 bytes)"]
    assert describe_stream(A + ANSWER_FRAME, "terminal") == [
        "ACK", "frame POS 01 ACCEPTED 1000 978 CARD private '0123456789'"]


# -- line discipline ---------------------------------------------------------------------------

FAST = LineTimers(ack_timeout=0.5, enq_attempts=3, frame_attempts=3, receive_timeout=1.0)


def test_sender_session_exact_bytes() -> None:
    line = ConcertLine("register", timers=FAST)
    ticket = line.send(DEBIT_PAYLOAD, 0.0)
    assert line.take_output() == E and line.state is LineState.ENQ_SENT
    assert line.receive(A, 0.1) == [] and line.take_output() == DEBIT_FRAME
    assert line.receive(A, 0.2) == [Delivered(ticket)]
    assert line.take_output() == T and line.state is LineState.IDLE and not line.busy


def test_nak_makes_the_sender_send_the_frame_again_bounded() -> None:
    line = ConcertLine("register", timers=FAST)
    ticket = line.send(DEBIT_PAYLOAD, 0.0)
    line.receive(A, 0.0)
    assert line.take_output() == E + DEBIT_FRAME
    assert line.receive(N, 0.1) == [] and line.take_output() == DEBIT_FRAME
    assert line.receive(N, 0.2) == [] and line.take_output() == DEBIT_FRAME
    assert line.receive(N, 0.3) == [Failed(ticket, "register: frame refused (NAK) 3 times; "
                                                   "sent EOT")]
    assert line.take_output() == T and line.state is LineState.IDLE


def test_no_ack_to_enq_is_tried_three_times_then_eot_naming_the_bound() -> None:
    line = ConcertLine("register", timers=FAST)
    ticket = line.send(DEBIT_PAYLOAD, 0.0)
    assert line.take_output() == E and line.next_deadline() == 0.5
    assert line.poll(0.49) == [] and line.take_output() == b""
    assert line.receive(N, 0.2) == []  # a NAK to ENQ: not ready, tried again at the deadline
    assert line.poll(0.5) == [] and line.take_output() == E
    assert line.poll(1.0) == [] and line.take_output() == E
    assert line.poll(1.5) == [Failed(ticket, (
        "register: no ACK to ENQ after 3 attempts (0.500 s each, 1.500 s bound); sent EOT"))]
    assert line.take_output() == T and line.next_deadline() is None


def test_no_ack_to_the_frame_is_sent_again_then_given_up() -> None:
    line = ConcertLine("register", timers=FAST)
    ticket = line.send(DEBIT_PAYLOAD, 0.0)
    line.receive(A, 0.0)
    line.take_output()
    assert line.poll(0.5) == [] and line.take_output() == DEBIT_FRAME
    assert line.poll(1.0) == [] and line.take_output() == DEBIT_FRAME
    assert line.poll(1.5) == [Failed(ticket, (
        "register: no ACK to the frame after 3 attempts (0.500 s each, 1.500 s bound); sent "
        "EOT"))]
    assert line.take_output() == T


def test_receiver_acks_naks_a_bad_frame_and_takes_the_retransmission_once() -> None:
    line = ConcertLine("terminal", timers=FAST, check=ConcertRequest.decode)
    assert line.receive(E, 0.0) == [] and line.take_output() == A
    bad = DEBIT_FRAME[:-1] + b"\x00"
    (ev,) = line.receive(bad, 0.1)
    assert isinstance(ev, Rejected) and ev.raw == bad
    assert ev.error.startswith("terminal: NAK: Concert frame: bad LRC at byte 36, expected 07")
    assert line.take_output() == N
    assert line.receive(DEBIT_FRAME, 0.2) == [Received(DEBIT_PAYLOAD)]
    assert line.take_output() == A
    assert line.receive(DEBIT_FRAME, 0.3) == []  # our ACK was lost: ACKed again, not delivered
    assert line.take_output() == A
    assert line.receive(T, 0.4) == [] and line.state is LineState.IDLE


def test_receiver_naks_a_frame_its_check_refuses() -> None:
    line = ConcertLine("terminal", timers=FAST, check=ConcertRequest.decode)
    line.receive(E, 0.0)
    (ev,) = line.receive(encode_frame(DEBIT_PAYLOAD[:-1]), 0.1)
    assert isinstance(ev, Rejected) and "payload is 33 bytes" in ev.error
    assert line.take_output() == A + N


def test_receiver_byte_by_byte_and_a_repeated_enq() -> None:
    line = ConcertLine("terminal", timers=FAST, check=ConcertRequest.decode)
    events = []
    for i, b in enumerate(E + E + DEBIT_FRAME + T):
        events += line.receive(bytes([b]), i * 0.01)
    assert events == [Received(DEBIT_PAYLOAD)]
    assert line.take_output() == A + A + A


def test_receiver_abandons_a_silent_session_after_its_bound() -> None:
    line = ConcertLine("terminal", timers=FAST)
    line.receive(E + DEBIT_FRAME[:5], 0.0)
    assert line.poll(0.99) == []
    (ev,) = line.poll(1.0)
    assert isinstance(ev, Rejected) and ev.raw == DEBIT_FRAME[:5] and ev.error == (
        "terminal: session abandoned: no frame within 1.000 s of our ACK")
    assert line.state is LineState.IDLE


def test_garbage_outside_a_session_is_reported_not_answered() -> None:
    line = ConcertLine("terminal", timers=FAST)
    (ev,) = line.receive(b"xy" + T, 0.0)
    assert isinstance(ev, Rejected) and ev.error == (
        "terminal: ignored 2 byte(s) in state idle: 78 79 (2 bytes)")
    assert line.take_output() == b""


def test_an_answer_waits_for_the_session_in_progress() -> None:
    line = ConcertLine("terminal", timers=FAST)
    line.receive(E, 0.0)
    ticket = line.send(ANSWER_PAYLOAD, 0.1)  # queued: the register is talking
    assert line.take_output() == A
    line.receive(DEBIT_FRAME + T, 0.2)
    assert line.take_output() == A + E
    line.receive(A, 0.3)
    assert line.take_output() == ANSWER_FRAME
    assert line.receive(A, 0.4) == [Delivered(ticket)]


def test_two_lines_talk_to_each_other() -> None:
    register = ConcertLine("register", timers=FAST, check=ConcertAnswer.decode)
    terminal = ConcertLine("terminal", timers=FAST, check=ConcertRequest.decode)

    def exchange(now: float) -> tuple[list[object], list[object]]:
        """Pass bytes both ways until the line is quiet: (register's, terminal's) events."""
        at_register: list[object] = []
        at_terminal: list[object] = []
        while True:
            to_terminal = register.take_output()
            at_terminal += terminal.receive(to_terminal, now)
            to_register = terminal.take_output()
            at_register += register.receive(to_register, now)
            if not to_terminal and not to_register:
                return at_register, at_terminal

    ticket = register.send(DEBIT_PAYLOAD, 0.0)
    assert exchange(0.0) == ([Delivered(ticket)], [Received(DEBIT_PAYLOAD)])
    answer = terminal.send(ANSWER_PAYLOAD, 0.1)
    assert exchange(0.1) == ([Received(ANSWER_PAYLOAD)], [Delivered(answer)])
    assert not register.busy and not terminal.busy


def test_timer_bounds_are_checked() -> None:
    with pytest.raises(ConfigError, match="ack_timeout and receive_timeout must be > 0"):
        LineTimers(ack_timeout=0)
    with pytest.raises(ConfigError, match="enq_attempts and frame_attempts must be >= 1"):
        LineTimers(frame_attempts=0)
    assert LineTimers().send_bound == 18.0


# -- the simulated terminal's Concert port, on a real firmware ----------------------------------

class Register(Day):
    """A firmware (fake services) with its Concert port wired as the runner wires it: every
    batch of ECR output shown to the port, test-port requests naming what they answer."""

    def __init__(self, **profile: Any) -> None:
        super().__init__(**profile)
        self.port = ConcertPort(transactions=self.fw.transactions, timers=FAST)
        self.fed: list[Message] = []
        self.fed_out: list[Action] = []  # the firmware's answer to the last request fed
        self.early = b""  # what the terminal wrote right after the register's EOT

    def _see(self, out: list[Action], answering: str | None = None) -> list[Action]:
        self.port.observe(ecr_out(out), self.now, answering=answering)
        return out

    def req(self, code: str, **fields: str) -> list[Action]:
        return self._see(super().req(code, **fields), answering=code)

    def hw(self, **obj: Any) -> list[Action]:
        return self._see(super().hw(**obj))

    def result(self, job: Any, value: Any = None, failure: str = "", reason: str = "",
               message: str = "", reversal: str = "") -> list[Action]:
        return self._see(super().result(job, value, failure, reason, message, reversal))

    def advance(self, dt: float) -> list[Action]:
        out = self._see(super().advance(dt))
        self.port.poll(self.now)
        return out

    def line(self, data: bytes) -> bytes:
        """The register's bytes on the Concert line; what the terminal writes back."""
        for request in self.port.receive(data, self.now):
            self.fed.append(request)
            out = self.fed_out = self.fw.on_ecr(request, self.now)
            self.port.after_request(ecr_out(out), self.now)
        return self.port.take_output()

    def ask(self, request: ConcertRequest) -> None:
        """One register session: ENQ, the request, EOT (each ACKed).  An answer the terminal
        had at once starts its own session (ENQ) right after the EOT."""
        assert self.line(E) == A
        assert self.line(encode_frame(request.encode())) == A
        self.early = self.line(T)
        assert self.early in (b"", E)

    def answer(self) -> ConcertAnswer:
        """The terminal's answer session as the register plays it (ENQ → ACK → frame → ACK →
        EOT)."""
        assert self.early + self.port.take_output() == E
        self.early = b""
        frame = self.line(A)
        assert self.line(A) == T
        return ConcertAnswer.decode(decode_frame(frame))

    def pay_with_chip(self) -> list[Action]:
        chip = self.hw(t="card", present=True)
        self.done(chip, FakeCard())
        assert self.fw.state is State.PIN_ENTRY
        for k in "1234":
            self.req(MsgCode.KEY, k=k)
        out = self.online(self.req(MsgCode.KEY, k=Key.ENTER))
        self.hw(t="card", present=False)
        return out


@pytest.fixture
def register() -> Register:
    r = Register()
    r.boot()
    r.sign_in()
    return r


def test_a_concert_purchase_runs_the_firmware_sale(register: Register) -> None:
    register.ask(ConcertRequest(1000, "156"))
    assert register.fed == [Message("PU", {"cur": "156", "amt": "1000"})]
    assert register.fw.state is State.WAIT_CARD and register.early == b""
    out = register.pay_with_chip()
    pu = final(out)
    assert (pu.get("rc"), pu.get("stan")) == ("APPROVED", "000002")
    assert register.port.take_output() == E
    frame = register.line(A)
    assert frame == encode_frame(b"010000010001156000002    ")  # status 0, trace in PRIV
    assert frame == bytes.fromhex("02303130303030303130303031313536303030303032202020200332")
    assert register.line(A) == T and register.port.pending is None


def test_a_concert_credit_refunds_the_sale_named_by_its_trace(register: Register) -> None:
    register.ask(ConcertRequest(1000, "156"))
    register.pay_with_chip()
    sale = register.answer()
    register.ask(ConcertRequest(400, "156", transaction=TransactionKind.CREDIT,
                                private=sale.private))
    assert register.fed[-1] == Message("RF", {"cur": "156", "amt": "400", "ostan": "000002"})
    out = register.online(register.fed_out)  # the refund reads no card: straight online
    assert final(out, "RF").get("rc") == "APPROVED"
    refund = register.answer()
    assert (refund.status, refund.amount_minor, refund.private) == (
        Status.ACCEPTED, 400, "000003    ")


def test_a_concert_cancellation_voids_the_sale_for_its_own_amount(register: Register) -> None:
    register.ask(ConcertRequest(1000, "156"))
    register.pay_with_chip()
    sale = register.answer()
    register.ask(ConcertRequest(0, "156", transaction=TransactionKind.CANCEL,
                                private=sale.private))
    assert register.fed[-1] == Message("VD", {"cur": "156", "ostan": "000002"})
    assert final(register.online(register.fed_out), "VD").get("rc") == "APPROVED"
    void = register.answer()
    assert (void.status, void.amount_minor, void.private) == (Status.ACCEPTED, 1000, "000003    ")


def test_a_refusal_at_once_is_answered_at_once() -> None:
    register = Register()
    register.boot()  # nobody logged in
    register.ask(ConcertRequest(1000, "156"))
    answer = register.answer()
    assert (answer.status, answer.private, answer.amount_minor) == (
        Status.REFUSED, " " * 10, 1000)


def test_a_credit_without_a_trace_is_refused_by_the_firmware(register: Register) -> None:
    register.ask(ConcertRequest(400, "156", transaction=TransactionKind.CREDIT))
    assert register.fed[-1] == Message("RF", {"cur": "156", "amt": "400"})
    assert register.answer().status is Status.REFUSED


@pytest.mark.parametrize("request_", [
    ConcertRequest(1000, "156", payment_mode=PaymentMode.CHEQUE),
    ConcertRequest(1000, "156", transaction=TransactionKind.PRE_AUTHORISATION),
], ids=["cheque", "pre-authorisation"])
def test_what_the_virtual_terminal_cannot_run_is_refused_without_the_firmware(
        register: Register, request_: ConcertRequest) -> None:
    register.ask(request_)
    assert register.fed == [] and register.answer().status is Status.REFUSED
    assert register.fw.state is State.IDLE


def test_a_second_request_while_one_runs_is_refused(register: Register) -> None:
    register.ask(ConcertRequest(1000, "156"))
    register.ask(ConcertRequest(2000, "156"))
    busy = register.answer()
    assert (busy.status, busy.amount_minor) == (Status.REFUSED, 2000)
    assert len(register.fed) == 1 and register.fw.state is State.WAIT_CARD


def test_a_test_port_request_refused_busy_is_not_the_concert_outcome(register: Register) -> None:
    register.ask(ConcertRequest(1000, "156"))
    out = register.req("PU", amt="5", cur="156")
    assert codes(out) == ["PU:BUSY"] and register.port.take_output() == b""
    register.pay_with_chip()
    assert register.answer().status is Status.ACCEPTED


def test_a_cancel_on_the_test_port_ends_the_concert_purchase_refused(register: Register) -> None:
    register.ask(ConcertRequest(1000, "156"))
    assert codes(register.req(MsgCode.CANCEL)) == ["CN:OK", "PU:CANCELLED"]
    assert register.answer().status is Status.REFUSED


def test_an_immediate_answer_is_status_9_and_the_outcome_is_not_reported(
        register: Register) -> None:
    register.ask(ConcertRequest(1000, "156", delay=Delay.IMMEDIATE))
    assert register.answer().status is Status.HANDLED
    register.pay_with_chip()
    assert register.port.take_output() == b"" and register.port.pending is None


def test_card_data_is_the_masked_card_number(register: Register) -> None:
    register.ask(ConcertRequest(1000, "156", answer_flag=AnswerFlag.WITH_CARD_DATA))
    register.pay_with_chip()
    assert register.port.take_output() == E
    frame = register.line(A)
    assert PAN.encode() not in frame and len(frame) == 83
    assert ConcertAnswer.decode(decode_frame(frame)).card_data == MASKED.ljust(55)
    assert answer_of(ConcertRequest(1, answer_flag=AnswerFlag.WITH_CARD_DATA),  # a full number is masked here
                     Message("PU", {"rc": "APPROVED", "pan": PAN})).card_data == MASKED.ljust(55)


def test_an_answer_takes_only_ascii_digits_from_the_final_response() -> None:
    """int('²') raised ValueError out of answer_of ('²'.isdigit() is True): a final whose
    amt, cur or stan is not ASCII digits keeps the request's values."""
    request = ConcertRequest(1000, "156")
    answer = answer_of(request, Message("PU", {"rc": "APPROVED", "amt": "²", "cur": "１５６",
                                               "stan": "١٢٣٤٥٦"}))
    assert (answer.amount_minor, answer.currency, answer.private) == (
        request.amount_minor, request.currency, request.private)


def test_the_register_naks_the_answer_and_gets_it_again(register: Register) -> None:
    register.ask(ConcertRequest(1000, "156"))
    register.pay_with_chip()
    assert register.port.take_output() == E
    frame = register.line(A)
    assert register.line(N) == frame
    assert register.line(A) == T


def test_an_answer_nobody_takes_is_given_up_within_its_bound(register: Register) -> None:
    register.ask(ConcertRequest(1000, "156"))
    register.pay_with_chip()
    assert register.port.take_output() == E
    for _ in range(2):
        register.advance(FAST.ack_timeout)
        assert register.port.take_output() == E
    register.advance(FAST.ack_timeout)
    assert register.port.take_output() == T and not register.port.line.busy


def test_a_bad_request_frame_is_naked() -> None:
    port = ConcertPort(timers=FAST)
    assert port.receive(E, 0.0) == [] and port.take_output() == A
    bad = bytearray(DEBIT_FRAME)
    bad[3] = ord("x")  # amount: not digits; LRC fixed so only the content is wrong
    bad[-1] = xor(bytes(bad[1:-1]))
    assert port.receive(bytes(bad), 0.1) == [] and port.take_output() == N


def test_an_lrc_that_equals_a_control_character_is_still_the_lrc() -> None:
    refund = encode_frame(ConcertRequest(400, "156", transaction=TransactionKind.CREDIT,
                                         private="000002    ").encode())
    assert refund[-2:] == bytes([0x03, ENQ])  # its LRC is 05, the value of ENQ
    line = ConcertLine("terminal", timers=FAST, check=ConcertRequest.decode)
    assert line.receive(E + refund, 0.0) == [Received(refund[1:-2])]
    assert line.take_output() == A + A  # one ACK for the ENQ, one for the frame: no more
    assert split_stream(refund + T) == ([refund, T], b"")


def test_the_terminal_command_line_takes_the_concert_fd() -> None:
    from sim.terminal.__main__ import build_parser

    base = ["--ecr-fd", "3", "--harness-fd", "4", "--state-dir", "s", "--profile", "p"]
    assert build_parser().parse_args(base).concert_fd is None
    assert build_parser().parse_args([*base, "--concert-fd", "5"]).concert_fd == 5
