"""The terminal firmware as a pure state machine.

Inputs: ECR messages (:meth:`TerminalFirmware.on_ecr`), harness messages (:meth:`on_harness`),
results of blocking work (:meth:`on_job`) and the passing of time (:meth:`tick`), each with
``now`` (monotonic seconds) passed in.  Outputs: a list of actions — :class:`SendEcr`,
:class:`SendHarness`, :class:`StartJob`, :class:`FlushEcr`, :class:`Freeze`,
:class:`PowerOff` — that the runner carries out.

Blocking work (the EMV kernel over the card slot, the acquirer's TCP exchanges) is described by
a job (:class:`ChipJob`, :class:`TapJob`, :class:`VerifyJob`, :class:`FirstAcJob`,
:class:`SecondAcJob`, :class:`SignInJob`, :class:`AuthJob`, :class:`ReversalJob`,
:class:`SettleJob`, :class:`UploadJob`, :class:`UploadEndJob`); the runner executes it with
:func:`perform` in a worker thread against injected :class:`Services` and feeds the
:class:`JobResult` back.  What must survive a power cut is injected too: the NVRAM store
(counters, clock offset, limits set by an admin, operator locks) and the journal
(:mod:`sim.terminal.journal`), written *before* the firmware acts on it; the machine clock is
injected, the terminal's own clock is that plus the NVRAM offset.  So every decision here is
unit-tested without sockets, files or sleeping.

The business day (docs/business-day.md, docs/terminal-behaviour.md): operators and roles with
lock-out, limits, the terminal's clock, the journal, reversals, reprint / query / totals,
settlement with batch upload, shutdown.

Entry modes and cardholder verification (docs/terminal-behaviour.md, "Entry modes" and
"Cardholder verification"): while it waits for a card the terminal takes a chip (inserted), a
swipe (harness ``swipe``: service code rules, fallback after ``cards.fallback_after`` failed
chip reads) or a tap (harness ``field``: one card is read by the contactless kernel, two are a
collision); the card's CVM decides online PIN, offline PIN (the card's VERIFY, with its try
counter), signature (on the pad, after the approval) or none; a chip card takes the host's
answer in a second GENERATE AC, and one that declines it (AAC) has the approval reversed.

Power and printer faults (docs/terminal-behaviour.md, "Power" and "Printer"): the battery
cut-off (the terminal shuts itself down), the hang of an MCU run below its operating voltage,
the self-test's fault codes (:class:`~protocols.ecr.FaultCode`), the printer's presence and
near-end sensors, and receipts continued after the paper ran out mid-receipt.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

from protocols import tlv
from protocols.digits import ascii_digits
from protocols.ecr import (
    CLOCK_FORMAT,
    FAULT_TEXTS,
    Cvm,
    EntryMode,
    EventCode,
    FaultCode,
    Key,
    Message,
    MsgCode,
    Parameter,
    PrintStatus,
    Prompt,
    QrMode,
    Reason,
    Result,
    ShutdownReason,
    SpecTable,
    TerminalState,
    TxnStatus,
    message_specs,
    request_problem,
    response_code,
)
from protocols.errors import DecodeError
from protocols.iso8583 import PosEntry
from protocols.masking import mask_pan
from protocols.qr import Operation, OrderStatus, QrOrder, mask_code
from protocols.qrclient import OrderPoller
from protocols.transactions import (
    RECONCILE_BALANCED,
    RECONCILE_UNBALANCED,
    TRANSACTIONS,
    Book,
    OriginalRef,
    SettlementTotals,
    TransactionTable,
    TransactionType,
    UploadItem,
)
from sim.terminal import books
from sim.terminal.journal import (
    REVERSAL_NO_RESPONSE,
    REVERSAL_OF_STAGE,
    REVERSAL_OTHER,
    CardData,
    EntryState,
    Journal,
    JournalEntry,
    MemoryJournal,
    NewEntry,
)
from sim.terminal.nvram import NvramData, NvramStore
from sim.terminal.printer import (
    CONTINUED_MARK,
    COPIES,
    HELD_MARK,
    REPRINT_MARK,
    ReceiptData,
    format_receipt,
)
from sim.terminal.profile import Operator as Operator  # the profile's names, importable from here
from sim.terminal.profile import Profile as Profile
from sim.terminal.profile import load_profile as load_profile
from sim.terminal.profile import parse_hostport as parse_hostport
from sim.terminal.stripe import is_chip_card, read_swipe

log = logging.getLogger(__name__)

FIRMWARE_VERSION = "SIM-1.1"
MAX_FAULTS = 8
MAX_TEXT = 200  # characters of an answer's display text (a request's value never makes it longer)
PIN_MIN, PIN_MAX = 4, 12
STAN_MAX = 999_999
NO_PIN_CVMS = frozenset({"no_cvm", "signature"})
#: Field 22 of a chip-read transaction: 05 (ICC) + 1 (PIN entry capability).
POS_ENTRY_CHIP = PosEntry.CHIP.value
#: Field 22 by how the card was read (protocols.iso8583.PosEntry; a fallback swipe: 801).
POS_ENTRY: Mapping[str, PosEntry] = MappingProxyType({
    EntryMode.CHIP: PosEntry.CHIP, EntryMode.SWIPE: PosEntry.SWIPE, EntryMode.TAP: PosEntry.TAP})
#: Chip failures that count towards the fallback (the chip could not be read); any other
#: (a status word: the card refused; the card pulled) ends the transaction at once.
CHIP_READ_FAILURES = frozenset({Reason.MUTE, Reason.UNSUPPORTED, Reason.BAD_ATR})
#: Card errors that mean the card is no longer there.
CARD_GONE = frozenset({Reason.ABSENT, Reason.REMOVED})
#: The reversal reason of an approval the card did not take (second GENERATE AC).
REVERSAL_CARD_DECLINED = REVERSAL_OTHER
ADMIN = "admin"
#: Host response codes after which the terminal drops its working keys (must sign in again).
SIGN_IN_AGAIN = frozenset({"22", "77", "A0"})
#: Journal states of the open batch that make it "unsettled" (shutdown refused).
UNSETTLED_STATES = frozenset({EntryState.APPROVED, EntryState.REVERSAL_PENDING})
#: Slack when comparing volts and instants (floats from JSON and sums of seconds).
EPSILON = 1e-9
#: The ``reason`` of the final answer to a request the terminal dropped as it shut down.
SHUTDOWN_REASON = "shutdown"


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
class TapJob:
    """Read the card in the contactless field (the contactless kernel, one step)."""

    job_id: int
    amount_minor: int
    currency_code: str
    country_code: str
    txn_date: datetime.date
    unpredictable_number: bytes
    timeout: float
    cvm_required: bool  # the amount is above the contactless CVM limit: online PIN


@dataclass(frozen=True)
class VerifyJob:
    """VERIFY the offline PIN with the card still powered from :class:`ChipJob`."""

    job_id: int
    card: Any = field(repr=False)  # sim.terminal.emv.CardRead
    pin: str = field(repr=False)


@dataclass(frozen=True)
class FirstAcJob:
    """The first GENERATE AC after the offline PIN was checked."""

    job_id: int
    card: Any = field(repr=False)
    pin_verified: bool


@dataclass(frozen=True)
class SecondAcJob:
    """The second GENERATE AC with the host's answer (*approve*: a TC is asked for)."""

    job_id: int
    card: Any = field(repr=False)
    approve: bool
    response_code: str
    issuer_auth: bytes = field(default=b"", repr=False)  # tag 91 of the answer's field 55


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
    pos_entry: str = POS_ENTRY_CHIP  # field 22 when a card was read


@dataclass(frozen=True)
class ReversalJob:
    """Send the 0400 of journal *entry* (one try, bounded by the client's time-outs)."""

    job_id: int
    txn_type: TransactionType
    keys: Any = field(repr=False)
    entry: JournalEntry
    card: CardData | None = field(default=None, repr=False)

    @property
    def original(self) -> OriginalRef | None:
        return books.original_ref(self.entry)


@dataclass(frozen=True)
class SettleJob:
    job_id: int
    keys: Any = field(repr=False)
    stan: int
    batch_no: int
    operator: str
    totals: SettlementTotals


@dataclass(frozen=True)
class UploadJob:
    job_id: int
    keys: Any = field(repr=False)
    batch_no: int
    item: UploadItem


@dataclass(frozen=True)
class UploadEndJob:
    job_id: int
    keys: Any = field(repr=False)
    stan: int
    batch_no: int
    count: int


@dataclass(frozen=True)
class QrJob:
    """One request to the QR payment platform (docs/qr-platform.md): *op* on order
    *out_trade_no*; *auth_code*: the customer's payment code (micropay only)."""

    job_id: int
    op: Operation
    out_trade_no: str
    amount_minor: int = 0
    auth_code: str = field(default="", repr=False)
    description: str = ""


@dataclass(frozen=True)
class QrAnswer:
    """What a :class:`QrJob` got: the order, or the platform's refusal (*refused*: its
    ErrorCode; *unknown*: SYSTEM_ERROR, the outcome is unknown), or no usable answer (*comms*:
    no answer, the connection failed, an answer that is not the platform's)."""

    order: QrOrder | None = None
    refused: str = ""
    unknown: bool = False
    message: str = ""
    comms: str = ""


Job = (ChipJob | TapJob | VerifyJob | FirstAcJob | SecondAcJob | SignInJob | AuthJob
       | ReversalJob | SettleJob | UploadJob | UploadEndJob | QrJob)


@dataclass(frozen=True)
class StartJob:
    job: Job


@dataclass(frozen=True)
class Freeze:
    """The MCU hung (its rail below the operating range, but not low enough for a reset): the
    runner stops serving the ECR line (no ACK, no retransmission, nothing read) and the
    firmware takes no input any more.  Only a power cycle (the bench kills the process) ends
    it."""


@dataclass(frozen=True)
class PowerOff:
    """The terminal powers itself off: the runner lets the ECR frames already queued go out
    (bounded by the link's retransmission bound), then sends *notice* on the harness (the bench
    cuts the process's power on it) and stops."""

    notice: Mapping[str, Any]


Action = SendEcr | SendHarness | FlushEcr | StartJob | Freeze | PowerOff


@dataclass(frozen=True)
class JobResult:
    job_id: int
    value: Any = field(default=None, repr=False)
    failure: str = ""  # "" | "card" | "comms" | "internal"
    reason: str = ""
    message: str = ""
    reversal: str = ""  # field 39 of the reversal a financial request failing so calls for
    text: str = ""  # what the terminal displays for the failure ('' its result's own text)


class Services(Protocol):
    """The blocking work the firmware delegates (real: EMV kernel + AcquirerClient)."""

    @property
    def card_errors(self) -> tuple[type[BaseException], ...]: ...

    @property
    def comms_errors(self) -> tuple[type[BaseException], ...]: ...

    def read_card(self, job: ChipJob) -> Any: ...

    def read_tap(self, job: TapJob) -> Any: ...

    def verify_pin(self, job: VerifyJob) -> Any: ...

    def first_ac(self, job: FirstAcJob) -> Any: ...

    def second_ac(self, job: SecondAcJob) -> Any: ...

    def sign_in(self, job: SignInJob) -> Any: ...

    def authorize(self, job: AuthJob) -> Any: ...

    def reverse(self, job: ReversalJob) -> Any: ...

    def settle(self, job: SettleJob) -> Any: ...

    def upload(self, job: UploadJob) -> Any: ...

    def upload_end(self, job: UploadEndJob) -> Any: ...

    def qr(self, job: QrJob) -> QrAnswer: ...


_PERFORM: Mapping[type, str] = {
    ChipJob: "read_card", TapJob: "read_tap", VerifyJob: "verify_pin", FirstAcJob: "first_ac",
    SecondAcJob: "second_ac", SignInJob: "sign_in", AuthJob: "authorize", ReversalJob: "reverse",
    SettleJob: "settle", UploadJob: "upload", UploadEndJob: "upload_end", QrJob: "qr",
}


def perform(job: Job, services: Services) -> JobResult:
    """Run *job* (blocking; called in the runner's worker thread) and classify its failure.

    A comms failure says which reversal it calls for (``CommsError.reversal``, else by stage:
    a request that may have reached the host is reversed with 98); a bug is reversed with 06."""
    method = _PERFORM[type(job)]
    try:
        return JobResult(job.job_id, value=getattr(services, method)(job))
    except services.card_errors as exc:
        return JobResult(job.job_id, failure="card", reason=str(getattr(exc, "reason", "")),
                         message=str(exc))
    except services.comms_errors as exc:
        stage = str(getattr(exc, "stage", ""))
        reversal = getattr(exc, "reversal", None)
        return JobResult(job.job_id, failure="comms", reason=stage, message=str(exc),
                         reversal=REVERSAL_OF_STAGE.get(stage, "98") if reversal is None
                         else str(reversal), text=str(getattr(exc, "display", "") or ""))
    except Exception as exc:  # a bug in a kernel/client: reported loudly, never as a card fault
        log.exception("terminal: %s failed with an unexpected error", type(job).__name__)
        return JobResult(job.job_id, failure="internal", reason=type(exc).__name__,
                         message=str(exc), reversal=REVERSAL_OTHER)


# --------------------------------------------------------------------------------------- state

State = TerminalState  # the firmware's states are the STATUS response's ``state`` vocabulary


class Halt(enum.StrEnum):
    """Why the firmware takes no input any more (never seen on the ECR line: it says nothing)."""

    HUNG = "hung"  # the MCU ran below min_operating_volts: frozen until a power cycle
    OFF = "off"  # it powered itself off (battery cut-off, or too low to start)

TXN_STATES = frozenset({State.WAIT_CARD, State.READING_CARD, State.PIN_ENTRY, State.PROCESSING,
                        State.SIGNATURE, State.PRINTING, State.WAIT_QR})

DISPLAY: Mapping[str, str] = MappingProxyType({
    EventCode.READY: "欢迎使用 WELCOME",
    Prompt.INSERT_CARD: "请插卡 INSERT CARD",
    Prompt.READING_CARD: "读卡中 READING CARD",
    Prompt.ENTER_PIN: "请输入密码 ENTER PIN",
    Prompt.PROCESSING: "处理中 PROCESSING",
    Prompt.CONNECTING: "连接中 CONNECTING",
    Prompt.PRINTING: "打印中 PRINTING",
    Prompt.RETRY_CHIP: "读卡失败 请重新插卡 CHIP ERROR: INSERT AGAIN",
    Prompt.SWIPE_CARD: "请刷卡 SWIPE CARD",
    Prompt.INSERT_CHIP: "请插卡 INSERT CHIP",
    Prompt.SWIPE_AGAIN: "刷卡失败 请重刷 READ ERROR: SWIPE AGAIN",
    Prompt.ONE_CARD_ONLY: "多张卡 请只放一张 MORE THAN ONE CARD",
    Prompt.WRONG_PIN: "密码错 WRONG PIN",
    Prompt.PIN_BLOCKED: "密码已锁 PIN BLOCKED",
    Prompt.SIGNATURE: "请持卡人签名 PLEASE SIGN",
    Prompt.SHOW_QR: "请扫码支付 SCAN TO PAY",
    Prompt.SCAN_CODE: "请出示付款码 SHOW YOUR PAYMENT CODE",
    Prompt.WAIT_PASSWORD: "请用户输入支付密码 WAITING FOR THE CUSTOMER'S PASSWORD",
    EventCode.PAPER_OUT: "打印机缺纸 PAPER OUT",
    EventCode.PAPER_OK: "纸张已装好 PAPER OK",
    EventCode.CARD_INSERTED: "已插卡 CARD INSERTED",
    EventCode.CARD_REMOVED: "已取卡 CARD REMOVED",
    EventCode.LOW_BATTERY: "电量低 请充电 LOW BATTERY",
    EventCode.BATTERY_OK: "电量正常 BATTERY OK",
    EventCode.PAPER_LOW: "纸将用完 PAPER LOW",
    EventCode.PAPER_LOW_OK: "纸张充足 PAPER LOW CLEARED",
    EventCode.PRINTER_MISSING: "打印机未连接 PRINTER MISSING",
    EventCode.PRINTER_OK: "打印机已连接 PRINTER OK",
    EventCode.SHUTDOWN: "电量耗尽 关机 BATTERY EMPTY: SHUTTING DOWN",
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
    Result.LOCKED: "操作员已锁定 OPERATOR LOCKED",
    Result.NOT_AUTHORISED: "无权限 NOT AUTHORISED",
    Result.LIMIT_EXCEEDED: "超过单笔限额 ABOVE TRANSACTION LIMIT",
    Result.DAILY_LIMIT_EXCEEDED: "超过当日限额 ABOVE DAILY LIMIT",
    Result.UNSETTLED_BATCH: "批次未结算 BATCH NOT SETTLED",
    Result.NOT_FOUND: "无此交易 NOT FOUND",
    Result.NO_PRINTER: "打印机未连接 NO PRINTER",
})

#: EV SHUTDOWN's text for each reason.
SHUTDOWN_TEXTS: Mapping[ShutdownReason, str] = MappingProxyType({
    ShutdownReason.CUTOFF: DISPLAY[EventCode.SHUTDOWN],
    ShutdownReason.CRITICAL: "电量严重不足 无法开机 BATTERY CRITICAL: SHUTTING DOWN",
})


@dataclass(frozen=True)
class Sensor:
    """A line of the printer the harness reports (``{"t": <name>, <key>: bool}``): which
    firmware attribute holds it, which reading means the part is failing, its fault code and
    the events that say it failed and recovered."""

    attr: str
    key: str
    failing: bool
    fault: FaultCode
    raised: EventCode
    cleared: EventCode


#: Harness message type → sensor, in the order a self-test reports them.
SENSORS: Mapping[str, Sensor] = MappingProxyType({
    "printer": Sensor("printer_present", "present", False, FaultCode.PRINTER_MISSING,
                      EventCode.PRINTER_MISSING, EventCode.PRINTER_OK),
    "paper": Sensor("paper_present", "present", False, FaultCode.PAPER_OUT,
                    EventCode.PAPER_OUT, EventCode.PAPER_OK),
    "paper_low": Sensor("paper_low", "low", True, FaultCode.PAPER_LOW,
                        EventCode.PAPER_LOW, EventCode.PAPER_LOW_OK),
})

LOAD_OF_STATE: Mapping[State, str] = {
    State.BOOTING: "booting", State.IDLE: "idle", State.SIGNING_IN: "comms",
    State.WAIT_CARD: "idle", State.READING_CARD: "card", State.PIN_ENTRY: "card",
    State.PROCESSING: "comms", State.SIGNATURE: "idle", State.PRINTING: "printing",
    State.WAIT_QR: "idle",
}

FAILURE_RESULT: Mapping[str, Result] = {
    "card": Result.CARD_ERROR, "comms": Result.COMMS_ERROR, "internal": Result.INTERNAL_ERROR,
}

#: Request handlers (method names) of transaction types whose flow differs from the generic one
#: (:meth:`TerminalFirmware._req_transaction`); empty today: every row of the table fits it
#: (what differs between sale, void and refund is a check by the row's book, below).
TXN_REQUEST_HANDLERS: Mapping[str, str] = MappingProxyType({})

#: The check each row's book adds before going online (method names):
#: a sale against the limits, a void against its original in the journal, a refund against
#: the refund limit (and its original, when the journal has it).
TXN_CHECKS: Mapping[Book, str] = MappingProxyType({
    Book.DEBIT: "_check_sale", Book.CANCEL: "_check_void", Book.CREDIT: "_check_refund",
})

#: PARAMETER names → the method that checks and applies the value (every one needs an admin).
PARAMETER_SETTERS: Mapping[str, str] = MappingProxyType({
    Parameter.CLOCK: "_pm_clock", Parameter.TXN_LIMIT: "_pm_limit",
    Parameter.DAILY_LIMIT: "_pm_limit", Parameter.REFUND_LIMIT: "_pm_limit",
})

LIMIT_NAMES = (Parameter.TXN_LIMIT, Parameter.DAILY_LIMIT, Parameter.REFUND_LIMIT)

RequestHandler = Callable[[Message, float], list[Action]]
Continue = Callable[[float], list[Action]]
Fail = Callable[[Result, str, dict[str, str]], list[Action]]


@dataclass
class _Txn:
    txn_type: TransactionType
    amount_minor: int
    currency_code: str
    original: OriginalRef | None = None
    original_entry: JournalEntry | None = None  # the original, when the journal has it
    job_id: int = 0
    card: Any = field(default=None, repr=False)
    pin: list[str] = field(default_factory=list, repr=False)
    stan: int = 0
    entry_id: int = 0  # journal entry of the request, once written
    result: dict[str, str] = field(default_factory=dict)
    chip_failures: int = 0  # chip reads that failed in this transaction (fallback)
    bad_swipes: int = 0  # swipes that read badly in this transaction (swipe_tries)
    chip_error: tuple[str, str] = ("", "")  # the last one: reason, text
    card_powered: bool = False  # a chip card session left open between kernel steps
    fallback: bool = False  # the card was swiped after its chip failed
    second_ac_approve: bool = False  # what the second GENERATE AC under way asks for
    qr: _Qr | None = None  # a QR payment (entry mode qr)

    @property
    def entry(self) -> EntryMode:
        """How the card was read (MANUAL: no card; QR: a QR payment)."""
        if self.qr is not None:
            return EntryMode.QR
        if self.card is None:
            return EntryMode.MANUAL
        return EntryMode(str(getattr(self.card, "entry", EntryMode.CHIP) or EntryMode.CHIP))

    @property
    def cvm(self) -> str:
        return str(getattr(self.card, "cvm", "") or "") if self.card is not None else ""

    @property
    def pos_entry(self) -> str:
        if self.card is None:
            return ""
        return (PosEntry.FALLBACK if self.fallback else POS_ENTRY[self.entry]).value

    @property
    def first_ac_pending(self) -> bool:
        """A chip card read up to its CVM, its first GENERATE AC still to come (offline
        PIN)."""
        return self.entry is EntryMode.CHIP and not getattr(self.card, "cryptogram_type", "ARQC")

    @property
    def wants_signature(self) -> bool:
        return self.cvm == Cvm.SIGNATURE or bool(getattr(self.card, "signature_too", False))


@dataclass
class _Qr:
    """A QR payment under way (docs/terminal-behaviour.md, "QR payments")."""

    mode: QrMode
    out_trade_no: str
    step: str = ""  # what the QrJob under way is for (a key of TerminalFirmware._qr_steps)
    order: QrOrder | None = None
    poller: OrderPoller | None = None
    code: str = ""  # the customer's payment code, masked
    cancel: bool = False  # the cashier cancelled while a request was under way
    password_shown: bool = False


@dataclass(frozen=True)
class _Page:
    """One receipt copy to print.  *entry_id*: the journal entry it is a copy of (0: a reprint,
    nothing to record); *index*: which copy of it; *last*: once it is out the entry counts as
    printed (``held``: printed at boot, after a power cut)."""

    copy: str
    text: str
    entry_id: int = 0
    index: int = 0
    last: bool = False
    held: bool = False


@dataclass
class _Printing:
    """Receipt copies still to print and what comes after (called with print_ok).  *request*:
    the ECR code whose answer waits for the end of the printing ('' when none does)."""

    pages: list[_Page]
    then: Callable[[bool, float], list[Action]]
    request: str = ""


@dataclass
class _Reversals:
    """Sending the pending reversals before a financial or settlement message."""

    then: Continue
    fail: Fail
    entry_id: int = 0
    tries: int = 0  # tries of the current entry on this occasion


@dataclass
class _Settlement:
    batch_no: int
    totals: SettlementTotals
    round: int = 1
    uploads: list[UploadItem] = field(default_factory=list)
    uploaded: int = 0


@dataclass(frozen=True)
class _Pm:
    """A PARAMETER value checked and ready to store."""

    nv: NvramData
    echo: str


class TerminalFirmware:
    """The decision logic of the simulated POS terminal (see module doc).

    *transactions* is the table the ECR transaction requests are dispatched on (one generic
    handler per row unless :data:`TXN_REQUEST_HANDLERS` names another).  *journal* defaults to
    a :class:`~sim.terminal.journal.MemoryJournal` (the runner passes the SQLite one); *clock*
    is the machine's wall clock.
    """

    def __init__(self, profile: Profile, nvram: NvramStore, *,
                 journal: Journal | None = None,
                 clock: Callable[[], datetime.datetime] = datetime.datetime.now,
                 rng: Callable[[int], bytes] = os.urandom,
                 transactions: TransactionTable = TRANSACTIONS, qr: bool = False) -> None:
        self.profile = profile
        self.qr_enabled = qr  # a QR payment platform is configured (its client in Services)
        #: QR orders whose outcome the terminal does not know (a request without a usable
        #: answer after the order could be paid): cancelled at the next QR payment, first.
        #: RAM only: a power cut forgets them (the platform closes unpaid orders by itself).
        self.qr_unknown: list[str] = []
        self.nvram = nvram
        self.journal: Journal = journal if journal is not None else MemoryJournal()
        self.clock = clock
        self.rng = rng
        self.transactions = transactions
        self.state = State.BOOTING
        self.operator: str | None = None
        self.keys: Any = None  # WorkingKeys, RAM only
        self._signed_day: str | None = None  # terminal date (YYYYMMDD) of the last sign-in
        self.paper_present = True
        self.paper_low = False
        self.printer_present = True
        self.volts = profile.nominal_volts
        self.halted: Halt | None = None
        self._cutoff_since: float | None = None  # the rail at or below cutoff_volts since
        self._hang_since: float | None = None  # the rail below min_operating_volts since
        self._owed = False  # approved receipts not printed yet (journal): print when possible
        self.card_present = False
        self.field_cards = 0  # cards in the contactless field (harness "field")
        self.faults: list[str] = []
        self.nv: NvramData = nvram.load()
        self._load = ""
        self._timer: tuple[float, str] | None = None
        self._txn: _Txn | None = None
        self._printing: _Printing | None = None
        self._reversals: _Reversals | None = None
        self._settlement: _Settlement | None = None
        self._job_id = 0
        self._pending_job: int | None = None
        self._pending_kind: type | None = None
        requests: dict[str, RequestHandler] = {
            MsgCode.STATUS: self._req_status, MsgCode.LOGIN: self._req_login,
            MsgCode.LOGOUT: self._req_logout, MsgCode.SIGN_IN: self._req_sign_in,
            MsgCode.KEY: self._req_key, MsgCode.CANCEL: self._req_cancel,
            MsgCode.REPRINT: self._req_reprint, MsgCode.QUERY: self._req_query,
            MsgCode.TOTALS: self._req_totals, MsgCode.SETTLE: self._req_settle,
            MsgCode.UNLOCK: self._req_unlock, MsgCode.PARAMETER: self._req_parameter,
            MsgCode.SHUTDOWN: self._req_shutdown,
        }
        for row in transactions:
            requests[row.ecr_code] = self._txn_handler(row)
        self._requests: Mapping[str, RequestHandler] = MappingProxyType(requests)
        self._specs: SpecTable = message_specs(transactions)
        self._harness: Mapping[str, Callable[[Mapping[str, Any], float], list[Action]]] = {
            "rail": self._hw_rail, "card": self._hw_card, "swipe": self._hw_swipe,
            "field": self._hw_field, "scan": self._hw_scan,
            **{name: self._hw_sensor(sensor) for name, sensor in SENSORS.items()},
        }
        self._timers: Mapping[str, Callable[[float], list[Action]]] = {
            "boot": self._t_boot, "card_wait": self._t_card_wait,
            "pin_entry": self._t_txn_timeout, "signature": self._t_signature,
            "print": self._t_print, "qr_scan": self._t_txn_timeout, "qr_poll": self._t_qr_poll,
        }
        self._job_handlers: Mapping[type, Callable[[JobResult, float], list[Action]]] = {
            SignInJob: self._job_sign_in, ChipJob: self._job_chip, TapJob: self._job_tap,
            VerifyJob: self._job_verify, FirstAcJob: self._job_first_ac,
            SecondAcJob: self._job_second_ac, AuthJob: self._job_auth,
            ReversalJob: self._job_reversal, SettleJob: self._job_settle,
            UploadJob: self._job_upload, UploadEndJob: self._job_upload_end,
            QrJob: self._job_qr,
        }
        self._qr_steps: Mapping[str, Callable[[QrAnswer, float], list[Action]]] = {
            "recover": self._qr_recovered, "create": self._qr_created,
            "micropay": self._qr_charged, "query": self._qr_queried,
            "close": self._qr_closed, "cancel": self._qr_cancelled,
            "give_up": self._qr_given_up,
        }

    def _txn_handler(self, row: TransactionType) -> RequestHandler:
        method: Callable[[TransactionType, Message, float], list[Action]] = getattr(
            self, TXN_REQUEST_HANDLERS.get(row.type, "_req_transaction"))

        def handle(msg: Message, now: float) -> list[Action]:
            return method(row, msg, now)

        return handle

    # ---- properties
    def terminal_time(self) -> datetime.datetime:
        """The terminal's own clock: the machine's plus the NVRAM offset (PM clock, sign-in)."""
        return self.clock() + datetime.timedelta(seconds=self.nv.clock_offset_s)

    @property
    def business_day(self) -> str:
        return self.terminal_time().strftime("%Y%m%d")

    @property
    def signed_in(self) -> bool:
        """Working keys from a sign-in of the terminal's current business day."""
        return self.keys is not None and self._signed_day == self.business_day

    @property
    def battery_low(self) -> bool:
        return self.volts <= self.profile.low_battery_volts + EPSILON

    @property
    def battery_critical(self) -> bool:
        return self.volts <= self.profile.critical_volts + EPSILON

    @property
    def battery_fault(self) -> FaultCode | None:
        """E12 at or below ``critical_volts``, E11 at or below ``low_battery_volts``."""
        if self.battery_critical:
            return FaultCode.BATTERY_CRITICAL
        return FaultCode.BATTERY_LOW if self.battery_low else None

    @property
    def can_print(self) -> bool:
        return self.printer_present and self.paper_present

    def fault_codes(self) -> tuple[FaultCode, ...]:
        """The fault code of every part failing now, in code order (docs/terminal-behaviour.md,
        "Fault codes (TS-17)")."""
        codes = {s.fault for s in SENSORS.values() if getattr(self, s.attr) == s.failing}
        battery = self.battery_fault
        if battery is not None:
            codes.add(battery)
        return tuple(code for code in FaultCode if code in codes)

    def limit(self, name: str) -> int:
        """Limit *name* in force: an admin's PARAMETER, else the profile's."""
        return self.nv.limit_overrides.get(name, self.profile.limit(name))

    def next_deadline(self) -> float | None:
        if self.halted is not None:
            return None
        p = self.profile
        times = [t for t in (
            self._timer[0] if self._timer else None,
            None if self._cutoff_since is None else self._cutoff_since + p.cutoff_debounce_s,
            None if self._hang_since is None else self._hang_since + p.hang_after_s,
        ) if t is not None]
        return min(times) if times else None

    # ---- inputs
    def start(self, now: float) -> list[Action]:
        """Power-on: POST takes ``boot_s``; the ECR input is flushed.  The journal is recovered
        first: a request whose answer never came is now a pending reversal."""
        self._save(dataclasses.replace(self.nv, boot_count=self.nv.boot_count + 1))
        for entry in self.journal.recover():
            log.warning("terminal: %s had no answer before the power went: reversal pending",
                        entry.describe())
        self._owed = bool(self.journal.unprinted())
        self._track_rail(now)
        self._timer = (now + self.profile.boot_s, "boot")
        return [FlushEcr(), *self._set_state(State.BOOTING)]

    def tick(self, now: float) -> list[Action]:
        def due() -> list[Action]:
            if self._timer is None or now < self._timer[0]:
                return []
            _, name = self._timer
            self._timer = None
            return self._timers[name](now)

        return self._input(now, due)

    def on_ecr(self, msg: Message, now: float) -> list[Action]:
        return self._input(now, lambda: self._on_ecr(msg, now))

    def on_bad_request(self, error: str) -> list[Action]:
        """A request frame arrived intact but its payload did not decode."""
        if self.halted is not None:
            return []
        return [self._respond(MsgCode.ERROR, Result.BAD_REQUEST, text=error)]

    def on_harness(self, obj: Mapping[str, Any], now: float) -> list[Action]:
        return self._input(now, lambda: self._on_harness(obj, now))

    def on_job(self, result: JobResult, now: float) -> list[Action]:
        return self._input(now, lambda: self._on_job(result, now))

    def _input(self, now: float, handle: Callable[[], list[Action]]) -> list[Action]:
        """Every input: first what the rail did since the last one (a hang or a cut-off that
        fell due: then the input is not seen), then the input, then what the terminal does by
        itself once idle."""
        out = self._power_due(now)
        if self.halted is not None:
            return out
        out += handle()
        if self.halted is None:
            out += self._idle_work(now)
        return out

    def _on_ecr(self, msg: Message, now: float) -> list[Action]:
        handler = self._requests.get(msg.code)
        problem = request_problem(msg, self._specs)
        if handler is None or problem is not None:
            return [self._respond(msg.code, Result.BAD_REQUEST,
                                  text=problem or f"unknown request {msg.code[:2]!r}")]
        if self.state is State.BOOTING and msg.code not in (MsgCode.STATUS, MsgCode.KEY):
            return [self._respond(msg.code, Result.BUSY)]
        return handler(msg, now)

    def _on_harness(self, obj: Mapping[str, Any], now: float) -> list[Action]:
        handler = self._harness.get(str(obj.get("t")))
        if handler is None:
            log.warning("terminal: ignoring harness message of type %r", obj.get("t"))
            return []
        return handler(obj, now)

    def _on_job(self, result: JobResult, now: float) -> list[Action]:
        if result.job_id != self._pending_job or self._pending_kind is None:
            log.warning("terminal: stale job result %s ignored", result.job_id)
            return []
        kind = self._pending_kind
        self._pending_job = self._pending_kind = None
        return self._job_handlers[kind](result, now)

    # ---- helpers
    def _set_state(self, state: State, load: str | None = None) -> list[Action]:
        self.state = state
        load = load or LOAD_OF_STATE[state]
        if load == self._load:
            return []
        self._load = load
        return [SendHarness({"t": "load", "state": load})]

    def _respond(self, code: str, rc: Result, **fields: str) -> SendEcr:
        """Final response *rc* to request *code*, under the code the spec table gives its answer
        (:func:`response_code`: ER for a request without a response, such as KEY, or an unknown
        one); the display text at most :data:`MAX_TEXT` characters (cut with ``…``), whatever a
        refusal quotes."""
        text = fields.get("text", DISPLAY.get(rc, rc.value))
        fields["text"] = text if len(text) <= MAX_TEXT else text[:MAX_TEXT - 1] + "…"
        return SendEcr(Message(response_code(str(code), self._specs), {"rc": rc.value, **fields}))

    @staticmethod
    def _event(code: EventCode | Prompt, fault: FaultCode | None = None,
               **extra: str) -> SendEcr:
        """EV (or PG for a prompt); *fault*: the fault code of the part the event reports."""
        kind = MsgCode.PROGRESS if isinstance(code, Prompt) else MsgCode.EVENT
        fields = {"code": code.value, "text": DISPLAY.get(code, code.value)}
        if fault is not None:
            fields["fault"] = fault.value
        return SendEcr(Message(kind.value, {**fields, **extra}))

    def _fault(self, code: str) -> None:
        self.faults = (self.faults + [str(code)])[-MAX_FAULTS:]

    def _save(self, nv: NvramData) -> None:
        self.nv = nv
        self.nvram.save(nv)

    def _start(self, job: Job) -> StartJob:
        self._pending_job = job.job_id
        self._pending_kind = type(job)
        return StartJob(job)

    def _next_job(self) -> int:
        self._job_id += 1
        return self._job_id

    def _take_stan(self) -> int:
        stan = self.nv.stan
        self._save(dataclasses.replace(self.nv, stan=1 if stan >= STAN_MAX else stan + 1))
        return stan

    def _role(self) -> str:
        op = self.profile.operators.get(self.operator or "")
        return op.role if op is not None else ""

    def _refusal(self, need_signed_in: bool, *, admin: bool = False,
                 prints: bool = True) -> Result | None:
        """Why a host operation cannot start now (None: it can); one that *prints* a receipt
        needs the printer and paper too."""
        if self.state is not State.IDLE:
            return Result.BUSY
        if self.operator is None:
            return Result.NOT_LOGGED_IN
        if admin and self._role() != ADMIN:
            return Result.NOT_AUTHORISED
        if need_signed_in and not self.signed_in:
            return Result.NOT_SIGNED_IN
        if need_signed_in and self.battery_low:
            return Result.LOW_BATTERY
        if need_signed_in and prints and not self.printer_present:
            return Result.NO_PRINTER
        if need_signed_in and prints and not self.paper_present:
            return Result.PAPER_OUT
        return None

    def _local_refusal(self, code: str, *, admin: bool = False) -> SendEcr | None:
        """For local operations (no host): BUSY, NOT_LOGGED_IN, NOT_AUTHORISED (admin only)."""
        refusal = self._refusal(need_signed_in=False, admin=admin)
        return None if refusal is None else self._refuse(code, refusal)

    def _refuse(self, code: str, refusal: Result) -> SendEcr:
        """The answer refusing request *code*; NOT_AUTHORISED names who asked."""
        if refusal is not Result.NOT_AUTHORISED:
            return self._respond(code, refusal)
        return self._respond(code, refusal, text=(
            f"{DISPLAY[refusal]}: {code} needs an admin; operator {self.operator} is "
            f"{self._role() or 'nobody'}"))

    def _drop_keys_on(self, hrc: str) -> None:
        if hrc in SIGN_IN_AGAIN:
            log.info("terminal: host answered %s: working keys dropped, sign in again", hrc)
            self.keys = None

    # ---- timers
    def _t_boot(self, now: float) -> list[Action]:
        """End of the self-test (POST): a battery too low to start powers the terminal off;
        else the receipts owed are printed (held after a power cut, or continued), then
        READY with the fault code of every failing part."""
        if self.battery_critical:
            return self._shutdown(ShutdownReason.CRITICAL, now)
        owed = self.journal.unprinted()
        if owed and self.can_print:
            pages = [page for entry in owed for page in self._owed_pages(entry, held=True)]
            log.info("terminal: printing %d receipt(s) owed since before the power went",
                     len(owed))
            return self._print(pages, lambda ok, t: self._ready(), now, state=State.BOOTING,
                               prompt=False)
        return self._ready()

    def _ready(self) -> list[Action]:
        faults = self.fault_codes()
        out: list[Action] = [SendEcr(Message(MsgCode.READY.value, {
            "fw": FIRMWARE_VERSION, "tid": self.profile.terminal_id, "model": self.profile.model,
            "sn": self.profile.serial_no, "text": DISPLAY[EventCode.READY],
            "faults": ",".join(faults)}))]
        for sensor in SENSORS.values():
            if getattr(self, sensor.attr) == sensor.failing:
                self._fault(sensor.raised)
                out.append(self._event(sensor.raised, sensor.fault))
        if self.battery_low:
            self._fault(EventCode.LOW_BATTERY)
            out.append(self._event(EventCode.LOW_BATTERY, self.battery_fault))
        if faults:
            log.warning("terminal: self-test faults: %s",
                        "; ".join(FAULT_TEXTS[code] for code in faults))
        return out + self._set_state(State.IDLE)

    def _t_txn_timeout(self, now: float) -> list[Action]:
        return self._finish(Result.TIMEOUT)

    def _t_card_wait(self, now: float) -> list[Action]:
        """No card (or no other try after a chip that could not be read) in time: TIMEOUT, or
        the chip's CARD_ERROR when it failed in this transaction."""
        txn = self._txn
        assert txn is not None
        if txn.chip_failures:
            reason, text = txn.chip_error
            return self._finish(Result.CARD_ERROR, reason=reason, text=text)
        return self._finish(Result.TIMEOUT)

    def _t_signature(self, now: float) -> list[Action]:
        log.info("terminal: no signature on the pad within %.1f s: the merchant copy keeps its "
                 "signature line", self.profile.signature_s)
        return self._signed(False, now)

    def _t_print(self, now: float) -> list[Action]:
        printing = self._printing
        assert printing is not None
        if not self.can_print:
            self._fault(Result.PAPER_OUT if self.printer_present else Result.NO_PRINTER)
            self._printing = None
            self._keep_unprinted(printing.pages)
            return printing.then(False, now)
        page = printing.pages.pop(0)
        out: list[Action] = [SendEcr(Message(MsgCode.PRINT.value, {"copy": page.copy,
                                                                   "text": page.text}))]
        if page.entry_id and page.last:
            self.journal.printed(page.entry_id, held=page.held)
        if printing.pages:
            self._timer = (now + self.profile.print_copy_s, "print")
            return out
        self._printing = None
        return out + printing.then(True, now)

    # ---- printing
    def _print(self, pages: list[_Page], then: Callable[[bool, float], list[Action]],
               now: float, *, state: State = State.PRINTING, prompt: bool = True,
               request: str = "") -> list[Action]:
        """Print *pages* one copy per ``print_copy_s``; then ``then(print_ok, now)``.  A receipt
        whose last copy is out counts as printed in the journal; one the paper ran out on keeps
        the copies not printed (:meth:`_keep_unprinted`)."""
        self._printing = _Printing(list(pages), then, request)
        self._timer = (now + self.profile.print_copy_s, "print")
        out = self._set_state(state, load=LOAD_OF_STATE[State.PRINTING])
        return out + ([self._event(Prompt.PRINTING)] if prompt else [])

    def _keep_unprinted(self, pages: list[_Page]) -> None:
        """The paper ran out (or the printer went) with *pages* not printed: each receipt among
        them keeps its copies not printed in the journal, printed continued later."""
        done: set[int] = set()
        for page in pages:
            if page.entry_id and page.entry_id not in done:
                done.add(page.entry_id)
                entry = self.journal.print_incomplete(page.entry_id, page.index)
                log.warning("terminal: receipt of %s incomplete: %d of %d copies out, the rest "
                            "owed", entry.describe(), page.index, len(COPIES))
                self._owed = True

    def _owed_pages(self, entry: JournalEntry, *, held: bool) -> list[_Page]:
        """The copies an approved entry still owes: those left when the paper ran out, marked
        continued; all of them, marked held, when the power went before any was known out."""
        if entry.incomplete:
            return self._pages(entry, CONTINUED_MARK, held=held)[entry.copies_printed:]
        return self._pages(entry, HELD_MARK, held=held)

    def _idle_work(self, now: float) -> list[Action]:
        """What the terminal does by itself once idle: print the receipts it owes, as soon as
        the printer can."""
        if not (self._owed and self.state is State.IDLE and self._printing is None
                and self.can_print):
            return []
        owed = self.journal.unprinted()
        if not owed:
            self._owed = False
            return []
        log.info("terminal: printing %d receipt(s) owed (%s)", len(owed),
                 ", ".join(e.describe() for e in owed))
        pages = [page for entry in owed for page in self._owed_pages(entry, held=False)]

        def done(ok: bool, t: float) -> list[Action]:
            return self._set_state(State.IDLE)

        return self._print(pages, done, now, prompt=False)

    def _pages(self, entry: JournalEntry, mark: str = "", *, record: bool = True,
               held: bool = False) -> list[_Page]:
        """Every copy of *entry*'s receipt; *record*: printing its last copy counts the entry
        as printed (not for a reprint)."""
        row = self.transactions.get(entry.txn_type)
        when = datetime.datetime.strptime(entry.created, CLOCK_FORMAT)
        data = ReceiptData(
            merchant_name=self.profile.merchant_name, merchant_id=self.profile.merchant_id,
            terminal_id=self.profile.terminal_id, operator=entry.operator,
            batch_no=entry.batch_no, stan=entry.stan, rrn=entry.rrn, auth_code=entry.auth_code,
            masked_pan=entry.masked_pan, app_label=entry.app_label,
            amount_minor=entry.amount_minor, currency_code=entry.currency, when=when,
            title=row.receipt_title, original=books.describe_original(entry), mark=mark,
            entry="fallback" if entry.pos_entry == PosEntry.FALLBACK else entry.entry_mode,
            cvm=entry.cvm, signature=entry.signature, qr_order=entry.qr_order)
        return [_Page(str(copy), format_receipt(copy, data), entry.id if record else 0, index,
                      index == len(COPIES) - 1, held)
                for index, copy in enumerate(COPIES)]

    # ---- requests: status, operators, parameters
    def _req_status(self, msg: Message, now: float) -> list[Action]:
        batch = self.journal.entries(self.nv.batch_no)
        return [SendEcr(Message(MsgCode.STATUS.value, {
            "rc": Result.OK.value, "state": self.state.value, "model": self.profile.model,
            "fw": FIRMWARE_VERSION, "sn": self.profile.serial_no, "tid": self.profile.terminal_id,
            "signed_in": "1" if self.signed_in else "0", "operator": self.operator or "",
            "paper": "1" if self.paper_present else "0",
            "paper_low": "1" if self.paper_low else "0",
            "printer": "1" if self.printer_present else "0",
            "card": "1" if self.card_present else "0",
            "battery_low": "1" if self.battery_low else "0", "volts": f"{self.volts:.2f}",
            "batch": f"{self.nv.batch_no:06d}",
            "faults": ",".join([*self.fault_codes(), *self.faults]),
            "clock": self.terminal_time().strftime(CLOCK_FORMAT),
            "reversal": "1" if self.journal.pending_reversals() else "0",
            "journal": str(len(batch)),
            **{str(name): str(self.limit(name)) for name in LIMIT_NAMES},
            "day_sales": str(self._day_sales()),
        }))]

    def _req_login(self, msg: Message, now: float) -> list[Action]:
        if self.state is not State.IDLE:
            return [self._respond(MsgCode.LOGIN, Result.BUSY)]
        op_id = msg.get("op")
        op = self.profile.operators.get(op_id)
        if op is None:
            log.info("terminal: login refused for unknown operator %r", op_id)
            return [self._respond(MsgCode.LOGIN, Result.LOGIN_FAILED)]
        if op_id in self.nv.locked:
            log.info("terminal: login refused: operator %s is locked", op_id)
            return [self._respond(MsgCode.LOGIN, Result.LOCKED, text=(
                f"{DISPLAY[Result.LOCKED]}: operator {op_id} locked after "
                f"{self.profile.lock_after} wrong passwords; an admin must unlock (UL)"))]
        if op.password != msg.get("pw"):
            return [self._respond(MsgCode.LOGIN, Result.LOGIN_FAILED,
                                  text=self._wrong_password(op_id, op))]
        if self.nv.failures.get(op_id):
            self._save(self.nv.with_failures(op_id, 0))
        self.operator = op_id
        log.info("terminal: operator %s (%s) logged in", self.operator, op.role)
        return [self._respond(MsgCode.LOGIN, Result.OK, operator=op_id, role=op.role)]

    def _wrong_password(self, op_id: str, op: Operator) -> str:
        """Count a wrong password (NVRAM); the ``lock_after``-th in a row locks an operator
        (never an admin: the admin is who unlocks).  Returns the display text."""
        count = self.nv.failures.get(op_id, 0) + 1
        lock = op.role != ADMIN and count >= self.profile.lock_after
        nv = self.nv.with_failures(op_id, 0 if lock else count)
        self._save(nv.with_lock(op_id, True) if lock else nv)
        log.info("terminal: wrong password for operator %s (%d in a row)%s", op_id, count,
                 "; locked" if lock else "")
        if lock:
            return (f"{DISPLAY[Result.LOGIN_FAILED]}: operator {op_id} now locked "
                    f"({count} wrong passwords)")
        return DISPLAY[Result.LOGIN_FAILED]

    def _req_logout(self, msg: Message, now: float) -> list[Action]:
        if self.state is not State.IDLE:
            return [self._respond(MsgCode.LOGOUT, Result.BUSY)]
        self.operator = None
        return [self._respond(MsgCode.LOGOUT, Result.OK)]

    def _req_unlock(self, msg: Message, now: float) -> list[Action]:
        refused = self._local_refusal(MsgCode.UNLOCK, admin=True)
        if refused is not None:
            return [refused]
        op_id = msg.get("op")
        if op_id not in self.profile.operators:
            return [self._respond(MsgCode.UNLOCK, Result.NOT_FOUND,
                                  text=f"{DISPLAY[Result.NOT_FOUND]}: no operator {op_id!r}")]
        was = op_id in self.nv.locked
        self._save(self.nv.with_lock(op_id, False).with_failures(op_id, 0))
        log.info("terminal: operator %s unlocked by %s (was %slocked)", op_id, self.operator,
                 "" if was else "not ")
        return [self._respond(MsgCode.UNLOCK, Result.OK, op=op_id,
                              text=f"{DISPLAY[Result.OK]}: operator {op_id} unlocked"
                              if was else f"{DISPLAY[Result.OK]}: operator {op_id} not locked")]

    def _req_parameter(self, msg: Message, now: float) -> list[Action]:
        refused = self._local_refusal(MsgCode.PARAMETER, admin=True)
        if refused is not None:
            return [refused]
        name, value = msg.get("name"), msg.get("value")
        setter = PARAMETER_SETTERS.get(name)
        if setter is None:
            return [self._respond(MsgCode.PARAMETER, Result.BAD_REQUEST, text=(
                f"PARAMETER: unknown name {name!r}; known: {', '.join(PARAMETER_SETTERS)}"))]
        try:
            change: _Pm = getattr(self, setter)(name, value)
        except DecodeError as exc:
            return [self._respond(MsgCode.PARAMETER, Result.BAD_REQUEST, text=str(exc)[:200])]
        self._save(change.nv)
        log.info("terminal: parameter %s set to %s by %s", name, change.echo, self.operator)
        return [self._respond(MsgCode.PARAMETER, Result.OK, name=name, value=change.echo)]

    def _pm_clock(self, name: str, value: str) -> _Pm:
        try:
            wanted = datetime.datetime.strptime(value, CLOCK_FORMAT)
        except ValueError:
            raise DecodeError(f"PARAMETER clock: value must be YYYYMMDDhhmmss, got "
                              f"{value!r}") from None
        offset = (wanted - self.clock()).total_seconds()
        return _Pm(dataclasses.replace(self.nv, clock_offset_s=offset), value)

    def _pm_limit(self, name: str, value: str) -> _Pm:
        if value == "":
            return _Pm(self.nv.with_limit(name, None), str(self.profile.limit(name)))
        if not _minor_units(value):
            raise DecodeError(f"PARAMETER {name}: value must be minor units 1..999999999999 "
                              f"(or empty: the profile's {self.profile.limit(name)}), got "
                              f"{value!r}")
        return _Pm(self.nv.with_limit(name, int(value)), str(int(value)))

    # ---- requests: sign-in
    def _req_sign_in(self, msg: Message, now: float) -> list[Action]:
        refusal = self._refusal(need_signed_in=False)
        if refusal is not None:
            return [self._respond(MsgCode.SIGN_IN, refusal)]
        assert self.operator is not None
        job = SignInJob(self._next_job(), self.operator, self._take_stan(), self.nv.batch_no)
        return [*self._set_state(State.SIGNING_IN), self._event(Prompt.CONNECTING),
                self._start(job)]

    def _set_clock_from_host(self, mmddhhmmss: str) -> None:
        """Fields 13 (MMDD) + 12 (hhmmss) of the 0810: the year is the one that puts that date
        nearest the terminal's clock (a year boundary either way)."""
        mine = self.terminal_time()
        candidates = []
        for year in (mine.year - 1, mine.year, mine.year + 1):
            try:
                candidates.append(datetime.datetime.strptime(f"{year}{mmddhhmmss}",
                                                             CLOCK_FORMAT))
            except ValueError:
                continue  # 29 February of a common year
        if not candidates:
            log.warning("terminal: host time %r unusable; clock kept", mmddhhmmss)
            return
        host = min(candidates, key=lambda c: abs((c - mine).total_seconds()))
        offset = (host - self.clock()).total_seconds()
        if abs(offset - self.nv.clock_offset_s) >= 1.0:
            log.info("terminal: clock set from the host: %s (was %s)", host, mine)
            self._save(dataclasses.replace(self.nv, clock_offset_s=offset))

    # ---- requests: transactions
    def _req_transaction(self, row: TransactionType, msg: Message, now: float) -> list[Action]:
        """The generic flow of every table row: checks, the row's book's check (limits, the
        original), then wait for the card (``needs_card``) or go online at once; PIN when the
        row and the card's CVM ask for it."""
        code = row.ecr_code
        amount = msg.get("amt")
        currency = msg.get("cur") or self.profile.currency_code
        if not (amount == "" and row.amount_from_original) and not _minor_units(amount):
            return [self._respond(code, Result.BAD_REQUEST, text=(
                f"bad amount {amount[:16]!r}: minor units 1..{'9' * AMOUNT_DIGITS}"))]
        if not (ascii_digits(currency) and len(currency) == 3):
            return [self._respond(code, Result.BAD_REQUEST, text=(
                f"bad currency {currency[:8]!r}: ISO 4217 numeric, 3 digits"))]
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
        qr_mode, bad = self._qr_mode(row, msg)
        if bad:
            return [self._respond(code, Result.BAD_REQUEST, text=bad[:200])]
        refusal = self._refusal(need_signed_in=True)
        if refusal is not None:
            if refusal in (Result.PAPER_OUT, Result.LOW_BATTERY, Result.NO_PRINTER):
                self._fault(refusal)
            return [self._respond(code, refusal)]
        txn = _Txn(row, int(amount) if amount else 0, currency, original)
        check: Callable[[_Txn], list[Action] | None] = getattr(self, TXN_CHECKS[row.book])
        refused = check(txn)
        if refused is not None:
            return refused
        self._txn = txn
        if qr_mode is not None:
            return self._qr_start(qr_mode, now)
        if not row.needs_card:
            return self._go_online(None, now)
        out = [*self._set_state(State.WAIT_CARD), self._event(Prompt.INSERT_CARD)]
        if self.card_present:
            return out + self._read_card(now)
        self._timer = (now + self.profile.card_wait_s, "card_wait")
        if self.field_cards:  # a card already held to the field
            return out + self._field_now(now)
        return out

    def _day_sales(self) -> int:
        day = self.business_day
        return books.day_sales(self.journal.entries(day=day), self.transactions, day)

    def _refuse_txn(self, txn: _Txn, rc: Result, text: str) -> list[Action]:
        """Refused before going online: journaled (``refused``, with a STAN), answered."""
        stan = self._take_stan()
        self.journal.add(NewEntry(
            batch_no=self.nv.batch_no, stan=stan, txn_type=txn.txn_type.type,
            amount_minor=txn.amount_minor, currency=txn.currency_code,
            created=self.terminal_time().strftime(CLOCK_FORMAT), operator=self.operator or "",
            state=EntryState.REFUSED, result=rc.value, text=text))
        log.info("terminal: %s of %d refused: %s", txn.txn_type.type, txn.amount_minor, text)
        return [self._respond(txn.txn_type.ecr_code, rc, text=text, amt=str(txn.amount_minor),
                              cur=txn.currency_code, stan=f"{stan:06d}")]

    def _check_sale(self, txn: _Txn) -> list[Action] | None:
        """``txn_limit`` per sale, ``daily_limit`` on the day's approved sales plus this one."""
        limit = self.limit(Parameter.TXN_LIMIT)
        if txn.amount_minor > limit:
            return self._refuse_txn(txn, Result.LIMIT_EXCEEDED, (
                f"{DISPLAY[Result.LIMIT_EXCEEDED]} {_money(limit)}: amount "
                f"{_money(txn.amount_minor)}"))
        daily = self.limit(Parameter.DAILY_LIMIT)
        today = self._day_sales()
        if today + txn.amount_minor > daily:
            return self._refuse_txn(txn, Result.DAILY_LIMIT_EXCEEDED, (
                f"{DISPLAY[Result.DAILY_LIMIT_EXCEEDED]} {_money(daily)}: today "
                f"{_money(today)} + {_money(txn.amount_minor)}"))
        return None

    def _check_void(self, txn: _Txn) -> list[Action] | None:
        """The original by trace (the open batch unless ``obatch``): an approved, unvoided
        sale of the open batch; the amount is its amount (``amt``, if sent, must equal it).
        An original the journal does not have goes online when ``amt`` is sent (the host
        answers 25 if it has none either), else NOT_FOUND."""
        row, ref = txn.txn_type, txn.original
        assert ref is not None
        code = row.ecr_code
        batch = int(ref.batch_no) if ref.batch_no else self.nv.batch_no
        found = self.journal.find(batch, int(ref.stan)) if ref.stan else (
            self.journal.find_rrn(ref.rrn))
        if found is None:
            if txn.amount_minor:
                return None
            return [self._respond(code, Result.NOT_FOUND, text=(
                f"{DISPLAY[Result.NOT_FOUND]}: no original {ref.describe()} in batch "
                f"{batch:06d}"))]
        entries = self.journal.entries(found.batch_no)
        problem = ""
        if found.batch_no != self.nv.batch_no:
            problem = f"batch {found.batch_no:06d} is settled (open batch {self.nv.batch_no:06d})"
        elif self.transactions.get(found.txn_type).book is not Book.DEBIT:
            problem = f"it is a {found.txn_type}, not a sale"
        elif books.status_of(found, entries, self.transactions) is not TxnStatus.APPROVED:
            problem = f"it is {books.status_of(found, entries, self.transactions)}"
        if problem:
            return [self._respond(code, Result.NOT_FOUND, text=(
                f"原交易不可撤销 CANNOT VOID {found.stan_text}: {problem}"))]
        if txn.amount_minor and txn.amount_minor != found.amount_minor:
            return [self._respond(code, Result.BAD_REQUEST, text=(
                f"VOID amount {txn.amount_minor} differs from the original's "
                f"{found.amount_minor} (STAN {found.stan_text})"))]
        txn.amount_minor = found.amount_minor
        txn.currency_code = found.currency
        self._adopt_original(txn, found)
        return None

    def _check_refund(self, txn: _Txn) -> list[Action] | None:
        """Above ``refund_limit`` only an admin may refund.  The original is looked up in the
        journal (by RRN or trace) to name it fully (fields 61 + 37); what is left of it is the
        host's to judge (61)."""
        limit = self.limit(Parameter.REFUND_LIMIT)
        if txn.amount_minor > limit and self._role() != ADMIN:
            return [self._respond(txn.txn_type.ecr_code, Result.NOT_AUTHORISED, text=(
                f"{DISPLAY[Result.NOT_AUTHORISED]}: refund {_money(txn.amount_minor)} above "
                f"{_money(limit)} needs an admin; operator {self.operator} is {self._role()}"))]
        ref = txn.original
        assert ref is not None
        found = (self.journal.find_rrn(ref.rrn) if ref.rrn else self.journal.find(
            int(ref.batch_no) if ref.batch_no else self.nv.batch_no, int(ref.stan)))
        if found is not None and found.state is EntryState.APPROVED:
            self._adopt_original(txn, found, date=ref.date)
        return None

    def _adopt_original(self, txn: _Txn, found: JournalEntry, date: str = "") -> None:
        """Name the original fully from its journal entry: batch + STAN, RRN and date."""
        when = date or found.host_date or found.created[4:8]
        txn.original_entry = found
        txn.original = OriginalRef(rrn=found.rrn, date=when if found.rrn else "",
                                   stan=found.stan_text, batch_no=found.batch_text)

    def _req_key(self, msg: Message, now: float) -> list[Action]:
        key = msg.get("k")
        if self.state is State.SIGNATURE:  # the signature pad's keys: signed / not signed
            if key in (Key.ENTER, Key.CANCEL):
                return self._signed(key == Key.ENTER, now)
            return []
        if key == Key.CANCEL and self.state in (State.WAIT_CARD, State.PIN_ENTRY):
            return self._finish(Result.CANCELLED)
        if self.state is not State.PIN_ENTRY:
            return []  # a key press nobody waits for does nothing
        txn = self._txn
        assert txn is not None
        if len(key) == 1 and ascii_digits(key):
            if len(txn.pin) < PIN_MAX:
                txn.pin.append(key)
        elif key == Key.CLEAR:
            txn.pin.clear()
        elif key == Key.ENTER and len(txn.pin) >= PIN_MIN:
            pin = "".join(txn.pin)
            if txn.cvm == Cvm.OFFLINE_PIN and txn.first_ac_pending:
                return self._verify_offline(pin, now)
            return self._go_online(pin, now)
        return []

    def _req_cancel(self, msg: Message, now: float) -> list[Action]:
        if self.state is State.WAIT_QR:
            return [self._respond(MsgCode.CANCEL, Result.OK), *self._qr_cancel(now)]
        if self.state in (State.WAIT_CARD, State.PIN_ENTRY):
            return [self._respond(MsgCode.CANCEL, Result.OK), *self._finish(Result.CANCELLED)]
        if self.state is State.SIGNATURE:  # approved already: the signature is skipped
            return [self._respond(MsgCode.CANCEL, Result.OK,
                                  text="approved: signature skipped, merchant copy to sign"),
                    *self._signed(False, now)]
        if self.state in TXN_STATES or self.state is State.SIGNING_IN:
            return [self._respond(MsgCode.CANCEL, Result.BUSY,
                                  text="cannot cancel in " + self.state.value)]
        return [self._respond(MsgCode.CANCEL, Result.OK, text="nothing to cancel")]

    # ---- requests: reprint, query, totals, shutdown
    def _req_reprint(self, msg: Message, now: float) -> list[Action]:
        refused = self._local_refusal(MsgCode.REPRINT)
        if refused is not None:
            return [refused]
        for lacking, rc in ((not self.printer_present, Result.NO_PRINTER),
                            (not self.paper_present, Result.PAPER_OUT)):
            if lacking:
                self._fault(rc)
                return [self._respond(MsgCode.REPRINT, rc)]
        last = self.journal.last_printed()
        if last is None:
            return [self._respond(MsgCode.REPRINT, Result.NOT_FOUND,
                                  text=f"{DISPLAY[Result.NOT_FOUND]}: no receipt printed yet")]

        def done(ok: bool, t: float) -> list[Action]:
            status = PrintStatus.OK if ok else PrintStatus.INCOMPLETE
            return [self._respond(MsgCode.REPRINT, Result.OK, stan=last.stan_text,
                                  batch=last.batch_text, rrn=last.rrn, print=status.value),
                    *self._set_state(State.IDLE)]

        return self._print(self._pages(last, REPRINT_MARK, record=False), done, now,
                           request=MsgCode.REPRINT)

    def _req_query(self, msg: Message, now: float) -> list[Action]:
        refused = self._local_refusal(MsgCode.QUERY)
        if refused is not None:
            return [refused]
        stan, batch = msg.get("stan"), msg.get("batch")
        if not (ascii_digits(stan) and len(stan) <= 6) or (batch and not (
                ascii_digits(batch) and len(batch) <= 6)):
            return [self._respond(MsgCode.QUERY, Result.BAD_REQUEST, text=(
                f"QUERY: stan and batch must be up to 6 digits, got stan={stan!r} "
                f"batch={batch!r}"))]
        batch_no = int(batch) if batch else self.nv.batch_no
        entry = self.journal.find(batch_no, int(stan))
        if entry is None:
            return [self._respond(MsgCode.QUERY, Result.NOT_FOUND, text=(
                f"{DISPLAY[Result.NOT_FOUND]}: no STAN {int(stan):06d} in batch "
                f"{batch_no:06d}"))]
        status = books.status_of(entry, self.journal.entries(entry.batch_no), self.transactions)
        return [self._respond(MsgCode.QUERY, Result.OK, type=entry.txn_type,
                              amt=str(entry.amount_minor), cur=entry.currency,
                              status=status.value, rrn=entry.rrn, auth=entry.auth_code,
                              pan=entry.masked_pan, time=entry.created, batch=entry.batch_text,
                              stan=entry.stan_text, hrc=entry.response_code,
                              result=entry.result, entry=entry.entry_mode)]

    def _req_totals(self, msg: Message, now: float) -> list[Action]:
        refused = self._local_refusal(MsgCode.TOTALS)
        if refused is not None:
            return [refused]
        entries = self.journal.entries(self.nv.batch_no)
        fields: dict[str, str] = {"batch": f"{self.nv.batch_no:06d}"}
        for name, (n, amt) in (*books.by_type(entries, self.transactions).items(),
                               *books.by_entry(entries, self.transactions).items()):
            fields[f"{name}_n"], fields[f"{name}_amt"] = str(n), str(amt)
        rules = books.AnomalyRules(self.profile.declines_per_card, self.profile.refund_burst,
                                   self.profile.refund_window_s)
        fields["anomalies"] = ",".join(books.anomalies(entries, self.transactions, rules))
        return [self._respond(MsgCode.TOTALS, Result.OK, **fields)]

    def _req_shutdown(self, msg: Message, now: float) -> list[Action]:
        refused = self._local_refusal(MsgCode.SHUTDOWN)
        if refused is not None:
            return [refused]
        open_batch = [e for e in self.journal.entries(self.nv.batch_no)
                      if e.state in UNSETTLED_STATES]
        reversals = self.journal.pending_reversals()
        if open_batch or reversals:
            return [self._respond(MsgCode.SHUTDOWN, Result.UNSETTLED_BATCH, text=(
                f"{DISPLAY[Result.UNSETTLED_BATCH]}: batch {self.nv.batch_no:06d} holds "
                f"{len(open_batch)} transaction(s), {len(reversals)} reversal(s) pending; "
                f"settle first"), batch=f"{self.nv.batch_no:06d}")]
        log.info("terminal: shutdown agreed (batch %06d empty)", self.nv.batch_no)
        return [self._respond(MsgCode.SHUTDOWN, Result.OK,
                              text="可以关机 READY TO POWER OFF")]

    # ---- requests: settlement
    def _req_settle(self, msg: Message, now: float) -> list[Action]:
        """Admin only, signed in, battery fine (a settlement prints nothing: paper not needed);
        reversals owed go first."""
        refusal = self._refusal(need_signed_in=True, admin=True, prints=False)
        if refusal is not None:
            return [self._refuse(MsgCode.SETTLE, refusal)]
        out = [*self._set_state(State.PROCESSING), self._event(Prompt.PROCESSING),
               self._event(Prompt.CONNECTING)]
        return out + self._with_reversals(self._settle_start, self._settle_fail, now)

    def _settle_start(self, now: float) -> list[Action]:
        entries = self.journal.entries(self.nv.batch_no)
        self._settlement = _Settlement(self.nv.batch_no,
                                       books.settlement_totals(entries, self.transactions))
        return [self._settle_job()]

    def _settle_job(self) -> StartJob:
        s = self._settlement
        assert s is not None
        return self._start(SettleJob(self._next_job(), self.keys, self._take_stan(), s.batch_no,
                                     self.operator or "", s.totals))

    def _settle_fail(self, rc: Result, text: str, fields: dict[str, str]) -> list[Action]:
        s = self._settlement
        self._settlement = None
        if rc is Result.COMMS_ERROR:
            self._fault(rc)
        extra = {"uploaded": str(s.uploaded)} if s is not None else {}
        return [self._respond(MsgCode.SETTLE, rc, text=text[:200], balanced="0",
                              batch=f"{self.nv.batch_no:06d}", **extra, **fields),
                *self._set_state(State.IDLE)]

    def _job_settle(self, res: JobResult, now: float) -> list[Action]:
        s = self._settlement
        assert s is not None
        if res.failure:
            return self._settle_fail(FAILURE_RESULT[res.failure], res.message, {})
        hrc = str(res.value.response_code)
        code = str(res.value.reconciliation_code)
        if hrc != "00":
            self._drop_keys_on(hrc)
            return self._settle_fail(Result.DECLINED, DISPLAY[Result.DECLINED], {"hrc": hrc})
        if code == RECONCILE_BALANCED:
            return self._close_batch(s, hrc)
        if code == RECONCILE_UNBALANCED and s.round == 1:
            s.round = 2
            s.uploads = books.upload_items(self.journal.entries(s.batch_no), self.transactions,
                                           self.journal.card_data)
            log.info("terminal: batch %06d not balanced (host %s, terminal %s): uploading %d",
                     s.batch_no, res.value.host_totals, s.totals, len(s.uploads))
            return self._next_upload()
        return self._settle_fail(Result.DECLINED, (
            f"对账不平 NOT BALANCED: batch {s.batch_no:06d} reconciliation code {code!r} after "
            f"{'the batch upload' if s.round == 2 else 'settlement'}"), {"hrc": hrc})

    def _next_upload(self) -> list[Action]:
        s = self._settlement
        assert s is not None
        if s.uploads:
            return [self._start(UploadJob(self._next_job(), self.keys, s.batch_no,
                                          s.uploads[0]))]
        return [self._start(UploadEndJob(self._next_job(), self.keys, self._take_stan(),
                                         s.batch_no, s.uploaded))]

    def _job_upload(self, res: JobResult, now: float) -> list[Action]:
        s = self._settlement
        assert s is not None
        if res.failure:
            return self._settle_fail(FAILURE_RESULT[res.failure], res.message, {})
        hrc = str(res.value.response_code)
        if hrc != "00":
            self._drop_keys_on(hrc)
            return self._settle_fail(Result.DECLINED, (
                f"{DISPLAY[Result.DECLINED]}: batch upload of STAN {s.uploads[0].stan:06d}"),
                {"hrc": hrc})
        s.uploads.pop(0)
        s.uploaded += 1
        return self._next_upload()

    def _job_upload_end(self, res: JobResult, now: float) -> list[Action]:
        if res.failure:
            return self._settle_fail(FAILURE_RESULT[res.failure], res.message, {})
        hrc = str(res.value.response_code)
        if hrc != "00":
            self._drop_keys_on(hrc)
            return self._settle_fail(Result.DECLINED, (
                f"{DISPLAY[Result.DECLINED]}: end of the batch upload"), {"hrc": hrc})
        return [self._settle_job()]

    def _close_batch(self, s: _Settlement, hrc: str) -> list[Action]:
        """Balanced: the old batch's card data goes, the batch number advances (NVRAM)."""
        wiped = self.journal.close_batch(s.batch_no)
        nxt = 1 if s.batch_no >= 999_999 else s.batch_no + 1
        self._save(dataclasses.replace(self.nv, batch_no=nxt))
        self._settlement = None
        log.info("terminal: batch %06d settled, balanced (%d uploaded, %d card records wiped); "
                 "open batch now %06d", s.batch_no, s.uploaded, wiped, nxt)
        return [self._respond(MsgCode.SETTLE, Result.OK, hrc=hrc, balanced="1",
                              uploaded=str(s.uploaded), batch=f"{s.batch_no:06d}",
                              next_batch=f"{nxt:06d}",
                              text=f"结算成功 SETTLED: batch {s.batch_no:06d} balanced"),
                *self._set_state(State.IDLE)]

    # ---- reversals
    def _with_reversals(self, then: Continue, fail: Fail, now: float) -> list[Action]:
        """Send every pending reversal (oldest first), each up to ``reversal.tries`` times on
        this occasion, then *then*; *fail* if one is not acknowledged."""
        self._reversals = _Reversals(then, fail)
        return self._next_reversal(now)

    def _next_reversal(self, now: float) -> list[Action]:
        rev = self._reversals
        assert rev is not None
        pending = self.journal.pending_reversals()
        if not pending:
            self._reversals = None
            return rev.then(now)
        entry = pending[0]
        if entry.id != rev.entry_id:
            rev.entry_id, rev.tries = entry.id, 0
        rev.tries += 1
        entry = self.journal.reversal_try(entry.id)  # counted before it leaves
        log.info("terminal: sending the reversal of %s (reason %s, try %d)", entry.describe(),
                 entry.reversal_reason, entry.reversal_tries)
        return [self._start(ReversalJob(self._next_job(), self.transactions.get(entry.txn_type),
                                        self.keys, entry, self.journal.card_data(entry.id)))]

    def _job_reversal(self, res: JobResult, now: float) -> list[Action]:
        rev = self._reversals
        assert rev is not None
        entry = self.journal.get(rev.entry_id)
        hrc = "" if res.failure else str(res.value.response_code)
        if hrc == "00":
            self.journal.reversed(entry.id)
            log.info("terminal: reversal of %s acknowledged", entry.describe())
            return self._next_reversal(now)
        self._drop_keys_on(hrc)
        why = res.message if res.failure else f"host answered {hrc}"
        if rev.tries < self.profile.reversal_tries and self.keys is not None:
            log.warning("terminal: reversal of %s not acknowledged (%s); trying again",
                        entry.describe(), why)
            return self._next_reversal(now)
        self._reversals = None
        rc = FAILURE_RESULT[res.failure] if res.failure else Result.DECLINED
        return rev.fail(rc, (f"冲正未完成 REVERSAL PENDING: STAN {entry.stan_text} not "
                             f"acknowledged after {rev.tries} tries ({why})"),
                        {"hrc": hrc} if hrc else {})

    # ---- harness
    def _hw_rail(self, obj: Mapping[str, Any], now: float) -> list[Action]:
        was_low = self.battery_low
        self.volts = float(obj.get("volts", self.volts))
        self._track_rail(now)
        if self.battery_low == was_low or self.state is State.BOOTING:
            return []
        if self.battery_low:
            self._fault(EventCode.LOW_BATTERY)
            return [self._event(EventCode.LOW_BATTERY, self.battery_fault)]
        return [self._event(EventCode.BATTERY_OK)]

    def _hw_sensor(self, sensor: Sensor) -> Callable[[Mapping[str, Any], float], list[Action]]:
        """The handler of one printer line (:data:`SENSORS`): an event when it changes (not
        while booting: the self-test reports it after READY)."""
        def handle(obj: Mapping[str, Any], now: float) -> list[Action]:
            was = getattr(self, sensor.attr)
            value = bool(obj.get(sensor.key))
            setattr(self, sensor.attr, value)
            if value == was or self.state is State.BOOTING:
                return []
            if value == sensor.failing:
                self._fault(sensor.raised)
                return [self._event(sensor.raised, sensor.fault)]
            return [self._event(sensor.cleared)]

        return handle

    # ---- power
    def _track_rail(self, now: float) -> None:
        """Start or stop the two clocks the rail runs: at or below the cut-off, and below the
        MCU's operating range."""
        p = self.profile
        if self.volts <= p.cutoff_volts + EPSILON:
            self._cutoff_since = now if self._cutoff_since is None else self._cutoff_since
        else:
            self._cutoff_since = None
        if self.volts < p.min_operating_volts - EPSILON:
            self._hang_since = now if self._hang_since is None else self._hang_since
        else:
            self._hang_since = None

    def _power_due(self, now: float) -> list[Action]:
        """A hang or a cut-off whose time has come (the earlier one if both have)."""
        if self.halted is not None:
            return []
        p = self.profile
        due = []
        if self._hang_since is not None:
            due.append((self._hang_since + p.hang_after_s, 0))
        if self._cutoff_since is not None:
            due.append((self._cutoff_since + p.cutoff_debounce_s, 1))
        ready = [d for d in due if d[0] <= now + EPSILON]
        if not ready:
            return []
        _, which = min(ready)
        return self._hang(now) if which == 0 else self._shutdown(ShutdownReason.CUTOFF, now)

    def _hang(self, now: float) -> list[Action]:
        """The MCU ran outside its voltage range without a reset (the brown-out detector trips
        lower): it stops; nothing is answered, no timer runs, the load stays what it was."""
        p = self.profile
        self.halted = Halt.HUNG
        self._timer = None
        log.error("terminal: MCU hung: rail %.2f V below min_operating_volts %.2f V for %.0f ms "
                  "(brown-out not reached, so no reset); only a power cycle recovers it",
                  self.volts, p.min_operating_volts, p.hang_after_s * 1000)
        return [Freeze()]

    def _shutdown(self, reason: ShutdownReason, now: float) -> list[Action]:
        """Battery empty (or too low to start): say so, end what was going on safely (the
        journal first: a request that left becomes a pending reversal), power off."""
        faults = self.fault_codes()
        log.warning("terminal: shutting down (%s) at %.2f V; faults %s", reason, self.volts,
                    ",".join(faults) or "none")
        text = SHUTDOWN_TEXTS[reason]
        out: list[Action] = [self._event(EventCode.SHUTDOWN, FaultCode.BATTERY_CRITICAL,
                                         text=text, reason=reason.value,
                                         faults=",".join(faults))]
        self._fault(EventCode.SHUTDOWN)
        out += self._abort(text)
        self.halted = Halt.OFF
        self._timer = None
        self._cutoff_since = self._hang_since = None
        out.append(PowerOff({"t": "power_off", "reason": reason.value,
                             "volts": round(self.volts, 3)}))
        return out

    def _abort(self, text: str) -> list[Action]:
        """Answer the request in progress as the terminal shuts down, keeping the journal
        right: a request that may have reached the host is a pending reversal (98), as after a
        power cut; an approved one whose receipt was printing keeps its copies not printed."""
        out: list[Action] = []
        txn, printing = self._txn, self._printing
        if txn is not None:
            entry = self.journal.get(txn.entry_id) if txn.entry_id else None
            if entry is not None and entry.state is EntryState.PENDING:
                self.journal.reversal_pending(entry.id, REVERSAL_NO_RESPONSE)
                log.warning("terminal: %s in flight at shutdown: reversal pending",
                            entry.describe())
            if entry is not None and entry.state is EntryState.APPROVED:
                if printing is not None:
                    self._keep_unprinted(printing.pages)
                out += self._finish(Result.APPROVED, print=PrintStatus.INCOMPLETE.value,
                                    reason=SHUTDOWN_REASON)
            else:
                out += self._finish(Result.CANCELLED, reason=SHUTDOWN_REASON, text=text)
        elif self._settlement is not None or self._reversals is not None:
            out += self._settle_fail(Result.CANCELLED, text, {"reason": SHUTDOWN_REASON})
        elif self.state is State.SIGNING_IN:
            out.append(self._respond(MsgCode.SIGN_IN, Result.CANCELLED, text=text,
                                     reason=SHUTDOWN_REASON))
        elif printing is not None:
            self._keep_unprinted(printing.pages)
            if printing.request:
                out.append(self._respond(printing.request, Result.CANCELLED, text=text,
                                         reason=SHUTDOWN_REASON))
        self._txn = self._printing = self._reversals = self._settlement = None
        self._pending_job = self._pending_kind = None
        return out

    def _hw_card(self, obj: Mapping[str, Any], now: float) -> list[Action]:
        was = self.card_present
        self.card_present = bool(obj.get("present"))
        out: list[Action] = []
        if self.card_present != was and self.state is not State.BOOTING:
            out.append(self._event(EventCode.CARD_INSERTED if self.card_present
                                   else EventCode.CARD_REMOVED))
        txn = self._txn
        if self.card_present and self.state is State.WAIT_CARD:
            return out + self._read_card(now)
        if not self.card_present and self.state is State.WAIT_CARD and txn is not None \
                and txn.chip_failures:  # taken out after a failed read: wait for the next try
            self._timer = (now + self.profile.card_wait_s, "card_wait")
            return out
        if not self.card_present and self.state is State.PIN_ENTRY and txn is not None \
                and txn.entry is EntryMode.CHIP:
            self._fault(Result.CARD_ERROR)
            return out + self._finish(Result.CARD_ERROR, text="卡片已拔出 CARD REMOVED")
        return out

    def _hw_swipe(self, obj: Mapping[str, Any], now: float) -> list[Action]:
        """The stripe reader read a card (tracks as read).  Only while waiting for a card."""
        txn = self._txn
        if self.state is not State.WAIT_CARD or txn is None:
            log.info("terminal: a swipe while %s: ignored", self.state)
            return []
        try:
            card = read_swipe(str(obj.get("track1") or ""), str(obj.get("track2") or ""))
        except DecodeError as exc:  # names the track and the position, never the data
            txn.bad_swipes += 1
            tries = self.profile.swipe_tries
            log.info("terminal: bad swipe %d of %s (%s)", txn.bad_swipes, tries or "unlimited",
                     exc)
            if tries and txn.bad_swipes >= tries:
                self._fault(Result.CARD_ERROR)
                return self._finish(Result.CARD_ERROR, reason=Reason.UNREADABLE,
                                    text="刷卡失败 READ ERROR: STRIPE UNREADABLE")
            return [self._event(Prompt.SWIPE_AGAIN, tries=str(txn.bad_swipes))]
        if is_chip_card(card.service_code):
            after = self.profile.fallback_after
            if not after or txn.chip_failures < after:
                log.info("terminal: chip card %s swiped (chip failures %d of %d for fallback): "
                         "insert it", card.masked_pan, txn.chip_failures, after)
                return [self._event(Prompt.INSERT_CHIP)]
            txn.fallback = True
            log.warning("terminal: fallback: chip card %s swiped after %d chip failure(s)",
                        card.masked_pan, txn.chip_failures)
        self._timer = None
        txn.card = card
        return self._card_read(now)

    def _hw_field(self, obj: Mapping[str, Any], now: float) -> list[Action]:
        """The contactless field now holds *cards* cards: one is read, more are a
        collision (the terminal waits until one is left, or is cancelled)."""
        try:
            self.field_cards = max(0, int(obj.get("cards", 0)))
        except (TypeError, ValueError):
            raise DecodeError(f"terminal: field needs an integer 'cards', got "
                              f"{obj.get('cards')!r}") from None
        if self.state is not State.WAIT_CARD or self._txn is None:
            return []
        return self._field_now(now)

    def _field_now(self, now: float) -> list[Action]:
        if self.field_cards > 1:
            return [self._event(Prompt.ONE_CARD_ONLY)]
        if self.field_cards == 1:
            return self._read_tap(now)
        return []

    # ---- transaction steps
    def _read_card(self, now: float) -> list[Action]:
        txn = self._txn
        assert txn is not None
        self._timer = None
        txn.job_id = self._next_job()
        job = ChipJob(txn.job_id, txn.amount_minor, txn.currency_code, self.profile.country_code,
                      self.terminal_time().date(), self.rng(4), self.profile.card_apdu_s)
        return [*self._set_state(State.READING_CARD), self._event(Prompt.READING_CARD),
                self._start(job)]

    def _read_tap(self, now: float) -> list[Action]:
        txn = self._txn
        assert txn is not None
        self._timer = None
        txn.job_id = self._next_job()
        job = TapJob(txn.job_id, txn.amount_minor, txn.currency_code, self.profile.country_code,
                     self.terminal_time().date(), self.rng(4), self.profile.card_apdu_s,
                     cvm_required=txn.amount_minor > self.profile.contactless_cvm_limit)
        return [*self._set_state(State.READING_CARD), self._event(Prompt.READING_CARD),
                self._start(job)]

    def _card_read(self, now: float) -> list[Action]:
        """A card was read (chip, tap or swipe): the card's verdict and the CVM decide what
        comes next — an offline decline, the PIN (online or for the card), or online."""
        txn = self._txn
        assert txn is not None
        card = txn.card
        if getattr(card, "cryptogram_type", "ARQC") == "AAC":
            return self._decline_offline(Reason.CARD_DECLINED, "卡片拒绝 DECLINED BY CARD")
        if getattr(card, "pin_blocked", False):
            return [self._event(Prompt.PIN_BLOCKED),
                    *self._decline_offline(Reason.PIN_BLOCKED, DISPLAY[Prompt.PIN_BLOCKED])]
        cvm = txn.cvm
        if txn.txn_type.needs_pin and cvm in (Cvm.ONLINE_PIN, Cvm.OFFLINE_PIN):
            return self._ask_pin(now)
        if txn.first_ac_pending:  # an offline PIN the row does not ask for
            return self._first_ac(False)
        if not txn.txn_type.needs_pin or cvm in NO_PIN_CVMS:
            return self._go_online(None, now)
        return self._ask_pin(now)

    def _ask_pin(self, now: float, *, prompts: tuple[SendEcr, ...] = ()) -> list[Action]:
        txn = self._txn
        assert txn is not None
        txn.pin.clear()
        self._timer = (now + self.profile.pin_entry_s, "pin_entry")
        return [*self._set_state(State.PIN_ENTRY), *prompts, self._event(Prompt.ENTER_PIN)]

    def _verify_offline(self, pin: str, now: float) -> list[Action]:
        """The card checks the PIN (VERIFY): state READING_CARD until it answers."""
        txn = self._txn
        assert txn is not None
        self._timer = None
        txn.pin.clear()
        txn.job_id = self._next_job()
        return [*self._set_state(State.READING_CARD),
                self._start(VerifyJob(txn.job_id, txn.card, pin))]

    def _first_ac(self, pin_verified: bool) -> list[Action]:
        txn = self._txn
        assert txn is not None
        txn.job_id = self._next_job()
        return [*self._set_state(State.READING_CARD),
                self._start(FirstAcJob(txn.job_id, txn.card, pin_verified))]

    def _release_card(self) -> list[Action]:
        """End a chip card session left open between kernel steps (power the card off)."""
        txn = self._txn
        if txn is None or not txn.card_powered:
            return []
        txn.card_powered = False
        return [SendHarness({"t": "card_power", "on": False})]

    def _decline_offline(self, reason: Reason, text: str) -> list[Action]:
        """The card (or its blocked PIN) declined before anything went online: journaled as
        refused (with a STAN), answered DECLINED with the *reason*."""
        txn = self._txn
        assert txn is not None
        out = self._release_card()
        txn.stan = self._take_stan()
        card = txn.card
        self.journal.add(NewEntry(
            batch_no=self.nv.batch_no, stan=txn.stan, txn_type=txn.txn_type.type,
            amount_minor=txn.amount_minor, currency=txn.currency_code,
            created=self.terminal_time().strftime(CLOCK_FORMAT), operator=self.operator or "",
            state=EntryState.REFUSED, entry_mode=txn.entry, pos_entry=txn.pos_entry,
            masked_pan=mask_pan(card.pan), app_label=str(getattr(card, "app_label", "") or ""),
            result=Result.DECLINED.value, text=text, cvm=txn.cvm))
        log.info("terminal: %s of %d declined offline (%s)", txn.txn_type.type,
                 txn.amount_minor, reason)
        return out + self._finish(Result.DECLINED, reason=reason.value, text=text)

    def _go_online(self, pin: str | None, now: float) -> list[Action]:
        """PROCESSING: pending reversals first, then the request itself."""
        txn = self._txn
        assert txn is not None
        self._timer = None
        txn.pin.clear()
        out = [*self._set_state(State.PROCESSING), self._event(Prompt.PROCESSING),
               self._event(Prompt.CONNECTING)]

        def fail(rc: Result, text: str, fields: dict[str, str]) -> list[Action]:
            if rc is Result.COMMS_ERROR:
                self._fault(rc)
            return self._finish(rc, text=text[:200], **fields)

        return out + self._with_reversals(lambda t: self._authorize(pin), fail, now)

    def _authorize(self, pin: str | None) -> list[Action]:
        """Journal the request (``pending``, before it leaves), then send it."""
        txn = self._txn
        assert txn is not None
        txn.stan = self._take_stan()
        card, ref, orig = txn.card, txn.original, txn.original_entry
        row = txn.txn_type
        secrets: CardData | None = None
        if card is not None:
            secrets = CardData(pan=card.pan, expiry=str(card.expiry or ""),
                               track2=str(card.track2_equivalent or ""))
        elif orig is not None:  # the batch upload repeats the original's PAN (field 2)
            known = self.journal.card_data(orig.id)
            secrets = CardData(pan=known.pan) if known is not None else None
        entry = self.journal.add(NewEntry(
            batch_no=self.nv.batch_no, stan=txn.stan, txn_type=row.type,
            amount_minor=txn.amount_minor, currency=txn.currency_code,
            created=self.terminal_time().strftime(CLOCK_FORMAT), operator=self.operator or "",
            entry_mode=txn.entry, pos_entry=txn.pos_entry, cvm=txn.cvm,
            masked_pan=mask_pan(card.pan) if card is not None else (
                orig.masked_pan if orig is not None else ""),
            app_label=str(getattr(card, "app_label", "") or (orig.app_label if orig else "")),
            pan_seq="" if card is None or card.pan_seq is None else str(card.pan_seq).zfill(3),
            orig_batch=ref.batch_no if ref and ref.stan else "",
            orig_stan=ref.stan if ref else "", orig_rrn=ref.rrn if ref else "",
            orig_date=ref.date if ref else "", original_id=orig.id if orig else None),
            secrets)
        txn.entry_id = entry.id
        txn.job_id = self._next_job()
        job = AuthJob(job_id=txn.job_id, txn_type=row, keys=self.keys, stan=txn.stan,
                      batch_no=self.nv.batch_no, amount_minor=txn.amount_minor, card=card,
                      pin=pin, original=ref, pos_entry=txn.pos_entry or POS_ENTRY_CHIP)
        return [self._start(job)]

    def _finish(self, rc: Result, **fields: str) -> list[Action]:
        """End the pending transaction with its final response (its type's ECR code); back to
        IDLE."""
        txn = self._txn
        assert txn is not None, "_finish() needs a pending transaction"
        released = self._release_card()
        self._timer = None
        self._txn = None
        fields = {**txn.result, "amt": str(txn.amount_minor), "cur": txn.currency_code,
                  **fields}
        if txn.card is not None:
            fields.setdefault("pan", mask_pan(txn.card.pan))
            fields.setdefault("entry", txn.entry.value)
            if txn.fallback:
                fields.setdefault("fallback", "1")
            if txn.cvm:
                fields.setdefault("cvm", txn.cvm)
        elif txn.original_entry is not None and txn.original_entry.masked_pan:
            fields.setdefault("pan", txn.original_entry.masked_pan)
        if txn.qr is not None:
            fields.setdefault("entry", EntryMode.QR.value)
            fields.setdefault("qr", txn.qr.mode.value)
            if txn.qr.order is not None:
                fields.setdefault("order", txn.qr.order.order_id)
                if txn.qr.order.wallet is not None:
                    fields.setdefault("wallet", txn.qr.order.wallet.value)
        if txn.stan:
            fields.setdefault("stan", f"{txn.stan:06d}")
            fields.setdefault("batch", f"{self.nv.batch_no:06d}")
        return [*released, self._respond(txn.txn_type.ecr_code, rc, **fields),
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
        host_time = getattr(r, "host_datetime", None)
        if host_time:
            self._set_clock_from_host(str(host_time))
        self._signed_day = self.business_day
        batch = int(getattr(r, "batch_no", None) or self.nv.batch_no)
        if batch != self.nv.batch_no:
            self._save(dataclasses.replace(self.nv, batch_no=batch))
        log.info("terminal: signed in, batch %06d", batch)
        return [self._respond(MsgCode.SIGN_IN, Result.APPROVED, hrc=hrc, batch=f"{batch:06d}",
                              clock=self.terminal_time().strftime(CLOCK_FORMAT)),
                *self._set_state(State.IDLE)]

    def _job_chip(self, res: JobResult, now: float) -> list[Action]:
        txn = self._txn
        assert txn is not None
        if res.failure:
            rc = FAILURE_RESULT[res.failure]
            self._fault(rc)
            text = f"{DISPLAY[rc]}: {res.reason}"
            if res.failure == "card" and res.reason in CHIP_READ_FAILURES \
                    and self.profile.fallback_after:
                return self._chip_retry(res.reason, text, now)
            return self._finish(rc, reason=res.reason, text=text)
        txn.card = res.value
        txn.card_powered = bool(getattr(txn.card, "powered", False))
        return self._card_read(now)

    def _chip_retry(self, reason: str, text: str, now: float) -> list[Action]:
        """The chip could not be read: wait for the next try (take it out, insert it again),
        or, after ``fallback_after`` failures in this transaction, for a swipe (fallback).
        While the card stays in the slot the wait is ``chip_retry``; then CARD_ERROR."""
        txn = self._txn
        assert txn is not None
        txn.chip_failures += 1
        txn.chip_error = (reason, text)
        fallback = txn.chip_failures >= self.profile.fallback_after
        wait = self.profile.chip_retry_s if self.card_present else self.profile.card_wait_s
        self._timer = (now + wait, "card_wait")
        log.warning("terminal: chip read failed (%s), %d of %d before fallback", reason,
                    txn.chip_failures, self.profile.fallback_after)
        return [*self._set_state(State.WAIT_CARD),
                self._event(Prompt.SWIPE_CARD if fallback else Prompt.RETRY_CHIP,
                            reason=reason, failures=str(txn.chip_failures))]

    def _job_tap(self, res: JobResult, now: float) -> list[Action]:
        txn = self._txn
        assert txn is not None
        if res.failure == "card" and res.reason in (Reason.COLLISION, Reason.ABSENT):
            # more than one card (or the card left too soon): wait for one card again
            self._timer = (now + self.profile.card_wait_s, "card_wait")
            prompt = Prompt.ONE_CARD_ONLY if res.reason == Reason.COLLISION else (
                Prompt.INSERT_CARD)
            return [*self._set_state(State.WAIT_CARD), self._event(prompt)]
        if res.failure:
            rc = FAILURE_RESULT[res.failure]
            self._fault(rc)
            return self._finish(rc, reason=res.reason, text=f"{DISPLAY[rc]}: {res.reason}")
        txn.card = res.value
        return self._card_read(now)

    def _card_failed(self, res: JobResult) -> list[Action]:
        """A kernel step after the card was read failed: the transaction ends (no fallback
        once the chip was read)."""
        rc = FAILURE_RESULT[res.failure]
        self._fault(rc)
        return self._finish(rc, reason=res.reason, text=f"{DISPLAY[rc]}: {res.reason}")

    def _job_verify(self, res: JobResult, now: float) -> list[Action]:
        txn = self._txn
        assert txn is not None
        if res.failure:
            return self._card_failed(res)
        check = res.value
        if check.ok:
            return self._first_ac(True)
        if check.blocked:
            log.warning("terminal: offline PIN of %s blocked by the card", mask_pan(
                txn.card.pan))
            return [self._event(Prompt.PIN_BLOCKED),
                    *self._decline_offline(Reason.PIN_BLOCKED, DISPLAY[Prompt.PIN_BLOCKED])]
        tries = "" if check.tries_left is None else str(check.tries_left)
        text = (f"密码错 剩余{tries}次 WRONG PIN {tries} TRIES LEFT" if tries
                else DISPLAY[Prompt.WRONG_PIN])
        return self._ask_pin(now, prompts=(self._event(Prompt.WRONG_PIN, text=text,
                                                       tries=tries),))

    def _job_first_ac(self, res: JobResult, now: float) -> list[Action]:
        txn = self._txn
        assert txn is not None
        if res.failure:
            return self._card_failed(res)
        txn.card = res.value
        if getattr(txn.card, "cryptogram_type", "") == "AAC":
            return self._decline_offline(Reason.CARD_DECLINED, "卡片拒绝 DECLINED BY CARD")
        return self._go_online(None, now)

    def _job_auth(self, res: JobResult, now: float) -> list[Action]:
        txn = self._txn
        assert txn is not None
        if res.failure:
            rc = FAILURE_RESULT[res.failure]
            self._fault(rc)
            if res.reversal:  # it may have reached the host: reverse it before anything else
                self.journal.reversal_pending(txn.entry_id, res.reversal)
                log.warning("terminal: STAN %06d failed (%s): reversal %s pending", txn.stan,
                            res.reason, res.reversal)
            else:
                self.journal.answer(txn.entry_id, EntryState.FAILED, result=rc.value,
                                    text=res.message[:200])
            return self._finish(rc, reason=res.reason, text=res.text or DISPLAY[rc])
        r = res.value
        hrc = str(r.response_code)
        host_date = str(getattr(r, "host_date", None) or "")
        txn.result = {"hrc": hrc, "rrn": str(r.rrn or ""), "auth": str(r.auth_code or ""),
                      "date": host_date or self.terminal_time().strftime("%m%d")}
        if not r.approved:
            self.journal.answer(txn.entry_id, EntryState.DECLINED, response_code=hrc,
                                rrn=str(r.rrn or ""), host_date=host_date,
                                result=Result.DECLINED.value)
            self._drop_keys_on(hrc)
            if self._second_ac_possible():  # the card is told (AAC asked), then declined
                return self._second_ac(False, hrc, r)
            return self._finish(Result.DECLINED)
        entry = self.journal.answer(txn.entry_id, EntryState.APPROVED, response_code=hrc,
                                    rrn=str(r.rrn or ""), auth_code=str(r.auth_code or ""),
                                    host_date=host_date, result=Result.APPROVED.value)
        if txn.entry is EntryMode.CHIP and txn.txn_type.needs_card and not self.card_present:
            return self._card_left(entry)
        if self._second_ac_possible():
            return self._second_ac(True, hrc, r)
        if txn.card_powered:
            log.info("terminal: the card of STAN %06d has no CDOL2: no second GENERATE AC, "
                     "the host's approval stands", txn.stan)
        return [*self._release_card(), *self._approved(entry, now)]

    def _card_left(self, entry: JournalEntry) -> list[Action]:
        """The card left before it could take the approval (second GENERATE AC): declined,
        the approval reversed."""
        txn = self._txn
        assert txn is not None
        self.journal.reversal_pending(entry.id, REVERSAL_CARD_DECLINED)
        self._fault(Result.CARD_ERROR)
        log.warning("terminal: card removed before it took the approval of STAN %06d: "
                    "reversal pending", txn.stan)
        return self._finish(Result.CARD_ERROR, reason=Reason.REMOVED.value, text=(
            "卡片已拔出 交易将冲正 CARD REMOVED: APPROVAL REVERSED"))

    def _second_ac_possible(self) -> bool:
        txn = self._txn
        return (txn is not None and txn.card_powered
                and bool(getattr(txn.card, "cdol2", b"")))

    def _second_ac(self, approve: bool, hrc: str, answer: Any) -> list[Action]:
        """The host's answer to the card: the second GENERATE AC (a TC asked for when
        approved), with the ARC and the issuer authentication data (91 of field 55)."""
        txn = self._txn
        assert txn is not None
        txn.second_ac_approve = approve
        txn.job_id = self._next_job()
        issuer_auth = _tag(getattr(answer, "icc_response", b"") or b"", 0x91)
        return [self._start(SecondAcJob(txn.job_id, txn.card, approve, hrc, issuer_auth))]

    def _job_second_ac(self, res: JobResult, now: float) -> list[Action]:
        txn = self._txn
        assert txn is not None
        out = self._release_card()
        if not txn.second_ac_approve:
            return out + self._finish(Result.DECLINED)
        entry = self.journal.get(txn.entry_id)
        if res.failure:
            if res.reason in CARD_GONE or not self.card_present:
                return out + self._card_left(entry)
            self.journal.reversal_pending(entry.id, REVERSAL_CARD_DECLINED)
            self._fault(FAILURE_RESULT[res.failure])
            log.warning("terminal: the card of STAN %06d failed at the second GENERATE AC "
                        "(%s): reversal pending", txn.stan, res.reason)
            return out + self._finish(FAILURE_RESULT[res.failure], reason=res.reason, text=(
                "卡片故障 交易将冲正 CARD ERROR: APPROVAL REVERSED"))
        ac = res.value
        kind = str(getattr(ac, "cryptogram_type", ""))
        if kind == "AAC":
            self.journal.reversal_pending(entry.id, REVERSAL_CARD_DECLINED)
            self._fault(Result.DECLINED)
            log.warning("terminal: the card declined the approval of STAN %06d (AAC at the "
                        "second GENERATE AC): reversal pending", txn.stan)
            return out + self._finish(Result.DECLINED, reason=Reason.CARD_DECLINED.value,
                                      text="卡片拒绝 交易将冲正 DECLINED BY CARD: APPROVAL "
                                           "REVERSED")
        if kind != "TC":
            log.info("terminal: the card of STAN %06d does not do the second GENERATE AC "
                     "(%s): the host's approval stands", txn.stan,
                     getattr(ac, "detail", "") or kind)
        return out + self._approved(entry, now)

    def _approved(self, entry: JournalEntry, now: float) -> list[Action]:
        """Approved (and taken by the card): the signature first when the CVM asks for one,
        then the receipts."""
        txn = self._txn
        assert txn is not None
        if txn.card is not None and txn.wants_signature:
            self._timer = (now + self.profile.signature_s, "signature")
            return [*self._set_state(State.SIGNATURE), self._event(Prompt.SIGNATURE)]
        return self._print_approved(entry, now)

    def _signed(self, captured: bool, now: float) -> list[Action]:
        """The pad's answer (or its time-out): journaled before the receipt prints."""
        txn = self._txn
        assert txn is not None
        self._timer = None
        entry = self.journal.signed(txn.entry_id) if captured else self.journal.get(
            txn.entry_id)
        txn.result["sig"] = "1" if captured else "0"
        return self._print_approved(entry, now)

    def _print_approved(self, entry: JournalEntry, now: float) -> list[Action]:
        def printed(ok: bool, t: float) -> list[Action]:
            status = PrintStatus.OK if ok else PrintStatus.INCOMPLETE
            return self._finish(Result.APPROVED, print=status.value)

        return self._print(self._pages(entry), printed, now)

    # ---- QR payments (docs/terminal-behaviour.md, "QR payments"; docs/qr-platform.md)
    def _qr_mode(self, row: TransactionType, msg: Message) -> tuple[QrMode | None, str]:
        """The request's QR mode (``entry=qr`` + ``qr=merchant|customer``), or why it is
        malformed ('' when it is fine); (None, '') for a card transaction."""
        entry, mode = msg.get("entry"), msg.get("qr")
        if entry != EntryMode.QR and not mode:
            return None, ""
        if entry != EntryMode.QR:
            return None, f"{row.ecr_name}: qr={mode!r} needs entry=qr, got entry={entry!r}"
        if mode not in set(QrMode):
            return None, (f"{row.ecr_name}: entry=qr needs qr = "
                          f"{' or '.join(QrMode)}, got {mode!r}")
        if row.book is not Book.DEBIT or row.needs_original:
            return None, f"{row.ecr_name}: a QR payment is a sale; {row.type} cannot be paid by QR"
        if not self.qr_enabled:
            return None, "扫码支付未开通 QR PAYMENTS NOT CONFIGURED: no QR platform"
        return QrMode(mode), ""

    def _qr_start(self, mode: QrMode, now: float) -> list[Action]:
        """PROCESSING: the orders of unknown outcome first (cancelled), then the payment."""
        txn = self._txn
        assert txn is not None
        txn.stan = self._take_stan()
        txn.qr = _Qr(mode, f"{self.profile.terminal_id}{self.nv.batch_no:06d}{txn.stan:06d}")
        out = [*self._set_state(State.PROCESSING), self._event(Prompt.CONNECTING)]
        return out + self._qr_next_unknown(now)

    def _qr_send(self, op: Operation, step: str, *, auth_code: str = "",
                 out_trade_no: str = "") -> list[Action]:
        txn = self._txn
        assert txn is not None and txn.qr is not None
        self._timer = None
        txn.qr.step = step
        txn.job_id = self._next_job()
        return [self._start(QrJob(txn.job_id, op, out_trade_no or txn.qr.out_trade_no,
                                  txn.amount_minor, auth_code,
                                  self.profile.merchant_name[:32]))]

    def _qr_next_unknown(self, now: float) -> list[Action]:
        txn = self._txn
        assert txn is not None and txn.qr is not None
        if self.qr_unknown:
            log.info("terminal: QR order %s of unknown outcome: cancelling it first",
                     self.qr_unknown[0])
            return self._qr_send(Operation.CANCEL, "recover", out_trade_no=self.qr_unknown[0])
        if txn.qr.mode is QrMode.MERCHANT:
            return self._qr_send(Operation.CREATE, "create")
        self._timer = (now + self.profile.qr_scan_s, "qr_scan")
        return [*self._set_state(State.WAIT_QR), self._event(Prompt.SCAN_CODE)]

    def _job_qr(self, res: JobResult, now: float) -> list[Action]:
        txn = self._txn
        assert txn is not None and txn.qr is not None
        if res.failure:  # a bug in the client: loud, never a platform refusal
            self._fault(FAILURE_RESULT[res.failure])
            return self._finish(FAILURE_RESULT[res.failure], reason=res.reason,
                                text=f"{DISPLAY[Result.INTERNAL_ERROR]}: {res.message}"[:200])
        answer: QrAnswer = res.value
        return self._qr_steps[txn.qr.step](answer, now)

    def _qr_comms(self, answer: QrAnswer, *, maybe_paid: bool) -> list[Action]:
        """No usable answer: COMMS_ERROR; an order that may have been paid is remembered and
        cancelled at the next chance (:attr:`qr_unknown`)."""
        txn = self._txn
        assert txn is not None and txn.qr is not None
        if maybe_paid and txn.qr.out_trade_no not in self.qr_unknown:
            self.qr_unknown.append(txn.qr.out_trade_no)
            log.warning("terminal: QR order %s: outcome unknown (%s); cancelled at the next QR "
                        "payment", txn.qr.out_trade_no, answer.comms or answer.message)
        self._fault(Result.COMMS_ERROR)
        return self._finish(Result.COMMS_ERROR, text=(
            f"{DISPLAY[Result.COMMS_ERROR]}: QR platform: {answer.comms or answer.message}"
        )[:200])

    def _qr_refused(self, answer: QrAnswer, rc: Result = Result.DECLINED) -> list[Action]:
        """The platform refused: *rc* with ``reason=qr_refused`` and its code in ``qrc``; a
        decline is journaled (declined, with the code)."""
        txn = self._txn
        assert txn is not None and txn.qr is not None
        if answer.order is not None:
            txn.qr.order = answer.order
        text = f"支付失败 PAYMENT REFUSED: {answer.refused} {answer.message}".strip()[:200]
        if rc is Result.DECLINED:
            self._qr_journal(EntryState.DECLINED, rc, response_code=answer.refused, text=text)
        return self._finish(rc, reason=Reason.QR_REFUSED.value, qrc=answer.refused, text=text)

    def _qr_journal(self, state: EntryState, rc: Result, *, response_code: str = "",
                    text: str = "") -> JournalEntry:
        txn = self._txn
        assert txn is not None and txn.qr is not None
        order = txn.qr.order
        entry = self.journal.add(NewEntry(
            batch_no=self.nv.batch_no, stan=txn.stan, txn_type=txn.txn_type.type,
            amount_minor=txn.amount_minor, currency=txn.currency_code,
            created=self.terminal_time().strftime(CLOCK_FORMAT), operator=self.operator or "",
            entry_mode=EntryMode.QR, masked_pan=txn.qr.code,
            app_label=order.wallet.value if order is not None and order.wallet else "",
            text=text, qr_order=order.order_id if order is not None else ""))
        # the platform's answer is in already: written pending, answered in the same step
        entry = self.journal.answer(entry.id, state, response_code=response_code,
                                    result=rc.value)
        txn.entry_id = entry.id
        return entry

    def _qr_final(self, order: QrOrder, now: float, *, timeout: bool = False) -> list[Action]:
        """The order is final: SUCCESS approved (journal, receipt); CLOSED a time-out;
        REVOKED cancelled; PAYERROR declined."""
        txn = self._txn
        assert txn is not None and txn.qr is not None
        txn.qr.order = order
        if order.status.paid:
            entry = self._qr_journal(EntryState.APPROVED, Result.APPROVED)
            log.info("terminal: QR order %s paid (%s)", order.order_id, order.wallet)
            return self._print_approved(entry, now)
        if order.status is OrderStatus.PAYERROR:
            return self._qr_refused(QrAnswer(order, refused=OrderStatus.PAYERROR.value,
                                             message=order.reason or ""))
        if order.status is OrderStatus.CLOSED or timeout:
            return self._finish(Result.TIMEOUT, text=(
                f"{DISPLAY[Result.TIMEOUT]}: order {order.order_id} {order.status.value}"))
        return self._finish(Result.CANCELLED, text=(
            f"{DISPLAY[Result.CANCELLED]}: order {order.order_id} {order.status.value}"))

    def _qr_poll_from(self, now: float, bound: float) -> list[Action]:
        """WAIT_QR: query the order every ``qr.poll`` until it is final or *bound* passed."""
        txn = self._txn
        assert txn is not None and txn.qr is not None
        txn.qr.poller = OrderPoller(now, bound, self.profile.qr_poll_s)
        txn.qr.poller.next_at = now + self.profile.qr_poll_s
        return self._qr_wait()

    def _qr_wait(self) -> list[Action]:
        txn = self._txn
        assert txn is not None and txn.qr is not None and txn.qr.poller is not None
        poller = txn.qr.poller
        self._timer = (min(poller.next_at, poller.deadline), "qr_poll")
        out = self._set_state(State.WAIT_QR)
        order = txn.qr.order
        if order is not None and order.status is OrderStatus.USERPAYING \
                and not txn.qr.password_shown:
            txn.qr.password_shown = True
            out.append(self._event(Prompt.WAIT_PASSWORD))
        return out

    def _t_qr_poll(self, now: float) -> list[Action]:
        txn = self._txn
        assert txn is not None and txn.qr is not None and txn.qr.poller is not None
        if not txn.qr.poller.expired(now):
            return self._qr_send(Operation.QUERY, "query")
        log.info("terminal: %s", txn.qr.poller.give_up(f"QR order {txn.qr.out_trade_no}"))
        if txn.qr.mode is QrMode.MERCHANT and not txn.qr.password_shown:
            return self._qr_send(Operation.CLOSE, "close")
        return self._qr_send(Operation.CANCEL, "give_up")

    def _qr_cancel(self, now: float) -> list[Action]:
        """The cashier cancels (CN) while the terminal waits: the order is cancelled on the
        platform (after the request under way, if one is); no order yet: cancelled at once."""
        txn = self._txn
        assert txn is not None and txn.qr is not None
        if self._pending_job is not None:
            txn.qr.cancel = True
            return []
        if txn.qr.order is None:
            return self._finish(Result.CANCELLED)
        return self._qr_send(Operation.CANCEL, "cancel")

    def _hw_scan(self, obj: Mapping[str, Any], now: float) -> list[Action]:
        """The scanner read a code (the customer's payment code): charged by micropay."""
        txn = self._txn
        code = str(obj.get("code") or "")
        if (self.state is not State.WAIT_QR or txn is None or txn.qr is None
                or txn.qr.mode is not QrMode.CUSTOMER or txn.qr.order is not None
                or self._pending_job is not None):
            log.info("terminal: a scanned code (%s) while %s: ignored", mask_code(code),
                     self.state)
            return []
        txn.qr.code = mask_code(code)
        return [*self._set_state(State.PROCESSING), self._event(Prompt.PROCESSING),
                *self._qr_send(Operation.MICROPAY, "micropay", auth_code=code)]

    # -- the platform's answers, by step
    def _qr_recovered(self, answer: QrAnswer, now: float) -> list[Action]:
        txn = self._txn
        assert txn is not None and txn.qr is not None
        if answer.comms or answer.unknown:
            self._fault(Result.COMMS_ERROR)
            return self._finish(Result.COMMS_ERROR, text=(
                f"{DISPLAY[Result.COMMS_ERROR]}: QR order {self.qr_unknown[0]} of unknown "
                f"outcome not cancelled: {answer.comms or answer.message}")[:200])
        gone = self.qr_unknown.pop(0)
        log.info("terminal: QR order %s of unknown outcome settled: %s", gone,
                 answer.order.status.value if answer.order else answer.refused)
        return self._qr_next_unknown(now)

    def _qr_created(self, answer: QrAnswer, now: float) -> list[Action]:
        txn = self._txn
        assert txn is not None and txn.qr is not None
        if answer.comms or answer.unknown:
            return self._qr_comms(answer, maybe_paid=False)  # the code was never shown
        if answer.order is None or not answer.order.code_url:
            return self._qr_refused(answer)
        txn.qr.order = answer.order
        if txn.qr.cancel:
            return self._qr_send(Operation.CANCEL, "cancel")
        out = self._qr_poll_from(now, self.profile.qr_wait_s)
        return [*out, SendEcr(Message(MsgCode.PROGRESS.value, {
            "code": Prompt.SHOW_QR.value, "qrcode": answer.order.code_url,
            "text": f"{DISPLAY[Prompt.SHOW_QR]} {_money(txn.amount_minor)}",
            "order": answer.order.order_id}))]

    def _qr_charged(self, answer: QrAnswer, now: float) -> list[Action]:
        txn = self._txn
        assert txn is not None and txn.qr is not None
        if answer.comms:
            return self._qr_comms(answer, maybe_paid=True)
        if answer.refused and not answer.unknown:
            return self._qr_refused(answer)
        if answer.order is not None:
            txn.qr.order = answer.order
        if txn.qr.cancel:
            return self._qr_send(Operation.CANCEL, "cancel")
        if answer.order is not None and not answer.order.status.pending:
            return self._qr_final(answer.order, now)
        return self._qr_poll_from(now, self.profile.qr_password_s)  # USERPAYING, or unknown

    def _qr_queried(self, answer: QrAnswer, now: float) -> list[Action]:
        txn = self._txn
        assert txn is not None and txn.qr is not None and txn.qr.poller is not None
        if txn.qr.cancel:
            return self._qr_send(Operation.CANCEL, "cancel")
        if answer.comms or answer.unknown:
            txn.qr.poller.failed(now, answer.comms or answer.message)
            return self._qr_wait()
        if answer.order is None:
            return self._qr_refused(answer)
        txn.qr.order = answer.order
        final = txn.qr.poller.seen(now, answer.order)
        if final is not None:
            return self._qr_final(final, now)
        return self._qr_wait()

    def _qr_closed(self, answer: QrAnswer, now: float) -> list[Action]:
        """The time-out's close: CLOSED → TIMEOUT; paid meanwhile (ORDER_PAID) → approved."""
        if answer.comms or answer.unknown:
            return self._qr_comms(answer, maybe_paid=True)
        if answer.order is not None:
            return self._qr_final(answer.order, now, timeout=True)
        return self._qr_refused(answer, Result.TIMEOUT)

    def _qr_given_up(self, answer: QrAnswer, now: float) -> list[Action]:
        """The password never came: the order is cancelled (a payment revoked) → TIMEOUT."""
        if answer.comms or answer.unknown:
            return self._qr_comms(answer, maybe_paid=True)
        txn = self._txn
        assert txn is not None and txn.qr is not None
        if answer.order is not None:
            txn.qr.order = answer.order
        return self._finish(Result.TIMEOUT, text=(
            f"{DISPLAY[Result.TIMEOUT]}: no wallet password within "
            f"{self.profile.qr_password_s:g} s; order cancelled"))

    def _qr_cancelled(self, answer: QrAnswer, now: float) -> list[Action]:
        """The cashier's cancel: REVOKED (a payment made meanwhile goes back) → CANCELLED."""
        if answer.comms or answer.unknown:
            return self._qr_comms(answer, maybe_paid=True)
        txn = self._txn
        assert txn is not None and txn.qr is not None
        if answer.order is not None:
            txn.qr.order = answer.order
        extra = {"qrc": answer.refused} if answer.refused else {}
        return self._finish(Result.CANCELLED, **extra)


def _tag(tlv_data: bytes, tag: int) -> bytes:
    """The value of *tag* in a BER-TLV string (b"" when absent or not TLV)."""
    try:
        return tlv.find(tlv_data, tag) or b""
    except DecodeError:
        log.warning("terminal: field 55 of the answer is not BER-TLV; no tag %X", tag)
        return b""


AMOUNT_DIGITS = 12  # an amount (or a limit) in minor units: 1..999999999999


def _minor_units(text: str) -> bool:
    """*text* is an amount in minor units: 1-12 ASCII digits, not zero (length checked before
    ``int()``, which refuses more than 4300 digits with a ValueError)."""
    return 0 < len(text) <= AMOUNT_DIGITS and ascii_digits(text) and int(text) > 0


def _money(amount_minor: int) -> str:
    return f"{amount_minor // 100}.{amount_minor % 100:02d}"
