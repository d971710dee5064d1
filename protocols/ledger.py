"""The acquirer ledger's schema: the contract between the host simulator that writes it
(``sim.host.ledger``) and the rig that reads it (``rigs.host``).

Never holds a full PAN: ``pan_masked`` (first 6 / last 4) and ``pan_hash`` (salted SHA-256,
first 16 hex digits) for matching.
"""

from __future__ import annotations

from dataclasses import dataclass

TABLE = "messages"
COLUMNS = (
    "received_at", "received_ts", "mti", "response_mti", "proc_code", "terminal_id",
    "merchant_id", "stan", "batch_no", "rrn", "auth_code", "amount_minor", "currency",
    "pan_masked", "pan_hash", "entry_mode", "response_code",
)
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at TEXT NOT NULL,      -- ISO 8601, host local time
    received_ts REAL NOT NULL,      -- POSIX seconds
    mti TEXT NOT NULL,
    response_mti TEXT,
    proc_code TEXT,
    terminal_id TEXT,
    merchant_id TEXT,
    stan TEXT,
    batch_no TEXT,
    rrn TEXT,
    auth_code TEXT,
    amount_minor INTEGER,
    currency TEXT,
    pan_masked TEXT,
    pan_hash TEXT,
    entry_mode TEXT,
    response_code TEXT
);
"""


@dataclass(frozen=True)
class LedgerRecord:
    """What the engine hands the ledger for one request (already masked)."""

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
