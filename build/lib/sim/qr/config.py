"""The QR platform's registered terminals: ``fixtures/qr/terminals.yaml``.

:class:`TerminalsFile` is the file (a list of :class:`QrTerminal`), read through
:mod:`protocols.yamlmodel`: a mistake is a ConfigError naming the file and the key path
(``terminals[1].sign_key``), never showing a key.
"""

from __future__ import annotations

import os
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from protocols.yamlmodel import MerchantId, TerminalId, hex_bytes, load_model, unique_by

WHAT = "QR platform terminals file"
MIN_KEY, MAX_KEY = 16, 64


def _sign_key(value: object) -> bytes:
    raw = hex_bytes(value, f"hex digits ({2 * MIN_KEY} to {2 * MAX_KEY}) of an HMAC-SHA256 key")
    if not MIN_KEY <= len(raw) <= MAX_KEY:
        raise ValueError(f"expected a key of {MIN_KEY} to {MAX_KEY} bytes, got {len(raw)} bytes")
    return raw


SignKey = Annotated[bytes, BeforeValidator(_sign_key)]
"""An HMAC-SHA256 signing key written as hex, 16 to 64 bytes; declare it ``repr=False``."""


class QrTerminal(BaseModel):
    """One terminal the platform knows: its IDs and its signing key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    terminal_id: TerminalId
    merchant_id: MerchantId
    sign_key: SignKey = Field(repr=False, description="HMAC-SHA256 key, hex.")
    name: str = ""


class TerminalsFile(BaseModel):
    """fixtures/qr/terminals.yaml: ``terminals: [{terminal_id, merchant_id, sign_key, name}]``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    terminals: list[QrTerminal]

    @field_validator("terminals")
    @classmethod
    def _unique(cls, value: list[QrTerminal]) -> list[QrTerminal]:
        if not value:
            raise ValueError("the platform needs at least one terminal")
        return unique_by(value, "terminal_id", "terminals")


def load_terminals(path: str | os.PathLike[str]) -> dict[str, QrTerminal]:
    """fixtures/qr/terminals.yaml → terminal ID → record."""
    file = load_model(TerminalsFile, path, what=WHAT)
    return {rec.terminal_id: rec for rec in file.terminals}


__all__ = ["QrTerminal", "SignKey", "TerminalsFile", "WHAT", "load_terminals"]
