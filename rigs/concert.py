"""The terminal link of a bench whose terminal is driven over its Concert cash-register port
(protocol: docs/ecr-concert.md).

:class:`ConcertTerminalLink` gets a :class:`~rigs.transport.ByteTransport` injected (a pyserial
port: /dev/ttyACM0 of a Telium terminal's USB cash connection, /dev/ttyS0 at 1200 7E1, the
virtual bench's Concert pty), wraps it for the transcript and runs one reader thread that plays
the register's side of the line discipline (:class:`protocols.concert.ConcertLine`): it ACKs
the terminal's ENQ and answer frame (NAK and a bounded retry for a bad one) and files the
answer.

Concert only starts a payment and reports its status, so this link implements that part of
:class:`~rigs.interfaces.TerminalLink`: :meth:`~ConcertTerminalLink.start_transaction` for
the types Concert has (sale = debit, refund = credit, void = cancellation; the original named by
its trace in the private field) and :meth:`~ConcertTerminalLink.wait_outcome`
(:class:`~rigs.terminal.Outcome`: ``ok``, ``result`` APPROVED for status 0 or DECLINED for 7,
``amount_minor``, ``stan`` from the private field, ``masked_pan`` from REP when asked for).
Everything else a terminal link offers — keypad, prompts and display events, receipts, login,
sign-in, status, cancel — needs the terminal's test port: given one (*test_port*, the virtual
bench has it) those calls go to it; without one they raise
:class:`~rigs.errors.CapabilityMissing` saying the Concert link does not offer them, so a
scenario that needs them is skipped with that reason, never failed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

from protocols import concert, ecr
from protocols.concert import (
    AnswerFlag,
    Authorization,
    ConcertAnswer,
    ConcertLine,
    ConcertRequest,
    Delay,
    LineTimers,
    PaymentMode,
    Status,
)
from protocols.digits import ascii_digits
from protocols.masking import scrub
from protocols.transactions import TRANSACTIONS, OriginalRef, TransactionTable, TransactionType
from protocols.transactions import TxnType as TxnType  # start_transaction()'s type names
from rigs.driver import Driver, SessionState
from rigs.errors import (
    CapabilityMissing,
    ConfigError,
    DecodeError,
    DeviceStateError,
    NoResponse,
    RigError,
    TransportError,
)
from rigs.events import EventSink, Source
from rigs.terminal import Outcome, Settlement, TerminalEvent, TerminalStatus, Totals
from rigs.transport import ByteTransport, ReaderLink, RecordingTransport, Transcript, read_chunk

if TYPE_CHECKING:
    from rigs.interfaces import TerminalLink

log = logging.getLogger(__name__)

READ_TIMEOUT = 0.02  # s, the reader's read bound (also the line timers' resolution)
PROMPT_POLL_S = 0.05  # s, how often the test port's events are looked at while waiting
RESTORE_BOUND = 60.0
"""Longest wait (s), restoring the bench, for the outcome of a transaction left pending (a
Concert register cannot cancel; the terminal ends it by its own time-outs)."""

#: The outcome the rig reports for each Concert status (status 9 answers no transaction).
RESULT_OF_STATUS: Mapping[Status, ecr.Result] = MappingProxyType({
    Status.ACCEPTED: ecr.Result.APPROVED,
    Status.REFUSED: ecr.Result.DECLINED,
})

#: What each TerminalLink operation is, for the CapabilityMissing of a link with no test port.
NOT_OFFERED: Mapping[str, str] = MappingProxyType({
    "status": "a terminal status", "wait_ready": "a terminal status",
    "login": "operator login", "logout": "operator logout", "sign_in": "sign-in",
    "cancel": "cancelling a transaction", "enter_pin": "PIN keys", "press_key": "keypad keys",
    "sign": "the signature pad", "wait_for_event": "display events",
    "wait_for_prompt_or_outcome": "prompts (display events)", "reprint": "receipts",
    "query": "transaction queries", "totals": "totals", "settle": "settlement",
    "unlock": "operator unlock", "set_parameter": "parameters", "shutdown": "shutdown",
})


@dataclass
class _Pending:
    """The transaction waiting for its answer: its row and the request sent."""

    row: TransactionType
    request: ConcertRequest


class ConcertTerminalLink(ReaderLink, Driver):
    """Concert driver (see module doc).  ``__init__`` opens nothing; :meth:`open` opens the
    injected transport (and the test port, when given).

    *pos_number*: this register's number (2 digits) in every request; an answer naming another
    is a DecodeError.  *answer_flag*: ``WITH_CARD_DATA`` asks for REP (the card number: on a
    real terminal it crosses the line in clear, the rig keeps it masked).  *timers*: the line's
    bounds.  *test_port*: the terminal's test-port link, for what Concert cannot do."""

    def __init__(self, name: str, transport: ByteTransport, *, pos_number: str = "01",
                 answer_flag: AnswerFlag = AnswerFlag.SHORT, timers: LineTimers | None = None,
                 transactions: TransactionTable = TRANSACTIONS,
                 test_port: TerminalLink | None = None, transcript: Transcript | None = None,
                 restore_bound: float = RESTORE_BOUND) -> None:
        self._test_port = test_port
        super().__init__(name)
        if not (len(pos_number) == 2 and ascii_digits(pos_number)):
            raise ConfigError(f"{self!r}: pos_number must be 2 digits, got {pos_number!r}")
        if restore_bound <= 0:
            raise ConfigError(f"{self!r}: restore_bound must be > 0, got {restore_bound}")
        self.pos_number = pos_number
        self.answer_flag = AnswerFlag(answer_flag)
        self.restore_bound = restore_bound
        self.timers = timers or LineTimers()
        self._transactions = transactions
        self._rec = RecordingTransport(transport, transcript)
        self._line = ConcertLine(f"{name} Concert line", timers=self.timers,
                                 check=ConcertAnswer.decode)
        self._cond = threading.Condition()
        self._delivered: set[int] = set()
        self._failed: dict[int, str] = {}
        self._answers: deque[ConcertAnswer] = deque()
        self._pending: _Pending | None = None
        self._reader: threading.Thread | None = None
        self._running = False
        self._reader_error: BaseException | None = None

    # ------------------------------------------------------------------ the event sink
    @property
    def event_sink(self) -> EventSink:
        return self._sink

    @event_sink.setter
    def event_sink(self, sink: EventSink) -> None:
        """The bench attaches the scenario's stream: the test port publishes into it too."""
        self._sink = sink
        if self._test_port is not None:
            self._test_port.event_sink = sink

    # ------------------------------------------------------------------ session
    def open(self) -> None:
        if self.state is SessionState.OPEN:
            return
        self._open_port(READ_TIMEOUT)
        with self._cond:
            self._line.reset()
            self._answers.clear()
            self._pending = None
        self._start_reader()
        super().open()
        if self._test_port is not None:
            self._test_port.open()

    def close(self) -> None:
        self._stop_reader()
        super().close()
        if self._test_port is not None:
            self._test_port.close()

    # ------------------------------------------------------------------ transactions
    def start_transaction(self, txn: TxnType | str, amount_minor: int | None, *,
                          currency: str = "156", entry: ecr.EntryMode | str = ecr.EntryMode.CHIP,
                          original: OriginalRef | None = None,
                          qr: ecr.QrMode | str | None = None) -> None:
        """Send the Concert request for transaction type *txn* and return once the terminal
        took it (its ACK); :meth:`wait_outcome` gets the answer.  Concert has no entry hint
        (*entry* is checked, not sent) and no QR payment.  A void takes *amount_minor* None
        (amount 0: the original's).  *original* goes by trace (6-digit STAN) in the private
        field; an RRN or a batch does not fit there (CapabilityMissing)."""
        op = "start_transaction"
        self.require_open(op)
        if qr is not None or entry == ecr.EntryMode.QR:
            raise CapabilityMissing(f"{self!r}: the Concert link does not offer QR payments "
                                    f"(Concert has no QR request); got entry={entry!r} qr={qr!r}")
        if entry not in set(ecr.EntryMode) or entry == ecr.EntryMode.MANUAL:
            raise ConfigError(f"{self!r}: {op}() entry must be one of "
                              f"{', '.join(m for m in ecr.EntryMode if m not in ('manual', 'qr'))}"
                              f", got {entry!r}")
        row = self._transactions.get(txn)
        kind = concert.KIND_OF_TXN.get(row.type)
        if kind is None:
            raise CapabilityMissing(f"{self!r}: the Concert link does not offer a {row.type}: "
                                    f"Concert has no transaction type for it")
        if amount_minor is None and not row.amount_from_original:
            raise ConfigError(f"{self!r}: {op}({row.type}) {row.ecr_name} needs an amount; "
                              f"got None")
        if amount_minor is not None and not 0 < amount_minor <= concert.AMOUNT_MAX:
            raise ConfigError(f"{self!r}: {op}({row.type}) amount must be 1.."
                              f"{concert.AMOUNT_MAX} minor units, got {amount_minor}")
        if not (len(currency) == 3 and ascii_digits(currency)):
            raise ConfigError(f"{self!r}: {op}() currency must be an ISO 4217 numeric code "
                              f"(3 digits), got {currency!r}")
        request = ConcertRequest(
            amount_minor=amount_minor or 0, currency=currency, pos_number=self.pos_number,
            transaction=kind, payment_mode=PaymentMode.CARD, answer_flag=self.answer_flag,
            private=self._private(op, row, original), delay=Delay.END_OF_TRANSACTION,
            authorization=Authorization.TERMINAL_DECIDES)
        pending = _Pending(row, request)
        with self._cond:
            if self._pending is not None:
                busy = self._pending.row
                raise DeviceStateError(f"{self!r}: {op}({row.type}) while a {busy.ecr_name} "
                                       f"({busy.type}) is pending")
            self._answers.clear()
            self._pending = pending
        self.event_sink.publish(Source.TERMINAL, "request", row.ecr_code,
                                f"Concert {request.describe()}")
        try:
            self._send(request.encode(), op, row)
        except BaseException:
            with self._cond:
                if self._pending is pending:
                    self._pending = None
            raise

    def _private(self, op: str, row: TransactionType, original: OriginalRef | None) -> str:
        if original is None:
            return concert.BLANK_PRIVATE
        if not row.needs_original:
            raise ConfigError(f"{self!r}: {op}({row.type}) {row.ecr_name} takes no original "
                              f"transaction; got {original.describe()}")
        if not original.stan or original.batch_no:
            raise CapabilityMissing(
                f"{self!r}: the Concert link names an original by its trace only (the private "
                f"field has {concert.PRIVATE.size} characters); got {original.describe()}")
        return concert.trace_private(original.stan)

    def wait_outcome(self, timeout: float) -> Outcome:
        """The pending transaction's Concert answer, as an :class:`Outcome`."""
        self.require_open("wait_outcome")
        with self._cond:
            pending = self._pending
            if pending is None:
                raise DeviceStateError(f"{self!r}: wait_outcome() with no transaction pending")
            self._cond.wait_for(lambda: bool(self._answers) or self._aborted(), timeout=timeout)
            if self._answers:
                answer = self._answers.popleft()
                self._pending = None
                return self._outcome(answer, pending)
            self._raise_reader_error("wait_outcome")
        row = pending.row
        raise NoResponse(f"{self!r}: wait_outcome(): no Concert answer to the {row.ecr_name} "
                         f"({row.type}) within {timeout:.1f} s")

    def _outcome(self, answer: ConcertAnswer, pending: _Pending) -> Outcome:
        if answer.pos_number != self.pos_number:
            raise DecodeError(f"{self!r}: wait_outcome(): the answer names POS "
                              f"{answer.pos_number}, this register is POS {self.pos_number}")
        result = RESULT_OF_STATUS.get(answer.status)
        if result is None:
            raise DecodeError(f"{self!r}: wait_outcome(): field status is {answer.status.value} "
                              f"({answer.status.name}: no transaction result) in the answer to "
                              f"a {pending.row.ecr_name} that asked for the answer at the end "
                              f"of the transaction")
        card = answer.masked_card_data.split()
        return Outcome(
            result=result.value, ok=answer.status is Status.ACCEPTED,
            display=f"Concert status {answer.status.value} {answer.status.name}",
            stan=concert.private_trace(answer.private) or "",
            masked_pan=card[0] if card else "", amount_minor=answer.amount_minor,
            fields=MappingProxyType({
                "concert_status": answer.status.value, "pos_number": answer.pos_number,
                "payment_mode": answer.payment_mode.value, "currency": answer.currency,
                "private": answer.private, "rep": answer.masked_card_data}))

    @property
    def pending_transaction(self) -> TransactionType | None:
        with self._cond:
            return self._pending.row if self._pending is not None else None

    # ------------------------------------------------------------------ what needs the test port
    def _port(self, op: str) -> TerminalLink:
        self.require_open(op)
        if self._test_port is None:
            raise CapabilityMissing(
                f"{self!r}: the Concert link does not offer {NOT_OFFERED[op]} ({op}()); Concert "
                f"only starts a transaction and reports its status, and this bench wires no "
                f"test port")
        return self._test_port

    @property
    def events(self) -> list[TerminalEvent]:
        """The test port's events; none without one (the Concert line shows none)."""
        return self._test_port.events if self._test_port is not None else []

    @property
    def receipts(self) -> list[str]:
        """The test port's receipts; none without one (Concert carries no receipt)."""
        return self._test_port.receipts if self._test_port is not None else []

    def status(self, timeout: float = 2.0) -> TerminalStatus:
        return self._port("status").status(timeout)

    def wait_ready(self, timeout: float) -> TerminalStatus:
        return self._port("wait_ready").wait_ready(timeout)

    def wait_idle(self, timeout: float) -> TerminalStatus:
        return self._port("wait_idle").wait_idle(timeout)

    def login(self, operator: str, password: str, timeout: float = 5.0) -> Outcome:
        return self._port("login").login(operator, password, timeout)

    def logout(self, timeout: float = 5.0) -> Outcome:
        return self._port("logout").logout(timeout)

    def sign_in(self, timeout: float = 20.0) -> Outcome:
        return self._port("sign_in").sign_in(timeout)

    def cancel(self, timeout: float = 5.0) -> Outcome:
        """Concert has no cancel: the test port's CANCEL (the Concert answer then says 7)."""
        return self._port("cancel").cancel(timeout)

    def enter_pin(self, pin: str) -> None:
        self._port("enter_pin").enter_pin(pin)

    def sign(self, *, signed: bool = True) -> None:
        self._port("sign").sign(signed=signed)

    def press_key(self, key: str) -> None:
        self._port("press_key").press_key(key)

    def wait_for_event(self, code: str, timeout: float, since: int = 0) -> TerminalEvent:
        return self._port("wait_for_event").wait_for_event(code, timeout, since)

    def reprint(self, timeout: float = 15.0) -> Outcome:
        return self._port("reprint").reprint(timeout)

    def query(self, stan: str | int, *, batch: str | int | None = None,
              timeout: float = 5.0) -> Outcome:
        return self._port("query").query(stan, batch=batch, timeout=timeout)

    def totals(self, timeout: float = 5.0) -> Totals:
        return self._port("totals").totals(timeout)

    def settle(self, timeout: float = 120.0) -> Settlement:
        return self._port("settle").settle(timeout)

    def unlock(self, operator: str, timeout: float = 5.0) -> Outcome:
        return self._port("unlock").unlock(operator, timeout)

    def set_parameter(self, name: str, value: str, timeout: float = 5.0) -> Outcome:
        return self._port("set_parameter").set_parameter(name, value, timeout)

    def shutdown(self, timeout: float = 5.0) -> Outcome:
        return self._port("shutdown").shutdown(timeout)

    def wait_for_prompt_or_outcome(self, codes: tuple[str, ...], timeout: float, since: int = 0
                                   ) -> tuple[int, TerminalEvent] | Outcome:
        """During a Concert transaction: the first test-port event with one of *codes* at index
        >= *since* (with its index), or the Concert outcome if that comes first."""
        port = self._port("wait_for_prompt_or_outcome")
        with self._cond:
            pending = self._pending
        if pending is None:
            raise DeviceStateError(f"{self!r}: wait_for_prompt_or_outcome() with no transaction "
                                   "pending")
        deadline = time.monotonic() + timeout
        while True:
            events = port.events
            for i in range(since, len(events)):
                if events[i].code in codes:
                    return i, events[i]
            with self._cond:
                if self._answers or self._aborted():
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = ", ".join(e.code for e in events[since:][-8:]) or "none"
                    raise NoResponse(
                        f"{self!r}: wait_for_prompt_or_outcome(): none of {', '.join(codes)} "
                        f"nor a Concert answer within {timeout:.1f} s (since #{since}; seen: "
                        f"{seen})")
                self._cond.wait(timeout=min(left, PROMPT_POLL_S))
        return self.wait_outcome(timeout=0.0)  # takes the answer, or raises why there is none

    # ------------------------------------------------------------------ evidence, nominal
    def transcript_text(self) -> str:
        """Masked, human-readable: time, direction, control characters and decoded frames
        (bad frames as redacted hex); then the test port's transcript, when there is one."""
        senders: dict[str, concert.Side] = {"tx": "register", "rx": "terminal"}
        arrows = {"tx": "rig → terminal", "rx": "terminal → rig"}
        rest = {"tx": b"", "rx": b""}
        lines = []
        for rec in self._rec.transcript.snapshot():
            items, rest[rec.direction] = concert.split_stream(rest[rec.direction] + rec.data)
            for item in items:
                text = concert.describe_item(item, senders[rec.direction])
                lines.append(f"{rec.t:10.4f}  {arrows[rec.direction]}  Concert {text}")
        for direction, left in rest.items():
            if left:
                lines.append(f"{'':10}  {arrows[direction]}  Concert incomplete: "
                             f"{concert.shown_frame(left)}")
        text = scrub("\n".join(lines) + ("\n" if lines else ""))
        if self._test_port is not None:
            text += "--- test port ---\n" + self._test_port.transcript_text()
        return text

    @property
    def transcript(self) -> Transcript:
        return self._rec.transcript

    def clear_evidence(self) -> None:
        self._rec.transcript.clear()
        if self._test_port is not None:
            self._test_port.clear_evidence()

    def is_nominal(self) -> bool:
        """Open, no transaction pending, the reader alive (and the test port nominal, when
        there is one).  Asks the terminal nothing."""
        with self._cond:
            ours = (self.state is SessionState.OPEN and self._pending is None
                    and self._reader_error is None)
        return ours and (self._test_port is None or self._test_port.is_nominal())

    def restore_nominal(self) -> None:
        """A transaction left pending: cancelled on the test port if there is one, then its
        answer awaited (``restore_bound``; a register cannot cancel over Concert) and dropped
        either way; a session still open on the line is let finish (bounded by the line's
        timers).  Then the test port is restored."""
        self.require_open("restore_nominal")
        with self._cond:
            pending = self._pending
        if pending is not None:
            if self._test_port is not None:
                try:
                    self._test_port.cancel(timeout=3.0)
                except RigError as exc:
                    log.warning("%r: restore_nominal(): cancel on the test port: %s", self, exc)
            try:
                self.wait_outcome(timeout=self.restore_bound)
            except (NoResponse, DeviceStateError, DecodeError) as exc:
                log.warning("%r: restore_nominal(): pending %s dropped: %s", self,
                            pending.row.ecr_name, exc)
            with self._cond:
                self._pending = None
                self._answers.clear()
        with self._cond:
            if not self._cond.wait_for(lambda: not self._line.busy or self._aborted(),
                                       timeout=self.timers.send_bound):
                log.warning("%r: restore_nominal(): the Concert line is still in state %s "
                            "after %.1f s", self, self._line.state.value, self.timers.send_bound)
        if self._test_port is not None:
            self._test_port.restore_nominal()

    # ------------------------------------------------------------------ internals
    def _aborted(self) -> bool:
        return not self._running or self._reader_error is not None

    def _raise_reader_error(self, op: str) -> None:
        if self._reader_error is not None:
            raise TransportError(f"{self!r}: {op}(): reader stopped: {self._reader_error}")
        if not self._running:
            raise DeviceStateError(f"{self!r}: {op}() needs an open session; state is CLOSED")

    def _send(self, payload: bytes, op: str, row: TransactionType) -> None:
        """One session: ENQ, the frame, EOT; returns once the terminal ACKed the frame."""
        bound = self.timers.send_bound + 0.25
        with self._cond:
            self._raise_reader_error(op)
            ticket = self._line.send(payload, time.monotonic())
            self._flush()
            self._cond.wait_for(lambda: ticket in self._delivered or ticket in self._failed
                                or self._aborted(), timeout=bound)
            if ticket in self._delivered:
                self._delivered.discard(ticket)
                return
            error = self._failed.pop(ticket, None)
            self._line.abandon(ticket)
            self._flush()
            self._raise_reader_error(op)
        if error is None:
            error = f"no end of the session within {bound:.3f} s"
        raise NoResponse(f"{self!r}: {op}(): the terminal did not take the {row.ecr_name} "
                         f"request: {error}")

    def _flush(self) -> None:
        """Write what the line has to send (caller holds ``_cond``)."""
        out = self._line.take_output()
        if out:
            self._rec.write(out)

    def _read_loop(self) -> None:
        try:
            while self._running:
                data = read_chunk(self._rec)
                now = time.monotonic()
                with self._cond:
                    events = self._line.receive(data, now) if data else []
                    events += self._line.poll(now)
                    for ev in events:
                        self._on_line_event(ev)
                    self._flush()
                    if events or data:  # data alone may end a session (EOT)
                        self._cond.notify_all()
        except Exception as exc:  # noqa: BLE001 - kept and re-raised in the caller's thread
            log.error("%r: reader stopped: %s", self, exc)
            with self._cond:
                self._reader_error = exc
                self._cond.notify_all()

    def _on_line_event(self, ev: concert.LineEvent) -> None:
        if isinstance(ev, concert.Delivered):
            self._delivered.add(ev.ticket)
        elif isinstance(ev, concert.Failed):
            self._failed[ev.ticket] = ev.error
        elif isinstance(ev, concert.Rejected):
            log.warning("%r: %s", self, ev.error)
        else:
            answer = ConcertAnswer.decode(ev.payload)  # the line checked it: it decodes
            if self._pending is None:
                log.warning("%r: answer with no transaction pending dropped: %s", self,
                            answer.describe())
                return
            self._answers.append(answer)
            self.event_sink.publish(Source.TERMINAL, "response", self._pending.row.ecr_code,
                                    f"Concert {answer.describe()}")

