"""The acquirer host simulator: ISO 8583 (UnionPay POS dialect) over TCP with a SQLite ledger.

``python -m sim.host --listen 198.18.0.20:8583 --db PATH --terminals fixtures/host/terminals.yaml
--cards-dir fixtures/cards``.  See docs/iso8583.md.
"""

from __future__ import annotations

from sim.host.engine import AcquirerEngine, load_accounts, load_terminals
from sim.host.ledger import MemoryLedger, SqliteLedger
from sim.host.server import AcquirerServer

__all__ = [
    "AcquirerEngine",
    "AcquirerServer",
    "MemoryLedger",
    "SqliteLedger",
    "load_accounts",
    "load_terminals",
]
