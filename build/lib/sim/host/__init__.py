"""The acquirer host simulator: ISO 8583 (UnionPay POS dialect) over TCP with a SQLite ledger,
response rules and a control socket (virtual bench).

``python -m sim.host --listen 198.18.0.20:8583 --db PATH --terminals fixtures/host/terminals.yaml
--cards-dir fixtures/cards [--rules fixtures/host/rules.yaml] [--control PATH]``.  See
docs/iso8583.md and docs/business-day.md.
"""

from __future__ import annotations

from sim.host.control import ControlServer
from sim.host.engine import AcquirerEngine, load_accounts, load_terminals
from sim.host.ledger import MemoryLedger, SqliteLedger
from sim.host.rules import HostRule, RuleBook, load_rules
from sim.host.server import AcquirerServer

__all__ = [
    "AcquirerEngine",
    "AcquirerServer",
    "ControlServer",
    "HostRule",
    "MemoryLedger",
    "RuleBook",
    "SqliteLedger",
    "load_accounts",
    "load_rules",
    "load_terminals",
]
