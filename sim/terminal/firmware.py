"""The terminal firmware as a pure state machine.

Inputs: ECR messages (:meth:`TerminalFirmware.on_ecr`), harness messages (:meth:`on_harness`),
results of blocking work (:meth:`on_job`) and the passing of time (:meth:`tick`), each with
``now`` (monotonic seconds) passed in.  Outputs: a list of actions — :class:`SendEcr`,
:class:`SendHarness`, :class:`StartJob`, :class:`FlushEcr` — that the runner carries out.

Blocking work (the EMV kernel over the card slot, the acquirer's TCP exchange) is described by a
job (:class:`ChipJob`, :class:`SignInJob`, :class:`AuthJob`); the runner executes it with
:func:`perform` in a worker thread against injected :class:`Services` and feeds the
:class:`JobResult` back.  So every decision here is unit-tested without sockets.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

from protocols.ecr import (
    EventCode,
    Key,
    Message,
    MsgCode,
    PrintStatus,
    Prompt,
    Result,
    TerminalState,
)
from protocols.errors import DecodeError
from protocols.masking import mask_pan
from protocols.transactions import TRANSACTIONS, OriginalRef, TransactionTable, TransactionType
from sim.terminal.nvram import NvramData, NvramStore
from sim.terminal.printer import COPIES, ReceiptData, format_receipt
from sim.terminal.profile import Operator as Operator  # the profile's names, importable from here
from sim.terminal.profile import Profile as Profile
from sim.terminal.profile import load_profile as load_profile
from sim.terminal.profile import parse_hostport as parse_hostport

log = logging.getLogger(__name__)

FIRMWARE_VERSION = "SIM-1.0"
MAX_FAULTS = 8
PIN_MIN, PIN_MAX = 4, 12
STAN_MAX = 999_999
NO_PIN_CVMS = frozenset({"no_cvm", "signature"})


# ------------------------------------------------------------------------------------- actions

@dataclass(frozen=True)
class SendEcr:
    msg: Message


@dataclass(frozen=True)
class SendHarness:
    obj: Mapping[str, Any]


@dataclass(frozen=True)
class FlushEcr:
    """Discard whatever the ECR UART received so far (power-on)."""


@dataclass(frozen=True)
class ChipJob:
    job_id: int
    amount_minor: int
    currency_code: str
    country_code: str
    txn_date: datetime.date
    unpredictable_number: bytes
    timeout: float


@dataclass(frozen=True)
class SignInJob:
    job_id: int
    operator: str
    stan: int
    batch_no: int


@dataclass(frozen=True)
class AuthJob:
    """Go online for the pending transaction (its row says which message to build)."""

    job_id: int
    txn_type: TransactionType
    keys: Any = field(repr=False)
    stan: int
    batch_no: int
    amount_minor: int
    card: Any = field(repr=False)  # sim.terminal.emv.CardRead, None when the type reads no card
    pin: str | None = field(repr=False)
    original: OriginalRef | None = None


Job = ChipJob | SignInJob | AuthJob


@dataclass(frozen=True)
class StartJob:
    job: Job


Action = SendEcr | SendHarness | FlushEcr | StartJob


@dataclass(frozen=True)
class JobResult:
    job_id: int
    value: Any = field(default=None, repr=False)
    failure: str = ""  # "" | "card" | "comms" | "internal"
    reason: str = ""
    message: str = ""


class Services(Protocol):
    """The blocking work the firmware delegates (real: EMV kernel + AcquirerClient)."""

    @property
    def card_errors(self) -> tuple[type[BaseException], ...]: ...

    @property
    def comms_errors(self) -> tuple[type[BaseException], ...]: ...

    def read_card(self, job: ChipJob) -> Any: ...

    def sign_in(self, job: SignInJob) -> Any: ...

    def authorize(self, job: AuthJob) -> Any: ...


_PERFORM: Mapping[type, str] = {ChipJob: "read_card", SignInJob: "sign_in", AuthJob: "authorize"}


def perform(job: Job, services: Services) -> JobResult:
    """Run *job* (blocking; called in the runner's worker thread) and classify its failure."""
    method = _PERFORM[type(job)]
    try:
        return JobResult(job.job_id, value=getattr(services, method)(job))
    except services.card_errors as exc:
        return JobResult(job.job_id, failure="card", reason=str(getattr(exc, "reason", "")),
                         message=str(exc))
    except services.comms_errors as exc:
        return JobResult(job.job_id, failure="comms", reason=str(getattr(exc, "stage", "")),
                         message=str(exc))
    except Exception as exc:  # a bug in a kernel/client: reported loudly, never as a card fault
        log.exception("terminal: %s failed with an unexpected error", type(job).__name__)
        return JobResult(job.job_id, failure="internal", reason=type(exc).__name__,
                         message=str(exc))


# --------------------------------------------------------------------------------------- state

State = TerminalState  # the firmware's states are the STATUS response's ``state`` vocabulary

TXN_STATES = frozenset({State.WAIT_CARD, State.READING_CARD, State.PIN_ENTRY, State.PROCESSING,
                        State.PRINTING})

DISPLAY: Mapping[str, str] = MappingProxyType({
    EventCode.READY: "欢迎使用 WELCOME",
    Prompt.INSERT_CARD: "请插卡 INSERT CARD",
    Prompt.READING_CARD: "读卡中 READING CARD",
    Prompt.ENTER_PIN: "请输入密码 ENTER PIN",
    Prompt.PROCESSING: "处理中 PROCESSING",
    Prompt.CONNECTING: "连接中 CONNECTING",
    Prompt.PRINTING: "打印中 PRINTING",
    EventCode.PAPER_OUT: "打印机缺纸 PAPER OUT",
    EventCode.PAPER_OK: "纸张已装好 PAPER OK",
    EventCode.CARD_INSERTED: "已插卡 CARD INSERTED",
    EventCode.CARD_REMOVED: "已取卡 CARD REMOVED",
    EventCode.LOW_BATTERY: "电量低 请充电 LOW BATTERY",
    EventCode.BATTERY_OK: "电量正常 BATTERY OK",
    Result.OK: "成功 OK",
    Result.APPROVED: "交易成功 APPROVED",
    Result.DECLINED: "交易拒绝 DECLINED",
    Result.NOT_SIGNED_IN: "请先签到 PLEASE SIGN IN",
    Result.NOT_LOGGED_IN: "请先登录 PLEASE LOG IN",
    Result.LOGIN_FAILED: "操作员或密码错误 LOGIN FAILED",
    Result.COMMS_ERROR: "通讯失败 COMMS ERROR",
    Result.CARD_ERROR: "读卡失败 CARD ERROR",
    Result.BUSY: "终端忙 BUSY",
    Result.CANCELLED: "交易取消 CANCELLED",
    Result.TIMEOUT: "超时 TIMEOUT",
    Result.BAD_REQUEST: "请求无效 BAD REQUEST",
    Result.INTERNAL_ERROR: "终端故障 TERMINAL FAULT",
})

LOAD_OF_STATE: Mapping[State, str] = {
    State.BOOTING: "booting", State.IDLE: "idle", State.SIGNING_IN: "comms",
    State.WAIT_CARD: "idle", State.READING_CARD: "card", State.PIN_ENTRY: "card",
    State.PROCESSING: "comms", State.PRINTING: "printing",
}

FAILURE_RESULT: Mapping[str, Result] = {
    "card": Result.CARD_ERROR, "comms": Result.COMMS_ERROR, "internal": Result.INTERNAL_ERROR,
}

#: Request handlers (method names) of transaction types whose flow differs from the generic one
#: (:meth:`TerminalFirmware._req_transaction`); empty today: every row of the table fits it.
TXN_REQUEST_HANDLERS: Mapping[str, str] = MappingProxyType({})

RequestHandler = Callable[[Message, float], list[Action]]


@dataclass
class _Txn:
    txn_type: TransactionType
    amount_minor: int
    currency_code: str
    original: OriginalRef | None = None
    job_id: int = 0
    card: Any = field(default=None, repr=False)
    pin: list[str] = field(default_factory=list, repr=False)
    stan: int = 0
    result: dict[str, str] = field(default_factory=dict)
    copies: list[str] = field(default_factory=list)
    print_ok: bool = True


class TerminalFirmware:
    """The decision logic of the simulated POS terminal (see module doc).

    *transactions* is the table the ECR transaction requests are dispatched on (one generic
    handler per row unless :data:`TXN_REQUEST_HANDLERS` names another).
    """

    def __init__(self, profile: Profile, nvram: NvramStore, *,
                 clock: Callable[[], datetime.datetime] = datetime.datetime.now,
                 rng: Callable[[int], bytes] = os.urandom,
                 transactions: TransactionTable = TRANSACTIONS) -> None:
        self.profile = profile
        self.nvram = nvram
        self.clock = clock
        self.rng = rng
        self.transactions = transactions
        self.state = State.BOOTING
        self.operator: str | None = None
        self.keys: Any = None  # WorkingKeys, RAM only
        self.paper_present = True
        self.volts = profile.nominal_volts
        self.card_present = False
        self.faults: list[str] = []
        self.nv: NvramData = nvram.load()
        self._load = ""
        self._timer: tuple[float, str] | None = None
        self._txn: _Txn | None = None
        self._job_id = 0
        self._pending_job: int | None = None
        requests: dict[str, RequestHandler] = {
            MsgCode.STATUS: self._req_status, MsgCode.LOGIN: self._req_login,
            MsgCode.LOGOUT: self._req_logout, MsgCode.SIGN_IN: self._req_sign_in,
            MsgCode.KEY: self._req_key, MsgCode.CANCEL: self._req_cancel,
        }
        for row in transactions:
            requests[row.ecr_code] = self._txn_handler(row)
        self._requests: Mapping[str, RequestHandler] = MappingProxyType(requests)
        self._harness: Mapping[str, Callable[[Mapping[str, Any], float], list[Action]]] = {
            "rail": self._hw_rail, "paper": self._hw_paper, "card": self._hw_card,
        }
        self._timers: Mapping[str, Callable[[float], list[Action]]] = {
            "boot": self._t_boot, "card_wait": self._t_txn_timeout,
            "pin_entry": self._t_txn_timeout, "print": self._t_print,
        }

    def _txn_handler(self, row: TransactionType) -> RequestHandler:
        method: Callable[[TransactionType, Message, float], list[Action]] = getattr(
            self, TXN_REQUEST_HANDLERS.get(row.type, "_req_transaction"))

        def handle(msg: Message, now: float) -> list[Action]:
            return method(row, msg, now)

        return handle

    # ---- properties
    @property
    def signed_in(self) -> bool:
        return self.keys is not None

    @property
    def battery_low(self) -> bool:
        return self.volts <= self.profile.low_battery_volts + 1e-9

    def next_deadline(self) -> float | None:
        return self._timer[0] if self._timer else None

    # ---- inputs
    def start(self, now: float) -> list[Action]:
        """Power-on: POST takes ``boot_s``; the ECR input is flushed."""
        self.nv = NvramData(self.nv.stan, self.nv.batch_no, self.nv.boot_count + 1)
        self.nvram.save(self.nv)
        self._timer = (now + self.profile.boot_s, "boot")
        return [FlushEcr(), *self._set_state(State.BOOTING)]

    def tick(self, now: float) -> list[Action]:
        if self._timer is None or now < self._timer[0]:
            return []
        _, name = self._timer
        self._timer = None
        return self._timers[name](now)

    def on_ecr(self, msg: Message, now: float) -> list[Action]:
        handler = self._requests.get(msg.code)
        if handler is None:
            return [self._respond(MsgCode.ERROR, Result.BAD_REQUEST,
                                  text=f"unknown request {msg.code}")]
        if self.state is State.BOOTING and msg.code not in (MsgCode.STATUS, MsgCode.KEY):
            return [self._respond(msg.code, Result.BUSY)]
        return handler(msg, now)

    def on_bad_request(self, error: str) -> list[Action]:
        """A request frame arrived intact but its payload did not decode."""
        return [self._respond(MsgCode.ERROR, Result.BAD_REQUEST, text=error[:200])]

    def on_harness(self, obj: Mapping[str, Any], now: float) -> list[Action]:
        handler = self._harness.get(str(obj.get("t")))
        if handler is None:
            log.warning("terminal: ignoring harness message of type %r", obj.get("t"))
            return []
        return handler(obj, now)

    def on_job(self, result: JobResult, now: float) -> list[Action]:
        if result.job_id != self._pending_job:
            log.warning("terminal: stale job result %s ignored", result.job_id)
            return []
        self._pending_job = None
        handlers: Mapping[State, Callable[[JobResult, float], list[Action]]] = {
            State.SIGNING_IN: self._job_sign_in, State.READING_CARD: self._job_chip,
            State.PROCESSING: self._job_auth,
        }
        handler = handlers.get(self.state)
        if handler is None:
            log.warning("terminal: job result %s in state %s ignored", result.job_id, self.state)
            return []
        return handler(result, now)

    # ---- helpers
    def _set_state(self, state: State) -> list[Action]:
        self.state = state
        load = LOAD_OF_STATE[state]
        if load == self._load:
            return []
        self._load = load
        return [SendHarness({"t": "load", "state": load})]

    def _respond(self, code: str, rc: Result, **fields: str) -> SendEcr:
        fields.setdefault("text", DISPLAY.get(rc, rc.value))
        return SendEcr(Message(str(code), {"rc": rc.value, **fields}))

    @staticmethod
    def _event(code: EventCode | Prompt) -> SendEcr:
        kind = MsgCode.PROGRESS if isinstance(code, Prompt) else MsgCode.EVENT
        return SendEcr(Message(kind.value, {"code": code.value,
                                            "text": DISPLAY.get(code, code.value)}))

    def _fault(self, code: str) -> None:
        self.faults = (self.faults + [str(code)])[-MAX_FAULTS:]

    def _next_job(self) -> int:
        self._job_id += 1
        self._pending_job = self._job_id
        return self._job_id

    def _take_stan(self) -> int:
        stan = self.nv.stan
        nxt = 1 if stan >= STAN_MAX else stan + 1
        self.nv = NvramData(nxt, self.nv.batch_no, self.nv.boot_count)
        self.nvram.save(self.nv)
        return stan

    def _refusal(self, need_signed_in: bool) -> Result | None:
        """Why a host operation cannot start now (None: it can)."""
        if self.state is not State.IDLE:
            return Result.BUSY
        if self.operator is None:
            return Result.NOT_LOGGED_IN
        if need_signed_in and not self.signed_in:
            return Result.NOT_SIGNED_IN
        if need_signed_in and self.battery_low:
            return Result.LOW_BATTERY
        if need_signed_in and not self.paper_present:
            return Result.PAPER_OUT
        return None

    # ---- timers
    def _t_boot(self, now: float) -> list[Action]:
        out: list[Action] = [SendEcr(Message(MsgCode.READY.value, {
            "fw": FIRMWARE_VERSION, "tid": self.profile.terminal_id,
            "text": DISPLAY[EventCode.READY]}))]
        if not self.paper_present:
            self._fault(EventCode.PAPER_OUT)
            out.append(self._event(EventCode.PAPER_OUT))
        if self.battery_low:
            self._fault(EventCode.LOW_BATTERY)
            out.append(self._event(EventCode.LOW_BATTERY))
        return out + self._set_state(State.IDLE)

    def _t_txn_timeout(self, now: float) -> list[Action]:
        return self._finish(Result.TIMEOUT)

    def _t_print(self, now: float) -> list[Action]:
        txn = self._txn
        assert txn is not None
        if not self.paper_present:
            txn.print_ok = False
            self._fault(Result.PAPER_OUT)
            return self._finish(Result.APPROVED, print=PrintStatus.INCOMPLETE.value)
        copy = txn.copies.pop(0)
        out: list[Action] = [SendEcr(Message(MsgCode.PRINT.value, {
            "copy": str(copy), "text": self._receipt(copy)}))]
        if txn.copies:
            self._timer = (now + self.profile.print_copy_s, "print")
            return out
        return out + self._finish(Result.APPROVED, print=PrintStatus.OK.value)

    def _receipt(self, copy: str) -> str:
        txn = self._txn
        assert txn is not None
        r = txn.result
        card = txn.card
        return format_receipt(copy, ReceiptData(
            merchant_name=self.profile.merchant_name, merchant_id=self.profile.merchant_id,
            terminal_id=self.profile.terminal_id, operator=self.operator or "",
            batch_no=self.nv.batch_no, stan=txn.stan, rrn=r.get("rrn", ""),
            auth_code=r.get("auth", ""), masked_pan=mask_pan(card.pan) if card else "",
            app_label=str(getattr(card, "app_label", "")), amount_minor=txn.amount_minor,
            currency_code=txn.currency_code, when=self.clock(),
            title=txn.txn_type.receipt_title,
            original=txn.original.describe() if txn.original else ""))

    # ---- requests
    def _req_status(self, msg: Message, now: float) -> list[Action]:
        return [SendEcr(Message(MsgCode.STATUS.value, {
            "rc": Result.OK.value, "state": self.state.value,
            "signed_in": "1" if self.signed_in else "0", "operator": self.operator or "",
            "paper": "1" if self.paper_present else "0",
            "card": "1" if self.card_present else "0",
            "battery_low": "1" if self.battery_low else "0", "volts": f"{self.volts:.2f}",
            "batch": f"{self.nv.batch_no:06d}", "faults": ",".join(self.faults),
        }))]

    def _req_login(self, msg: Message, now: float) -> list[Action]:
        if self.state is not State.IDLE:
            return [self._respond(MsgCode.LOGIN, Result.BUSY)]
        op = self.profile.operators.get(msg.get("op"))
        if op is None or op.password != msg.get("pw"):
            log.info("terminal: login refused for operator %r", msg.get("op"))
            return [self._respond(MsgCode.LOGIN, Result.LOGIN_FAILED)]
        self.operator = msg.get("op")
        log.info("terminal: operator %s (%s) logged in", self.operator, op.role)
        return [self._respond(MsgCode.LOGIN, Result.OK, operator=self.operator, role=op.role)]

    def _req_logout(self, msg: Message, now: float) -> list[Action]:
        if self.state is not State.IDLE:
            return [self._respond(MsgCode.LOGOUT, Result.BUSY)]
        self.operator = None
        return [self._respond(MsgCode.LOGOUT, Result.OK)]

    def _req_sign_in(self, msg: Message, now: float) -> list[Action]:
        refusal = self._refusal(need_signed_in=False)
        if refusal is not None:
            return [self._respond(MsgCode.SIGN_IN, refusal)]
        assert self.operator is not None
        job = SignInJob(self._next_job(), self.operator, self._take_stan(), self.nv.batch_no)
        return [*self._set_state(State.SIGNING_IN), self._event(Prompt.CONNECTING),
                StartJob(job)]

    def _req_transaction(self, row: TransactionType, msg: Message, now: float) -> list[Action]:
        """The generic flow of every table row: checks, then wait for the card (``needs_card``)
        or go online at once; PIN when the row and the card's CVM ask for it."""
        code = row.ecr_code
        amount = msg.get("amt")
        currency = msg.get("cur") or self.profile.currency_code
        if not amount.isdigit() or int(amount) <= 0 or len(amount) > 12:
            return [self._respond(code, Result.BAD_REQUEST, text=f"bad amount {amount!r}")]
        original: OriginalRef | None = None
        if row.needs_original:
            try:
                original = OriginalRef.from_ecr_fields(msg.fields)
            except DecodeError as exc:
                return [self._respond(code, Result.BAD_REQUEST,
                                      text=f"{row.ecr_name}: {exc}"[:200])]
            if original is None:
                return [self._respond(code, Result.BAD_REQUEST, text=(
                    f"{row.ecr_name} needs the original transaction: field ostan (trace), or "
                    f"orrn + odate; none given"))]
        refusal = self._refusal(need_signed_in=True)
        if refusal is not None:
            if refusal in (Result.PAPER_OUT, Result.LOW_BATTERY):
                self._fault(refusal)
            return [self._respond(code, refusal)]
        self._txn = _Txn(row, int(amount), currency, original)
        if not row.needs_card:
            return self._authorize(None)
        out = [*self._set_state(State.WAIT_CARD), self._event(Prompt.INSERT_CARD)]
        if self.card_present:
            return out + self._read_card(now)
        self._timer = (now + self.profile.card_wait_s, "card_wait")
        return out

    def _req_key(self, msg: Message, now: float) -> list[Action]:
        key = msg.get("k")
        if key == Key.CANCEL and self.state in (State.WAIT_CARD, State.PIN_ENTRY):
            return self._finish(Result.CANCELLED)
        if self.state is not State.PIN_ENTRY:
            return []  # a key press nobody waits for does nothing
        txn = self._txn
        assert txn is not None
        if key.isdigit() and len(key) == 1:
            if len(txn.pin) < PIN_MAX:
                txn.pin.append(key)
        elif key == Key.CLEAR:
            txn.pin.clear()
        elif key == Key.ENTER and len(txn.pin) >= PIN_MIN:
            return self._authorize("".join(txn.pin))
        return []

    def _req_cancel(self, msg: Message, now: float) -> list[Action]:
        if self.state in (State.WAIT_CARD, State.PIN_ENTRY):
            return [self._respond(MsgCode.CANCEL, Result.OK), *self._finish(Result.CANCELLED)]
        if self.state in TXN_STATES or self.state is State.SIGNING_IN:
            return [self._respond(MsgCode.CANCEL, Result.BUSY,
                                  text="cannot cancel in " + self.state.value)]
        return [self._respond(MsgCode.CANCEL, Result.OK, text="nothing to cancel")]

    # ---- harness
    def _hw_rail(self, obj: Mapping[str, Any], now: float) -> list[Action]:
        was_low = self.battery_low
        self.volts = float(obj.get("volts", self.volts))
        if self.battery_low == was_low or self.state is State.BOOTING:
            return []
        if self.battery_low:
            self._fault(EventCode.LOW_BATTERY)
            return [self._event(EventCode.LOW_BATTERY)]
        return [self._event(EventCode.BATTERY_OK)]

    def _hw_paper(self, obj: Mapping[str, Any], now: float) -> list[Action]:
        was = self.paper_present
        self.paper_present = bool(obj.get("present"))
        if self.paper_present == was or self.state is State.BOOTING:
            return []
        if not self.paper_present:
            self._fault(EventCode.PAPER_OUT)
            return [self._event(EventCode.PAPER_OUT)]
        return [self._event(EventCode.PAPER_OK)]

    def _hw_card(self, obj: Mapping[str, Any], now: float) -> list[Action]:
        was = self.card_present
        self.card_present = bool(obj.get("present"))
        out: list[Action] = []
        if self.card_present != was and self.state is not State.BOOTING:
            out.append(self._event(EventCode.CARD_INSERTED if self.card_present
                                   else EventCode.CARD_REMOVED))
        if self.card_present and self.state is State.WAIT_CARD:
            return out + self._read_card(now)
        if not self.card_present and self.state is State.PIN_ENTRY:
            self._fault(Result.CARD_ERROR)
            return out + self._finish(Result.CARD_ERROR, text="卡片已拔出 CARD REMOVED")
        return out

    # ---- transaction steps
    def _read_card(self, now: float) -> list[Action]:
        txn = self._txn
        assert txn is not None
        self._timer = None
        txn.job_id = self._next_job()
        job = ChipJob(txn.job_id, txn.amount_minor, txn.currency_code, self.profile.country_code,
                      self.clock().date(), self.rng(4), self.profile.card_apdu_s)
        return [*self._set_state(State.READING_CARD), self._event(Prompt.READING_CARD),
                StartJob(job)]

    def _authorize(self, pin: str | None) -> list[Action]:
        txn = self._txn
        assert txn is not None
        self._timer = None
        txn.pin.clear()
        txn.stan = self._take_stan()
        txn.job_id = self._next_job()
        job = AuthJob(job_id=txn.job_id, txn_type=txn.txn_type, keys=self.keys, stan=txn.stan,
                      batch_no=self.nv.batch_no, amount_minor=txn.amount_minor, card=txn.card,
                      pin=pin, original=txn.original)
        return [*self._set_state(State.PROCESSING), self._event(Prompt.PROCESSING),
                self._event(Prompt.CONNECTING), StartJob(job)]

    def _finish(self, rc: Result, **fields: str) -> list[Action]:
        """End the pending transaction with its final response (its type's ECR code); back to
        IDLE."""
        txn = self._txn
        assert txn is not None, "_finish() needs a pending transaction"
        self._timer = None
        self._txn = None
        fields = {**txn.result, "amt": str(txn.amount_minor), "cur": txn.currency_code,
                  **fields}
        if txn.card is not None:
            fields.setdefault("pan", mask_pan(txn.card.pan))
        if txn.stan:
            fields.setdefault("stan", f"{txn.stan:06d}")
        return [self._respond(txn.txn_type.ecr_code, rc, **fields),
                *self._set_state(State.IDLE)]

    # ---- job results
    def _job_sign_in(self, res: JobResult, now: float) -> list[Action]:
        if res.failure:
            self._fault(FAILURE_RESULT[res.failure])
            return [self._respond(MsgCode.SIGN_IN, FAILURE_RESULT[res.failure],
                                  text=res.message[:200]),
                    *self._set_state(State.IDLE)]
        r = res.value
        hrc = str(r.response_code)
        if hrc != "00" or r.keys is None:
            return [self._respond(MsgCode.SIGN_IN, Result.DECLINED, hrc=hrc),
                    *self._set_state(State.IDLE)]
        self.keys = r.keys
        batch = int(getattr(r, "batch_no", None) or self.nv.batch_no)
        if batch != self.nv.batch_no:
            self.nv = NvramData(self.nv.stan, batch, self.nv.boot_count)
            self.nvram.save(self.nv)
        log.info("terminal: signed in, batch %06d", batch)
        return [self._respond(MsgCode.SIGN_IN, Result.APPROVED, hrc=hrc, batch=f"{batch:06d}"),
                *self._set_state(State.IDLE)]

    def _job_chip(self, res: JobResult, now: float) -> list[Action]:
        txn = self._txn
        assert txn is not None
        if res.failure:
            rc = FAILURE_RESULT[res.failure]
            self._fault(rc)
            return self._finish(rc, reason=res.reason, text=f"{DISPLAY[rc]}: {res.reason}")
        txn.card = res.value
        if not txn.txn_type.needs_pin or str(getattr(txn.card, "cvm", "")) in NO_PIN_CVMS:
            return self._authorize(None)
        self._timer = (now + self.profile.pin_entry_s, "pin_entry")
        return [*self._set_state(State.PIN_ENTRY), self._event(Prompt.ENTER_PIN)]

    def _job_auth(self, res: JobResult, now: float) -> list[Action]:
        txn = self._txn
        assert txn is not None
        if res.failure:
            self._fault(FAILURE_RESULT[res.failure])
            return self._finish(FAILURE_RESULT[res.failure], reason=res.reason)
        r = res.value
        hrc = str(r.response_code)
        txn.result = {"hrc": hrc, "rrn": str(r.rrn or ""), "auth": str(r.auth_code or "")}
        if not r.approved:
            if hrc == "22":  # host: state mismatch, sign in again
                self.keys = None
            return self._finish(Result.DECLINED)
        txn.copies = list(COPIES)
        self._timer = (now + self.profile.print_copy_s, "print")
        return [*self._set_state(State.PRINTING), self._event(Prompt.PRINTING)]
