"""What the terminal reads out of its journal: statuses, totals, anomalies, the batch upload.

Pure functions over :class:`~sim.terminal.journal.JournalEntry` lists (either journal
implementation), so the firmware's reports and its settlement use one definition of what
counts (docs/terminal-behaviour.md, "Totals"):

* a transaction **counts** when it is ``approved`` (not reversed, no reversal pending) and,
  for a type whose row books a debit or a credit, no approved void names it;
* settlement debits = counted types booked DEBIT (sales), credits = counted types booked
  CREDIT (refunds); voids (CANCEL) count in neither;
* the TOTALS report's ``by_type`` is the counted transactions per type (so its sales and
  refunds are the settlement's debits and credits), ``by_entry`` the same per entry mode.
"""

from __future__ import annotations

import datetime
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from protocols.ecr import CLOCK_FORMAT, Anomaly, EntryMode, TxnStatus
from protocols.transactions import (
    Book,
    OriginalRef,
    SettlementTotals,
    TransactionTable,
    UploadItem,
)
from sim.terminal.journal import CardData, EntryState, JournalEntry

#: Journal state → QUERY status (before looking at voids and refunds against it).
STATUS_OF_STATE: Mapping[EntryState, TxnStatus] = {
    EntryState.PENDING: TxnStatus.PENDING,
    EntryState.APPROVED: TxnStatus.APPROVED,
    EntryState.DECLINED: TxnStatus.DECLINED,
    EntryState.REFUSED: TxnStatus.DECLINED,
    EntryState.FAILED: TxnStatus.DECLINED,
    EntryState.REVERSAL_PENDING: TxnStatus.PENDING,
    EntryState.REVERSED: TxnStatus.REVERSED,
}

#: Limit refusals (ECR rc) that the TOTALS report flags.
LIMIT_RESULTS = frozenset({"LIMIT_EXCEEDED", "DAILY_LIMIT_EXCEEDED"})


@dataclass(frozen=True)
class AnomalyRules:
    """Thresholds of the TOTALS anomalies (profile ``anomalies``)."""

    declines_per_card: int = 3
    refund_burst: int = 3
    refund_window_s: float = 600.0


def _book(table: TransactionTable, entry: JournalEntry) -> Book:
    return table.get(entry.txn_type).book


def against(entries: Iterable[JournalEntry], table: TransactionTable,
            book: Book) -> dict[int, list[JournalEntry]]:
    """Approved transactions booked *book* by the original (journal id) they name."""
    out: dict[int, list[JournalEntry]] = defaultdict(list)
    for e in entries:
        if (e.state is EntryState.APPROVED and e.original_id is not None
                and _book(table, e) is book):
            out[e.original_id].append(e)
    return out


def counted(entries: Sequence[JournalEntry], table: TransactionTable) -> list[JournalEntry]:
    """The transactions that count (see the module doc), in journal order."""
    voided = against(entries, table, Book.CANCEL)
    return [e for e in entries if e.state is EntryState.APPROVED
            and (_book(table, e) is Book.CANCEL or e.id not in voided)]


def status_of(entry: JournalEntry, entries: Sequence[JournalEntry],
              table: TransactionTable) -> TxnStatus:
    """QUERY ``status``: voided / refunded when an approved void / refund names it."""
    status = STATUS_OF_STATE[entry.state]
    if status is not TxnStatus.APPROVED:
        return status
    if entry.id in against(entries, table, Book.CANCEL):
        return TxnStatus.VOIDED
    if entry.id in against(entries, table, Book.CREDIT):
        return TxnStatus.REFUNDED
    return status


def acquirer_booked(entries: Iterable[JournalEntry]) -> list[JournalEntry]:
    """The entries the ISO 8583 acquirer booked: not QR payments (the QR platform books those,
    its own ledger; they count in the day's sales and the TOTALS report, not in the 0500)."""
    return [e for e in entries if e.entry_mode != EntryMode.QR]


def settlement_totals(entries: Sequence[JournalEntry],
                      table: TransactionTable) -> SettlementTotals:
    """Field 48 of the terminal's 0500 (code 0) for the batch whose *entries* these are."""
    sums: dict[Book, list[int]] = {Book.DEBIT: [0, 0], Book.CREDIT: [0, 0]}
    for e in acquirer_booked(counted(entries, table)):
        book = _book(table, e)
        if book in sums:
            sums[book][0] += 1
            sums[book][1] += e.amount_minor
    return SettlementTotals(sums[Book.DEBIT][0], sums[Book.DEBIT][1], sums[Book.CREDIT][0],
                            sums[Book.CREDIT][1])


def by_type(entries: Sequence[JournalEntry],
            table: TransactionTable) -> dict[str, tuple[int, int]]:
    """Counted transactions per type: ``{type: (count, amount)}``, every row of *table*."""
    out = {str(row.type): (0, 0) for row in table}
    for e in counted(entries, table):
        n, amt = out[e.txn_type]
        out[e.txn_type] = (n + 1, amt + e.amount_minor)
    return out


def by_entry(entries: Sequence[JournalEntry],
             table: TransactionTable) -> dict[str, tuple[int, int]]:
    """Counted transactions per entry mode: ``{mode: (count, amount)}``, every mode."""
    out = {str(mode): (0, 0) for mode in EntryMode}
    for e in counted(entries, table):
        mode = e.entry_mode or EntryMode.MANUAL
        n, amt = out.get(mode, (0, 0))
        out[mode] = (n + 1, amt + e.amount_minor)
    return out


def _when(entry: JournalEntry) -> datetime.datetime:
    return datetime.datetime.strptime(entry.created, CLOCK_FORMAT)


def anomalies(entries: Sequence[JournalEntry], table: TransactionTable,
              rules: AnomalyRules) -> list[str]:
    """The TOTALS ``anomalies``: ``declines:<masked PAN>`` for a card declined
    ``declines_per_card`` times or more, ``refund_burst`` when ``refund_burst`` approved refunds
    fall within ``refund_window_s``, ``limit:<stan>`` per sale refused for a limit."""
    out: list[str] = []
    declines = Counter(e.masked_pan for e in entries
                       if e.state is EntryState.DECLINED and e.masked_pan)
    out += [f"{Anomaly.DECLINES}:{pan}" for pan, n in declines.items()
            if n >= rules.declines_per_card]
    refunds = sorted(_when(e) for e in entries
                     if _book(table, e) is Book.CREDIT and e.state is EntryState.APPROVED)
    window = datetime.timedelta(seconds=rules.refund_window_s)
    n = rules.refund_burst
    if any(refunds[i + n - 1] - refunds[i] <= window for i in range(len(refunds) - n + 1)):
        out.append(str(Anomaly.REFUND_BURST))
    out += [f"{Anomaly.LIMIT}:{e.stan_text}" for e in entries
            if e.state is EntryState.REFUSED and e.result in LIMIT_RESULTS]
    return out


def day_sales(entries: Iterable[JournalEntry], table: TransactionTable, day: str) -> int:
    """Amount of the counted sales (rows booked DEBIT) made on *day* (YYYYMMDD, terminal
    clock), every batch: what ``limits.daily_limit`` is checked against."""
    todays = [e for e in entries if e.created.startswith(day)]
    return sum(e.amount_minor for e in counted(todays, table) if _book(table, e) is Book.DEBIT)


def upload_items(entries: Sequence[JournalEntry], table: TransactionTable,
                 card_of: Callable[[int], CardData | None]) -> list[UploadItem]:
    """The batch upload (0320 …201): every counted debit and credit (never a void: a 0320
    could not tell the host it is one), with the PAN when the terminal still has it."""
    items = []
    for e in acquirer_booked(counted(entries, table)):
        row = table.get(e.txn_type)
        if row.book is Book.CANCEL:
            continue
        card = card_of(e.id)
        items.append(UploadItem(stan=e.stan, proc_code=row.proc_code,
                                amount_minor=e.amount_minor, rrn=e.rrn,
                                pan=(card.pan or None) if card is not None else None))
    return items


def original_ref(entry: JournalEntry) -> OriginalRef | None:
    """The original a void/refund entry named (as sent in fields 61/37), or None."""
    if not (entry.orig_rrn or entry.orig_stan):
        return None
    return OriginalRef(rrn=entry.orig_rrn, date=entry.orig_date if entry.orig_rrn else "",
                       stan=entry.orig_stan, batch_no=entry.orig_batch if entry.orig_stan else "")


def describe_original(entry: JournalEntry) -> str:
    """The receipt's ``原交易 ORIGINAL:`` text: ``RRN 000000001234 (0504) TRACE 000012``."""
    parts = []
    if entry.orig_rrn:
        parts.append(f"RRN {entry.orig_rrn} ({entry.orig_date or '----'})")
    if entry.orig_stan:
        parts.append(f"TRACE {entry.orig_stan}")
    return " ".join(parts)


__all__ = [
    "AnomalyRules",
    "against",
    "anomalies",
    "by_entry",
    "by_type",
    "counted",
    "day_sales",
    "describe_original",
    "original_ref",
    "settlement_totals",
    "status_of",
    "upload_items",
]
