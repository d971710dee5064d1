"""A test card's profile (fixtures/cards/<name>.yaml): one model for every reader of the file.

The EMV card simulator (:mod:`sim.card.emv`) uses all of it; the acquirer host's issuer
(:mod:`sim.host.config`) reads ``pan``, ``pan_seq``, ``expiry``, ``pin``, ``issuer.*`` and
``keys.imk_ac`` through the same model; the bench supervisor takes the PIN from it for the bench
file's card sheet, and the card emulator loads profiles by file name.  Files are read through
:mod:`protocols.yamlmodel`: every mistake is a ConfigError naming the file and the key
(``card profile fixtures/cards/good.yaml: key 'keys.imk_ac': expected 16 bytes of hex, got 2``),
and never shows the PAN, the PIN or a key.  docs/cards.md lists every key and what each profile
of fixtures/cards proves.

Derived facts, one place each: the stripe's tracks (:attr:`CardProfile.stripe`,
:mod:`protocols.magstripe`), the chip's track 2 equivalent, the card's ICC master key
(:attr:`CardProfile.icc_master_key`, EMV option A from ``keys.imk_ac``; :mod:`protocols.crypto`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Annotated, Any, Literal, NotRequired

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictBool,
    StrictInt,
    ValidationInfo,
    field_validator,
    with_config,
)
from typing_extensions import TypedDict

from protocols.apdu import INS_NAMES
from protocols.atr import atr_problem
from protocols.crypto import derive_icc_master_key
from protocols.errors import DecodeError
from protocols.magstripe import Stripe, stripe_of
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
IssuerStatus = Literal["active", "blocked", "closed", "lost", "stolen", "restricted"]
"""``issuer.status``; the host answers each with its own response code (sim.host.engine)."""
IssuerFault = Literal["unreachable", "malfunction"]
"""``issuer.fault``: the issuer cannot be reached (91) or fails processing the card (96)."""
Network = Literal["unionpay", "visa", "mastercard"]
Blocked = Literal["application", "card"]
"""``blocked``: SELECT of the application answers 6283 (application blocked, FCI returned), or
every SELECT answers 6A81 (card blocked); EMV Book 1, 12.3.2 and 12.4."""
DeclineAt = Literal["first_generate_ac", "second_generate_ac"]
DEFAULT_ATR = "3B6500002063CB6600"
NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


#: Per network: PAN grammar (regex, words for messages), registered application provider id.
NETWORKS: Mapping[str, tuple[str, str, bytes]] = MappingProxyType({
    "unionpay": (r"62\d{14,17}", "a UnionPay PAN: 16-19 digits starting with 62",
                 bytes.fromhex("A000000333")),
    "visa": (r"4\d{12,18}", "a Visa PAN: 13-19 digits starting with 4",
             bytes.fromhex("A000000003")),
    "mastercard": (r"(5[1-5]\d{14}|2(22[1-9]|2[3-9]\d|[3-6]\d\d|7[01]\d|720)\d{12})",
                   "a Mastercard PAN: 16 digits starting with 51-55 or 2221-2720",
                   bytes.fromhex("A000000004")),
})


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


def _double_key(value: bytes) -> bytes:
    if value[:8] == value[8:]:
        raise ValueError("the two halves are equal (degenerates to single DES)")
    return value


def _atr(value: bytes) -> bytes:
    problem = atr_problem(value)
    if problem is not None:
        raise ValueError(f"not a valid ISO/IEC 7816-3 ATR: {problem}")
    return value


def _faulty_atr(value: bytes) -> bytes:
    if atr_problem(value) is None:
        raise ValueError(f"{value.hex().upper()} is a valid ISO/IEC 7816-3 ATR; a faulty ATR "
                         f"must break it (wrong length, wrong TCK, TS not 3B/3F) - for a card "
                         f"that answers well, use atr")
    return value


def _cvm(value: object) -> str:
    if not isinstance(value, str) or value not in CVM_CODES:
        raise ValueError(f"expected one of {sorted(CVM_CODES)}, got {value!r}")
    return value


def _label(value: object) -> str:
    if not isinstance(value, str) or not value.isascii() or not 1 <= len(value) <= 16:
        raise ValueError(f"expected 1-16 ASCII characters, got {value!r}")
    return value


def _instruction(value: object) -> str:
    names = sorted(set(INS_NAMES.values()))
    if not isinstance(value, str) or value not in names:
        raise ValueError(f"expected an instruction name, one of {names}, got {value!r}")
    return value


def _name(value: object) -> str:
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        raise ValueError(f"expected a card name of a-z 0-9 _ - (the file name without .yaml), "
                         f"got {value!r}")
    return value


YYMM = r"\d{2}(0[1-9]|1[0-2])"
Pin = Annotated[str, BeforeValidator(_pin)]
Yymm = Annotated[str, BeforeValidator(_shown_digits(YYMM, "YYMM"))]
Aid = Annotated[bytes, BeforeValidator(_hex(5, 16))]
DoubleKey = Annotated[bytes, BeforeValidator(_hex(16, 16)), AfterValidator(_double_key)]


# -- the model ---------------------------------------------------------------------------------

@with_config(ConfigDict(extra="forbid"))
class Issuer(TypedDict):
    """``issuer``: the account behind the card, at the simulated issuer (docs/cards.md)."""

    balance_minor: StrictInt
    status: IssuerStatus
    pin_failures: NotRequired[Annotated[StrictInt, Field(ge=0, le=99)]]
    """Wrong online PINs in a row the issuer counts at start (3 or more: 75)."""
    per_txn_limit_minor: NotRequired[Annotated[StrictInt, Field(gt=0)]]
    """Largest authorisation the issuer allows for this card (above it: 61)."""
    fault: NotRequired[IssuerFault]


class CardKeys(BaseModel):
    """``keys``: the issuer master key of application cryptograms, and what the card holds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    imk_ac: DoubleKey = Field(repr=False, description=(
        "Issuer master key (IMK-AC), 2-key 3DES, hex.  The card's master key is derived from "
        "it (EMV option A over PAN and PAN sequence number), by the card as by the issuer."))
    icc_imk_ac: DoubleKey | None = Field(None, repr=False, description=(
        "The IMK the card was personalised from when it is not the issuer's: a counterfeit "
        "or mis-personalised card whose ARQC never verifies."))

    @field_validator("icc_imk_ac")
    @classmethod
    def _differs(cls, value: bytes | None, info: ValidationInfo) -> bytes | None:
        if value is not None and value == info.data.get("imk_ac"):
            raise ValueError("equals imk_ac; leave it out for a card personalised from the "
                             "issuer's key")
        return value


class CardProfile(BaseModel):
    """A test card, key for key as its YAML file.  ``repr`` never shows PAN, PIN or keys.

    The fields are declared in the order their checks need: a check that involves two keys sits
    on the later one and names it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, BeforeValidator(_name)]
    description: str = ""
    network: Network = "unionpay"
    chip: StrictBool = True
    atr: Annotated[bytes, BeforeValidator(_hex(2, 33)), AfterValidator(_atr)] = Field(
        default=bytes.fromhex(DEFAULT_ATR), validate_default=False)
    faulty_atr: Annotated[bytes, BeforeValidator(_hex(1, 33)),
                          AfterValidator(_faulty_atr)] | None = None
    mute: StrictBool = False
    aid: Aid = bytes.fromhex("A000000333010101")
    label: Annotated[str, BeforeValidator(_label)] = "UnionPay"
    contactless: StrictBool = False
    contactless_aids: list[Aid] = Field(default_factory=list)
    pan: str = Field(repr=False)
    pan_seq: StrictInt = Field(0, ge=0, le=99)
    expiry: Yymm
    effective: Yymm = "2401"
    service_code: Annotated[str, BeforeValidator(_shown_digits(r"\d{3}", "3 digits"))] = "220"
    country: Annotated[str, BeforeValidator(_shown_digits(
        r"\d{4}", "4 digits (ISO 3166 numeric, 0-padded)"))] = "0156"
    cardholder: str | None = None
    stripe: StrictBool = True
    bad_stripe: StrictBool = False
    cvm: Annotated[str, BeforeValidator(_cvm)] = "online_pin"
    pin: Pin = Field(repr=False)
    pin_try_limit: StrictInt = Field(3, ge=1, le=15)
    pin_try_counter: StrictInt = Field(3, ge=0, le=15)
    blocked: Blocked | None = None
    decline_at: DeclineAt | None = None
    pull_at: Annotated[str, BeforeValidator(_instruction)] | None = None
    atc: StrictInt = Field(1, ge=0, le=0xFFFF)
    issuer: Issuer = Field(repr=False)
    keys: CardKeys = Field(repr=False)

    _source: str = PrivateAttr("")

    # -- checks across keys (each on the later key, named by it) ---------------------------------

    @field_validator("faulty_atr")
    @classmethod
    def _faulty_needs_chip(cls, value: bytes | None, info: ValidationInfo) -> bytes | None:
        if value is not None and info.data.get("chip") is False:
            raise ValueError("a card without a chip (chip: false) gives no ATR at all")
        return value

    @field_validator("aid")
    @classmethod
    def _aid_of_network(cls, value: bytes, info: ValidationInfo) -> bytes:
        return _rid_check(value, info)

    @field_validator("contactless_aids")
    @classmethod
    def _contactless(cls, value: list[bytes], info: ValidationInfo) -> list[bytes]:
        if value and info.data.get("contactless") is not True:
            raise ValueError("given, but contactless is not true")
        for aid in value:
            _rid_check(aid, info)
        return value

    @field_validator("pan", mode="before")
    @classmethod
    def _pan(cls, value: object, info: ValidationInfo) -> str:
        network = info.data.get("network")
        if isinstance(network, str) and network in NETWORKS:
            pattern, words, _rid = NETWORKS[network]
        else:  # the network key is wrong (reported there): check only what every PAN is
            pattern, words = r"\d{12,19}", "a PAN: 12-19 digits"
        pan = _digits(pattern, words)(value)
        if not luhn_ok(pan):
            raise ValueError(f"{mask_pan(pan)} fails the Luhn check")
        return pan

    @field_validator("effective")
    @classmethod
    def _effective_first(cls, value: str, info: ValidationInfo) -> str:
        expiry = info.data.get("expiry")
        if isinstance(expiry, str) and value > expiry:
            raise ValueError(f"{value} is after the expiry {expiry}")
        return value

    @field_validator("service_code")
    @classmethod
    def _service_code_of_chip(cls, value: str, info: ValidationInfo) -> str:
        chip = info.data.get("chip")
        if chip is False and value[0] not in "15":
            raise ValueError(f"a card without a chip (chip: false) has a service code starting "
                             f"1 or 5 (2 and 6 say it has one), got {value!r}")
        if chip is True and value[0] not in "26":
            raise ValueError(f"a chip card has a service code starting 2 or 6 (1 and 5 say it "
                             f"has no chip), got {value!r}")
        return value

    @field_validator("cardholder")
    @classmethod
    def _holder(cls, value: str | None) -> str | None:
        if value is not None and (not 2 <= len(value) <= 26 or not value.isascii()
                                  or value != value.upper() or any(c in "^%?" for c in value)):
            raise ValueError("expected 2-26 upper-case ASCII characters without ^ % ? "
                             "(track 1 and tag 5F20 carry it)")
        return value

    @field_validator("stripe")
    @classmethod
    def _something_to_read(cls, value: bool, info: ValidationInfo) -> bool:
        if not value and info.data.get("chip") is False:
            raise ValueError("a card with neither chip nor stripe (chip: false) cannot be read")
        return value

    @field_validator("bad_stripe")
    @classmethod
    def _bad_needs_stripe(cls, value: bool, info: ValidationInfo) -> bool:
        if value and info.data.get("stripe") is False:
            raise ValueError("the card has no stripe (stripe: false) to be bad")
        return value

    @field_validator("pin_try_counter")
    @classmethod
    def _counter_within_limit(cls, value: int, info: ValidationInfo) -> int:
        limit = info.data.get("pin_try_limit")
        if isinstance(limit, int) and value > limit:
            raise ValueError(f"{value} is above pin_try_limit {limit}")
        return value

    def model_post_init(self, context: Any, /) -> None:
        if isinstance(context, dict):
            self._source = str(context.get("source", ""))

    # -- derived facts ---------------------------------------------------------------------------

    @property
    def source(self) -> str:
        """The file this profile was read from ("" when built in code)."""
        return self._source

    @property
    def masked_pan(self) -> str:
        return mask_pan(self.pan)

    @property
    def answers_reset(self) -> bool:
        """Whether the card gives an ATR at all (a chip that is not mute)."""
        return self.chip and not self.mute

    @property
    def reset_answer(self) -> bytes:
        """What the card answers to a reset: ``b""`` (no answer), its faulty ATR or its ATR."""
        if not self.answers_reset:
            return b""
        return self.faulty_atr if self.faulty_atr is not None else self.atr

    @property
    def ppse_aids(self) -> list[bytes]:
        """Applications the PPSE lists (contactless cards only): ``contactless_aids`` or the
        card's AID."""
        return list(self.contactless_aids) or [self.aid]

    @property
    def holder_name(self) -> str:
        """Track 1 and tag 5F20: ``cardholder``, else ``<NETWORK>/TEST CARD``."""
        return self.cardholder or f"{self.network.upper()}/TEST CARD"

    @property
    def stripe_data(self) -> Stripe | None:
        """The stripe's tracks (derived from PAN, name, expiry, service code), None without a
        stripe; ``bad_stripe`` makes both tracks read with an LRC error."""
        if not self.stripe:
            return None
        return self._stripe(self.bad_stripe)

    @property
    def track1(self) -> str | None:
        """Track 1 as the head reads it: ``%B…?`` + LRC (None without a stripe)."""
        stripe = self.stripe_data
        return None if stripe is None else stripe.encoded(1)

    @property
    def track2(self) -> str | None:
        """Track 2 as the head reads it: ``;…?`` + LRC (None without a stripe)."""
        stripe = self.stripe_data
        return None if stripe is None else stripe.encoded(2)

    @property
    def track2_equivalent(self) -> str:
        """The chip's tag 57 data (``PAN D YYMM service code discretionary``)."""
        return self._stripe(False).track2_equivalent

    def _stripe(self, bad_lrc: bool) -> Stripe:
        try:
            return stripe_of(self.pan, self.holder_name, self.expiry, self.service_code,
                             bad_lrc=bad_lrc)
        except DecodeError as exc:  # the model's checks keep this from happening
            raise ValueError(f"card {self.name}: {exc}") from None

    @property
    def issuer_master_key(self) -> bytes:
        return self.keys.imk_ac

    @property
    def icc_master_key(self) -> bytes:
        """The card's MK-AC: EMV option A from the IMK it was personalised from."""
        return derive_icc_master_key(self.keys.icc_imk_ac or self.keys.imk_ac, self.pan,
                                     self.pan_seq)


def _rid_check(aid: bytes, info: ValidationInfo) -> bytes:
    network = info.data.get("network")
    if isinstance(network, str) and network in NETWORKS:
        rid = NETWORKS[network][2]
        if aid[:5] != rid:
            raise ValueError(f"{aid.hex().upper()} is not a {network} application (its RID is "
                             f"{rid.hex().upper()})")
    return aid


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
    "IssuerFault",
    "IssuerStatus",
    "NETWORKS",
    "load_profile",
    "luhn_ok",
    "profile_from_dict",
]
