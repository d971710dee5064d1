"""The transaction types the terminal, the rig and the host know: one frozen table.

Each row (:class:`TransactionType`) says how one type looks on every wire — its ECR request
code and name (:mod:`protocols.ecr` builds the request/response specs from it), its ISO 8583
MTI, processing code, POS condition code and field 60.1 message type code (the terminal's
acquirer client builds the request from it; the host dispatches on ``(MTI, processing code)``),
the receipt title, and what the flow needs (a card, an original transaction, an online PIN when
the card's CVM asks for one).  Adding a type is a row plus the handlers named in
docs/transactions.md.

The table is never mutated at run time: :class:`TransactionTable` holds read-only mappings.
Code that dispatches on it takes a table argument defaulting to :data:`TRANSACTIONS`, so a test
can inject a table with a test-only row.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TypeVar

from protocols.digits import ascii_digits
from protocols.errors import ConfigError, DecodeError

_K = TypeVar("_K", str, tuple[str, str])


class TxnType(enum.StrEnum):
    """The transaction types of the table (values are stable, lower-case names)."""

    SALE = "sale"
    VOID = "void"
    REFUND = "refund"


class Book(enum.StrEnum):
    """How an approved transaction of a type counts in the settlement totals (field 48):
    sales are debits, refunds credits; a void counts in neither and takes its original out."""

    DEBIT = "debit"
    CREDIT = "credit"
    CANCEL = "cancel"


@dataclass(frozen=True)
class TransactionType:
    """One row of the table (see module doc)."""

    type: TxnType
    ecr_code: str  # ECR request code; the final response uses the same code
    ecr_name: str  # ECR message name in transcripts and errors, e.g. PURCHASE
    mti: str  # ISO 8583 request MTI
    proc_code: str  # field 3
    condition_code: str  # field 25
    message_type_code: str  # field 60.1
    receipt_title: str  # the receipt's "交易类型 TYPE:" line
    needs_card: bool  # the flow reads a card (chip) before going online
    needs_original: bool  # the request names an original transaction (OriginalRef)
    needs_pin: bool  # online PIN when the card's CVM asks for it
    description: str = ""
    amount_from_original: bool = False  # the amount is the original's (ECR amt optional)
    original_date: bool = True  # field 61 carries the original's date MMDD (a void's does not)
    book: Book = Book.DEBIT  # how it counts in the settlement totals

    def __post_init__(self) -> None:
        checks = (
            ("ecr_code", self.ecr_code, len(self.ecr_code) == 2 and self.ecr_code.isascii()
             and self.ecr_code.isalpha() and self.ecr_code.isupper(), "2 upper-case letters"),
            ("mti", self.mti, len(self.mti) == 4 and ascii_digits(self.mti), "4 digits"),
            ("proc_code", self.proc_code, len(self.proc_code) == 6 and ascii_digits(self.proc_code),
             "6 digits"),
            ("condition_code", self.condition_code,
             len(self.condition_code) == 2 and ascii_digits(self.condition_code), "2 digits"),
            ("message_type_code", self.message_type_code,
             len(self.message_type_code) == 2 and ascii_digits(self.message_type_code), "2 digits"),
        )
        for name, value, ok, expected in checks:
            if not ok:
                raise ConfigError(f"transaction type {self.type}: {name} must be {expected}, "
                                  f"got {value!r}")

    @property
    def iso_key(self) -> tuple[str, str]:
        """``(MTI, processing code)``: what the host dispatches on."""
        return self.mti, self.proc_code


def _add(index: dict[_K, TransactionType], key: _K, what: str, row: TransactionType) -> None:
    if key in index:
        raise ConfigError(f"transaction table: {what} {key!r} of {row.type} is already used "
                          f"by {index[key].type}")
    index[key] = row


class TransactionTable:
    """Frozen rows with lookups by type, by ECR code and by ``(MTI, processing code)``.

    Construction checks that types, ECR codes and ISO keys are unique (a ConfigError names the
    clash).  Iterating yields the rows in table order.
    """

    def __init__(self, rows: Iterable[TransactionType]) -> None:
        rows = tuple(rows)
        by_type: dict[str, TransactionType] = {}
        by_code: dict[str, TransactionType] = {}
        by_iso: dict[tuple[str, str], TransactionType] = {}
        for row in rows:
            _add(by_type, row.type, "type", row)
            _add(by_code, row.ecr_code, "ECR code", row)
            _add(by_iso, row.iso_key, "MTI + processing code", row)
        self._rows = rows
        self._by_type: Mapping[str, TransactionType] = MappingProxyType(by_type)
        self._by_code: Mapping[str, TransactionType] = MappingProxyType(by_code)
        self._by_iso: Mapping[tuple[str, str], TransactionType] = MappingProxyType(by_iso)

    def __iter__(self) -> Iterator[TransactionType]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def __repr__(self) -> str:
        return f"TransactionTable({', '.join(str(r.type) for r in self._rows)})"

    @property
    def rows(self) -> tuple[TransactionType, ...]:
        return self._rows

    @property
    def by_type(self) -> Mapping[str, TransactionType]:
        """Read-only mapping type → row."""
        return self._by_type

    @property
    def by_ecr_code(self) -> Mapping[str, TransactionType]:
        """Read-only mapping ECR request code → row."""
        return self._by_code

    @property
    def by_iso(self) -> Mapping[tuple[str, str], TransactionType]:
        """Read-only mapping ``(MTI, processing code)`` → row."""
        return self._by_iso

    def get(self, txn: str) -> TransactionType:
        """The row of type *txn*; a ConfigError lists the known types."""
        row = self._by_type.get(txn)
        if row is None:
            raise ConfigError(f"transaction table: no type {str(txn)!r}; known: "
                              f"{', '.join(self._by_type)}")
        return row

    def for_ecr_code(self, code: str) -> TransactionType | None:
        return self._by_code.get(code)

    def for_iso(self, mti: str, proc_code: str) -> TransactionType | None:
        return self._by_iso.get((mti, proc_code))


SALE = TransactionType(
    type=TxnType.SALE, ecr_code="PU", ecr_name="PURCHASE", mti="0200", proc_code="000000",
    condition_code="00", message_type_code="22", receipt_title="消费 SALE",
    needs_card=True, needs_original=False, needs_pin=True,
    description="chip purchase, online PIN when the card asks, authorised online",
    book=Book.DEBIT)

VOID = TransactionType(
    type=TxnType.VOID, ecr_code="VD", ecr_name="VOID", mti="0200", proc_code="200000",
    condition_code="00", message_type_code="23", receipt_title="消费撤销 VOID",
    needs_card=False, needs_original=True, needs_pin=False,
    description="cancels a sale of the open batch named by trace; the amount is the original's",
    amount_from_original=True, original_date=False, book=Book.CANCEL)

REFUND = TransactionType(
    type=TxnType.REFUND, ecr_code="RF", ecr_name="REFUND", mti="0220", proc_code="200000",
    condition_code="00", message_type_code="25", receipt_title="退货 REFUND",
    needs_card=False, needs_original=True, needs_pin=False,
    description="gives back up to what is left of an original sale named by RRN + date or trace",
    book=Book.CREDIT)

#: The table every layer dispatches on by default.
TRANSACTIONS = TransactionTable((SALE, VOID, REFUND))


def transaction_type(txn: str) -> TransactionType:
    """Row of *txn* in :data:`TRANSACTIONS`."""
    return TRANSACTIONS.get(txn)


def by_ecr_code(code: str) -> TransactionType | None:
    """Row whose ECR request code is *code* in :data:`TRANSACTIONS`, or None."""
    return TRANSACTIONS.for_ecr_code(code)


def by_iso(mti: str, proc_code: str) -> TransactionType | None:
    """Row with this MTI and processing code in :data:`TRANSACTIONS`, or None."""
    return TRANSACTIONS.for_iso(mti, proc_code)


# ---------------------------------------------------------------------------- original reference

#: ECR request fields that name an original (docs/ecr-protocol.md).
ORIGINAL_FIELDS = ("orrn", "odate", "ostan", "obatch")


@dataclass(frozen=True)
class OriginalRef:
    """The transaction a void/refund-like type refers to: by RRN + date (MMDD), or by trace
    (STAN, with the batch it was in; blank batch = the terminal's current batch)."""

    rrn: str = ""
    date: str = ""  # MMDD of the original
    stan: str = ""  # 6 digits
    batch_no: str = ""  # 6 digits, only with stan

    def __post_init__(self) -> None:
        problems = []
        if self.rrn and not (len(self.rrn) == 12 and self.rrn.isascii() and self.rrn.isalnum()):
            problems.append(f"orrn must be 12 letters/digits, got {self.rrn!r}")
        if self.date and not (len(self.date) == 4 and ascii_digits(self.date)
                              and 1 <= int(self.date[:2]) <= 12 and 1 <= int(self.date[2:]) <= 31):
            problems.append(f"odate must be MMDD, got {self.date!r}")
        if self.stan and not (len(self.stan) == 6 and ascii_digits(self.stan)):
            problems.append(f"ostan must be 6 digits, got {self.stan!r}")
        if self.batch_no and not (len(self.batch_no) == 6 and ascii_digits(self.batch_no)):
            problems.append(f"obatch must be 6 digits, got {self.batch_no!r}")
        if self.rrn and not self.date:
            problems.append("orrn needs odate (the original's MMDD)")
        if self.batch_no and not self.stan:
            problems.append("obatch needs ostan")
        if not self.rrn and not self.stan:
            problems.append("needs orrn + odate or ostan")
        if problems:
            raise DecodeError(f"original transaction reference: {'; '.join(problems)}")

    @classmethod
    def by_rrn(cls, rrn: str, date: str) -> OriginalRef:
        return cls(rrn=rrn, date=date)

    @classmethod
    def by_trace(cls, stan: int | str, batch_no: int | str | None = None) -> OriginalRef:
        batch = "" if batch_no is None else f"{int(batch_no):06d}"
        return cls(stan=f"{int(stan):06d}", batch_no=batch)

    def ecr_fields(self) -> dict[str, str]:
        """The ECR request fields naming this original (only the ones set)."""
        pairs = (("orrn", self.rrn), ("odate", self.date), ("ostan", self.stan),
                 ("obatch", self.batch_no))
        return {k: v for k, v in pairs if v}

    @classmethod
    def from_ecr_fields(cls, fields: Mapping[str, str]) -> OriginalRef | None:
        """The original named in an ECR request, or None if no original field is present; a
        DecodeError names the wrong field."""
        if not any(fields.get(k) for k in ORIGINAL_FIELDS):
            return None
        return cls(rrn=fields.get("orrn", ""), date=fields.get("odate", ""),
                   stan=fields.get("ostan", ""), batch_no=fields.get("obatch", ""))

    def field61(self, current_batch: int, *, with_date: bool = True) -> str:
        """ISO 8583 field 61 (original data): original batch (6) + STAN (6) [+ date MMDD (4)];
        unknown parts are zeros, a STAN without batch is in *current_batch*.  A void sends no
        date (*with_date* False: 12 digits)."""
        batch = self.batch_no or (f"{current_batch:06d}" if self.stan else "000000")
        date = (self.date or "0000") if with_date else ""
        return f"{batch}{self.stan or '000000'}{date}"

    def describe(self) -> str:
        """Short text for receipts and logs: ``RRN 000000001234 (0504)`` or ``TRACE 000012``."""
        if self.rrn:
            return f"RRN {self.rrn} ({self.date})"
        batch = f" BATCH {self.batch_no}" if self.batch_no else ""
        return f"TRACE {self.stan}{batch}"


def parse_field61(value: str) -> tuple[str, str, str]:
    """ISO 8583 field 61 → ``(batch, stan, date)`` with zeros read as '' (unknown); a
    DecodeError says what is wrong."""
    if len(value) < 12 or not ascii_digits(value):
        raise DecodeError(f"field 61 original data {value!r}: expected batch (6) + STAN (6) "
                          f"[+ date MMDD (4)] digits")
    batch, stan, date = value[:6], value[6:12], value[12:16]
    return (("" if batch == "000000" else batch), ("" if stan == "000000" else stan),
            ("" if date in ("", "0000") else date))


# ---------------------------------------------------------------------------- settlement totals

#: Reconciliation codes of field 48 (docs/business-day.md).
RECONCILE_SENT = "0"  # the terminal's 0500
RECONCILE_BALANCED = "1"  # the host's 0510: its totals equal the terminal's
RECONCILE_UNBALANCED = "2"  # the host's 0510: they differ (the terminal uploads its batch)
FIELD48_LEN = 3 + 12 + 3 + 12 + 1


@dataclass(frozen=True)
class SettlementTotals:
    """Field 48 of 0500/0510: debit count (3) + amount (12), credit count (3) + amount (12),
    reconciliation code (1).  Debits are sales, credits refunds (:class:`Book`)."""

    debit_count: int = 0
    debit_amount: int = 0
    credit_count: int = 0
    credit_amount: int = 0
    code: str = RECONCILE_SENT

    def __post_init__(self) -> None:
        limits = (("debit_count", self.debit_count, 999), ("debit_amount", self.debit_amount,
                  10**12 - 1), ("credit_count", self.credit_count, 999),
                  ("credit_amount", self.credit_amount, 10**12 - 1))
        for name, value, top in limits:
            if not 0 <= value <= top:
                raise DecodeError(f"settlement totals: {name} must be 0..{top}, got {value}")
        if len(self.code) != 1 or not ascii_digits(self.code):
            raise DecodeError(f"settlement totals: reconciliation code must be 1 digit, "
                              f"got {self.code!r}")

    def field48(self) -> str:
        return (f"{self.debit_count:03d}{self.debit_amount:012d}{self.credit_count:03d}"
                f"{self.credit_amount:012d}{self.code}")

    def with_code(self, code: str) -> SettlementTotals:
        return SettlementTotals(self.debit_count, self.debit_amount, self.credit_count,
                                self.credit_amount, code)

    def same_totals(self, other: SettlementTotals) -> bool:
        """Counts and amounts equal (the reconciliation codes aside)."""
        return self.field48()[:-1] == other.field48()[:-1]

    @classmethod
    def parse(cls, value: str) -> SettlementTotals:
        """Field 48 → totals; a DecodeError says what is wrong."""
        if len(value) != FIELD48_LEN or not ascii_digits(value):
            raise DecodeError(f"field 48 settlement totals {value!r}: expected {FIELD48_LEN} "
                              f"digits: debit count (3) + amount (12) + credit count (3) + "
                              f"amount (12) + reconciliation code (1)")
        return cls(int(value[0:3]), int(value[3:15]), int(value[15:18]), int(value[18:30]),
                   value[30])


@dataclass(frozen=True)
class UploadItem:
    """One approved transaction of the batch as the batch upload (0320 …201) carries it:
    fields 11 (its STAN), 3, 4, 37 and 2 (PAN, when the terminal still has it; never shown)."""

    stan: int
    proc_code: str
    amount_minor: int
    rrn: str
    pan: str | None = field(default=None, repr=False)


def upload_count_field48(count: int) -> str:
    """Field 48 of the batch-upload end (0320 …207): the count of uploaded transactions, 4
    digits."""
    if not 0 <= count <= 9999:
        raise DecodeError(f"batch upload end: count must be 0..9999, got {count}")
    return f"{count:04d}"


__all__ = [
    "FIELD48_LEN",
    "ORIGINAL_FIELDS",
    "RECONCILE_BALANCED",
    "RECONCILE_SENT",
    "RECONCILE_UNBALANCED",
    "REFUND",
    "SALE",
    "Book",
    "SettlementTotals",
    "TRANSACTIONS",
    "OriginalRef",
    "TransactionTable",
    "TransactionType",
    "TxnType",
    "UploadItem",
    "VOID",
    "by_ecr_code",
    "by_iso",
    "parse_field61",
    "transaction_type",
    "upload_count_field48",
]
