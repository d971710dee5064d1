"""The acquirer host's configuration: registered terminals and the issuer's card accounts.

``fixtures/host/terminals.yaml`` is :class:`TerminalsFile` (a list of :class:`TerminalRecord`);
card accounts come from the card profiles (``fixtures/cards/*.yaml``) read through the one card
model, :class:`sim.card.profile.CardProfile` (its ``issuer`` section and ``keys.imk_ac``).
Both are read through :mod:`protocols.yamlmodel`: a mistake is a ConfigError naming the file
and the key path, never showing a key or a PIN.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from protocols.errors import ConfigError
from protocols.masking import mask_pan
from protocols.yamlmodel import (
    HexKey,
    MerchantId,
    TerminalId,
    load_model,
    unique_by,
)
from sim.card.profile import WHAT as CARD_PROFILE
from sim.card.profile import CardProfile

WHAT = "host terminals file"


class TerminalRecord(BaseModel):
    """One terminal the acquirer knows: IDs and its terminal master key (TMK)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    terminal_id: TerminalId
    merchant_id: MerchantId
    master_key: HexKey = Field(repr=False, description="TMK, double- or triple-length, hex.")
    name: str = ""


class TerminalsFile(BaseModel):
    """fixtures/host/terminals.yaml: ``terminals: [{terminal_id, merchant_id, master_key, name}]``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    terminals: list[TerminalRecord]

    @field_validator("terminals")
    @classmethod
    def _unique(cls, value: list[TerminalRecord]) -> list[TerminalRecord]:
        return unique_by(value, "terminal_id", "terminals")


@dataclass
class Account:
    """The issuer's side of a test card (mutable: PIN failures are counted here).

    *imk_ac*: the issuer master key the card's cryptograms derive from (None: the issuer does
    not check cryptograms of this card); *fault*: ``unreachable`` (91) or ``malfunction`` (96);
    *per_txn_limit_minor*: largest authorisation (above it 61); *initial_pin_failures*: what
    :attr:`pin_failures` goes back to when the bench is restored."""

    pan: str = field(repr=False)
    expiry: str
    pin: str = field(repr=False)
    balance_minor: int
    status: str
    source: str = ""
    pin_failures: int = 0
    pan_seq: int = 0
    imk_ac: bytes | None = field(default=None, repr=False)
    per_txn_limit_minor: int | None = None
    fault: str | None = None
    initial_pin_failures: int = 0

    def __repr__(self) -> str:
        return (f"Account({mask_pan(self.pan)}, expiry={self.expiry}, status={self.status}, "
                f"balance_minor={self.balance_minor}, source={self.source})")


def load_terminals(path: str | os.PathLike[str]) -> dict[str, TerminalRecord]:
    """fixtures/host/terminals.yaml → terminal ID → record."""
    file = load_model(TerminalsFile, path, what=WHAT)
    return {rec.terminal_id: rec for rec in file.terminals}


def load_account(path: str | os.PathLike[str]) -> Account:
    """One card profile, read through the card model; the issuer keeps pan, pan_seq, expiry,
    pin, the issuer section and keys.imk_ac."""
    p = Path(path)
    card = load_model(CardProfile, p, what=CARD_PROFILE)
    return account_of(card, p.name)


def account_of(card: CardProfile, source: str = "") -> Account:
    """The issuer's account of one card profile."""
    issuer = card.issuer
    failures = issuer.get("pin_failures", 0)
    return Account(card.pan, card.expiry, card.pin, issuer["balance_minor"], issuer["status"],
                   source=source, pin_failures=failures, pan_seq=card.pan_seq,
                   imk_ac=card.issuer_master_key,
                   per_txn_limit_minor=issuer.get("per_txn_limit_minor"),
                   fault=issuer.get("fault"), initial_pin_failures=failures)


def load_accounts(cards_dir: str | os.PathLike[str]) -> dict[str, Account]:
    """Every ``*.yaml`` card profile of *cards_dir*, by PAN (a PAN defined twice is refused)."""
    d = Path(cards_dir)
    if not d.is_dir():
        raise ConfigError(f"{d}: cards directory does not exist")
    out: dict[str, Account] = {}
    for path in sorted(d.glob("*.yaml")):
        acct = load_account(path)
        if acct.pan in out:
            raise ConfigError(f"{path}: PAN {mask_pan(acct.pan)} already defined in "
                              f"{out[acct.pan].source}")
        out[acct.pan] = acct
    return out


__all__ = [
    "Account",
    "TerminalRecord",
    "TerminalsFile",
    "account_of",
    "load_account",
    "load_accounts",
    "load_terminals",
]
