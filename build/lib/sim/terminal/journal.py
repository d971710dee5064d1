"""The terminal's transaction journal: what it asked the host, what the host answered, what it
printed, and which reversals it still owes.  Survives a power cut.

Two implementations of one interface (:class:`Journal`), injected into the firmware like the
NVRAM store: :class:`SqliteJournal` (the state dir's ``terminal-journal.sqlite``, WAL,
``synchronous=FULL``: a method returns only once its change is on disk) and
:class:`MemoryJournal` (unit tests).  Every method is one atomic change; the firmware calls it
*before* acting on it (docs/business-day.md, "Terminal behaviour"):

* :meth:`Journal.add` — a financial request, ``pending``, before it leaves (or ``refused``, when
  the terminal refused it before going online);
* :meth:`Journal.answer` — the host's answer, before the terminal prints or answers the ECR;
* :meth:`Journal.reversal_pending` — before anything else happens after a time-out, a MAC
  failure on an approval, or a card that declines the approval; :meth:`Journal.reversal_try`,
  :meth:`Journal.reversed` as the 0400s go and the 0410 comes;
* :meth:`Journal.signed` — the cardholder signed on the pad (approved, before printing: the
  receipt says the signature was captured);
* :meth:`Journal.printed` — once both copies are out;
* :meth:`Journal.print_incomplete` — the paper ran out (or the printer went) mid-receipt: how
  many copies are out; the rest are owed and printed, marked continued, once it can print;
* :meth:`Journal.recover` — at boot: every ``pending`` entry (its answer never came, or it
  never left) becomes ``reversal_pending``.

Confidentiality: an entry holds the masked PAN only.  What a reversal (fields 2, 14, 35) and the
batch upload (field 2) need is kept apart in :class:`CardData` (table ``card_vault``, written in
the same transaction as its entry), sealed at rest (AES-256-GCM under the terminal's data key,
derived from its master key: :func:`journal_key`; the entry id is the associated data, so a
sealed row cannot be moved to another entry), never rendered by ``repr`` or logs, and deleted as
soon as nothing can need it: when the reversal is acknowledged, when a declined/refused/failed
answer is written, and for the whole batch when it is closed (``secure_delete`` overwrites what
is deleted).  The database file is created mode 0600 in the terminal's own state dir; neither it
nor its write-ahead log ever holds a PAN or track data in the clear.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import hmac
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from Crypto.Cipher import AES

from protocols.errors import SimError

JOURNAL_FILE = "terminal-journal.sqlite"
#: Field 39 of a reversal (docs/business-day.md): no response; card declined after approval or
#: any other reason (a response MAC that does not verify).
REVERSAL_NO_RESPONSE = "98"
REVERSAL_OTHER = "06"
#: Whether a request that failed at each stage of the exchange may have reached the host: the
#: reversal it calls for ('' = it never left, nothing to reverse).
REVERSAL_OF_STAGE = {"connect": "", "send": REVERSAL_NO_RESPONSE,
                     "response": REVERSAL_NO_RESPONSE}
SCHEMA_VERSION = 4
#: Columns added by each schema version (a version-1 file is migrated when opened).
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    2: ("ALTER TABLE entries ADD COLUMN incomplete INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE entries ADD COLUMN copies_printed INTEGER NOT NULL DEFAULT 0"),
    3: ("ALTER TABLE entries ADD COLUMN qr_order TEXT NOT NULL DEFAULT ''",),
    4: ("CREATE TABLE IF NOT EXISTS card_vault (entry_id INTEGER PRIMARY KEY REFERENCES "
        "entries (id), sealed BLOB NOT NULL)",),  # card_data's rows are sealed into it
}
DATA_KEY_LABEL = b"posrig terminal journal: card data at rest"
NONCE_LEN = 12


def journal_key(master_key: bytes) -> bytes:
    """The terminal's key for card data at rest, derived from its master key (HMAC-SHA256
    with a fixed label): the same after every power-up, never stored."""
    if len(master_key) < 16:
        raise SimError(f"journal_key(): a master key of {len(master_key)} bytes; 16 or more "
                       f"expected")
    return hmac.new(master_key, DATA_KEY_LABEL, hashlib.sha256).digest()


def seal(key: bytes, entry_id: int, card: CardData) -> bytes:
    """*card* sealed for the row of *entry_id*: nonce, ciphertext, tag."""
    nonce = os.urandom(NONCE_LEN)
    cipher = AES.new(key, AES.MODE_GCM, nonce=nonce)
    cipher.update(entry_id.to_bytes(8, "big"))
    body, tag = cipher.encrypt_and_digest(
        "\x1f".join((card.pan, card.expiry, card.track2)).encode())
    return nonce + body + tag


def unseal(key: bytes, entry_id: int, sealed: bytes, where: str) -> CardData:
    """The card data sealed for *entry_id*; SimError naming the entry (never the data) when
    the key is wrong or the row was altered or moved."""
    if len(sealed) < NONCE_LEN + 16:
        raise SimError(f"{where}: card data of entry {entry_id}: {len(sealed)} bytes, too short "
                       f"to be sealed")
    cipher = AES.new(key, AES.MODE_GCM, nonce=sealed[:NONCE_LEN])
    cipher.update(entry_id.to_bytes(8, "big"))
    try:
        plain = cipher.decrypt_and_verify(sealed[NONCE_LEN:-16], sealed[-16:])
    except ValueError:
        raise SimError(f"{where}: card data of entry {entry_id} does not open with this "
                       f"terminal's key (altered, moved, or another terminal's)") from None
    pan, expiry, track2 = plain.decode().split("\x1f")
    return CardData(pan, expiry, track2)
BUSY_TIMEOUT_MS = 2000
"""Bound on waiting for another connection's lock (the terminal is the only writer)."""


class EntryState(enum.StrEnum):
    PENDING = "pending"  # written before the request leaves; no answer yet
    APPROVED = "approved"  # host answered 00
    DECLINED = "declined"  # host answered another code
    REFUSED = "refused"  # refused by the terminal before going online (a limit)
    FAILED = "failed"  # never reached the host (connect failed): nothing to reverse
    REVERSAL_PENDING = "reversal_pending"  # a 0400 is owed
    REVERSED = "reversed"  # the host acknowledged the 0400 (0410)


#: States an answer may be written in (from ``pending`` only).
ANSWER_STATES = frozenset({EntryState.APPROVED, EntryState.DECLINED, EntryState.FAILED})
#: States whose card data nothing can need any more.
FINAL_WITHOUT_CARD = frozenset({EntryState.DECLINED, EntryState.FAILED, EntryState.REFUSED,
                                EntryState.REVERSED})


@dataclass(frozen=True)
class CardData:
    """The card fields a reversal or a batch upload repeats (never shown)."""

    pan: str = field(default="", repr=False)
    expiry: str = field(default="", repr=False)
    track2: str = field(default="", repr=False)

    def __repr__(self) -> str:
        return "CardData(<hidden>)"


@dataclass(frozen=True)
class NewEntry:
    """What the firmware knows of a financial request when it writes it."""

    batch_no: int
    stan: int
    txn_type: str  # protocols.transactions.TxnType value
    amount_minor: int
    currency: str
    created: str  # terminal clock, YYYYMMDDhhmmss
    operator: str = ""
    state: EntryState = EntryState.PENDING
    entry_mode: str = ""  # protocols.ecr.EntryMode value (chip, manual…)
    pos_entry: str = ""  # ISO field 22 sent (e.g. 051), '' when no card was read
    masked_pan: str = ""
    app_label: str = ""
    pan_seq: str = ""  # ISO field 23
    orig_batch: str = ""  # the original a void/refund names (6 digits each, '' unknown)
    orig_stan: str = ""
    orig_rrn: str = ""
    orig_date: str = ""  # MMDD
    original_id: int | None = None  # the original's journal entry, when the terminal has it
    result: str = ""  # ECR rc given (refusals)
    text: str = ""  # display text given (refusals)
    cvm: str = ""  # protocols.ecr.Cvm value: how the cardholder was verified ('' no card)
    qr_order: str = ""  # the QR platform's order id (entry mode qr); the wallet is app_label


@dataclass(frozen=True)
class JournalEntry(NewEntry):
    """A stored entry (:class:`NewEntry` plus the id and what happened since)."""

    id: int = 0
    response_code: str = ""
    rrn: str = ""
    auth_code: str = ""
    host_date: str = ""  # MMDD of the host's answer (field 13), '' when absent
    reversal_reason: str = ""  # field 39 of the 0400: 98 no response, 06 other
    reversal_tries: int = 0
    printed: bool = False  # every copy is out
    held: bool = False  # printed after a power cut
    incomplete: bool = False  # the paper ran out mid-receipt (answered print=INCOMPLETE)
    copies_printed: int = 0  # copies out when it did: the rest are owed (printed continued)
    signature: bool = False  # the cardholder signed on the pad (signature captured)

    @property
    def stan_text(self) -> str:
        return f"{self.stan:06d}"

    @property
    def batch_text(self) -> str:
        return f"{self.batch_no:06d}"

    def describe(self) -> str:
        """Short, masked: ``#3 sale STAN 000012 batch 000001 approved``."""
        return (f"#{self.id} {self.txn_type} STAN {self.stan_text} batch {self.batch_text} "
                f"{self.state}")


#: Fields kept in the side table ``entry_cvm`` (SQLite), not in ``entries``.
_CVM_FIELDS = ("cvm", "signature")
_COLUMNS = tuple(f.name for f in dataclasses.fields(JournalEntry) if f.name not in _CVM_FIELDS)
_BOOL_COLUMNS = frozenset({"printed", "held", "incomplete", "signature"})
_INT_COLUMNS = frozenset({"batch_no", "stan", "amount_minor", "reversal_tries", "id",
                          "copies_printed"})


class Journal(Protocol):
    """The journal's interface (see the module doc).  Errors are SimError naming the entry,
    the operation, its state and the state expected."""

    def add(self, entry: NewEntry, card: CardData | None = None) -> JournalEntry: ...

    def answer(self, entry_id: int, state: EntryState, *, response_code: str = "",
               rrn: str = "", auth_code: str = "", host_date: str = "", result: str = "",
               text: str = "") -> JournalEntry: ...

    def reversal_pending(self, entry_id: int, reason: str) -> JournalEntry: ...

    def reversal_try(self, entry_id: int) -> JournalEntry: ...

    def reversed(self, entry_id: int) -> JournalEntry: ...

    def printed(self, entry_id: int, *, held: bool = False) -> JournalEntry: ...

    def signed(self, entry_id: int) -> JournalEntry: ...

    def print_incomplete(self, entry_id: int, copies_printed: int) -> JournalEntry: ...

    def close_batch(self, batch_no: int) -> int: ...

    def recover(self, reason: str = REVERSAL_NO_RESPONSE) -> list[JournalEntry]: ...

    def get(self, entry_id: int) -> JournalEntry: ...

    def find(self, batch_no: int, stan: int) -> JournalEntry | None: ...

    def find_rrn(self, rrn: str) -> JournalEntry | None: ...

    def entries(self, batch_no: int | None = None, *,
                day: str | None = None) -> list[JournalEntry]: ...

    def pending_reversals(self) -> list[JournalEntry]: ...

    def unprinted(self) -> list[JournalEntry]: ...

    def last_printed(self) -> JournalEntry | None: ...

    def card_data(self, entry_id: int) -> CardData | None: ...

    def close(self) -> None: ...


# ------------------------------------------------------------------------------ the rules

def _check(journal: str, op: str, entry: JournalEntry, allowed: Iterable[EntryState]) -> None:
    allowed = tuple(allowed)
    if entry.state not in allowed:
        raise SimError(f"{journal}: {op}({entry.describe()}) needs state "
                       f"{' or '.join(allowed)}; state is {entry.state}")


def _answered(journal: str, entry: JournalEntry, state: EntryState,
              changes: dict[str, Any]) -> dict[str, Any]:
    if state not in ANSWER_STATES:
        raise SimError(f"{journal}: answer({entry.describe()}) state must be one of "
                       f"{', '.join(sorted(ANSWER_STATES))}; got {state}")
    _check(journal, "answer", entry, (EntryState.PENDING,))
    return {"state": state, **changes}


def _transition(journal: str, op: str, entry: JournalEntry) -> dict[str, Any]:
    """The change operation *op* makes to *entry* (after checking its state)."""
    rules: dict[str, tuple[tuple[EntryState, ...], Callable[[], dict[str, Any]]]] = {
        "reversal_try": ((EntryState.REVERSAL_PENDING,),
                         lambda: {"reversal_tries": entry.reversal_tries + 1}),
        "reversed": ((EntryState.REVERSAL_PENDING,), lambda: {"state": EntryState.REVERSED}),
    }
    allowed, change = rules[op]
    _check(journal, op, entry, allowed)
    return change()


def _reversal_change(journal: str, entry: JournalEntry, reason: str) -> dict[str, Any]:
    if not (len(reason) == 2 and reason.isalnum()):
        raise SimError(f"{journal}: reversal_pending({entry.describe()}) reason must be a "
                       f"2-character response code, got {reason!r}")
    _check(journal, "reversal_pending", entry, (EntryState.PENDING, EntryState.APPROVED))
    return {"state": EntryState.REVERSAL_PENDING, "reversal_reason": reason}


def _printed_change(journal: str, entry: JournalEntry, held: bool) -> dict[str, Any]:
    _check(journal, "printed", entry, (EntryState.APPROVED,))
    return {"printed": True, "held": held}


def _signed_change(journal: str, entry: JournalEntry) -> dict[str, Any]:
    _check(journal, "signed", entry, (EntryState.APPROVED,))
    if entry.printed:
        raise SimError(f"{journal}: signed({entry.describe()}) needs a receipt not printed yet; "
                       f"it is printed")
    return {"signature": True}


def _incomplete_change(journal: str, entry: JournalEntry, copies: int) -> dict[str, Any]:
    _check(journal, "print_incomplete", entry, (EntryState.APPROVED,))
    if entry.printed:
        raise SimError(f"{journal}: print_incomplete({entry.describe()}) needs a receipt not "
                       f"printed yet; it is printed")
    if copies < entry.copies_printed:
        raise SimError(f"{journal}: print_incomplete({entry.describe()}) copies_printed must "
                       f"not go back from {entry.copies_printed}; got {copies}")
    return {"incomplete": True, "copies_printed": copies}


def _check_new(journal: str, entry: NewEntry) -> None:
    if entry.state not in (EntryState.PENDING, EntryState.REFUSED):
        raise SimError(f"{journal}: add({entry.txn_type} STAN {entry.stan:06d}) state must be "
                       f"pending or refused; got {entry.state}")


# ------------------------------------------------------------------------------ in memory

class MemoryJournal:
    """The journal in RAM (unit tests): same interface and rules as :class:`SqliteJournal`."""

    def __init__(self) -> None:
        self._entries: dict[int, JournalEntry] = {}
        self._cards: dict[int, CardData] = {}
        self._next_id = 1

    def __repr__(self) -> str:
        return "MemoryJournal()"

    def add(self, entry: NewEntry, card: CardData | None = None) -> JournalEntry:
        _check_new(repr(self), entry)
        stored = JournalEntry(**dataclasses.asdict(entry), id=self._next_id)
        self._next_id += 1
        self._entries[stored.id] = stored
        if card is not None and entry.state is EntryState.PENDING:
            self._cards[stored.id] = card
        return stored

    def _apply(self, entry: JournalEntry, changes: dict[str, Any]) -> JournalEntry:
        new = dataclasses.replace(entry, **changes)
        self._entries[entry.id] = new
        if new.state in FINAL_WITHOUT_CARD:
            self._cards.pop(entry.id, None)
        return new

    def answer(self, entry_id: int, state: EntryState, *, response_code: str = "",
               rrn: str = "", auth_code: str = "", host_date: str = "", result: str = "",
               text: str = "") -> JournalEntry:
        entry = self.get(entry_id)
        return self._apply(entry, _answered(repr(self), entry, state, dict(
            response_code=response_code, rrn=rrn, auth_code=auth_code, host_date=host_date,
            result=result, text=text)))

    def reversal_pending(self, entry_id: int, reason: str) -> JournalEntry:
        entry = self.get(entry_id)
        return self._apply(entry, _reversal_change(repr(self), entry, reason))

    def reversal_try(self, entry_id: int) -> JournalEntry:
        entry = self.get(entry_id)
        return self._apply(entry, _transition(repr(self), "reversal_try", entry))

    def reversed(self, entry_id: int) -> JournalEntry:
        entry = self.get(entry_id)
        return self._apply(entry, _transition(repr(self), "reversed", entry))

    def printed(self, entry_id: int, *, held: bool = False) -> JournalEntry:
        entry = self.get(entry_id)
        return self._apply(entry, _printed_change(repr(self), entry, held))

    def signed(self, entry_id: int) -> JournalEntry:
        entry = self.get(entry_id)
        return self._apply(entry, _signed_change(repr(self), entry))

    def print_incomplete(self, entry_id: int, copies_printed: int) -> JournalEntry:
        entry = self.get(entry_id)
        return self._apply(entry, _incomplete_change(repr(self), entry, copies_printed))

    def close_batch(self, batch_no: int) -> int:
        ids = [i for i in self._cards if self._entries[i].batch_no == batch_no]
        for i in ids:
            del self._cards[i]
        return len(ids)

    def recover(self, reason: str = REVERSAL_NO_RESPONSE) -> list[JournalEntry]:
        return [self.reversal_pending(e.id, reason) for e in self.entries()
                if e.state is EntryState.PENDING]

    def get(self, entry_id: int) -> JournalEntry:
        entry = self._entries.get(entry_id)
        if entry is None:
            raise SimError(f"{self!r}: get(#{entry_id}): no such entry "
                           f"({len(self._entries)} entries)")
        return entry

    def find(self, batch_no: int, stan: int) -> JournalEntry | None:
        found = [e for e in self._entries.values() if (e.batch_no, e.stan) == (batch_no, stan)]
        return found[-1] if found else None

    def find_rrn(self, rrn: str) -> JournalEntry | None:
        found = [e for e in self._entries.values() if rrn and e.rrn == rrn]
        return found[-1] if found else None

    def entries(self, batch_no: int | None = None, *,
                day: str | None = None) -> list[JournalEntry]:
        return [e for e in self._entries.values()
                if (batch_no is None or e.batch_no == batch_no)
                and (day is None or e.created.startswith(day))]

    def pending_reversals(self) -> list[JournalEntry]:
        return [e for e in self._entries.values() if e.state is EntryState.REVERSAL_PENDING]

    def unprinted(self) -> list[JournalEntry]:
        return [e for e in self._entries.values()
                if e.state is EntryState.APPROVED and not e.printed]

    def last_printed(self) -> JournalEntry | None:
        found = [e for e in self._entries.values() if e.printed]
        return found[-1] if found else None

    def card_data(self, entry_id: int) -> CardData | None:
        return self._cards.get(entry_id)

    def close(self) -> None:
        pass


# ------------------------------------------------------------------------------ SQLite

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    batch_no INTEGER NOT NULL, stan INTEGER NOT NULL, txn_type TEXT NOT NULL,
    amount_minor INTEGER NOT NULL, currency TEXT NOT NULL, created TEXT NOT NULL,
    operator TEXT NOT NULL, state TEXT NOT NULL, entry_mode TEXT NOT NULL,
    pos_entry TEXT NOT NULL, masked_pan TEXT NOT NULL, app_label TEXT NOT NULL,
    pan_seq TEXT NOT NULL, orig_batch TEXT NOT NULL, orig_stan TEXT NOT NULL,
    orig_rrn TEXT NOT NULL, orig_date TEXT NOT NULL, original_id INTEGER,
    result TEXT NOT NULL, text TEXT NOT NULL, response_code TEXT NOT NULL, rrn TEXT NOT NULL,
    auth_code TEXT NOT NULL, host_date TEXT NOT NULL, reversal_reason TEXT NOT NULL,
    reversal_tries INTEGER NOT NULL, printed INTEGER NOT NULL, held INTEGER NOT NULL,
    incomplete INTEGER NOT NULL DEFAULT 0, copies_printed INTEGER NOT NULL DEFAULT 0,
    qr_order TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS entries_trace ON entries (batch_no, stan);
CREATE INDEX IF NOT EXISTS entries_state ON entries (state);
CREATE INDEX IF NOT EXISTS entries_created ON entries (created);
CREATE TABLE IF NOT EXISTS card_vault (
    entry_id INTEGER PRIMARY KEY REFERENCES entries (id),
    sealed BLOB NOT NULL
);
"""
#: Created at every open when missing (a new table: nothing to migrate, no schema version):
#: how the cardholder of an entry that read a card was verified, and whether they signed.
_CVM_TABLE = """
CREATE TABLE IF NOT EXISTS entry_cvm (
    entry_id INTEGER PRIMARY KEY REFERENCES entries (id),
    cvm TEXT NOT NULL, signature INTEGER NOT NULL DEFAULT 0
)"""
_SELECT = (f"SELECT {', '.join(f'e.{c}' for c in _COLUMNS)}, COALESCE(v.cvm, ''), "
           f"COALESCE(v.signature, 0) FROM entries e LEFT JOIN entry_cvm v "
           f"ON v.entry_id = e.id")


class SqliteJournal:
    """The journal as SQLite in the terminal's state dir (see the module doc).

    One connection, used from the firmware's thread (a lock makes it safe anyway); each
    method is one ``BEGIN IMMEDIATE … COMMIT``.  ``before_commit`` is a test seam: called
    inside every write transaction just before COMMIT (a test kills the process there).
    """

    def __init__(self, state_dir: str | os.PathLike[str], *, data_key: bytes,
                 before_commit: Callable[[str], None] | None = None) -> None:
        if len(data_key) != 32:
            raise SimError(f"SqliteJournal({state_dir}): data_key must be 32 bytes "
                           f"(journal_key()), got {len(data_key)}")
        self._key = data_key
        self.path = Path(state_dir) / JOURNAL_FILE
        self.before_commit = before_commit
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None,
                                       check_same_thread=False,
                                       timeout=BUSY_TIMEOUT_MS / 1000)
            self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            self._db.execute("PRAGMA synchronous = FULL")
            self._db.execute("PRAGMA foreign_keys = ON")
            self._db.execute("PRAGMA secure_delete = ON")
            if str(mode).lower() != "wal":
                raise SimError(f"{self!r}: open(): journal_mode is {mode}, expected wal")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, *range(1, SCHEMA_VERSION + 1)):
                raise SimError(f"{self!r}: open(): schema version {version}, expected "
                               f"1..{SCHEMA_VERSION}")
            self._migrate(version)
        except sqlite3.Error as exc:
            raise SimError(f"{self!r}: open() failed: {exc}") from exc

    def __repr__(self) -> str:
        return f"SqliteJournal({self.path})"

    def _migrate(self, version: int) -> None:
        """A new file gets the schema; an older one the columns each later version added (one
        transaction, so a power cut leaves the old version or the new one)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            if version == 0:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
            else:
                for later in range(version + 1, SCHEMA_VERSION + 1):
                    for statement in _MIGRATIONS[later]:
                        self._db.execute(statement)
                if version < 4:  # card data kept in the clear before: seal it, drop the table
                    rows = self._db.execute(
                        "SELECT entry_id, pan, expiry, track2 FROM card_data").fetchall()
                    for entry_id, pan, expiry, track2 in rows:
                        self._db.execute("INSERT INTO card_vault (entry_id, sealed) VALUES (?, ?)",
                                         (entry_id, seal(self._key, entry_id,
                                                         CardData(pan, expiry, track2))))
                    self._db.execute("DROP TABLE card_data")
            self._db.execute(_CVM_TABLE)
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    # -- plumbing
    def _write(self, op: str, work: Callable[[sqlite3.Connection], Any]) -> Any:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    out = work(self._db)
                    if self.before_commit is not None:
                        self.before_commit(op)
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise SimError(f"{self!r}: {op}() failed: {exc} (busy time-out "
                               f"{BUSY_TIMEOUT_MS} ms)") from exc
            return out

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[JournalEntry]:
        with self._lock:
            try:
                rows = self._db.execute(f"{_SELECT} {sql}", args).fetchall()
            except sqlite3.Error as exc:
                raise SimError(f"{self!r}: query failed: {exc}") from exc
        return [self._entry(row) for row in rows]

    @staticmethod
    def _entry(row: tuple[Any, ...]) -> JournalEntry:
        values = dict(zip((*_COLUMNS, *_CVM_FIELDS), row, strict=True))
        for name in _BOOL_COLUMNS:
            values[name] = bool(values[name])
        values["state"] = EntryState(values["state"])
        return JournalEntry(**values)

    @staticmethod
    def _get(db: sqlite3.Connection, journal: str, entry_id: int) -> JournalEntry:
        row = db.execute(f"{_SELECT} WHERE e.id = ?", (entry_id,)).fetchone()
        if row is None:
            raise SimError(f"{journal}: get(#{entry_id}): no such entry")
        return SqliteJournal._entry(row)

    def _change(self, op: str, entry_id: int,
                rule: Callable[[JournalEntry], dict[str, Any]]) -> JournalEntry:
        def work(db: sqlite3.Connection) -> JournalEntry:
            entry = self._get(db, repr(self), entry_id)
            changes = rule(entry)
            sets = ", ".join(f"{k} = ?" for k in changes)
            db.execute(f"UPDATE entries SET {sets} WHERE id = ?",
                       (*(self._sql(k, v) for k, v in changes.items()), entry_id))
            new = dataclasses.replace(entry, **changes)
            if new.state in FINAL_WITHOUT_CARD:
                db.execute("DELETE FROM card_vault WHERE entry_id = ?", (entry_id,))
            return new
        result: JournalEntry = self._write(op, work)
        return result

    @staticmethod
    def _sql(name: str, value: Any) -> Any:
        if name in _BOOL_COLUMNS:
            return 1 if value else 0
        if isinstance(value, enum.Enum):
            return value.value
        return value

    # -- writes
    def add(self, entry: NewEntry, card: CardData | None = None) -> JournalEntry:
        _check_new(repr(self), entry)
        values = dataclasses.asdict(JournalEntry(**dataclasses.asdict(entry)))
        del values["id"]
        for name in _CVM_FIELDS:
            del values[name]

        def work(db: sqlite3.Connection) -> JournalEntry:
            cur = db.execute(
                f"INSERT INTO entries ({', '.join(values)}) VALUES "
                f"({', '.join('?' for _ in values)})",
                tuple(self._sql(k, v) for k, v in values.items()))
            entry_id = int(cur.lastrowid or 0)
            if card is not None and entry.state is EntryState.PENDING:
                db.execute("INSERT INTO card_vault (entry_id, sealed) VALUES (?, ?)",
                           (entry_id, seal(self._key, entry_id, card)))
            if entry.cvm:
                db.execute("INSERT INTO entry_cvm (entry_id, cvm) VALUES (?, ?)",
                           (entry_id, entry.cvm))
            return self._get(db, repr(self), entry_id)
        result: JournalEntry = self._write("add", work)
        return result

    def answer(self, entry_id: int, state: EntryState, *, response_code: str = "",
               rrn: str = "", auth_code: str = "", host_date: str = "", result: str = "",
               text: str = "") -> JournalEntry:
        changes = dict(response_code=response_code, rrn=rrn, auth_code=auth_code,
                       host_date=host_date, result=result, text=text)
        return self._change("answer", entry_id,
                            lambda e: _answered(repr(self), e, state, changes))

    def reversal_pending(self, entry_id: int, reason: str) -> JournalEntry:
        return self._change("reversal_pending", entry_id,
                            lambda e: _reversal_change(repr(self), e, reason))

    def reversal_try(self, entry_id: int) -> JournalEntry:
        return self._change("reversal_try", entry_id,
                            lambda e: _transition(repr(self), "reversal_try", e))

    def reversed(self, entry_id: int) -> JournalEntry:
        return self._change("reversed", entry_id,
                            lambda e: _transition(repr(self), "reversed", e))

    def printed(self, entry_id: int, *, held: bool = False) -> JournalEntry:
        return self._change("printed", entry_id,
                            lambda e: _printed_change(repr(self), e, held))

    def signed(self, entry_id: int) -> JournalEntry:
        def work(db: sqlite3.Connection) -> JournalEntry:
            entry = self._get(db, repr(self), entry_id)
            changes = _signed_change(repr(self), entry)
            db.execute("INSERT INTO entry_cvm (entry_id, cvm, signature) VALUES (?, ?, 1) "
                       "ON CONFLICT (entry_id) DO UPDATE SET signature = 1",
                       (entry_id, entry.cvm))
            return dataclasses.replace(entry, **changes)
        result: JournalEntry = self._write("signed", work)
        return result

    def print_incomplete(self, entry_id: int, copies_printed: int) -> JournalEntry:
        return self._change("print_incomplete", entry_id,
                            lambda e: _incomplete_change(repr(self), e, copies_printed))

    def close_batch(self, batch_no: int) -> int:
        def work(db: sqlite3.Connection) -> int:
            cur = db.execute("DELETE FROM card_vault WHERE entry_id IN "
                             "(SELECT id FROM entries WHERE batch_no = ?)", (batch_no,))
            return int(cur.rowcount)
        result: int = self._write("close_batch", work)
        return result

    def recover(self, reason: str = REVERSAL_NO_RESPONSE) -> list[JournalEntry]:
        def work(db: sqlite3.Connection) -> list[JournalEntry]:
            rows = db.execute(f"{_SELECT} WHERE e.state = ? ORDER BY e.id",
                              (EntryState.PENDING.value,)).fetchall()
            out = []
            for row in rows:
                entry = self._entry(row)
                changes = _reversal_change(repr(self), entry, reason)
                db.execute("UPDATE entries SET state = ?, reversal_reason = ? WHERE id = ?",
                           (EntryState.REVERSAL_PENDING.value, reason, entry.id))
                out.append(dataclasses.replace(entry, **changes))
            return out
        result: list[JournalEntry] = self._write("recover", work)
        return result

    # -- reads
    def get(self, entry_id: int) -> JournalEntry:
        found = self._query("WHERE id = ?", (entry_id,))
        if not found:
            raise SimError(f"{self!r}: get(#{entry_id}): no such entry")
        return found[0]

    def find(self, batch_no: int, stan: int) -> JournalEntry | None:
        found = self._query("WHERE batch_no = ? AND stan = ? ORDER BY id DESC LIMIT 1",
                            (batch_no, stan))
        return found[0] if found else None

    def find_rrn(self, rrn: str) -> JournalEntry | None:
        if not rrn:
            return None
        found = self._query("WHERE rrn = ? ORDER BY id DESC LIMIT 1", (rrn,))
        return found[0] if found else None

    def entries(self, batch_no: int | None = None, *,
                day: str | None = None) -> list[JournalEntry]:
        """In journal order; only batch *batch_no* and/or those created on *day* (YYYYMMDD)."""
        where: list[str] = []
        args: list[object] = []
        if batch_no is not None:
            where.append("batch_no = ?")
            args.append(batch_no)
        if day is not None:
            where.append("created LIKE ?")
            args.append(f"{day}%")
        clause = f"WHERE {' AND '.join(where)} " if where else ""
        return self._query(f"{clause}ORDER BY id", tuple(args))

    def pending_reversals(self) -> list[JournalEntry]:
        return self._query("WHERE state = ? ORDER BY id", (EntryState.REVERSAL_PENDING.value,))

    def unprinted(self) -> list[JournalEntry]:
        return self._query("WHERE state = ? AND printed = 0 ORDER BY id",
                           (EntryState.APPROVED.value,))

    def last_printed(self) -> JournalEntry | None:
        found = self._query("WHERE printed = 1 ORDER BY id DESC LIMIT 1")
        return found[0] if found else None

    def card_data(self, entry_id: int) -> CardData | None:
        with self._lock:
            row = self._db.execute("SELECT sealed FROM card_vault WHERE entry_id = ?",
                                   (entry_id,)).fetchone()
        return None if row is None else unseal(self._key, entry_id, bytes(row[0]), repr(self))

    def close(self) -> None:
        with self._lock:
            self._db.close()


__all__ = [
    "JOURNAL_FILE",
    "REVERSAL_NO_RESPONSE",
    "REVERSAL_OF_STAGE",
    "REVERSAL_OTHER",
    "CardData",
    "EntryState",
    "Journal",
    "JournalEntry",
    "MemoryJournal",
    "NewEntry",
    "SqliteJournal",
]
