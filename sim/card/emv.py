"""A contact EMV card (UnionPay debit flavour) as a pure state machine (profile: sim.card.profile).

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
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import ClassVar

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
from protocols.errors import DecodeError
from sim.card.profile import CVM_CODES as CVM_CODES  # the profile's names, importable from here
from sim.card.profile import CardProfile as CardProfile
from sim.card.profile import load_profile as load_profile
from sim.card.profile import luhn_ok as luhn_ok
from sim.card.profile import profile_from_dict as profile_from_dict

log = logging.getLogger(__name__)

PPSE_NAME = b"2PAY.SYS.DDF01"

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
