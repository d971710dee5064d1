"""Shared fixtures of the QR platform tests: a terminals file, a deterministic engine, signed
requests, and a platform served on 127.0.0.1 (ephemeral port) with its control socket."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from protocols.qr import Operation, build_request
from sim.qr.config import QrTerminal, load_terminals
from sim.qr.engine import QrPlatformEngine
from sim.qr.ledger import MemoryQrLedger, SqliteQrLedger
from sim.qr.rules import RuleBook
from sim.qr.server import QrPlatformServer

TID = "10000001"
TID2 = "10000002"
MID = "898100012340001"
MID2 = "898100099990001"
KEY = bytes.fromhex("A9312D8AFCD6EEC4B5AEAC497416A8C8E53019F07592B83EDA1BE5DB79CC827B")
KEY2 = bytes(range(32))
T0 = 1_790_000_000.0  # a fixed POSIX time

TERMINALS_YAML = f"""
terminals:
  - terminal_id: "{TID}"
    merchant_id: "{MID}"
    name: test terminal
    sign_key: "{KEY.hex().upper()}"
  - terminal_id: "{TID2}"
    merchant_id: "{MID2}"
    sign_key: "{KEY2.hex()}"
"""


def counting_random() -> Callable[[int], bytes]:
    """Deterministic, distinct bytes (each call new ones)."""
    counter = itertools.count(1)

    def source(n: int) -> bytes:
        k = next(counter)
        return bytes(((k * 37) + i * 11) & 0xFF for i in range(n))

    return source


@pytest.fixture
def terminals_file(tmp_path: Path) -> Path:
    path = tmp_path / "terminals.yaml"
    path.write_text(TERMINALS_YAML)
    return path


@pytest.fixture
def terminals(terminals_file: Path) -> dict[str, QrTerminal]:
    return load_terminals(terminals_file)


@pytest.fixture
def ledger() -> MemoryQrLedger:
    return MemoryQrLedger()


@pytest.fixture
def engine(terminals: dict[str, QrTerminal], ledger: MemoryQrLedger) -> QrPlatformEngine:
    return QrPlatformEngine(terminals, ledger=ledger, rules=RuleBook(), order_ttl_s=120.0,
                            user_paying_timeout_s=60.0, code_ttl_s=60.0,
                            random=counting_random())


_nonces = itertools.count(1)


def nonce() -> str:
    return f"nonce{next(_nonces):011d}"


def signed(op: Operation, fields: dict[str, Any], *, tid: str = TID, mid: str = MID,
           key: bytes = KEY, nonce_text: str | None = None, ts: int = int(T0)
           ) -> tuple[str, bytes]:
    return build_request(op, fields, merchant_id=mid, terminal_id=tid, key=key,
                         nonce=nonce_text or nonce(), timestamp=ts)


@dataclass
class Reply:
    status: int
    body: dict[str, Any]
    delay_s: float = 0.0
    drop: bool = False

    @property
    def ok(self) -> bool:
        return self.body.get("ok") is True

    @property
    def error(self) -> str | None:
        return self.body.get("error")

    @property
    def order(self) -> dict[str, Any]:
        return dict(self.body["order"])


def call(engine: QrPlatformEngine, op: Operation, fields: dict[str, Any], now: float = T0,
         **kw: Any) -> Reply:
    path, body = signed(op, fields, **kw)
    ans = engine.answer(path, body, now)
    return Reply(ans.http_status, json.loads(ans.body), ans.delay_s, ans.drop)


@pytest.fixture
def platform(terminals: dict[str, QrTerminal], short_dir: Path) -> Iterator[QrPlatformServer]:
    """The platform on 127.0.0.1 (ephemeral port), SQLite ledger, control socket, real
    clock."""
    sqlite = SqliteQrLedger(short_dir / "qr.sqlite")
    eng = QrPlatformEngine(terminals, ledger=sqlite, order_ttl_s=30.0,
                           user_paying_timeout_s=30.0, code_ttl_s=30.0)
    srv = QrPlatformServer(eng, "127.0.0.1", 0, idle_timeout=2.0, max_delay=5.0,
                           control_path=short_dir / "qr.ctl", tick_s=0.05)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
        sqlite.close()

