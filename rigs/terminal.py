"""The terminal's ECR / test-port driver (protocol: docs/ecr-protocol.md).

:class:`SerialTerminalLink` gets a :class:`~rigs.transport.ByteTransport` injected (a pyserial
port on /dev/tty…, rfc2217://, socket://, or the virtual bench's pty), wraps it for the
transcript, and runs one reader thread that decodes frames, ACKs them, retransmits ours
(bounded) and files what arrives: final responses by request code, unsolicited events in order.

A terminal that is unpowered simply says nothing: every wait here is bounded and raises
:class:`~rigs.errors.NoResponse` naming the bound.  A terminal that reboots (READY) while a
request or a transaction is pending makes the wait raise :class:`~rigs.errors.DeviceStateError`
instead of hanging.

Transactions are generic: :meth:`SerialTerminalLink.start_transaction` sends the request of any
row of the transaction table (:mod:`protocols.transactions`; the ECR request code, name and
whether an original is named come from the row) and :meth:`~SerialTerminalLink.wait_outcome`
waits for that row's final response.  :meth:`~SerialTerminalLink.start_purchase` is the sale.

Entry modes and cardholder verification (docs/ecr-protocol.md): the request's ``entry``
(:class:`~protocols.ecr.EntryMode`) is checked here; the prompts the cardholder answers
(``RETRY_CHIP``, ``SWIPE_CARD``, ``INSERT_CHIP``, ``SWIPE_AGAIN``, ``ONE_CARD_ONLY``,
``WRONG_PIN`` with :attr:`TerminalEvent.tries_left`, ``PIN_BLOCKED``, ``SIGNATURE``) are events
with their fields; :meth:`~SerialTerminalLink.sign` is the signature pad's key; an
:class:`Outcome` says how the card was read and the cardholder verified (``entry_mode``,
``fallback``, ``cvm``, ``signature_captured``, ``reason``).

The business day (docs/business-day.md): :meth:`~SerialTerminalLink.reprint`,
:meth:`~SerialTerminalLink.query`, :meth:`~SerialTerminalLink.totals` (:class:`Totals`),
:meth:`~SerialTerminalLink.settle` (:class:`Settlement`), :meth:`~SerialTerminalLink.unlock`,
:meth:`~SerialTerminalLink.set_parameter`, :meth:`~SerialTerminalLink.shutdown`.  Answers are
parsed here, once, into typed records; a malformed field is a DecodeError naming it.
"""

from __future__ import annotations

import datetime
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from protocols import ecr
from protocols.digits import ascii_digits
from protocols.masking import scrub
from protocols.qr import ErrorCode, OrderStatus, Wallet
from protocols.transactions import TRANSACTIONS, OriginalRef, TransactionTable, TransactionType
from protocols.transactions import TxnType as TxnType  # start_transaction()'s type names
from rigs.driver import Driver, SessionState
from rigs.errors import (
    BenchNotNominal,
    ConfigError,
    DecodeError,
    DeviceStateError,
    NoResponse,
    RigError,
    TransportError,
)
from rigs.events import Source
from rigs.transport import ByteTransport, ReaderLink, RecordingTransport, Transcript, read_chunk

log = logging.getLogger(__name__)

READ_TIMEOUT = 0.02  # s, reader thread's read bound (also the retransmission timer's resolution)
SUCCESS = frozenset({ecr.Result.OK.value, ecr.Result.APPROVED.value})
KEY_NAMES = ecr.KEY_NAMES
RECOVERY_BOUND = 5.0
"""Longest wait (s), when the terminal is restored, for it to report that a fault the other
instruments just cleared is gone (card removed, paper in, battery fine)."""


@dataclass(frozen=True)
class TerminalCheck:
    """One condition of a nominal terminal, as its STATUS shows it, and the event that says it
    has recovered."""

    failing: Callable[[TerminalStatus], bool]
    recovery_event: ecr.EventCode
    describe: Callable[[TerminalStatus], str]


TERMINAL_CHECKS = (
    TerminalCheck(lambda st: st.card_present, ecr.EventCode.CARD_REMOVED,
                  lambda st: "a card is still in the slot"),
    TerminalCheck(lambda st: not st.printer_present, ecr.EventCode.PRINTER_OK,
                  lambda st: "printer presence line says no printer"),
    TerminalCheck(lambda st: not st.paper_present, ecr.EventCode.PAPER_OK,
                  lambda st: "paper sensor says no paper"),
    TerminalCheck(lambda st: st.paper_low, ecr.EventCode.PAPER_LOW_OK,
                  lambda st: "paper near-end sensor says paper low"),
    TerminalCheck(lambda st: st.battery_low, ecr.EventCode.BATTERY_OK,
                  lambda st: f"battery low at {st.supply_volts or 0:.2f} V"),
)


@dataclass(frozen=True)
class TerminalEvent:
    kind: str  # READY | EVENT | PROGRESS | PRINT
    code: str  # e.g. READY, PAPER_OUT, INSERT_CARD, ENTER_PIN, PRINT
    text: str
    t: float  # seconds since the driver was opened
    #: READY: the self-test's fault codes; EV: the fault code of the part it reports failing
    #: (EV SHUTDOWN: the battery's); () otherwise.
    faults: tuple[ecr.FaultCode, ...] = ()
    #: The message's other fields (PG WRONG_PIN ``tries``, PG RETRY_CHIP ``reason`` …).
    fields: Mapping[str, str] = field(default_factory=dict)
    #: PG SHOW_QR: the code the terminal shows (the order's code URL, what a camera decodes);
    #: '' otherwise.
    qr_code: str = ""

    @property
    def tries_left(self) -> int | None:
        """PG WRONG_PIN: the PIN tries the card has left (None: not said)."""
        value = self.fields.get("tries", "")
        return int(value) if ascii_digits(value) else None


#: ``qrc`` of a final response: the QR platform's refusal code, or PAYERROR (the order failed).
QR_REFUSALS: tuple[str, ...] = (*ErrorCode, OrderStatus.PAYERROR)


def _event_faults(msg: ecr.Message) -> tuple[ecr.FaultCode, ...]:
    """READY ``faults`` / EV ``fault``; an unknown code is a DecodeError naming the field."""
    key = "faults" if msg.code == ecr.MsgCode.READY else "fault"
    return ecr.parse_fault_codes(msg.get(key), f"ECR message {msg.code}: field {key}")


@dataclass(frozen=True)
class Outcome:
    """A final response.  ``ok`` is True for OK and APPROVED."""

    result: str
    ok: bool
    response_code: str = ""
    display: str = ""
    stan: str = ""
    rrn: str = ""
    auth_code: str = ""
    masked_pan: str = ""
    amount_minor: int | None = None
    fields: Mapping[str, str] = field(default_factory=dict)
    #: How the card was read (``ecr.EntryMode`` value; '' when no card was read) and whether
    #: it was a fallback swipe (the chip had failed).
    entry_mode: str = ""
    fallback: bool = False
    #: How the cardholder was verified (``ecr.Cvm`` value, '' when no card was read).
    cvm: str = ""
    #: A signature CVM: whether the cardholder signed on the pad (None: none was asked).
    signature_captured: bool | None = None
    reason: str = ""  # ``ecr.Reason`` value or ``sw xxxx`` (card errors, offline declines)
    #: A QR payment (entry mode qr): who presented the code (``ecr.QrMode`` value), the QR
    #: platform's order id, the wallet that paid (``protocols.qr.Wallet`` value) and the
    #: platform's refusal code (``qr_refused``); '' otherwise.
    qr_mode: str = ""
    qr_order_id: str = ""
    wallet: str = ""
    qr_refusal: str = ""

    @classmethod
    def from_message(cls, msg: ecr.Message) -> Outcome:
        """A final response; ``entry``, ``cvm`` are checked against their vocabularies and
        ``fallback``/``sig`` must be 1 or 0 (DecodeError naming the field)."""
        rc = msg.get("rc")
        amt = msg.get("amt")
        entry, cvm = msg.get("entry"), msg.get("cvm")
        vocabularies: tuple[tuple[str, str, tuple[str, ...]], ...] = (
            ("entry", entry, tuple(ecr.EntryMode)), ("cvm", cvm, tuple(ecr.Cvm)),
            ("qr", msg.get("qr"), tuple(ecr.QrMode)), ("wallet", msg.get("wallet"), tuple(Wallet)),
            ("qrc", msg.get("qrc"), QR_REFUSALS))
        for key, value, vocabulary in vocabularies:
            if value and value not in vocabulary:
                raise DecodeError(f"ECR message {msg.code}: field {key} must be one of "
                                  f"{', '.join(vocabulary)}, got {value!r}")
        sig = msg.get("sig")
        return cls(result=rc, ok=rc in SUCCESS, response_code=msg.get("hrc"),
                   display=msg.get("text"), stan=msg.get("stan"), rrn=msg.get("rrn"),
                   auth_code=msg.get("auth"), masked_pan=msg.get("pan"),
                   amount_minor=int(amt) if ascii_digits(amt) else None, fields=dict(msg.fields),
                   entry_mode=entry, fallback=_flag(msg, "fallback"), cvm=cvm,
                   signature_captured=_flag(msg, "sig") if sig else None,
                   reason=msg.get("reason"), qr_mode=msg.get("qr"),
                   qr_order_id=msg.get("order"), wallet=msg.get("wallet"),
                   qr_refusal=msg.get("qrc"))


def _digits(msg: ecr.Message, key: str, *, default: int | None = None) -> int | None:
    """Field *key* of *msg* as a non-negative integer; absent/empty → *default*; anything else
    than digits is a DecodeError naming the message and the field."""
    value = msg.get(key)
    if value == "":
        return default
    if not ascii_digits(value):
        raise DecodeError(f"ECR message {msg.code}: field {key} must be digits, got {value!r}")
    return int(value)


def _count(msg: ecr.Message, key: str) -> int:
    value = _digits(msg, key, default=0)
    assert value is not None
    return value


def _flag(msg: ecr.Message, key: str) -> bool:
    """Field *key* as ``1``/``0`` (absent: False); anything else is a DecodeError."""
    value = msg.get(key)
    if value not in ("", "0", "1"):
        raise DecodeError(f"ECR message {msg.code}: field {key} must be 1 or 0, got {value!r}")
    return value == "1"


def _flag_default(msg: ecr.Message, key: str, default: bool) -> bool:
    """As :func:`_flag`, *default* when the field is absent (a terminal that does not report
    it)."""
    return default if msg.get(key) == "" else _flag(msg, key)


def _clock(msg: ecr.Message, key: str) -> datetime.datetime | None:
    value = msg.get(key)
    if not value:
        return None
    try:
        return datetime.datetime.strptime(value, ecr.CLOCK_FORMAT)
    except ValueError:
        raise DecodeError(f"ECR message {msg.code}: field {key} must be YYYYMMDDhhmmss, got "
                          f"{value!r}") from None


@dataclass(frozen=True)
class TerminalStatus:
    state: str
    signed_in: bool
    operator: str | None
    paper_present: bool
    card_present: bool
    battery_low: bool
    supply_volts: float | None
    batch_no: str
    fault_codes: tuple[str, ...]  # the ``faults`` field as sent: active codes, then errors met
    clock: datetime.datetime | None = None  # the terminal's own clock
    reversal_pending: bool = False
    journal_entries: int = 0  # journal entries in the open batch
    txn_limit: int | None = None  # limits in force (minor units)
    daily_limit: int | None = None
    refund_limit: int | None = None
    day_sales: int = 0  # approved sales of the terminal's business day (what daily_limit sees)
    #: The fault code of every part failing now (E01 printer missing, E02 paper out…), in code
    #: order: the fault-code items of ``faults`` (docs/terminal-behaviour.md, TS-17).
    faults: tuple[ecr.FaultCode, ...] = ()
    printer_present: bool = True
    paper_low: bool = False
    #: What the terminal says it is: model, firmware version, device serial number, terminal
    #: id ('' when it does not say).
    model: str = ""
    firmware: str = ""
    serial_no: str = ""
    terminal_id: str = ""

    @classmethod
    def from_message(cls, msg: ecr.Message) -> TerminalStatus:
        volts = msg.get("volts")
        if volts and not VOLTS.fullmatch(volts):
            raise DecodeError(f"ECR message ST: field volts must be a decimal such as 7.40, got "
                              f"{volts!r}")
        supply = float(volts) if volts else None
        faults = msg.get("faults")
        return cls(state=msg.get("state"), signed_in=msg.get("signed_in") == "1",
                   operator=msg.get("operator") or None, paper_present=msg.get("paper") == "1",
                   card_present=msg.get("card") == "1",
                   battery_low=msg.get("battery_low") == "1", supply_volts=supply,
                   batch_no=msg.get("batch"),
                   fault_codes=tuple(faults.split(",")) if faults else (),
                   clock=_clock(msg, "clock"), reversal_pending=_flag(msg, "reversal"),
                   journal_entries=_count(msg, "journal"),
                   txn_limit=_digits(msg, "txn_limit"), daily_limit=_digits(msg, "daily_limit"),
                   refund_limit=_digits(msg, "refund_limit"), day_sales=_count(msg, "day_sales"),
                   faults=ecr.parse_fault_codes(faults, "ECR message ST: field faults"),
                   printer_present=_flag_default(msg, "printer", True),
                   paper_low=_flag(msg, "paper_low"), model=msg.get("model"),
                   firmware=msg.get("fw"), serial_no=msg.get("sn"), terminal_id=msg.get("tid"))


@dataclass(frozen=True)
class Totals:
    """The TOTALS answer: the open batch's counted transactions by type and by entry mode as
    ``(count, amount in minor units)``, and the anomalies (``declines:<masked PAN>``,
    ``refund_burst``, ``limit:<stan>``)."""

    batch: str
    by_type: Mapping[str, tuple[int, int]]
    by_entry: Mapping[str, tuple[int, int]]
    anomalies: tuple[str, ...]
    result: str = ecr.Result.OK.value
    ok: bool = True
    display: str = ""

    @classmethod
    def from_message(cls, msg: ecr.Message, transactions: TransactionTable = TRANSACTIONS
                     ) -> Totals:
        """Keys ``<type>_n`` / ``<type>_amt`` of the table's types go to ``by_type``, every other
        ``<name>_n`` / ``<name>_amt`` pair (the entry modes) to ``by_entry``."""
        types = {str(row.type) for row in transactions}
        by_type: dict[str, tuple[int, int]] = {}
        by_entry: dict[str, tuple[int, int]] = {}
        for key in msg.fields:
            if not key.endswith("_n"):
                continue
            name = key[:-2]
            pair = (_count(msg, key), _count(msg, f"{name}_amt"))
            (by_type if name in types else by_entry)[name] = pair
        anomalies = msg.get("anomalies")
        rc = msg.get("rc")
        return cls(batch=msg.get("batch"), by_type=MappingProxyType(by_type),
                   by_entry=MappingProxyType(by_entry),
                   anomalies=tuple(a for a in anomalies.split(",") if a),
                   result=rc, ok=rc in SUCCESS, display=msg.get("text"))


@dataclass(frozen=True)
class Settlement:
    """The SETTLE answer.  ``ok`` and ``balanced``: the batch closed, ``batch`` is the one
    settled and ``next_batch`` the open one now; ``uploaded`` transactions went in a batch
    upload (0 when the first settlement balanced)."""

    result: str
    ok: bool
    balanced: bool
    uploaded: int
    batch: str
    next_batch: str
    display: str = ""
    response_code: str = ""

    @classmethod
    def from_message(cls, msg: ecr.Message) -> Settlement:
        rc = msg.get("rc")
        return cls(result=rc, ok=rc in SUCCESS, balanced=_flag(msg, "balanced"),
                   uploaded=_count(msg, "uploaded"), batch=msg.get("batch"),
                   next_batch=msg.get("next_batch"), display=msg.get("text"),
                   response_code=msg.get("hrc"))


#: Unsolicited message → the event's code (its kind is the message's name: READY, EVENT,
#: PROGRESS, PRINT).
_EVENT_CODES: Mapping[str, Callable[[ecr.Message], str]] = {
    ecr.MsgCode.READY: lambda m: ecr.EventCode.READY.value,
    ecr.MsgCode.EVENT: lambda m: m.get("code"),
    ecr.MsgCode.PROGRESS: lambda m: m.get("code"),
    ecr.MsgCode.PRINT: lambda m: "PRINT",
}


@dataclass
class _Pending:
    """The transaction the driver waits for: its row and the boot epoch at the request's ACK
    (None until then); a READY after that ACK means no outcome will come."""

    row: TransactionType
    epoch: int | None = None


VOLTS = re.compile(r"[0-9]{1,3}(\.[0-9]{1,4})?", re.ASCII)
"""STATUS ``volts``: what float() would take too (``1_0``, ``nan``, ``７``) is refused."""
IDLE_POLL_S = 0.1
"""wait_idle(): the longest pause between two STATUS requests when the terminal says nothing."""


class SerialTerminalLink(ReaderLink, Driver):
    """ECR driver.  ``__init__`` opens nothing; :meth:`open` opens the injected transport."""

    def __init__(self, name: str, transport: ByteTransport, *,
                 ack_timeout: float = ecr.ACK_TIMEOUT, max_retries: int = ecr.MAX_RETRIES,
                 transcript: Transcript | None = None,
                 transactions: TransactionTable = TRANSACTIONS, boot_timeout: float = 20.0,
                 recovery_bound: float = RECOVERY_BOUND) -> None:
        super().__init__(name)
        if ack_timeout <= 0 or max_retries < 0:
            raise ConfigError(f"{self!r}: ack_timeout must be > 0 and max_retries >= 0, got "
                              f"{ack_timeout}, {max_retries}")
        if boot_timeout <= 0 or recovery_bound <= 0:
            raise ConfigError(f"{self!r}: terminal.boot_timeout and the recovery bound must be "
                              f"> 0, got {boot_timeout}, {recovery_bound}")
        self.boot_timeout = boot_timeout
        """Bound on power-on to ready (bench YAML ``terminal.boot_timeout``)."""
        self.recovery_bound = recovery_bound
        self._rec = RecordingTransport(transport, transcript)
        self._transactions = transactions
        self._specs = ecr.message_specs(transactions)
        self._link = ecr.EcrLink(ack_timeout=ack_timeout, max_retries=max_retries)
        self._cond = threading.Condition()
        self._send_lock = threading.Lock()
        self._responses: dict[str, ecr.Message] = {}
        self._delivered: dict[int, int] = {}  # ticket → epoch at ACK
        self._failed: dict[int, str] = {}
        self._events: list[TerminalEvent] = []
        self._receipts: list[str] = []
        self._epoch = 0  # READY events seen (terminal boots)
        self._pending: _Pending | None = None  # set while a transaction is pending
        self._reader: threading.Thread | None = None
        self._running = False
        self._reader_error: BaseException | None = None
        self._t0 = time.monotonic()

    # ------------------------------------------------------------------ session
    def open(self) -> None:
        if self.state is SessionState.OPEN:
            return
        self._open_port(READ_TIMEOUT)
        self._link.reset()
        self._t0 = time.monotonic()
        self._start_reader()
        super().open()

    def close(self) -> None:
        self._stop_reader()
        super().close()

    # ------------------------------------------------------------------ requests
    def identity(self) -> str:
        """What the terminal says it is (STATUS): model, firmware, serial number, terminal id."""
        st = self.status()
        return (f"{st.model or '(model not reported)'} firmware {st.firmware or '?'} serial "
                f"{st.serial_no or '?'} terminal id {st.terminal_id or '?'}")

    def status(self, timeout: float = 2.0) -> TerminalStatus:
        msg = self._request(ecr.MsgCode.STATUS, {}, timeout, "status")
        return TerminalStatus.from_message(msg)

    def wait_ready(self, timeout: float) -> TerminalStatus:
        """After power-on: the first STATUS answer outside BOOTING (READY speeds it up)."""
        self.require_open("wait_ready")
        deadline = time.monotonic() + timeout
        last = "no answer"
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise NoResponse(f"{self!r}: wait_ready(): terminal not ready within "
                                 f"{timeout:.1f} s (last STATUS: {last})")
            with self._cond:
                ready_mark = self._epoch
            try:
                st = self.status(timeout=min(remaining, 1.0))
                if st.state != ecr.TerminalState.BOOTING:
                    return st
                last = f"state {st.state}"
            except (NoResponse, DeviceStateError) as exc:
                last = str(exc)
            self._wait_boot(ready_mark, max(0.0, min(0.1, deadline - time.monotonic())))

    def wait_idle(self, timeout: float) -> TerminalStatus:
        """Until STATUS says IDLE: a terminal may still be printing a receipt it held for paper,
        or ending a transaction the rig stopped waiting for.  Asks again whenever the terminal
        says something (an event, a printed copy), and at least every :data:`IDLE_POLL_S`."""
        self.require_open("wait_idle")
        deadline = time.monotonic() + timeout
        while True:
            mark = len(self._events)
            remaining = deadline - time.monotonic()
            st = self.status(timeout=max(0.1, min(remaining, 2.0)))
            if st.state == ecr.TerminalState.IDLE:
                return st
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise NoResponse(f"{self!r}: wait_idle(): terminal still {st.state} after "
                                 f"{timeout:.1f} s")
            with self._cond:
                self._cond.wait_for(lambda seen=mark: len(self._events) != seen  # type: ignore[misc]
                                    or not self._running, timeout=min(remaining, IDLE_POLL_S))

    def login(self, operator: str, password: str, timeout: float = 5.0) -> Outcome:
        return Outcome.from_message(
            self._request(ecr.MsgCode.LOGIN, {"op": operator, "pw": password}, timeout,
                          "login"))

    def logout(self, timeout: float = 5.0) -> Outcome:
        return Outcome.from_message(self._request(ecr.MsgCode.LOGOUT, {}, timeout, "logout"))

    def sign_in(self, timeout: float = 20.0) -> Outcome:
        return Outcome.from_message(self._request(ecr.MsgCode.SIGN_IN, {}, timeout, "sign_in"))

    def cancel(self, timeout: float = 5.0) -> Outcome:
        return Outcome.from_message(self._request(ecr.MsgCode.CANCEL, {}, timeout, "cancel"))

    def start_transaction(self, txn: TxnType | str, amount_minor: int | None, *,
                          currency: str = "156", entry: ecr.EntryMode | str = ecr.EntryMode.CHIP,
                          original: OriginalRef | None = None,
                          qr: ecr.QrMode | str | None = None) -> None:
        """Send the request of transaction type *txn* (its row's ECR code) and return once it
        is ACKed; :meth:`wait_outcome` gets the result.  *entry* (``ecr.EntryMode``: chip,
        swipe, tap, qr) says how the cardholder will present the card — a hint: the terminal
        takes whatever comes while it waits for a card.  *original* is sent (fields orrn/odate
        or ostan/obatch) for a type that needs one; without it the terminal answers
        BAD_REQUEST.  A type whose amount is the original's (a void) takes *amount_minor* None
        (the terminal takes it from its journal) or the amount it must match; its request
        carries only the original and that amount.  ``entry=qr`` needs *qr* (``ecr.QrMode``:
        merchant, the terminal shows a code; customer, it scans the customer's)."""
        op = "start_transaction"
        self.require_open(op)
        if (entry == ecr.EntryMode.QR) != (qr is not None) or (
                qr is not None and qr not in set(ecr.QrMode)):
            raise ConfigError(f"{self!r}: {op}() entry=qr goes with qr = "
                              f"{' or '.join(ecr.QrMode)} (and qr only with entry=qr); got "
                              f"entry={entry!r} qr={qr!r}")
        if entry not in set(ecr.EntryMode) or entry == ecr.EntryMode.MANUAL:
            raise ConfigError(f"{self!r}: {op}() entry must be one of "
                              f"{', '.join(m for m in ecr.EntryMode if m != 'manual')}, got "
                              f"{entry!r}")
        row = self._transactions.get(txn)
        if amount_minor is None and not row.amount_from_original:
            raise ConfigError(f"{self!r}: {op}({row.type}) {row.ecr_name} needs an amount; "
                              f"got None")
        if amount_minor is not None and amount_minor <= 0:
            raise ConfigError(f"{self!r}: {op}({row.type}) amount must be > 0, got "
                              f"{amount_minor}")
        if original is not None and not row.needs_original:
            raise ConfigError(f"{self!r}: {op}({row.type}) {row.ecr_name} takes no original "
                              f"transaction; got {original.describe()}")
        fields: dict[str, str] = {}
        if amount_minor is not None:
            fields["amt"] = str(amount_minor)
        if not row.amount_from_original:
            fields.update(cur=currency, entry=str(entry))
        if qr is not None:
            fields["qr"] = str(qr)
        if original is not None:
            fields.update(original.ecr_fields())
        pending = _Pending(row)
        with self._cond:
            if self._pending is not None:
                busy = self._pending.row
                raise DeviceStateError(f"{self!r}: {op}({row.type}) while a {busy.ecr_name} "
                                       f"({busy.type}) is pending")
            self._responses.pop(row.ecr_code, None)
            self._pending = pending
        try:
            epoch = self._send(ecr.Message(row.ecr_code, fields), self._frame_bound(), op)
        except BaseException:
            with self._cond:
                if self._pending is pending:
                    self._pending = None
            raise
        with self._cond:
            pending.epoch = epoch

    # ------------------------------------------------------------------ the business day
    def reprint(self, timeout: float = 15.0) -> Outcome:
        """REPRINT: the last receipt printed again (its ``PR`` events marked 重打印 REPRINT);
        the answer comes once both copies are out."""
        return Outcome.from_message(self._request(ecr.MsgCode.REPRINT, {}, timeout, "reprint"))

    def query(self, stan: str | int, *, batch: str | int | None = None,
              timeout: float = 5.0) -> Outcome:
        """QUERY by trace (the open batch unless *batch*): ``fields`` holds ``type``, ``amt``,
        ``status``, ``rrn``, ``auth``, ``pan`` (masked), ``time``, ``batch``, ``stan``."""
        fields = {"stan": self._six_digits("query", "stan", stan)}
        if batch is not None:
            fields["batch"] = self._six_digits("query", "batch", batch)
        return Outcome.from_message(self._request(ecr.MsgCode.QUERY, fields, timeout, "query"))

    def totals(self, timeout: float = 5.0) -> Totals:
        """TOTALS of the open batch (:class:`Totals`)."""
        return Totals.from_message(self._request(ecr.MsgCode.TOTALS, {}, timeout, "totals"),
                                   self._transactions)

    def settle(self, timeout: float = 120.0) -> Settlement:
        """SETTLE the open batch (admin): reversals owed, 0500, a batch upload if the host's
        totals differ, 0500 again (:class:`Settlement`).  *timeout* bounds the whole exchange."""
        return Settlement.from_message(self._request(ecr.MsgCode.SETTLE, {}, timeout, "settle"))

    def unlock(self, operator: str, timeout: float = 5.0) -> Outcome:
        """UNLOCK a locked operator (an admin must be logged in)."""
        return Outcome.from_message(self._request(ecr.MsgCode.UNLOCK, {"op": operator}, timeout,
                                                  "unlock"))

    def set_parameter(self, name: str, value: str, timeout: float = 5.0) -> Outcome:
        """PARAMETER (admin): ``clock`` (YYYYMMDDhhmmss), ``txn_limit``, ``daily_limit``,
        ``refund_limit`` (minor units; an empty value restores the profile's)."""
        if name not in set(ecr.Parameter):
            raise ConfigError(f"{self!r}: set_parameter() name must be one of "
                              f"{', '.join(ecr.Parameter)}, got {name!r}")
        return Outcome.from_message(self._request(ecr.MsgCode.PARAMETER,
                                                  {"name": name, "value": value}, timeout,
                                                  "set_parameter"))

    def shutdown(self, timeout: float = 5.0) -> Outcome:
        """SHUTDOWN: OK, or UNSETTLED_BATCH (with the reason in ``display``) while the open batch
        holds transactions or a reversal is owed."""
        return Outcome.from_message(self._request(ecr.MsgCode.SHUTDOWN, {}, timeout,
                                                  "shutdown"))

    def _six_digits(self, op: str, name: str, value: str | int) -> str:
        text = str(value)
        if not (ascii_digits(text) and len(text) <= 6):
            raise ConfigError(f"{self!r}: {op}() {name} must be up to 6 digits, got {value!r}")
        return text.zfill(6)

    def start_purchase(self, amount_minor: int, currency: str = "156",
                       entry: str = "chip", qr: ecr.QrMode | str | None = None) -> None:
        """Send PURCHASE (the sale row) and return once it is ACKed; see :meth:`wait_outcome`."""
        self.start_transaction(TxnType.SALE, amount_minor, currency=currency, entry=entry,
                               qr=qr)

    def enter_pin(self, pin: str) -> None:
        """The rig's finger: one KEY per digit, then ENTER (digits recorded as '*')."""
        self.require_open("enter_pin")
        if not ascii_digits(pin):
            raise ConfigError(f"{self!r}: enter_pin() wants digits only ({len(pin)} characters "
                              "given, not shown)")
        for key in [*pin, ecr.Key.ENTER]:
            self.press_key(key)

    def sign(self, *, signed: bool = True) -> None:
        """The cardholder at the signature pad (prompt ``SIGNATURE``): signs and confirms
        (KY ENTER), or does not sign (KY CANCEL: the merchant copy is signed on paper)."""
        self.require_open("sign")
        self.press_key(ecr.Key.ENTER if signed else ecr.Key.CANCEL)

    def press_key(self, key: str) -> None:
        """One keypad press: '0'..'9', 'ENTER', 'CANCEL' or 'CLEAR'."""
        self.require_open("press_key")
        if not ((len(key) == 1 and ascii_digits(key)) or key in KEY_NAMES):
            raise ConfigError(f"{self!r}: press_key() key must be a digit or one of "
                              f"{sorted(KEY_NAMES)}, got {key!r}")
        self._send(ecr.Message(ecr.MsgCode.KEY, {"k": key}), self._frame_bound(), "press_key")

    def wait_outcome(self, timeout: float) -> Outcome:
        """The pending transaction's final response (whichever type it is)."""
        self.require_open("wait_outcome")
        with self._cond:
            pending = self._pending
            if pending is None:
                raise DeviceStateError(f"{self!r}: wait_outcome() with no transaction pending")
            row = pending.row
            self._cond.wait_for(
                lambda: row.ecr_code in self._responses or self._aborted(pending.epoch),
                timeout=timeout)
            msg = self._responses.pop(row.ecr_code, None)
            if msg is not None:
                self._pending = None
                return Outcome.from_message(msg)
            self._raise_reader_error("wait_outcome")
            if pending.epoch is not None and self._epoch != pending.epoch:
                self._pending = None
                raise DeviceStateError(
                    f"{self!r}: wait_outcome(): the terminal rebooted (READY) during the "
                    f"{row.ecr_name} ({row.type}); no outcome will come")
        raise NoResponse(f"{self!r}: wait_outcome(): no {row.ecr_name} outcome within "
                         f"{timeout:.1f} s (events so far: {self._recent_codes()})")

    @property
    def pending_transaction(self) -> TransactionType | None:
        """The row of the transaction waiting for its outcome, or None."""
        with self._cond:
            return self._pending.row if self._pending is not None else None

    # ------------------------------------------------------------------ events, evidence
    @property
    def events(self) -> list[TerminalEvent]:
        with self._cond:
            return list(self._events)

    @property
    def receipts(self) -> list[str]:
        with self._cond:
            return list(self._receipts)

    def wait_for_event(self, code: str, timeout: float, since: int = 0) -> TerminalEvent:
        """The first event with *code* at index >= *since* of :attr:`events`."""
        self.require_open("wait_for_event")

        def find() -> TerminalEvent | None:
            for ev in self._events[since:]:
                if ev.code == code:
                    return ev
            return None

        with self._cond:
            self._cond.wait_for(lambda: find() is not None or not self._running, timeout=timeout)
            found = find()
            if found is not None:
                return found
            self._raise_reader_error("wait_for_event")
        raise NoResponse(f"{self!r}: wait_for_event(): no {code} event within {timeout:.1f} s "
                         f"(since #{since}; seen: {self._recent_codes(since)})")

    def wait_for_prompt_or_outcome(self, codes: tuple[str, ...], timeout: float, since: int = 0
                                   ) -> tuple[int, TerminalEvent] | Outcome:
        """During a transaction: the first event with one of *codes* (e.g. ``ecr.Prompt``
        members) at index >= *since* (with its index), or the transaction's outcome if that
        comes first — what a cardholder reacts to."""
        self.require_open("wait_for_prompt_or_outcome")

        def find() -> tuple[int, TerminalEvent] | None:
            for i in range(since, len(self._events)):
                if self._events[i].code in codes:
                    return i, self._events[i]
            return None

        with self._cond:
            pending = self._pending
            if pending is None:
                raise DeviceStateError(f"{self!r}: wait_for_prompt_or_outcome() with no "
                                       "transaction pending")
            code = pending.row.ecr_code
            self._cond.wait_for(lambda: find() is not None or code in self._responses
                                or self._aborted(pending.epoch), timeout=timeout)
            found = find()
            if found is not None:
                return found
            finished = code in self._responses or self._aborted(pending.epoch)
        if finished:
            return self.wait_outcome(timeout=0.0)  # takes the outcome, or raises why there is none
        raise NoResponse(f"{self!r}: wait_for_prompt_or_outcome(): none of {', '.join(codes)} nor "
                         f"an outcome within {timeout:.1f} s (since #{since}; seen: "
                         f"{self._recent_codes(since)})")

    def transcript_text(self) -> str:
        """Masked, human-readable: time, direction, decoded message (bad frames as hex)."""
        decoders = {"tx": ecr.FrameDecoder(), "rx": ecr.FrameDecoder()}
        specs = self._specs
        senders: dict[str, ecr.Sender] = {"tx": "rig", "rx": "terminal"}
        arrows = {"tx": "rig → terminal", "rx": "terminal → rig"}
        lines = []
        for rec in self._rec.transcript.snapshot():
            for item in decoders[rec.direction].feed(rec.data):
                text = ecr.describe_item(item, senders[rec.direction], specs)
                lines.append(f"{rec.t:10.4f}  {arrows[rec.direction]}  {text}")
        for direction, dec in decoders.items():
            if dec.pending:
                lines.append(f"{'':10}  {arrows[direction]}  incomplete: {dec.pending.hex(' ')}")
        return scrub("\n".join(lines) + ("\n" if lines else ""))

    @property
    def transcript(self) -> Transcript:
        return self._rec.transcript

    def clear_evidence(self) -> None:
        self._rec.transcript.clear()
        with self._cond:
            self._events.clear()
            self._receipts.clear()

    def is_nominal(self) -> bool:
        """Open, no transaction pending, reader alive.  Asks the terminal nothing (it may be
        mid-boot); what the terminal itself reports (idle, paper, card, battery) is judged by
        :meth:`restore_nominal`, which raises when it is not right."""
        with self._cond:
            return (self.state is SessionState.OPEN and self._pending is None
                    and self._reader_error is None)

    def restore_nominal(self) -> None:
        """Cancel a pending transaction (bounded; a silent terminal just drops it), wait until
        the terminal answers and is ready (it boots if it was off; ``boot_timeout``), then judge
        it: for each condition still off (a card in the slot, no paper, battery low) its recovery
        event is awaited, bounded by ``recovery_bound``, since the instruments that clear them
        were restored just before.  Raises BenchNotNominal naming what is still wrong."""
        self.require_open("restore_nominal")
        with self._cond:
            pending = self._pending
        if pending is not None:
            try:
                self.cancel(timeout=3.0)
                self.wait_outcome(timeout=15.0)
            except (NoResponse, DeviceStateError) as exc:
                log.warning("%r: restore_nominal(): pending %s dropped: %s", self,
                            pending.row.ecr_name, exc)
            with self._cond:
                self._pending = None
                self._responses.pop(pending.row.ecr_code, None)
        mark = len(self.events)
        status = self.wait_ready(timeout=self.boot_timeout)  # at once if it is up
        for check in TERMINAL_CHECKS:
            if check.failing(status):
                try:
                    self.wait_for_event(check.recovery_event, timeout=self.recovery_bound,
                                        since=mark)
                except NoResponse as exc:
                    log.warning("%r: restore: %s", self, exc)  # judged below by STATUS
                status = self.status()
        bad = [check.describe(status) for check in TERMINAL_CHECKS if check.failing(status)]
        if bad:
            raise BenchNotNominal(f"{self!r}: terminal not nominal: {', '.join(bad)}")

    # ------------------------------------------------------------------ internals
    def _wait_boot(self, mark: int, timeout: float) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._epoch != mark or not self._running, timeout=timeout)

    def _frame_bound(self) -> float:
        return self._link.bound + 0.25

    def _aborted(self, epoch: int | None) -> bool:
        return (not self._running or self._reader_error is not None
                or (epoch is not None and self._epoch != epoch))

    def _raise_reader_error(self, op: str) -> None:
        if self._reader_error is not None:
            raise TransportError(f"{self!r}: {op}(): reader stopped: {self._reader_error}")
        if not self._running:
            raise DeviceStateError(f"{self!r}: {op}() needs an open session; state is CLOSED")

    def _recent_codes(self, since: int = 0) -> str:
        codes = [ev.code for ev in self._events[since:]][-8:]
        return ", ".join(codes) if codes else "none"

    def _request(self, code: str, fields: dict[str, str], timeout: float, op: str) -> ecr.Message:
        self.require_open(op)
        deadline = time.monotonic() + timeout
        with self._cond:
            self._responses.pop(code, None)
            self._responses.pop(ecr.MsgCode.ERROR, None)
        epoch = self._send(ecr.Message(code, fields), timeout, op)
        name = self._specs[("rig", code)].name
        with self._cond:
            self._cond.wait_for(
                lambda: code in self._responses or ecr.MsgCode.ERROR in self._responses
                or self._aborted(epoch), timeout=max(0.0, deadline - time.monotonic()))
            msg = (self._responses.pop(code, None)
                   or self._responses.pop(ecr.MsgCode.ERROR, None))
            if msg is not None:
                return msg
            self._raise_reader_error(op)
            if self._epoch != epoch:
                raise DeviceStateError(f"{self!r}: {op}(): the terminal rebooted (READY) before "
                                       f"answering {name}")
        raise NoResponse(f"{self!r}: {op}(): no {name} response within {timeout:.1f} s")

    def _send(self, msg: ecr.Message, timeout: float, op: str) -> int:
        """Send one frame and wait for its ACK; returns the boot epoch at ACK time."""
        payload = ecr.encode_message(msg)
        name = self._specs[("rig", msg.code)].name
        self.event_sink.publish(Source.TERMINAL, "request", msg.code,
                                msg.describe("rig", self._specs))  # PIN keys shown as '*'
        with self._send_lock:
            with self._cond:
                self._raise_reader_error(op)
                ticket = self._link.send(payload, time.monotonic())
                self._flush()
                self._cond.wait_for(
                    lambda: ticket in self._delivered or ticket in self._failed
                    or not self._running or self._reader_error is not None,
                    timeout=timeout)
                if ticket in self._delivered:
                    return self._delivered.pop(ticket)
                error = self._failed.pop(ticket, None)
                self._link.abandon(ticket)
                self._raise_reader_error(op)
        if error is None:
            error = f"no ACK within {timeout:.3f} s"
        raise NoResponse(f"{self!r}: {op}(): terminal did not acknowledge {name}: {error}")

    def _flush(self) -> None:
        """Write what the link has to send (caller holds ``_cond``); PIN digits recorded '*'."""
        out = self._link.take_output()
        if out:
            self._rec.inner.write(out)
            self._rec.transcript.add("tx", _mask_keys(out))

    def _read_loop(self) -> None:
        try:
            while self._running:
                data = read_chunk(self._rec)
                now = time.monotonic()
                with self._cond:
                    events = self._link.receive(data, now) if data else []
                    events += self._link.poll(now)
                    for ev in events:
                        self._on_link_event(ev)
                    self._flush()
                    if events:
                        self._cond.notify_all()
        except Exception as exc:  # noqa: BLE001 - kept and re-raised in the caller's thread
            log.error("%r: reader stopped: %s", self, exc)
            with self._cond:
                self._reader_error = exc
                self._cond.notify_all()

    def _on_link_event(self, ev: ecr.LinkEvent) -> None:
        if isinstance(ev, ecr.Delivered):
            self._delivered[ev.ticket] = self._epoch
        elif isinstance(ev, ecr.Failed):
            self._failed[ev.ticket] = ev.error
        elif isinstance(ev, ecr.Rejected):
            log.warning("%r: ECR input rejected: %s", self, ev.error)
        elif isinstance(ev, ecr.Received):
            try:
                msg = ecr.decode_message(ev.payload, "terminal", self._specs)
            except DecodeError as exc:
                log.warning("%r: undecodable message from the terminal: %s", self, exc)
                return
            spec = self._specs[("terminal", msg.code)]
            if spec.kind is ecr.Kind.EVENT:
                kind, code, text = spec.name, _EVENT_CODES[msg.code](msg), msg.get("text")
                try:
                    faults = _event_faults(msg)
                except DecodeError as exc:  # the reader thread must live on: say it, keep it
                    log.warning("%r: %s", self, exc)
                    faults = ()
                if msg.code == ecr.MsgCode.READY:
                    self._epoch += 1
                    self._link.retransmit_now(time.monotonic())
                if msg.code == ecr.MsgCode.PRINT:
                    self._receipts.append(scrub(text))
                extra = {k: scrub(v) for k, v in msg.fields.items()
                         if k not in ("code", "text", "fault", "faults")}
                qr_code = msg.get("qrcode") if code == ecr.Prompt.SHOW_QR else ""
                if code == ecr.Prompt.SHOW_QR and not qr_code:
                    log.warning("%r: PG SHOW_QR without its code (field qrcode)", self)
                extra.pop("qrcode", None)
                self._events.append(TerminalEvent(kind, code, scrub(text),
                                                  time.monotonic() - self._t0, faults,
                                                  extra, qr_code))
                shown = f"{msg.get('copy')} copy" if msg.code == ecr.MsgCode.PRINT else text
                self.event_sink.publish(Source.TERMINAL, kind.lower(), code, shown,
                                        data={"faults": ",".join(faults)} if faults else None)
            else:
                self._responses[msg.code] = msg
                self.event_sink.publish(Source.TERMINAL, "response", msg.code,
                                        msg.describe("terminal", self._specs))


def _mask_keys(data: bytes) -> bytes:
    """The bytes as the transcript keeps them: KEY frames carrying a digit re-encoded as '*'."""
    key_code = ecr.MsgCode.KEY.value.encode()
    if key_code not in data:
        return data
    out = bytearray()
    for item in ecr.FrameDecoder().feed(data):
        if isinstance(item, ecr.Frame):
            if item.payload.startswith(key_code):
                try:
                    msg = ecr.decode_message(item.payload)
                except RigError:
                    msg = ecr.Message(ecr.MsgCode.KEY, {"k": "?"})
                if msg.get("k").isdigit():
                    out += ecr.encode_frame(item.seq, ecr.encode_message(
                        ecr.Message(ecr.MsgCode.KEY, {"k": "*"})))
                    continue
            out += item.raw
        elif isinstance(item, ecr.AckIn):
            out += ecr.encode_ack(item.seq)
        elif isinstance(item, ecr.NakIn):
            out += ecr.encode_nak()
        elif isinstance(item, ecr.BadFrame):
            out += item.raw
        else:
            out += item.data
    return bytes(out)
