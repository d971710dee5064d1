"""Test doubles for the terminal's kernel and acquirer client (the real ones are colleagues')."""

from __future__ import annotations

import copy
import dataclasses
import datetime
import enum
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocols.errors import SimError
from protocols.transactions import SALE, SettlementTotals, TransactionTable, TransactionType
from sim.terminal.emv import PinCheck, SecondAc
from sim.terminal.firmware import (
    AuthJob,
    ChipJob,
    FirstAcJob,
    Profile,
    ReversalJob,
    SecondAcJob,
    SettleJob,
    SignInJob,
    TapJob,
    UploadEndJob,
    UploadJob,
    VerifyJob,
    load_profile,
)

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
