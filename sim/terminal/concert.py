"""The simulated terminal's Concert port: a second serial port of the same terminal, for cash
registers that speak Concert (docs/ecr-concert.md, "What the virtual terminal answers").

:class:`ConcertPort` is pure (bytes and ``now`` in, bytes out): it runs the terminal's side of
the line discipline (:class:`protocols.concert.ConcertLine`), turns a Concert request into the
firmware's own ECR request (a debit into ``PU amt= cur=``, a credit into the refund row's
request naming its original by the trace in the private field, a cancellation into the void
row's), and the firmware's final response into the Concert answer.  The runner
(:mod:`sim.terminal.runner`) feeds the request to :class:`~sim.terminal.firmware.TerminalFirmware`
like any test-port request and shows the port every ECR message the firmware sends:

* :meth:`ConcertPort.receive` — bytes from the Concert line; returns the ECR requests to feed;
* :meth:`ConcertPort.after_request` — what the firmware said at once to that request (a
  refusal ends it there; a register that asked for an immediate answer gets status 9 now);
* :meth:`ConcertPort.observe` — any later ECR output; the final response of the request's
  code ends it.  ``answering`` names the code of a test-port request whose immediate answer is
  in the batch: a ``PU rc=BUSY`` to the test port is not the Concert purchase's outcome.

The firmware's prompts, receipts and events still go to the test port, and the cardholder
still acts through it and through the harness (card slot, PIN keys on ``KY``): the Concert
port only starts transactions and reports their outcome.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from protocols.concert import (
    AMOUNT_MAX,
    CARD_DATA,
    TXN_OF_KIND,
    AnswerFlag,
    ConcertAnswer,
    ConcertLine,
    ConcertRequest,
    Delay,
    Delivered,
    Failed,
    LineEvent,
    LineTimers,
    PaymentMode,
    Received,
    Rejected,
    Status,
    private_trace,
    trace_private,
)
from protocols.digits import ascii_digits
from protocols.ecr import Message, Result
from protocols.masking import mask_pan
from protocols.transactions import TRANSACTIONS, TransactionTable

log = logging.getLogger(__name__)

#: The payment means the virtual terminal takes (it reads cards only, no cheques).
ACCEPTED_MODES = frozenset({PaymentMode.CARD})


@dataclass
class _Pending:
    """The Concert request being run: its ECR code, whether the firmware has been fed it and
    whether the register has had its (immediate) answer already."""

    request: ConcertRequest
    code: str
    fed: bool = False
    answered: bool = False


def card_data(pan: str) -> str:
    """REP of an answer: the card number as the firmware gave it (masked, first 6 and last 4;
    a full number is masked here), blank-padded to 55 characters."""
    shown = mask_pan(pan) if pan.isdigit() else pan
    return shown[:CARD_DATA.size].ljust(CARD_DATA.size)


def answer_of(request: ConcertRequest, final: Message) -> ConcertAnswer:
    """The Concert answer to *request* from the firmware's final response *final*.

    Status 0 for ``rc=APPROVED``, 7 for anything else; the amount and currency the firmware
    ran (the request's when it says none); the private field carries the transaction's trace
    (6-digit STAN, blank-padded) when it has one, else the request's private data; REP (when
    the register asked for it) the masked card number."""
    status = Status.ACCEPTED if final.get("rc") == Result.APPROVED else Status.REFUSED
    amt, cur, stan = final.get("amt"), final.get("cur"), final.get("stan")
    amount = int(amt) if ascii_digits(amt) and int(amt) <= AMOUNT_MAX else request.amount_minor
    currency = cur if len(cur) == 3 and ascii_digits(cur) else request.currency
    private = trace_private(stan) if len(stan) == 6 and ascii_digits(stan) else request.private
    rep = None if request.answer_flag is AnswerFlag.SHORT else card_data(final.get("pan"))
    return ConcertAnswer(request.pos_number, status, amount, request.payment_mode, currency,
                         private, rep)


def plain_answer(request: ConcertRequest, status: Status) -> ConcertAnswer:
    """An answer echoing *request* with *status* (a refusal before the firmware ran it, or the
    immediate status 9); REP blank."""
    rep = None if request.answer_flag is AnswerFlag.SHORT else " " * CARD_DATA.size
    return ConcertAnswer(request.pos_number, status, request.amount_minor, request.payment_mode,
                         request.currency, request.private, rep)


class ConcertPort:
    """The terminal's Concert port (see module doc).  *transactions* is the firmware's table."""

    def __init__(self, *, transactions: TransactionTable = TRANSACTIONS,
                 timers: LineTimers | None = None, name: str = "terminal Concert port") -> None:
        self.name = name
        self.transactions = transactions
        self.line = ConcertLine(name, timers=timers, check=ConcertRequest.decode)
        self._pending: _Pending | None = None

    def __repr__(self) -> str:
        return f"ConcertPort({self.name})"

    @property
    def pending(self) -> ConcertRequest | None:
        """The request being run (None: none)."""
        return self._pending.request if self._pending is not None else None

    def reset(self) -> None:
        """Power-on: the line and any request forgotten."""
        self.line.reset()
        self._pending = None

    def take_output(self) -> bytes:
        return self.line.take_output()

    def next_deadline(self) -> float | None:
        return self.line.next_deadline()

    # -- inputs
    def receive(self, data: bytes, now: float) -> list[Message]:
        """Bytes from the Concert line; the ECR requests to feed the firmware (at most one)."""
        out: list[Message] = []
        for ev in self.line.receive(data, now):
            if isinstance(ev, Received):
                msg = self._request(ConcertRequest.decode(ev.payload), now)
                if msg is not None:
                    out.append(msg)
            else:
                self._note(ev)
        return out

    def poll(self, now: float) -> None:
        for ev in self.line.poll(now):
            self._note(ev)

    def after_request(self, msgs: Sequence[Message], now: float) -> None:
        """The firmware's output right after it was fed the request :meth:`receive` returned."""
        p = self._pending
        if p is None or p.fed:
            raise AssertionError(f"{self!r}: after_request() with no request just fed")
        p.fed = True
        final = self._final(msgs, p.code)
        if final is not None:
            self._finish(final, now)
        elif p.request.delay is Delay.IMMEDIATE:
            p.answered = True
            self._answer(plain_answer(p.request, Status.HANDLED), now)

    def observe(self, msgs: Sequence[Message], now: float, *, answering: str | None = None) -> None:
        """Any other ECR output of the firmware; *answering*: the code of the test-port request
        whose immediate answer is in *msgs* (not the Concert request's outcome)."""
        p = self._pending
        if p is None or not p.fed or p.code == answering:
            return
        final = self._final(msgs, p.code)
        if final is not None:
            self._finish(final, now)

    # -- internals
    def _request(self, request: ConcertRequest, now: float) -> Message | None:
        """The ECR request for a Concert request, or None when it is answered here (refused:
        busy, or nothing the virtual terminal can run)."""
        log.info("%r: request %s", self, request.describe())
        if self._pending is not None:
            self._refuse(request, f"a {self._pending.request.transaction.name} is still "
                                  f"running", now)
            return None
        if request.payment_mode not in ACCEPTED_MODES:
            self._refuse(request, f"payment mode {request.payment_mode.name}: the virtual "
                                  f"terminal takes cards only", now)
            return None
        txn = TXN_OF_KIND.get(request.transaction)
        row = self.transactions.by_type.get(txn) if txn is not None else None
        if row is None:
            self._refuse(request, f"no transaction type of the terminal's table for "
                                  f"{request.transaction.name}", now)
            return None
        fields: dict[str, str] = {"cur": request.currency}
        if request.amount_minor or not row.amount_from_original:
            fields["amt"] = str(request.amount_minor)
        if row.needs_original:
            stan = private_trace(request.private)
            if stan is not None:
                fields["ostan"] = stan  # none: the firmware refuses, naming what is missing
        self._pending = _Pending(request, row.ecr_code)
        return Message(row.ecr_code, fields)

    def _refuse(self, request: ConcertRequest, why: str, now: float) -> None:
        log.warning("%r: %s refused: %s", self, request.transaction.name, why)
        self._answer(plain_answer(request, Status.REFUSED), now)

    @staticmethod
    def _final(msgs: Sequence[Message], code: str) -> Message | None:
        return next((m for m in msgs if m.code == code and "rc" in m.fields), None)

    def _finish(self, final: Message, now: float) -> None:
        p = self._pending
        assert p is not None
        self._pending = None
        if p.answered:
            log.info("%r: %s ended %s; not reported (the register asked for an immediate "
                     "answer)", self, p.request.transaction.name, final.get("rc"))
            return
        self._answer(answer_of(p.request, final), now)

    def _answer(self, answer: ConcertAnswer, now: float) -> None:
        log.info("%r: answer %s", self, answer.describe())
        self.line.send(answer.encode(), now)

    def _note(self, ev: LineEvent) -> None:
        if isinstance(ev, Failed):
            log.warning("%r: answer not delivered: %s", self, ev.error)
        elif isinstance(ev, Rejected):
            log.warning("%r: %s", self, ev.error)
        elif isinstance(ev, Delivered):
            log.info("%r: answer delivered", self)
