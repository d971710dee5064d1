"""Test doubles for the terminal's kernel and acquirer client (the real ones are colleagues')."""

from __future__ import annotations

import copy
import dataclasses
import datetime
import enum
import json
import selectors
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocols.ecr import Key, Message, MsgCode
from protocols.errors import SimError
from protocols.transactions import SALE, SettlementTotals, TransactionTable, TransactionType
from sim.terminal.emv import PinCheck, SecondAc
from sim.terminal.firmware import (
    Action,
    AuthJob,
    ChipJob,
    FirstAcJob,
    JobResult,
    Profile,
    ReversalJob,
    SecondAcJob,
    SendEcr,
    SendHarness,
    SettleJob,
    SignInJob,
    StartJob,
    State,
    TapJob,
    TerminalFirmware,
    UploadEndJob,
    UploadJob,
    VerifyJob,
    load_profile,
)
from sim.terminal.journal import MemoryJournal
from sim.terminal.nvram import MemoryNvram

PROFILE_PATH = Path(__file__).resolve().parents[2] / "fixtures" / "terminal" / "profile.yaml"
PAN = "6212345678901234"
MASKED = "621234******1234"
NOW = datetime.datetime(2026, 5, 4, 13, 14, 15)


class FakeTxn(enum.StrEnum):
    """Test-only transaction types (the real table has only the sale)."""

    REFUND = "refund"
    VOID = "void"


#: Test-only rows: a refund reads the card, names an original, never asks for a PIN; a void by
#: trace reads no card at all.  Injected wherever a table is a parameter.
REFUND = TransactionType(
    type=FakeTxn.REFUND,  # type: ignore[arg-type]  # a test-only type, not in TxnType
    ecr_code="RF", ecr_name="REFUND", mti="0220", proc_code="200000", condition_code="00",
    message_type_code="25", receipt_title="退货 REFUND", needs_card=True, needs_original=True,
    needs_pin=False, description="test-only refund")
VOID = TransactionType(
    type=FakeTxn.VOID,  # type: ignore[arg-type]
    ecr_code="VD", ecr_name="VOID", mti="0200", proc_code="200000", condition_code="00",
    message_type_code="23", receipt_title="撤销 VOID", needs_card=False, needs_original=True,
    needs_pin=False, description="test-only void by trace, no card")
TEST_TABLE = TransactionTable((SALE, REFUND, VOID))


# -- reading the pure firmware's actions ---------------------------------------------------------

def ecr_out(actions: list[Action]) -> list[Message]:
    return [a.msg for a in actions if isinstance(a, SendEcr)]


def codes(actions: list[Action]) -> list[str]:
    """'PU:APPROVED', 'PG:INSERT_CARD', 'RD' … for compact assertions."""
    out = []
    for m in ecr_out(actions):
        detail = m.get("rc") or m.get("code") or m.get("copy")
        out.append(f"{m.code}:{detail}" if detail else m.code)
    return out


def jobs(actions: list[Action]) -> list[Any]:
    return [a.job for a in actions if isinstance(a, StartJob)]


def job_of(actions: list[Action]) -> Any:
    """The one job the actions start."""
    (job,) = jobs(actions)
    return job


def final(actions: list[Action], code: str = SALE.ecr_code) -> Message:
    """The last final answer (one with ``rc``) to the ECR request *code*."""
    found = [m for m in ecr_out(actions) if m.code == code and "rc" in m.fields]
    assert found, f"no final {code} in {codes(actions)}"
    return found[-1]


def loads(actions: list[Action]) -> list[str]:
    return [a.obj["state"] for a in actions if isinstance(a, SendHarness)
            and a.obj.get("t") == "load"]


class FirmwareHands:
    """A pure firmware (:attr:`fw`) and the hands to drive it, time (:attr:`now`) passed in:
    the ECR's requests, the harness's messages, the results of the jobs it starts."""

    fw: TerminalFirmware
    now: float = 0.0

    def boot(self) -> list[Action]:
        out = self.fw.start(self.now)
        return out + self.advance(0.05)

    def advance(self, dt: float) -> list[Action]:
        self.now += dt
        return self.fw.tick(self.now)

    def req(self, code: str, **fields: str) -> list[Action]:
        return self.fw.on_ecr(Message(code, fields), self.now)

    def hw(self, **obj: Any) -> list[Action]:
        return self.fw.on_harness(obj, self.now)

    def result(self, job: Any, value: Any = None, failure: str = "", reason: str = "",
               message: str = "", reversal: str = "") -> list[Action]:
        """*job* done: its :class:`JobResult`."""
        return self.fw.on_job(JobResult(job.job_id, value, failure, reason, message, reversal),
                              self.now)


def fast_profile(**over: Any) -> Profile:
    """The fixture profile with short time-outs.  The chip-retry / fallback flow is off
    (``fallback_after=0``: a chip that cannot be read ends the transaction at once) unless a
    test turns it on (tests/terminal/test_entry_modes.py)."""
    base: dict[str, Any] = dict(boot_s=0.05, print_copy_s=0.02, card_wait_s=2.0,
                                pin_entry_s=2.0, fallback_after=0)
    base.update(over)
    profile = load_profile(PROFILE_PATH)
    model_copy = getattr(profile, "model_copy", None)  # a pydantic model, or a dataclass
    if model_copy is not None:
        return model_copy(update=base)  # type: ignore[no-any-return]
    return dataclasses.replace(profile, **base)


class FakeCardError(SimError):
    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        super().__init__(f"card {reason}" + (f": {detail}" if detail else ""))


class FakeCommsError(SimError):
    def __init__(self, stage: str, message: str) -> None:
        self.stage = stage
        super().__init__(message)


@dataclass
class FakeCard:
    pan: str = field(default=PAN, repr=False)
    pan_seq: int | None = 1
    expiry: str = "3012"
    track2_equivalent: str = field(default=PAN + "D30122010000000000", repr=False)
    aid: str = "A000000333010101"
    app_label: str = "PBOC DEBIT"
    icc_data: bytes = field(default=b"\x9f\x26\x08" + bytes(8), repr=False)
    cvm: str = "online_pin"

    @property
    def masked_pan(self) -> str:
        return MASKED


@dataclass
class FakeKeys:
    pik: bytes = field(default=bytes(16), repr=False)
    mak: bytes = field(default=bytes(16), repr=False)


@dataclass
class FakeSignInResult:
    response_code: str = "00"
    keys: Any = field(default_factory=FakeKeys)
    batch_no: int = 2
    host_datetime: str | None = None


@dataclass
class FakeAuthResult:
    response_code: str = "00"
    approved: bool = True
    auth_code: str | None = "123456"
    rrn: str | None = "000000001234"
    stan: int = 0
    host_message: str = ""


@dataclass
class FakeHostAnswer:
    """A 0410 / 0330."""

    response_code: str = "00"
    host_message: str = ""


@dataclass
class FakeSettlementResult:
    response_code: str = "00"
    host_totals: SettlementTotals | None = None
    host_message: str = ""

    @property
    def reconciliation_code(self) -> str:
        return self.host_totals.code if self.host_totals is not None else ""


class FakeClock:
    """The machine's wall clock, moved by hand."""

    def __init__(self, now: datetime.datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime.datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += datetime.timedelta(**delta)


class FakeServices:
    """Services with scripted answers; records every job (PIN kept only to assert on it)."""

    card_errors: tuple[type[BaseException], ...] = (FakeCardError,)
    comms_errors: tuple[type[BaseException], ...] = (FakeCommsError,)

    def __init__(self, slot: Any = None) -> None:
        self.slot = slot
        self.card: Any = FakeCard()
        self.sign_in_result: Any = FakeSignInResult()
        self.auth_result: Any = FakeAuthResult()
        self.reversal_result: Any = FakeHostAnswer()
        self.settle_results: list[Any] = []  # answered in turn (then: balanced)
        self.upload_result: Any = FakeHostAnswer()
        self.tap_card: Any = FakeCard()
        self.pin_checks: list[Any] = []  # VERIFY answers in turn (then: right)
        self.first_ac_card: Any = None  # None: the card of the job, with an ARQC
        self.second_ac_result: Any = SecondAc("TC")
        self.jobs: list[Any] = []
        self.lock = threading.Lock()

    def _answer(self, job: Any, value: Any) -> Any:
        with self.lock:
            self.jobs.append(job)
        if isinstance(value, BaseException):
            raise value
        return value

    def read_card(self, job: ChipJob) -> Any:
        if self.slot is not None:  # exercise the real slot over the harness
            self.slot.power_on(1.0)
            self.slot.transmit(bytes.fromhex("00a404000e325041592e5359532e444446303100"), 1.0)
            self.slot.power_off()
        return self._answer(job, self.card)

    def read_tap(self, job: TapJob) -> Any:
        reader = getattr(self.slot, "contactless", None)
        if reader is not None:  # exercise the real contactless reader over the harness
            reader.power_on(1.0)
            reader.transmit(bytes.fromhex("00a404000e325041592e5359532e444446303100"), 1.0)
            reader.power_off()
        return self._answer(job, self.tap_card)

    def verify_pin(self, job: VerifyJob) -> Any:
        return self._answer(job, self.pin_checks.pop(0) if self.pin_checks else PinCheck(True))

    def first_ac(self, job: FirstAcJob) -> Any:
        if self.first_ac_card is None:
            card = copy.copy(job.card)
            card.cryptogram_type = "ARQC"
            return self._answer(job, card)
        return self._answer(job, self.first_ac_card)

    def second_ac(self, job: SecondAcJob) -> Any:
        return self._answer(job, self.second_ac_result)

    def sign_in(self, job: SignInJob) -> Any:
        return self._answer(job, self.sign_in_result)

    def authorize(self, job: AuthJob) -> Any:
        return self._answer(job, self.auth_result)

    def reverse(self, job: ReversalJob) -> Any:
        return self._answer(job, self.reversal_result)

    def settle(self, job: SettleJob) -> Any:
        if self.settle_results:
            return self._answer(job, self.settle_results.pop(0))
        return self._answer(job, FakeSettlementResult(host_totals=job.totals.with_code("1")))

    def upload(self, job: UploadJob) -> Any:
        return self._answer(job, self.upload_result)

    def upload_end(self, job: UploadEndJob) -> Any:
        return self._answer(job, self.upload_result)


class Day(FirmwareHands):
    """A firmware with its NVRAM, journal and wall clock, and the hands to drive it."""

    def __init__(self, *, nvram: MemoryNvram | None = None, journal: MemoryJournal | None = None,
                 clock: FakeClock | None = None, **profile: Any) -> None:
        self.nvram = nvram or MemoryNvram()
        self.journal = journal or MemoryJournal()
        self.clock = clock or FakeClock()
        self.fw = TerminalFirmware(fast_profile(**profile), self.nvram, journal=self.journal,
                                   clock=self.clock, rng=lambda n: bytes(n))

    def done(self, actions: list[Action], value: Any = None, failure: str = "",
             reason: str = "", message: str = "", reversal: str = "") -> list[Action]:
        """The one job *actions* start, done."""
        return self.result(job_of(actions), value, failure, reason, message, reversal)

    def login(self, op: str = "01", pw: str = "0000") -> Message:
        (msg,) = ecr_out(self.req(MsgCode.LOGIN, op=op, pw=pw))
        return msg

    def admin(self) -> None:
        assert self.login("00", "123456").get("rc") == "OK"

    def sign_in(self, **result: Any) -> list[Action]:
        if self.fw.operator is None:
            self.login()
        out = self.req(MsgCode.SIGN_IN)
        return self.done(out, FakeSignInResult(**result))

    def print_all(self) -> list[Action]:
        out: list[Action] = []
        while self.fw.state is State.PRINTING or self.fw._printing is not None:
            out += self.advance(0.02)
        return out

    def sale(self, amount: int = 1000, *, card: FakeCard | None = None,
             auth: FakeAuthResult | None = None) -> list[Action]:
        """A chip sale with PIN up to its final response; the card is taken back after."""
        out = self.req(SALE.ecr_code, amt=str(amount), cur="156")
        if self.fw.state is not State.WAIT_CARD:
            return out
        out += (chip := self.hw(t="card", present=True))
        out += (pin := self.done(chip, card or FakeCard()))
        assert self.fw.state is State.PIN_ENTRY, codes(pin)
        for k in "1234":
            self.req(MsgCode.KEY, k=k)
        out += self.online(self.req(MsgCode.KEY, k=Key.ENTER), auth)
        self.hw(t="card", present=False)
        return out

    def online(self, actions: list[Action], auth: FakeAuthResult | None = None,
               reversal: FakeHostAnswer | None = None) -> list[Action]:
        """Answer the reversals the actions start (acknowledged) then the request; print."""
        out = list(actions)
        while jobs(actions) and isinstance(jobs(actions)[0], ReversalJob):
            actions = self.done(actions, reversal or FakeHostAnswer())
            out += actions
        if jobs(actions) and isinstance(jobs(actions)[0], AuthJob):
            actions = self.done(actions, auth or FakeAuthResult(rrn=f"R{self.fw.nv.stan:011d}"))
            out += actions
        return out + self.print_all()

    def status(self) -> Message:
        (st,) = ecr_out(self.req(MsgCode.STATUS))
        return st


#: How :class:`FakeHarnessPeer` answers the card slot: (message type, its ``on``) → (answer
#: type, key, value).
SLOT_ANSWERS: dict[tuple[str, object], tuple[str, str, str]] = {
    ("card_power", True): ("atr", "atr", "3b6500002063cbbc00"),
    ("capdu", None): ("rapdu", "data", "9000"),
}


class FakeHarnessPeer:
    """The bench side of the harness socket: records what the terminal says (:attr:`seen`,
    under :attr:`lock`) and answers the card slot (and the contactless reader) from
    *answers*."""

    def __init__(self, sock: socket.socket,
                 answers: dict[tuple[str, object], tuple[str, str, str]] | None = None) -> None:
        self.sock = sock
        self.answers = SLOT_ANSWERS if answers is None else answers
        self.seen: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def send(self, **obj: Any) -> None:
        self.sock.sendall(json.dumps(obj).encode() + b"\n")

    def loads(self) -> list[str]:
        with self.lock:
            return [o["state"] for o in self.seen if o.get("t") == "load"]

    def kinds(self) -> list[str]:
        """The types of what the terminal sent, its load reports left out."""
        with self.lock:
            return [o["t"] for o in self.seen if o.get("t") != "load"]

    def _loop(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self.sock, selectors.EVENT_READ)
        buf = b""
        while not self._stop.is_set():
            if not sel.select(timeout=0.05):
                continue
            data = self.sock.recv(65536)
            if not data:
                return
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                obj = json.loads(line)
                with self.lock:
                    self.seen.append(obj)
                    self.cond.notify_all()
                reply = self.answers.get((obj.get("t"), obj.get("on")))
                if reply is not None:
                    kind, key, value = reply
                    self.send(**{"t": kind, key: value})

    def wait_for(self, kind: str, timeout: float) -> dict[str, Any]:
        """The first message of type *kind* the terminal sent (bounded wait)."""
        def found() -> dict[str, Any] | None:
            return next((o for o in self.seen if o.get("t") == kind), None)

        with self.cond:
            self.cond.wait_for(lambda: found() is not None, timeout=timeout)
            obj = found()
        assert obj is not None, f"no {kind!r} from the terminal within {timeout} s"
        return obj

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)
        self.sock.close()
