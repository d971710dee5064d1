"""The QR payment platform simulator: merchant-presented ("native") and customer-presented
("micropay") payments over HTTP/1.1 + JSON signed with HMAC-SHA256, a SQLite ledger (WAL),
rules and a control socket through which the rig plays the customer's wallet (virtual bench).

``python -m sim.qr --listen 198.18.0.20:8600 --ledger PATH --control PATH
--terminals fixtures/qr/terminals.yaml [--rules fixtures/qr/rules.yaml]``.  See
docs/qr-platform.md; the protocol is :mod:`protocols.qr`.
"""

from __future__ import annotations

from sim.qr.config import QrTerminal, load_terminals
from sim.qr.control import ControlServer, handle_control
from sim.qr.engine import PlatformAnswer, QrPlatformEngine, Refusal
from sim.qr.ledger import MemoryQrLedger, SqliteQrLedger
from sim.qr.rules import QrRule, RuleBook, load_rules
from sim.qr.server import QrPlatformServer

__all__ = [
    "ControlServer",
    "MemoryQrLedger",
    "PlatformAnswer",
    "QrPlatformEngine",
    "QrPlatformServer",
    "QrRule",
    "QrTerminal",
    "Refusal",
    "RuleBook",
    "SqliteQrLedger",
    "handle_control",
    "load_rules",
    "load_terminals",
]
