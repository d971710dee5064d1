"""A test card's profile (fixtures/cards/<name>.yaml): one model for every reader of the file.

The EMV card simulator (:mod:`sim.card.emv`) uses all of it; the acquirer host's issuer
(:mod:`sim.host.config`) reads ``pan``, ``expiry``, ``pin`` and ``issuer.*`` through the same
model; the bench supervisor takes the PIN from it for the bench file's card sheet.  Files are read
through :mod:`protocols.yamlmodel`: every mistake is a ConfigError naming the file and the key
(``card profile fixtures/cards/good.yaml: key 'keys.ac_key': expected 16 bytes of hex, got 2``),
and never shows the PAN, the PIN or a key.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictBool,
    StrictInt,
    with_config,
)
from typing_extensions import TypedDict

from protocols.masking import mask_pan
from protocols.yamlmodel import load_model, validate_model

WHAT = "card profile"

#: CVM code (EMV Book 3, C3) per profile value ``cvm``; the keys are the values a file may use.
CVM_CODES: Mapping[str, int] = MappingProxyType({
    "online_pin": 0x02,
    "offline_pin": 0x01,
    "signature": 0x1E,
    "no_cvm": 0x1F,
})
IssuerStatus = Literal["active", "blocked", "closed", "lost", "stolen"]
"""``issuer.status``; the host answers each with its own response code (sim.host.engine)."""
DEFAULT_ATR = "3B6500002063CB6600"


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


# -- field grammars ----------------------------------------------------------------------------

def _digits(pattern: str, what: str) -> Callable[[object], str]:
    """Digits written as a quoted string; the message never repeats the value (PIN, PAN)."""
    rx = re.compile(pattern)

    def check(value: object) -> str:
        if isinstance(value, int) and not isinstance(value, bool):
            raise ValueError(f"expected {what} as a quoted string (YAML reads unquoted digits as "
                             f"a number)")
        if not isinstance(value, str) or not rx.fullmatch(value):
            raise ValueError(f"expected {what}, got <hidden>")
        return value

    return check


def _shown_digits(pattern: str, what: str) -> Callable[[object], str]:
    """Like :func:`_digits` for values that may be shown (dates, codes)."""
    hidden = _digits(pattern, what)

    def check(value: object) -> str:
        try:
            return hidden(value)
        except ValueError as exc:
            raise ValueError(str(exc).replace("<hidden>", repr(value))) from None

    return check


def _pan(value: object) -> str:
    pan = _digits(r"62\d{14,17}", "a UnionPay PAN: 16-19 digits starting with 62")(value)
    if not luhn_ok(pan):
        raise ValueError(f"{mask_pan(pan)} fails the Luhn check")
    return pan


def _pin(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        raise ValueError("must be 4..12 digits as a quoted string (YAML reads unquoted digits as "
                         "a number)")
    if not isinstance(value, str) or not re.fullmatch(r"\d{4,12}", value):
        raise ValueError("must be 4..12 digits (quote it in YAML)")
    return value


def _hex(min_len: int, max_len: int, what: str = "") -> Callable[[object], bytes]:
    def check(value: object) -> bytes:
        if not isinstance(value, str) or not re.fullmatch(r"(?:[0-9A-Fa-f]{2})+", value):
            raise ValueError("expected a hex string (pairs of 0-9 A-F)")
        raw = bytes.fromhex(value)
        if not min_len <= len(raw) <= max_len:
            size = f"{min_len}" if min_len == max_len else f"{min_len}-{max_len}"
            raise ValueError(f"expected {size} bytes of hex{what}, got {len(raw)}")
        return raw

    return check


def _ac_key(value: bytes) -> bytes:
    if value[:8] == value[8:]:
        raise ValueError("the two halves are equal (degenerates to single DES)")
    return value


def _atr(value: bytes) -> bytes:
    if value[0] not in (0x3B, 0x3F):
        raise ValueError(f"expected 2-33 bytes starting 3B or 3F, got {value.hex().upper()}")
    return value


def _cvm(value: object) -> str:
    if not isinstance(value, str) or value not in CVM_CODES:
        raise ValueError(f"expected one of {sorted(CVM_CODES)}, got {value!r}")
    return value


def _label(value: object) -> str:
    if not isinstance(value, str) or not value.isascii() or not 1 <= len(value) <= 16:
        raise ValueError(f"expected 1-16 ASCII characters, got {value!r}")
    return value


YYMM = r"\d{2}(0[1-9]|1[0-2])"
Pan = Annotated[str, BeforeValidator(_pan)]
Pin = Annotated[str, BeforeValidator(_pin)]
Yymm = Annotated[str, BeforeValidator(_shown_digits(YYMM, "YYMM"))]


# -- the model ---------------------------------------------------------------------------------

@with_config(ConfigDict(extra="forbid"))
class Issuer(TypedDict):
    """``issuer``: the account behind the card, at the simulated issuer."""

    balance_minor: StrictInt
    status: IssuerStatus


class CardKeys(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ac_key: Annotated[bytes, BeforeValidator(_hex(16, 16)), AfterValidator(_ac_key)] = Field(
        repr=False, description="2-key 3DES key of the application cryptogram, hex.")


class CardProfile(BaseModel):
    """A test card, key for key as its YAML file.  ``repr`` never shows PAN, PIN or keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    description: str = ""
    atr: Annotated[bytes, BeforeValidator(_hex(2, 33)), AfterValidator(_atr)] = Field(
        default=bytes.fromhex(DEFAULT_ATR), validate_default=False)
    mute: StrictBool = False
    aid: Annotated[bytes, BeforeValidator(_hex(5, 16))] = bytes.fromhex("A000000333010101")
    label: Annotated[str, BeforeValidator(_label)] = "UnionPay"
    pan: Pan = Field(repr=False)
    pan_seq: StrictInt = Field(0, ge=0, le=99)
    expiry: Yymm
    service_code: Annotated[str, BeforeValidator(_shown_digits(r"\d{3}", "3 digits"))] = "220"
    cvm: Annotated[str, BeforeValidator(_cvm)] = "online_pin"
    pin: Pin = Field(repr=False)
    issuer: Issuer = Field(repr=False)
    keys: CardKeys = Field(repr=False)
    effective: Yymm = "2401"
    country: Annotated[str, BeforeValidator(_shown_digits(
        r"\d{4}", "4 digits (ISO 3166 numeric, 0-padded)"))] = "0156"
    cardholder: str | None = None
    atc: StrictInt = Field(1, ge=0, le=0xFFFF)
    pin_try_counter: StrictInt = Field(3, ge=0, le=15)

    _source: str = PrivateAttr("")

    def model_post_init(self, context: Any, /) -> None:
        if isinstance(context, dict):
            self._source = str(context.get("source", ""))

    @property
    def source(self) -> str:
        """The file this profile was read from ("" when built in code)."""
        return self._source

    @property
    def ac_key(self) -> bytes:
        return self.keys.ac_key

    @property
    def masked_pan(self) -> str:
        return mask_pan(self.pan)


def load_profile(path: str | os.PathLike[str]) -> CardProfile:
    """Load and validate ``fixtures/cards/<name>.yaml``."""
    return load_model(CardProfile, path, what=WHAT)


def profile_from_dict(data: object, path: str = "<dict>") -> CardProfile:
    """Validate a parsed profile; every error is a ConfigError naming the file and the key."""
    return validate_model(CardProfile, data, path, what=WHAT)


__all__ = [
    "CVM_CODES",
    "CardKeys",
    "CardProfile",
    "Issuer",
    "IssuerStatus",
    "load_profile",
    "luhn_ok",
    "profile_from_dict",
]
