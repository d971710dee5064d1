"""The acquirer ledger's schema: the contract between the host simulator that writes it
(``sim.host.ledger``) and the rig that reads it (``rigs.host``).

Never holds a full PAN: ``pan_masked`` (first 6 / last 4) and ``pan_hash`` (salted SHA-256,
first 16 hex digits) for matching.

One row per request message.  The columns after ``response_code`` say what the host made of it
(docs/business-day.md): ``kind`` (the transaction type, or a management message kind of
:data:`MANAGEMENT_KINDS`), ``status`` (what was booked: :class:`Status`; the status of an
original changes when it is voided or reversed), the original a void, refund or reversal refers to
(``original_id`` = its row id, and its STAN, batch and RRN), the reason a reversal gives
(``reason_code``, the 0400's field 39), the reconciliation code a settlement was answered with,
field 48 as received and as answered, and the host rule (``rule_id``, ``rule_action``) that
shaped the answer.  Columns are only ever added at the end (a ledger file written by an older
host is migrated by adding them).

:func:`batch_view` is the host's view of one terminal's batch, a pure function over ledger
records: the booked transactions, or the detail the terminal uploaded (0320) once it ended an
upload, and whether the batch was settled.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from protocols.transactions import (
    RECONCILE_BALANCED,
    RECONCILE_SENT,
    TRANSACTIONS,
    Book,
    SettlementTotals,
    TransactionTable,
)

TABLE = "messages"

#: Every column but ``id`` (the row id), in table order, with its SQL type.  New columns are
#: only ever appended (a ledger written by an older host is migrated by adding them).
COLUMN_TYPES: tuple[tuple[str, str], ...] = (
    ("received_at", "TEXT NOT NULL"),    # ISO 8601, host local time
    ("received_ts", "REAL NOT NULL"),    # POSIX seconds
    ("mti", "TEXT NOT NULL"),
    ("response_mti", "TEXT"),
    ("proc_code", "TEXT"),
    ("terminal_id", "TEXT"),
    ("merchant_id", "TEXT"),
    ("stan", "TEXT"),
    ("batch_no", "TEXT"),
    ("rrn", "TEXT"),
    ("auth_code", "TEXT"),
    ("amount_minor", "INTEGER"),
    ("currency", "TEXT"),
    ("pan_masked", "TEXT"),
    ("pan_hash", "TEXT"),
    ("entry_mode", "TEXT"),
    ("response_code", "TEXT"),
    # -- the business day (docs/business-day.md)
    ("kind", "TEXT"),                    # sale, void, refund, sign_in, reversal, upload, ...
    ("status", "TEXT"),                  # Status
    ("original_id", "INTEGER"),          # row id of the original (void, refund, reversal)
    ("original_stan", "TEXT"),
    ("original_batch", "TEXT"),
    ("original_rrn", "TEXT"),
    ("reason_code", "TEXT"),             # field 39 of a reversal (98 no response, 06 other)
    ("reconciliation", "TEXT"),          # settlement: 1 balanced, 2 not balanced
    ("field48_request", "TEXT"),         # totals of a 0500, upload count of a 0320 end
    ("field48_response", "TEXT"),        # the host's totals + reconciliation code (0510)
    ("rule_id", "INTEGER"),              # the host rule that shaped the answer
    ("rule_action", "TEXT"),             # what it did: "code 51", "delay 2.0 s", "drop"
)
COLUMNS: tuple[str, ...] = tuple(name for name, _ in COLUMN_TYPES)
SCHEMA = (f"CREATE TABLE IF NOT EXISTS {TABLE} (\n    id INTEGER PRIMARY KEY AUTOINCREMENT,\n"
          + ",\n".join(f"    {name} {sql}" for name, sql in COLUMN_TYPES) + "\n);")

# -- kinds and statuses ------------------------------------------------------------------------

KIND_SIGN_IN = "sign_in"
KIND_REVERSAL = "reversal"
KIND_UPLOAD = "upload"            # 0320 ...201: one transaction of the batch
KIND_UPLOAD_END = "upload_end"    # 0320 ...207: the end of a batch upload
KIND_SETTLEMENT = "settlement"
#: Kinds of rows that are not financial transactions (a financial row's kind is its TxnType).
MANAGEMENT_KINDS = frozenset({KIND_SIGN_IN, KIND_REVERSAL, KIND_UPLOAD, KIND_UPLOAD_END,
                              KIND_SETTLEMENT})
APPROVED = "00"


class Status(enum.StrEnum):
    """What the host made of a row (column ``status``)."""

    BOOKED = "booked"              # an approved sale, void or refund that stands
    VOIDED = "voided"              # a sale a void cancelled
    REVERSED = "reversed"          # a sale, void or refund a reversal cancelled
    NETTED = "netted"              # a reversal that cancelled its original
    NOTHING_TO_NET = "nothing_to_net"  # a reversal of something never booked (answered 00)
    UPLOADED = "uploaded"          # one transaction of a batch upload
    ADOPTED = "adopted"            # the end of a batch upload: the host adopted the detail
    BALANCED = "balanced"          # a settlement answered 1
    UNBALANCED = "unbalanced"      # a settlement answered 2 (the totals differ)
    FORCED = "forced"              # a settlement answered 2 because disagree_next asked


@dataclass(frozen=True)
class LedgerRecord:
    """What the engine hands the ledger for one request (already masked).  ``id`` is the row id
    (0 until recorded; not one of :data:`COLUMNS`, not compared)."""

    received_at: str
    received_ts: float
    mti: str
    response_mti: str | None
    proc_code: str | None
    terminal_id: str | None
    merchant_id: str | None
    stan: str | None
    batch_no: str | None
    rrn: str | None
    auth_code: str | None
    amount_minor: int | None
    currency: str | None
    pan_masked: str | None
    pan_hash: str | None
    entry_mode: str | None
    response_code: str | None
    kind: str | None = None
    status: str | None = None
    original_id: int | None = None
    original_stan: str | None = None
    original_batch: str | None = None
    original_rrn: str | None = None
    reason_code: str | None = None
    reconciliation: str | None = None
    field48_request: str | None = None
    field48_response: str | None = None
    rule_id: int | None = None
    rule_action: str | None = None
    id: int = field(default=0, compare=False)

    @property
    def financial(self) -> bool:
        """A sale, void or refund request (not a management message)."""
        return self.proc_code is not None and self.kind not in MANAGEMENT_KINDS


# -- totals ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Totals:
    """Settlement totals of one terminal's batch: debits are sales, credits are refunds.  Field
    48 is written and read by :class:`protocols.transactions.SettlementTotals` (one codec)."""

    debit_count: int = 0
    debit_amount: int = 0
    credit_count: int = 0
    credit_amount: int = 0

    def field48(self, code: str = RECONCILE_SENT) -> str:
        """Field 48 of a 0500 (code ``0``) or 0510 (``1`` balanced, ``2`` not); a DecodeError
        when a count or amount does not fit."""
        return SettlementTotals(self.debit_count, self.debit_amount, self.credit_count,
                                self.credit_amount, code).field48()

    @classmethod
    def from_field48(cls, value: str) -> tuple[Totals, str]:
        """Field 48 of a 0500/0510 → (totals, reconciliation code); a DecodeError says what is
        wrong."""
        st = SettlementTotals.parse(value)
        return cls(st.debit_count, st.debit_amount, st.credit_count, st.credit_amount), st.code

    def plus(self, *, debits: Iterable[int] = (), credits: Iterable[int] = ()) -> Totals:
        """These totals with more debits and credits (amounts) counted in."""
        d, c = list(debits), list(credits)
        return Totals(self.debit_count + len(d), self.debit_amount + sum(d),
                      self.credit_count + len(c), self.credit_amount + sum(c))

    def __add__(self, other: Totals) -> Totals:
        return Totals(self.debit_count + other.debit_count,
                      self.debit_amount + other.debit_amount,
                      self.credit_count + other.credit_count,
                      self.credit_amount + other.credit_amount)


@dataclass(frozen=True)
class BatchView:
    """The host's view of one terminal's batch (:func:`batch_view`)."""

    terminal_id: str
    batch_no: str
    totals: Totals
    source: str  # "booked": from what the host booked; "uploaded": the terminal's detail
    settled: bool  # a settlement of this batch was answered 1


def _approved(rec: LedgerRecord) -> bool:
    return rec.response_code == APPROVED


def book_of(rec: LedgerRecord, table: TransactionTable = TRANSACTIONS) -> Book | None:
    """How *rec* counts by its transaction type's row (:class:`protocols.transactions.Book`);
    None for a management message or a type the table lacks."""
    row = table.by_type.get(rec.kind or "")
    return None if row is None else row.book


def _booked_totals(rows: Sequence[LedgerRecord], table: TransactionTable) -> Totals:
    standing = [r for r in rows if r.status == Status.BOOKED]
    return Totals().plus(
        debits=[r.amount_minor or 0 for r in standing if book_of(r, table) is Book.DEBIT],
        credits=[r.amount_minor or 0 for r in standing if book_of(r, table) is Book.CREDIT])


def _uploaded_totals(detail: Sequence[LedgerRecord], rows: Sequence[LedgerRecord],
                     after: Sequence[LedgerRecord], table: TransactionTable) -> Totals:
    """The terminal's uploaded detail (by STAN, the last upload of a STAN wins), counted by the
    book of the type with its processing code (a void is never uploaded: 200000 is the refund's
    credit), except that an uploaded STAN the host knows as a void (book CANCEL) takes out the
    uploaded transaction it voided.  Then what the host booked after the upload ended (a later
    void of an uploaded sale takes it out too)."""
    by_proc = {row.proc_code: row.book for row in table if row.book is not Book.CANCEL}
    known = {r.stan: r for r in rows if r.financial and _approved(r)}
    debits: dict[str | None, int] = {}
    credits: list[int] = []
    cancelled: set[str | None] = set()
    for stan, rec in {r.stan: r for r in detail}.items():
        own = known.get(stan)
        book = (Book.CANCEL if own is not None and book_of(own, table) is Book.CANCEL
                else by_proc.get(rec.proc_code or ""))
        if book is Book.CANCEL:
            cancelled.add(own.original_stan if own is not None else None)
        elif book is Book.DEBIT:
            debits[stan] = rec.amount_minor or 0
        elif book is Book.CREDIT:
            credits.append(rec.amount_minor or 0)
    cancelled |= {r.original_stan for r in after
                  if r.status == Status.BOOKED and book_of(r, table) is Book.CANCEL}
    kept = [amount for stan, amount in debits.items() if stan not in cancelled]
    return Totals().plus(debits=kept, credits=credits) + _booked_totals(after, table)


def batch_view(records: Iterable[LedgerRecord], terminal_id: str, batch_no: str,
               table: TransactionTable = TRANSACTIONS) -> BatchView:
    """The host's view of *terminal_id*'s batch *batch_no* from ledger *records* (in ledger
    order; other terminals' and batches' rows are ignored).

    Until the terminal ends a batch upload (an approved 0320 …207), the totals are what the
    host booked, counted by each type's book in *table*: sales (status booked) are debits,
    refunds (booked) are credits; voided and reversed transactions and the voids themselves
    count in neither.  Once an upload ended, the host's view is the detail uploaded since the
    previous end (:func:`_uploaded_totals`), plus what it booked afterwards.  ``settled``: a
    settlement of the batch was answered 1.
    """
    rows = [r for r in records if r.terminal_id == terminal_id and r.batch_no == batch_no]
    settled = any(r.kind == KIND_SETTLEMENT and _approved(r)
                  and r.reconciliation == RECONCILE_BALANCED for r in rows)
    ends = [i for i, r in enumerate(rows) if r.kind == KIND_UPLOAD_END and _approved(r)]
    if not ends:
        return BatchView(terminal_id, batch_no, _booked_totals(rows, table), "booked", settled)
    last = ends[-1]
    first = ends[-2] + 1 if len(ends) > 1 else 0
    detail = [r for r in rows[first:last] if r.kind == KIND_UPLOAD and _approved(r)]
    totals = _uploaded_totals(detail, rows, rows[last + 1:], table)
    return BatchView(terminal_id, batch_no, totals, "uploaded", settled)


def batch_totals(records: Iterable[LedgerRecord], terminal_id: str, batch_no: str,
                 table: TransactionTable = TRANSACTIONS) -> Totals:
    """The totals of :func:`batch_view`."""
    return batch_view(records, terminal_id, batch_no, table).totals


def refunded_amount(referring: Iterable[LedgerRecord],
                    table: TransactionTable = TRANSACTIONS) -> int:
    """What the booked credits (refunds) among *referring* (rows naming one original) gave
    back."""
    return sum(r.amount_minor or 0 for r in referring
               if r.status == Status.BOOKED and book_of(r, table) is Book.CREDIT)


__all__ = [
    "APPROVED",
    "BatchView",
    "COLUMNS",
    "COLUMN_TYPES",
    "KIND_REVERSAL",
    "KIND_SETTLEMENT",
    "KIND_SIGN_IN",
    "KIND_UPLOAD",
    "KIND_UPLOAD_END",
    "LedgerRecord",
    "MANAGEMENT_KINDS",
    "SCHEMA",
    "Status",
    "TABLE",
    "Totals",
    "batch_totals",
    "batch_view",
    "book_of",
    "refunded_amount",
]
