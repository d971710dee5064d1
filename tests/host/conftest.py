"""Shared fixtures of the host tests: a terminal registry, card accounts written to tmp_path,
a deterministic key source, and an engine built from them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sim.host.engine import AcquirerEngine, load_accounts, load_terminals
from sim.host.ledger import MemoryLedger

TMK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
TID = "10000001"
MID = "898100012340001"
PAN = "6214830000000017"
PAN_LOW = "6214830000000025"
PAN_OLD = "6214830000000033"
PAN_BLOCKED = "6214830000000041"
PIN = "123456"
NOW = dt.datetime(2026, 3, 14, 15, 9, 26)

TERMINALS_YAML = f"""
terminals:
  - terminal_id: "{TID}"
    merchant_id: "{MID}"
    name: test terminal
    master_key: "{TMK.hex().upper()}"
"""


def card_yaml(pan: str, *, expiry: str = "3012", balance: int = 1000000,
              status: str = "active", pin: str = PIN) -> str:
    return (f'name: t\npan: "{pan}"\npan_seq: 1\nexpiry: "{expiry}"\npin: "{pin}"\n'
            f"issuer:\n  balance_minor: {balance}\n  status: {status}\n"
            f'keys:\n  imk_ac: "00112233445566778899AABBCCDDEEFF"\n')


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    (tmp_path / "terminals.yaml").write_text(TERMINALS_YAML)
    cards = tmp_path / "cards"
    cards.mkdir()
    (cards / "good.yaml").write_text(card_yaml(PAN))
    (cards / "low.yaml").write_text(card_yaml(PAN_LOW, balance=500))
    (cards / "old.yaml").write_text(card_yaml(PAN_OLD, expiry="2401"))
    (cards / "blocked.yaml").write_text(card_yaml(PAN_BLOCKED, status="blocked"))
    return tmp_path


def counting_keys() -> Callable[[int], bytes]:
    """Deterministic, distinct, non-degenerate key material (each call a new key)."""
    state = {"n": 0}

    def source(n: int) -> bytes:
        state["n"] += 1
        return bytes(((state["n"] * 0x11) + i * 7) & 0xFF for i in range(n))

    return source


@pytest.fixture
def ledger() -> MemoryLedger:
    return MemoryLedger()


@pytest.fixture
def engine(config_dir: Path, ledger: MemoryLedger) -> Iterator[AcquirerEngine]:
    yield AcquirerEngine(load_terminals(config_dir / "terminals.yaml"),
                         load_accounts(config_dir / "cards"), ledger=ledger,
                         key_source=counting_keys(), pan_salt=b"salt")
