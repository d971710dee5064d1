"""The terminal's journal: one contract, two implementations (SQLite in the state dir, memory),
and what a crash between two writes leaves behind."""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from protocols.errors import SimError
from sim.terminal.journal import (
    JOURNAL_FILE,
    SCHEMA_VERSION,
    CardData,
    EntryState,
    Journal,
    MemoryJournal,
    NewEntry,
    SqliteJournal,
    journal_key,
)
from tests.terminal.fakes import PAN

ROOT = Path(__file__).resolve().parents[2]
KEY = journal_key(bytes.fromhex("0123456789ABCDEFFEDCBA9876543210"))
TRACK2 = PAN + "D30122010000000000"


def sale(stan: int, batch: int = 1, amount: int = 1000, **over: object) -> NewEntry:
    fields: dict[str, object] = dict(batch_no=batch, stan=stan, txn_type="sale",
                                     amount_minor=amount, currency="156",
                                     created="20260504131415", operator="01",
                                     entry_mode="chip", pos_entry="051",
                                     masked_pan="621234******1234", pan_seq="001")
    fields.update(over)
    return NewEntry(**fields)  # type: ignore[arg-type]


CARD = CardData(pan=PAN, expiry="3012", track2=TRACK2)


@pytest.fixture(params=["sqlite", "memory"])
def journal(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Journal]:
    j: Journal = (SqliteJournal(tmp_path, data_key=KEY) if request.param == "sqlite"
                  else MemoryJournal())
    yield j
    j.close()


def test_lifecycle_of_an_approved_sale(journal: Journal) -> None:
    e = journal.add(sale(12), CARD)
    assert (e.id, e.state, e.printed, e.stan_text) == (1, EntryState.PENDING, False, "000012")
    assert journal.card_data(e.id) == CARD
    e = journal.answer(e.id, EntryState.APPROVED, response_code="00", rrn="000000001234",
                       auth_code="123456", host_date="0504", result="APPROVED")
    assert (e.state, e.rrn, e.host_date) == (EntryState.APPROVED, "000000001234", "0504")
    assert journal.unprinted() == [e]
    assert journal.last_printed() is None
    e = journal.printed(e.id)
    assert e.printed and not e.held and journal.unprinted() == []
    assert journal.last_printed() == e == journal.get(e.id)
    assert journal.find(1, 12) == e and journal.find(2, 12) is None
    assert journal.find_rrn("000000001234") == e and journal.find_rrn("") is None
    assert journal.card_data(e.id) == CARD  # the batch upload still needs the PAN
    assert journal.close_batch(1) == 1 and journal.card_data(e.id) is None


def test_reversal_lifecycle_and_card_data_wiped(journal: Journal) -> None:
    e = journal.add(sale(13), CARD)
    e = journal.reversal_pending(e.id, "98")
    assert (e.state, e.reversal_reason) == (EntryState.REVERSAL_PENDING, "98")
    assert journal.pending_reversals() == [e]
    assert journal.reversal_try(e.id).reversal_tries == 1
    assert journal.card_data(e.id) == CARD  # the 0400 repeats fields 2, 14, 35
    e = journal.reversed(e.id)
    assert e.state is EntryState.REVERSED and e.reversal_tries == 1
    assert journal.pending_reversals() == [] and journal.card_data(e.id) is None


def test_declined_and_refused_keep_no_card_data(journal: Journal) -> None:
    e = journal.add(sale(14), CARD)
    journal.answer(e.id, EntryState.DECLINED, response_code="51", result="DECLINED")
    assert journal.card_data(e.id) is None
    r = journal.add(sale(15, state=EntryState.REFUSED, result="LIMIT_EXCEEDED"), CARD)
    assert r.state is EntryState.REFUSED and journal.card_data(r.id) is None


def test_rules_name_entry_operation_and_state(journal: Journal) -> None:
    e = journal.add(sale(16))
    with pytest.raises(SimError, match=r"printed\(#1 sale STAN 000016 batch 000001 pending\) "
                                       r"needs state approved; state is pending"):
        journal.printed(e.id)
    with pytest.raises(SimError, match=r"reversed\(#1 .*\) needs state reversal_pending"):
        journal.reversed(e.id)
    journal.answer(e.id, EntryState.DECLINED, response_code="55")
    with pytest.raises(SimError, match=r"answer\(#1 .*\) needs state pending; state is declined"):
        journal.answer(e.id, EntryState.APPROVED)
    with pytest.raises(SimError, match=r"get\(#99\): no such entry"):
        journal.get(99)
    with pytest.raises(SimError, match="reason must be a 2-character"):
        journal.reversal_pending(e.id, "timeout")
    with pytest.raises(SimError, match="state must be pending or refused"):
        journal.add(sale(17, state=EntryState.APPROVED))


def test_recover_turns_pending_into_reversal_pending(journal: Journal) -> None:
    a = journal.add(sale(20), CARD)
    b = journal.add(sale(21), CARD)
    journal.answer(b.id, EntryState.APPROVED, response_code="00")
    changed = journal.recover()
    assert [(e.id, e.state, e.reversal_reason) for e in changed] == [
        (a.id, EntryState.REVERSAL_PENDING, "98")]
    assert journal.recover() == []
    assert [e.id for e in journal.unprinted()] == [b.id]
    assert [e.id for e in journal.entries(1)] == [a.id, b.id] and journal.entries(2) == []
    c = journal.add(sale(22, batch=2, created="20260505000001"))
    assert [e.id for e in journal.entries(day="20260504")] == [a.id, b.id]
    assert journal.entries(2, day="20260505") == [c] and journal.entries(1, day="20260505") == []


def test_repr_and_describe_never_show_card_data(journal: Journal) -> None:
    e = journal.add(sale(22), CARD)
    shown = repr(e) + repr(journal.card_data(e.id)) + e.describe() + repr(journal)
    assert PAN not in shown and "3012" not in shown and "D3012" not in shown


# ------------------------------------------------------------------------------ SQLite only

def test_sqlite_file_is_wal_full_sync_private(tmp_path: Path) -> None:
    j = SqliteJournal(tmp_path, data_key=KEY)
    j.add(sale(1), CARD)
    path = tmp_path / JOURNAL_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert j._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    db.close()
    j.close()


def test_second_connection_sees_each_write_once_it_returns(tmp_path: Path) -> None:
    """What a method returned is committed: another connection (the terminal after a power
    cut) reads it at once."""
    writer = SqliteJournal(tmp_path, data_key=KEY)
    reader = SqliteJournal(tmp_path, data_key=KEY)
    e = writer.add(sale(5), CARD)
    assert reader.get(e.id) == e and reader.card_data(e.id) == CARD
    writer.answer(e.id, EntryState.APPROVED, response_code="00", rrn="000000000005")
    assert reader.get(e.id).state is EntryState.APPROVED
    assert reader.unprinted()[0].rrn == "000000000005"
    writer.close()
    reader.close()


CRASH = textwrap.dedent("""
    import os, signal, sys
    from sim.terminal.journal import CardData, EntryState, NewEntry, SqliteJournal, journal_key

    def die(op):
        if op == sys.argv[2]:
            os.kill(os.getpid(), signal.SIGKILL)

    key = journal_key(bytes.fromhex("0123456789ABCDEFFEDCBA9876543210"))
    j = SqliteJournal(sys.argv[1], before_commit=die, data_key=key)
    e = j.add(NewEntry(batch_no=1, stan=7, txn_type="sale", amount_minor=700, currency="156",
                       created="20260504131415", masked_pan="621234******1234"),
              CardData(pan="6212345678901234", expiry="3012", track2="6212345678901234D3012"))
    j.answer(e.id, EntryState.APPROVED, response_code="00", rrn="000000000007")
    j.printed(e.id)
    print("no crash")
""")


@pytest.mark.parametrize("crash_in, state, printed, card", [
    ("add", None, None, None),  # killed inside the first write: nothing at all
    ("answer", EntryState.PENDING, False, True),  # the request may have left: pending + card
    ("printed", EntryState.APPROVED, False, True),  # the answer is there, the print is not
])
def test_sigkill_between_writes_leaves_a_consistent_journal(
        tmp_path: Path, crash_in: str, state: EntryState | None, printed: bool | None,
        card: bool | None) -> None:
    proc = subprocess.run([sys.executable, "-c", CRASH, str(tmp_path), crash_in], cwd=ROOT,
                          capture_output=True, text=True, timeout=30,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    j = SqliteJournal(tmp_path, data_key=KEY)  # the terminal powering up again
    found = j.entries()
    if state is None:
        assert found == []
        assert j._db.execute("SELECT COUNT(*) FROM card_vault").fetchone()[0] == 0
    else:
        (entry,) = found
        assert (entry.state, entry.printed) == (state, printed)
        assert (j.card_data(entry.id) is not None) == card
        recovered = j.recover()
        assert [e.state for e in recovered] == (
            [EntryState.REVERSAL_PENDING] if state is EntryState.PENDING else [])
        assert [e.id for e in j.unprinted()] == (
            [entry.id] if state is EntryState.APPROVED else [])
    j.close()


# ------------------------------------------------------------ receipts left incomplete (TS-11)

def test_incomplete_receipt_keeps_its_progress_until_printed(journal: Journal) -> None:
    e = journal.add(sale(30), CARD)
    with pytest.raises(SimError, match=r"print_incomplete\(#1 sale STAN 000030 batch 000001 "
                                       r"pending\) needs state approved; state is pending"):
        journal.print_incomplete(e.id, 0)
    e = journal.answer(e.id, EntryState.APPROVED, response_code="00", rrn="000000000030")
    e = journal.print_incomplete(e.id, 1)
    assert (e.incomplete, e.copies_printed, e.printed) == (True, 1, False)
    assert journal.unprinted() == [e] == [journal.get(e.id)]
    assert journal.last_printed() is None  # not printed until every copy is out
    with pytest.raises(SimError, match="copies_printed must not go back from 1; got 0"):
        journal.print_incomplete(e.id, 0)
    e = journal.printed(e.id)
    assert (e.printed, e.incomplete, e.copies_printed) == (True, True, 1)
    assert journal.last_printed() == e and journal.unprinted() == []
    with pytest.raises(SimError, match="needs a receipt not printed yet; it is printed"):
        journal.print_incomplete(e.id, 1)


def test_a_version_1_journal_is_migrated_in_place(tmp_path: Path) -> None:
    """The virtual bench's state dir outlives a code update: the columns of schema 2 are added
    to a journal written by schema 1, its entries kept."""
    path = tmp_path / JOURNAL_FILE
    db = sqlite3.connect(path)
    columns_v1 = """id INTEGER PRIMARY KEY AUTOINCREMENT,
        batch_no INTEGER NOT NULL, stan INTEGER NOT NULL, txn_type TEXT NOT NULL,
        amount_minor INTEGER NOT NULL, currency TEXT NOT NULL, created TEXT NOT NULL,
        operator TEXT NOT NULL, state TEXT NOT NULL, entry_mode TEXT NOT NULL,
        pos_entry TEXT NOT NULL, masked_pan TEXT NOT NULL, app_label TEXT NOT NULL,
        pan_seq TEXT NOT NULL, orig_batch TEXT NOT NULL, orig_stan TEXT NOT NULL,
        orig_rrn TEXT NOT NULL, orig_date TEXT NOT NULL, original_id INTEGER,
        result TEXT NOT NULL, text TEXT NOT NULL, response_code TEXT NOT NULL, rrn TEXT NOT NULL,
        auth_code TEXT NOT NULL, host_date TEXT NOT NULL, reversal_reason TEXT NOT NULL,
        reversal_tries INTEGER NOT NULL, printed INTEGER NOT NULL, held INTEGER NOT NULL"""
    db.executescript(f"""
        CREATE TABLE entries ({columns_v1});
        CREATE TABLE card_data (entry_id INTEGER PRIMARY KEY REFERENCES entries (id),
            pan TEXT NOT NULL, expiry TEXT NOT NULL, track2 TEXT NOT NULL);
        INSERT INTO entries VALUES (1, 1, 7, 'sale', 500, '156', '20260504131415', '01',
            'approved', 'chip', '051', '621234******1234', 'PBOC', '001', '', '', '', '', NULL,
            'APPROVED', '', '00', '000000000007', '123456', '0504', '', 0, 0, 0);
        PRAGMA user_version = 1;
    """)
    db.close()
    journal = SqliteJournal(tmp_path, data_key=KEY)
    try:
        (entry,) = journal.unprinted()
        assert (entry.stan, entry.incomplete, entry.copies_printed) == (7, False, 0)
        assert journal.print_incomplete(entry.id, 1).copies_printed == 1
    finally:
        journal.close()
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
        assert db.execute("SELECT name FROM sqlite_master WHERE name = 'card_data'").fetchone() \
            is None  # the clear card data table is gone
    finally:
        db.close()
    SqliteJournal(tmp_path, data_key=KEY).close()  # a second open changes nothing


def test_card_data_is_sealed_at_rest_and_opens_only_with_the_key(tmp_path: Path) -> None:
    j = SqliteJournal(tmp_path, data_key=KEY)
    e = j.add(NewEntry(batch_no=1, stan=9, txn_type="sale", amount_minor=900, currency="156",
                       created="20260504131415", masked_pan="621234******1234"),
              CardData(pan="6212345678901234", expiry="3012", track2="6212345678901234D3012"))
    assert j.card_data(e.id) == CardData("6212345678901234", "3012", "6212345678901234D3012")
    j.close()
    for name in (JOURNAL_FILE, JOURNAL_FILE + "-wal"):
        path = tmp_path / name
        if path.exists():
            raw = path.read_bytes()
            assert b"6212345678901234" not in raw and bytes.fromhex("6212345678901234") not in raw
    other = SqliteJournal(tmp_path, data_key=journal_key(bytes(16)))
    with pytest.raises(SimError, match=f"card data of entry {e.id} does not open with this "
                                       "terminal's key"):
        other.card_data(e.id)
    other.close()
    with pytest.raises(SimError, match="data_key must be 32 bytes"):
        SqliteJournal(tmp_path, data_key=b"short")


def test_clear_card_data_of_an_older_file_is_sealed_when_it_is_opened(tmp_path: Path) -> None:
    j = SqliteJournal(tmp_path, data_key=KEY)
    e = j.add(NewEntry(batch_no=1, stan=3, txn_type="sale", amount_minor=300, currency="156",
                       created="20260504131415", masked_pan="621234******1234"),
              CardData(pan="6212345678901234", expiry="3012", track2="6212345678901234D3012"))
    j._db.executescript("""
        DROP TABLE card_vault;
        CREATE TABLE card_data (entry_id INTEGER PRIMARY KEY REFERENCES entries (id),
            pan TEXT NOT NULL, expiry TEXT NOT NULL, track2 TEXT NOT NULL);
        PRAGMA user_version = 3;
    """)
    j._db.execute("INSERT INTO card_data VALUES (?, '6212345678901234', '3012', "
                  "'6212345678901234D3012')", (e.id,))
    j.close()
    again = SqliteJournal(tmp_path, data_key=KEY)
    assert again.card_data(e.id) == CardData("6212345678901234", "3012",
                                             "6212345678901234D3012")
    assert again._db.execute("SELECT name FROM sqlite_master WHERE name = 'card_data'"
                             ).fetchone() is None
    again.close()
