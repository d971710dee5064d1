"""A contact EMV card (UnionPay debit flavour) as a pure state machine, and its profile loader.

``SimEmvCard(profile)``: :meth:`SimEmvCard.power_on` returns the ATR, :meth:`SimEmvCard.apdu`
takes a C-APDU and returns the R-APDU.  No sockets, no clocks: the vpcd host
(:mod:`sim.card.vpcd`) puts it on the wire.

Instructions are dispatched through :attr:`SimEmvCard.HANDLERS` (INS → handler).  Handlers raise
:class:`StatusWordError`; :meth:`SimEmvCard.apdu` turns it into the SW in one place.

Application cryptogram (documented simplification, not an issuer's CVN): ::

    AC = 3DES-CBC-MAC(key = profile keys.ac_key (16 bytes, 2-key 3DES), IV = 00…00,
                      data = CDOL1 data || AIP || ATC || CVR,
                      padding = ISO/IEC 9797-1 method 2 (80 00…))   → last 8-byte block

No session key is derived.  :func:`compute_ac` is the one implementation; an issuer simulator
that wants to verify ARQCs calls it with the same inputs (CDOL1 data from field 55 tags in CDOL1
order, AIP 82, ATC 9F36, CVR = bytes 4..7 of IAD 9F10).

Mute card (profile ``mute: true``): :meth:`power_on` returns ``b""`` (no answer to reset) and
:meth:`apdu` returns ``b""`` (no answer).  How "no answer" is put on the vpcd wire is the host's
business (see :mod:`sim.card.vpcd`).
"""

from __future__ import annotations

import calendar
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar

import yaml
from Crypto.Cipher import DES3

from protocols import tlv
from protocols.apdu import (
    INS_GENERATE_AC,
    INS_GET_DATA,
    INS_GET_PROCESSING_OPTIONS,
    INS_READ_RECORD,
    INS_SELECT,
    SW_CONDITIONS_NOT_SATISFIED,
    SW_FILE_NOT_FOUND,
    SW_INS_NOT_SUPPORTED,
    SW_OK,
    SW_RECORD_NOT_FOUND,
    SW_REF_DATA_NOT_FOUND,
    SW_WRONG_LENGTH,
    SW_WRONG_P1P2,
    CommandApdu,
    StatusWordError,
)
from protocols.errors import ConfigError, DecodeError
from protocols.masking import mask_pan

log = logging.getLogger(__name__)

PPSE_NAME = b"2PAY.SYS.DDF01"

# CVM code (EMV Book 3, C3) per profile value, with condition 03 "if terminal supports the CVM".
CVM_CODES: dict[str, int] = {
    "online_pin": 0x02,
    "offline_pin": 0x01,
    "signature": 0x1E,
    "no_cvm": 0x1F,
}

# Data object lists the card asks for (frozen data).
PDOL: bytes = bytes.fromhex("9F0206" "9F1A02" "5F2A02" "9A03" "9C01" "9F3704")
CDOL1: bytes = bytes.fromhex(
    "9F0206" "9F0306" "9F1A02" "9505" "5F2A02" "9A03" "9C01" "9F3704" "9F3501" "9F3403")
CDOL2: bytes = bytes.fromhex("8A02" "9F0206" "9505" "9F3704")
AIP: bytes = bytes.fromhex("1800")   # cardholder verification supported, terminal risk mgmt
SFI = 1
AFL: bytes = bytes([SFI << 3, 1, 2, 0])  # SFI 1, records 1..2, none for offline data auth
CVR: bytes = bytes.fromhex("03A00000")  # 2nd GEN AC not requested, ARQC in 1st, online PIN

CID_AAC, CID_TC, CID_ARQC = 0x00, 0x40, 0x80


# ----------------------------------------------------------------------------------- profile


_PROFILE_KEYS = frozenset({
    "name", "description", "atr", "mute", "aid", "label", "pan", "pan_seq", "expiry",
    "service_code", "cvm", "pin", "issuer", "keys", "effective", "country", "cardholder",
    "atc", "pin_try_counter",
})


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


@dataclass(frozen=True)
class CardProfile:
    """A test card, from a YAML file in fixtures/cards/.  ``repr`` never shows PAN, PIN, key."""

    name: str
    description: str
    atr: bytes
    mute: bool
    aid: bytes
    label: str
    pan: str = field(repr=False)
    pan_seq: int
    expiry: str          # YYMM
    service_code: str
    cvm: str
    pin: str = field(repr=False)
    issuer: dict[str, Any] = field(repr=False)
    ac_key: bytes = field(repr=False)
    effective: str = "2401"   # YYMM
    country: str = "0156"
    atc: int = 1
    pin_try_counter: int = 3
    source: str = ""

    @property
    def masked_pan(self) -> str:
        return mask_pan(self.pan)


def _bad(path: str, key: str, why: str) -> ConfigError:
    return ConfigError(f"card profile {path}: key '{key}': {why}")


def _hex(path: str, key: str, value: object, length: int | None = None) -> bytes:
    if not isinstance(value, str) or not re.fullmatch(r"(?:[0-9A-Fa-f]{2})+", value):
        raise _bad(path, key, f"expected a hex string, got {value!r}")
    raw = bytes.fromhex(value)
    if length is not None and len(raw) != length:
        raise _bad(path, key, f"expected {length} bytes of hex, got {len(raw)}")
    return raw


def _digits(path: str, key: str, value: object, pattern: str, what: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        raise _bad(path, key, f"expected {what} as a quoted string, got the number {value}")
    if not isinstance(value, str) or not re.fullmatch(pattern, value):
        shown = "<hidden>" if key in ("pin", "pan") else repr(value)
        raise _bad(path, key, f"expected {what}, got {shown}")
    return value


def profile_from_dict(data: object, path: str = "<dict>") -> CardProfile:
    """Validate a parsed profile; every error is a ConfigError naming the file and the key."""
    if not isinstance(data, dict):
        raise ConfigError(f"card profile {path}: expected a mapping at top level, "
                          f"got {type(data).__name__}")
    unknown = sorted(set(data) - _PROFILE_KEYS)
    if unknown:
        raise _bad(path, unknown[0], f"unknown key; allowed keys are {sorted(_PROFILE_KEYS)}")
    for key in ("name", "atr", "pan", "expiry", "pin", "issuer", "keys"):
        if key not in data:
            raise _bad(path, key, "missing (required)")
    name = data["name"]
    if not isinstance(name, str) or not name:
        raise _bad(path, "name", f"expected a non-empty string, got {name!r}")
    pan = _digits(path, "pan", data["pan"], r"62\d{14,17}",
                  "a UnionPay PAN: 16-19 digits starting with 62")
    if not luhn_ok(pan):
        raise _bad(path, "pan", f"{mask_pan(pan)} fails the Luhn check")
    expiry = _digits(path, "expiry", data["expiry"], r"\d{2}(0[1-9]|1[0-2])", "YYMM")
    effective = _digits(path, "effective", data.get("effective", "2401"),
                        r"\d{2}(0[1-9]|1[0-2])", "YYMM")
    service_code = _digits(path, "service_code", data.get("service_code", "220"), r"\d{3}",
                           "3 digits")
    pin = _digits(path, "pin", data["pin"], r"\d{4,12}", "4-12 digits")
    country = _digits(path, "country", data.get("country", "0156"), r"\d{4}",
                      "4 digits (ISO 3166 numeric, 0-padded)")
    cvm = data.get("cvm", "online_pin")
    if cvm not in CVM_CODES:
        raise _bad(path, "cvm", f"expected one of {sorted(CVM_CODES)}, got {cvm!r}")
    mute = data.get("mute", False)
    if not isinstance(mute, bool):
        raise _bad(path, "mute", f"expected true or false, got {mute!r}")
    pan_seq = data.get("pan_seq", 0)
    if not isinstance(pan_seq, int) or isinstance(pan_seq, bool) or not 0 <= pan_seq <= 99:
        raise _bad(path, "pan_seq", f"expected an integer 0-99, got {pan_seq!r}")
    issuer = data["issuer"]
    if not isinstance(issuer, dict):
        raise _bad(path, "issuer", "expected a mapping with balance_minor and status")
    bal = issuer.get("balance_minor")
    if not isinstance(bal, int) or isinstance(bal, bool):
        raise _bad(path, "issuer.balance_minor", f"expected an integer, got {bal!r}")
    if not isinstance(issuer.get("status"), str):
        raise _bad(path, "issuer.status", f"expected a string, got {issuer.get('status')!r}")
    keys = data["keys"]
    if not isinstance(keys, dict) or "ac_key" not in keys:
        raise _bad(path, "keys.ac_key", "missing (required)")
    ac_key = _hex(path, "keys.ac_key", keys["ac_key"], 16)
    if ac_key[:8] == ac_key[8:]:
        raise _bad(path, "keys.ac_key", "the two halves are equal (degenerates to single DES)")
    atr = _hex(path, "atr", data["atr"])
    if not 2 <= len(atr) <= 33 or atr[0] not in (0x3B, 0x3F):
        raise _bad(path, "atr", f"expected 2-33 bytes starting 3B or 3F, got {atr.hex()}")
    aid = _hex(path, "aid", data.get("aid", "A000000333010101"))
    if not 5 <= len(aid) <= 16:
        raise _bad(path, "aid", f"expected 5-16 bytes, got {len(aid)}")
    label = data.get("label", "UnionPay")
    if not isinstance(label, str) or not label.isascii() or not 1 <= len(label) <= 16:
        raise _bad(path, "label", f"expected 1-16 ASCII characters, got {label!r}")
    atc = data.get("atc", 1)
    if not isinstance(atc, int) or not 0 <= atc <= 0xFFFF:
        raise _bad(path, "atc", f"expected an integer 0-65535, got {atc!r}")
    ptc = data.get("pin_try_counter", 3)
    if not isinstance(ptc, int) or not 0 <= ptc <= 15:
        raise _bad(path, "pin_try_counter", f"expected an integer 0-15, got {ptc!r}")
    return CardProfile(
        name=name, description=str(data.get("description", "")), atr=atr, mute=mute, aid=aid,
        label=label, pan=pan, pan_seq=pan_seq, expiry=expiry, service_code=service_code,
        cvm=cvm, pin=pin, issuer=dict(issuer), ac_key=ac_key, effective=effective,
        country=country, atc=atc, pin_try_counter=ptc, source=path)


def load_profile(path: str | Path) -> CardProfile:
    """Load and validate ``fixtures/cards/<name>.yaml``."""
    p = str(path)
    try:
        text = Path(p).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"card profile {p}: cannot read ({exc.strerror})") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"card profile {p}: not valid YAML ({exc})") from exc
    return profile_from_dict(data, p)


# ----------------------------------------------------------------------------------- crypto


def compute_ac(key: bytes, data: bytes) -> bytes:
    """3DES-CBC-MAC, IV zero, ISO/IEC 9797-1 padding method 2; returns 8 bytes."""
    padded = data + b"\x80" + bytes((-(len(data) + 1)) % 8)
    return DES3.new(key, DES3.MODE_CBC, iv=bytes(8)).encrypt(padded)[-8:]


def _last_day(yymm: str) -> str:
    """Last day of the month of an expiry date (EMV 5F24 is YYMMDD)."""
    return f"{calendar.monthrange(2000 + int(yymm[:2]), int(yymm[2:]))[1]:02d}"


def _bcd(digits: str) -> bytes:
    if len(digits) % 2:
        digits += "F"
    return bytes.fromhex(digits)


# ----------------------------------------------------------------------------------- card


Handler = Callable[["SimEmvCard", CommandApdu], bytes]


class SimEmvCard:
    """One EMV card.  ``power_on()`` / ``reset()`` → ATR; ``apdu(capdu)`` → R-APDU bytes.

    Volatile state (selected application, GPO done, GENERATE AC count) is lost on power-off
    or reset; the ATC survives (it is in the card's non-volatile memory).
    """

    HANDLERS: ClassVar[Mapping[int, Handler]] = MappingProxyType({})

    def __init__(self, profile: CardProfile) -> None:
        self.profile = profile
        self.atc = profile.atc
        self.last_online_atc = 0
        self.pin_try_counter = profile.pin_try_counter
        self.powered = False
        self._selected: bytes | None = None
        self._gpo_done = False
        self._gen_ac_count = 0
        self._records = self._build_records()

    def __repr__(self) -> str:
        return f"SimEmvCard({self.profile.name}, pan={self.profile.masked_pan})"

    # -- power ---------------------------------------------------------------------------
    def power_on(self) -> bytes:
        """Cold reset.  Returns the ATR, or ``b""`` for a mute card (no answer to reset)."""
        self.powered = True
        self._selected, self._gpo_done, self._gen_ac_count = None, False, 0
        return b"" if self.profile.mute else self.profile.atr

    reset = power_on

    def power_off(self) -> None:
        self.powered = False
        self._selected, self._gpo_done, self._gen_ac_count = None, False, 0

    # -- APDU ----------------------------------------------------------------------------
    def apdu(self, capdu: bytes) -> bytes:
        """Answer one C-APDU.  ``b""`` means no answer (unpowered or mute card)."""
        if self.profile.mute or not self.powered:
            return b""
        try:
            cmd = CommandApdu.from_bytes(capdu)
        except DecodeError as exc:
            log.debug("%r: malformed C-APDU: %s", self, exc)
            return SW_WRONG_LENGTH.to_bytes(2, "big")
        handler = self.HANDLERS.get(cmd.ins)
        try:
            if handler is None:
                raise StatusWordError(SW_INS_NOT_SUPPORTED, f"INS {cmd.ins:02X}")
            data = handler(self, cmd)
        except StatusWordError as exc:
            log.debug("%r: INS %02X -> %s", self, cmd.ins, exc)
            return exc.sw.to_bytes(2, "big")
        return data + SW_OK.to_bytes(2, "big")

    # -- data ----------------------------------------------------------------------------
    def _track2(self) -> bytes:
        p = self.profile
        return _bcd(f"{p.pan}D{p.expiry}{p.service_code}{'0' * 5}{'0' * 5}")

    def _build_records(self) -> dict[int, bytes]:
        p = self.profile
        cvm_list = bytes(8) + bytes([CVM_CODES[p.cvm], 0x03]) + bytes([0x1F, 0x00])
        rec1 = tlv.encode(0x70, tlv.encode_many([
            (0x57, self._track2()),
            (0x5F20, b"UNIONPAY/TEST CARD"[:26]),
        ]))
        rec2 = tlv.encode(0x70, tlv.encode_many([
            (0x5A, _bcd(p.pan)),
            (0x5F24, bytes.fromhex(p.expiry + _last_day(p.expiry))),
            (0x5F25, bytes.fromhex(p.effective + "01")),
            (0x5F28, bytes.fromhex(p.country)),
            (0x5F34, bytes([int(str(p.pan_seq), 16) if p.pan_seq < 100 else 0])),
            (0x8C, CDOL1),
            (0x8D, CDOL2),
            (0x8E, cvm_list),
            (0x9F07, bytes.fromhex("FF00")),
            (0x9F08, bytes.fromhex("0030")),
            (0x9F0D, bytes.fromhex("D86004A800")),
            (0x9F0E, bytes.fromhex("0010000000")),
            (0x9F0F, bytes.fromhex("D86804F800")),
        ]))
        return {1: rec1, 2: rec2}

    def fci_ppse(self) -> bytes:
        entry = tlv.encode(0x61, tlv.encode_many([
            (0x4F, self.profile.aid),
            (0x50, self.profile.label.encode("ascii")),
            (0x87, b"\x01"),
        ]))
        return tlv.encode(0x6F, tlv.encode(0x84, PPSE_NAME)
                          + tlv.encode(0xA5, tlv.encode(0xBF0C, entry)))

    def fci_aid(self) -> bytes:
        prop = tlv.encode_many([
            (0x50, self.profile.label.encode("ascii")),
            (0x87, b"\x01"),
            (0x9F38, PDOL),
            (0x5F2D, b"zhen"),
        ])
        return tlv.encode(0x6F, tlv.encode(0x84, self.profile.aid) + tlv.encode(0xA5, prop))

    # -- handlers ------------------------------------------------------------------------
    def _select(self, cmd: CommandApdu) -> bytes:
        if cmd.p1 != 0x04:
            raise StatusWordError(SW_WRONG_P1P2, "SELECT supports by DF name only (P1=04)")
        if cmd.data == PPSE_NAME:
            self._selected, self._gpo_done, self._gen_ac_count = PPSE_NAME, False, 0
            return self.fci_ppse()
        if cmd.data and self.profile.aid.startswith(cmd.data):
            self._selected, self._gpo_done, self._gen_ac_count = self.profile.aid, False, 0
            return self.fci_aid()
        self._selected = None
        raise StatusWordError(SW_FILE_NOT_FOUND, f"SELECT {cmd.data.hex().upper()}")

    def _gpo(self, cmd: CommandApdu) -> bytes:
        if self._selected != self.profile.aid:
            raise StatusWordError(SW_CONDITIONS_NOT_SATISFIED, "GPO before SELECT of the AID")
        if self._gpo_done:
            raise StatusWordError(SW_CONDITIONS_NOT_SATISFIED, "GPO already done")
        need = sum(e.length for e in tlv.parse_dol(PDOL))
        if len(cmd.data) != need + 2 or cmd.data[0] != 0x83 or cmd.data[1] != need:
            raise StatusWordError(SW_WRONG_LENGTH,
                                  f"GPO data must be 83 {need:02X} + {need} bytes")
        self.atc = (self.atc + 1) & 0xFFFF
        self._gpo_done = True
        return tlv.encode(0x77, tlv.encode(0x82, AIP) + tlv.encode(0x94, AFL))

    def _read_record(self, cmd: CommandApdu) -> bytes:
        if cmd.p2 & 0x07 != 0x04:
            raise StatusWordError(SW_WRONG_P1P2, "READ RECORD needs P2 = SFI<<3 | 4")
        if cmd.p2 >> 3 != SFI:
            raise StatusWordError(SW_FILE_NOT_FOUND, f"SFI {cmd.p2 >> 3}")
        rec = self._records.get(cmd.p1)
        if rec is None:
            raise StatusWordError(SW_RECORD_NOT_FOUND, f"record {cmd.p1}")
        return rec

    def _get_data(self, cmd: CommandApdu) -> bytes:
        tag = (cmd.p1 << 8) | cmd.p2
        values: dict[int, bytes] = {
            0x9F36: self.atc.to_bytes(2, "big"),
            0x9F13: self.last_online_atc.to_bytes(2, "big"),
            0x9F17: bytes([self.pin_try_counter]),
        }
        if tag not in values:
            raise StatusWordError(SW_REF_DATA_NOT_FOUND, f"GET DATA {tag:04X}")
        return tlv.encode(tag, values[tag])

    def _generate_ac(self, cmd: CommandApdu) -> bytes:
        if not self._gpo_done:
            raise StatusWordError(SW_CONDITIONS_NOT_SATISFIED, "GENERATE AC before GPO")
        if self._gen_ac_count >= 2:
            raise StatusWordError(SW_CONDITIONS_NOT_SATISFIED, "third GENERATE AC")
        dol = CDOL1 if self._gen_ac_count == 0 else CDOL2
        need = sum(e.length for e in tlv.parse_dol(dol))
        if len(cmd.data) != need:
            raise StatusWordError(SW_WRONG_LENGTH,
                                  f"GENERATE AC data must be {need} bytes, got {len(cmd.data)}")
        requested = cmd.p1 & 0xC0
        if self._gen_ac_count == 0:
            # First GENERATE AC: this card always wants to go online unless AAC is asked for.
            cid = CID_AAC if requested == CID_AAC else CID_ARQC
        else:
            cid = CID_TC if requested == CID_TC else CID_AAC
            if cid == CID_TC:
                self.last_online_atc = self.atc
        self._gen_ac_count += 1
        atc = self.atc.to_bytes(2, "big")
        ac = compute_ac(self.profile.ac_key, cmd.data + AIP + atc + CVR)
        iad = bytes([0x07, 0x01, 0x01]) + CVR
        return tlv.encode(0x77, tlv.encode_many([
            (0x9F27, bytes([cid])), (0x9F36, atc), (0x9F26, ac), (0x9F10, iad)]))


SimEmvCard.HANDLERS = MappingProxyType({
    INS_SELECT: SimEmvCard._select,
    INS_GET_PROCESSING_OPTIONS: SimEmvCard._gpo,
    INS_READ_RECORD: SimEmvCard._read_record,
    INS_GET_DATA: SimEmvCard._get_data,
    INS_GENERATE_AC: SimEmvCard._generate_ac,
})
