"""A contact EMV card (UnionPay debit flavour by default) as a pure state machine; its profile
is :mod:`sim.card.profile`, the APDU contract docs/cards.md.

``SimEmvCard(profile)``: :meth:`SimEmvCard.power_on` returns the ATR, :meth:`SimEmvCard.apdu`
takes a C-APDU and returns the R-APDU.  No sockets, no clocks: the vpcd host
(:mod:`sim.card.vpcd`) puts it on the wire.

Instructions are dispatched through :attr:`SimEmvCard.HANDLERS` (INS → handler).  A handler
returns the response data (SW 9000) or a :class:`~protocols.apdu.ResponseApdu` (a warning with
data, such as 6283 with the FCI of a blocked application, or 63Cx) and raises
:class:`StatusWordError` for an error; :meth:`SimEmvCard.apdu` turns both into the R-APDU in
one place, and there applies Le for every instruction: data longer than a non-zero Le (Le=00:
up to 256) is answered ``6Cxx`` (xx the exact length), no data, the card's state as before.

What the card does (docs/cards.md has the bytes):

- SELECT ``1PAY.SYS.DDF01`` (PSE, contact directory): FCI with the directory's SFI; READ
  RECORD of that SFI: the directory entry (61: 4F AID, 50 label, 87 priority).
- SELECT ``2PAY.SYS.DDF01`` (PPSE): on a contactless card, FCI listing ``ppse_aids``; a
  contact-only card answers 6A82.
- SELECT of the AID: FCI with the PDOL; 6283 + FCI when the application is blocked; 6A81 for
  every SELECT when the card is blocked.
- GET PROCESSING OPTIONS → AIP + AFL (ATC + 1); READ RECORD SFI 1 records 1-2.
- VERIFY (P2 80, plaintext PIN block) against the card's PIN and try counter: 9000, 63Cx
  (x tries left), 6983 (blocked); GET DATA 9F17 gives the counter.
- GENERATE AC: the first answers an ARQC (an AAC when asked for one, or when the profile
  declines at it); the second checks the issuer's ARPC (CDOL2 tag 91) and answers a TC when
  the issuer approved and the ARPC verifies, else an AAC.  Cryptograms: :mod:`protocols.crypto`
  over the input of :mod:`protocols.emvcard`.

Profile faults: ``mute`` / ``chip: false`` (no answer to reset: :meth:`power_on` returns ``b""``
and :meth:`apdu` ``b""``), ``faulty_atr`` (an ATR that breaks ISO/IEC 7816-3; the chip answers
as usual behind it: only the terminal's ATR check can refuse the card), ``pull_at`` (the card
leaves the reader at that instruction: :meth:`apdu` raises :class:`CardRemoved` and the host
closes the card's vpcd connection).
"""

from __future__ import annotations

import calendar
import logging
from collections.abc import Callable, Mapping
from enum import Enum
from types import MappingProxyType
from typing import ClassVar

from protocols import tlv
from protocols.apdu import (
    INS_GENERATE_AC,
    INS_GET_DATA,
    INS_GET_PROCESSING_OPTIONS,
    INS_READ_RECORD,
    INS_SELECT,
    INS_VERIFY,
    SW_AUTH_METHOD_BLOCKED,
    SW_CLA_NOT_SUPPORTED,
    SW_CONDITIONS_NOT_SATISFIED,
    SW_FILE_NOT_FOUND,
    SW_FUNC_NOT_SUPPORTED,
    SW_INCORRECT_P1P2,
    SW_INS_NOT_SUPPORTED,
    SW_OK,
    SW_RECORD_NOT_FOUND,
    SW_REF_DATA_NOT_FOUND,
    SW_SELECTED_FILE_INVALIDATED,
    SW_VERIFY_FAILED,
    SW_WRONG_DATA,
    SW_WRONG_LE,
    SW_WRONG_LENGTH,
    SW_WRONG_P1P2,
    CommandApdu,
    ResponseApdu,
    StatusWordError,
    ins_name,
)
from protocols.crypto import application_cryptogram, arpc_method1, derive_session_key
from protocols.digits import ascii_digits
from protocols.emvcard import (
    APPROVED_ARCS,
    CDOL1,
    CDOL2,
    CID_AAC,
    CID_ARQC,
    CID_NAMES,
    CID_TC,
    PDOL,
    CvrState,
    ac_input,
    iad,
    split_issuer_auth_data,
)
from protocols.errors import DecodeError, SimError
from sim.card.profile import CVM_CODES as CVM_CODES  # the profile's names, importable from here
from sim.card.profile import CardProfile as CardProfile
from sim.card.profile import load_profile as load_profile
from sim.card.profile import luhn_ok as luhn_ok
from sim.card.profile import profile_from_dict as profile_from_dict

log = logging.getLogger(__name__)

PSE_NAME = b"1PAY.SYS.DDF01"
PPSE_NAME = b"2PAY.SYS.DDF01"
PSE_SFI = 1        # the directory's SFI (in the PSE's own file space)
SFI = 1            # the application's records
AIP: bytes = bytes.fromhex("1800")   # cardholder verification supported, terminal risk mgmt
AFL: bytes = bytes([SFI << 3, 1, 2, 0])  # SFI 1, records 1..2, none for offline data auth
#: CVR of a first GENERATE AC answered with an ARQC and nothing else to say (03 A0 00 00).
CVR: bytes = CvrState(CID_ARQC).to_bytes()
P2_PLAINTEXT_PIN = 0x80


class CardRemoved(SimError):
    """The card left the reader at this command (profile ``pull_at``): no answer, the host
    closes the card's connection to the reader."""


class Selected(Enum):
    NOTHING = "nothing"
    PSE = "PSE"
    PPSE = "PPSE"
    APPLICATION = "application"


def _last_day(yymm: str) -> str:
    """Last day of the month of an expiry date (EMV 5F24 is YYMMDD)."""
    return f"{calendar.monthrange(2000 + int(yymm[:2]), int(yymm[2:]))[1]:02d}"


def _bcd(digits: str) -> bytes:
    if len(digits) % 2:
        digits += "F"
    return bytes.fromhex(digits)


def plaintext_pin(block: bytes) -> str | None:
    """The PIN of an EMV plaintext offline PIN block (``2N PP … FF``, 8 bytes), or None when it
    is not one (EMV Book 3, 6.5.12)."""
    text = block.hex().upper()
    if len(block) != 8 or text[0] != "2":
        return None
    n = int(text[1], 16)
    if not 4 <= n <= 12:
        return None
    pin, fill = text[2:2 + n], text[2 + n:]
    if not ascii_digits(pin) or fill != "F" * len(fill):
        return None
    return pin


# ----------------------------------------------------------------------------------- card


Reply = bytes | ResponseApdu
Handler = Callable[["SimEmvCard", CommandApdu], Reply]


class SimEmvCard:
    """One EMV card.  ``power_on()`` / ``reset()`` → ATR; ``apdu(capdu)`` → R-APDU bytes.

    Volatile state (selection, GPO done, GENERATE ACs, offline PIN verified) is lost on
    power-off or reset; the ATC, the PIN try counter and the last online ATC survive (they are
    in the card's non-volatile memory) until :meth:`restore_profile_state`.
    """

    HANDLERS: ClassVar[Mapping[int, Handler]] = MappingProxyType({})

    def __init__(self, profile: CardProfile) -> None:
        self.profile = profile
        self.atc = profile.atc
        self.last_online_atc = 0
        self.pin_try_counter = profile.pin_try_counter
        self.powered = False
        self._mk = profile.icc_master_key
        self._records = self._build_records()
        self._pulled = False
        self._clear_session()

    def __repr__(self) -> str:
        return f"SimEmvCard({self.profile.name}, pan={self.profile.masked_pan})"

    def restore_profile_state(self) -> None:
        """Non-volatile state back to what the profile says (ATC, PIN try counter)."""
        self.atc = self.profile.atc
        self.last_online_atc = 0
        self.pin_try_counter = self.profile.pin_try_counter

    def _clear_session(self) -> None:
        self._selected = Selected.NOTHING
        self._app_blocked = False
        self._gpo_done = False
        self._first_cid: int | None = None
        self._second_cid: int | None = None
        self._arqc = b""
        self._pin_verified: bool | None = None   # None: no VERIFY this session
        self._issuer_auth_failed = False

    # -- power ---------------------------------------------------------------------------
    def power_on(self) -> bytes:
        """Cold reset.  Returns the ATR, or ``b""`` for a card that gives none (mute chip, no
        chip)."""
        self.powered = True
        self._pulled = False
        self._clear_session()
        return self.profile.reset_answer

    reset = power_on

    def power_off(self) -> None:
        self.powered = False
        self._clear_session()

    # -- APDU ----------------------------------------------------------------------------
    def apdu(self, capdu: bytes) -> bytes:
        """Answer one C-APDU.  ``b""`` means no answer (unpowered, mute or chipless card);
        :class:`CardRemoved` means the card left the reader at this command."""
        if not self.profile.answers_reset or not self.powered:
            return b""
        try:
            cmd = CommandApdu.from_bytes(capdu)
        except DecodeError as exc:
            log.debug("%r: malformed C-APDU: %s", self, exc)
            return SW_WRONG_LENGTH.to_bytes(2, "big")
        pull_at = self.profile.pull_at
        if pull_at is not None and not self._pulled and ins_name(cmd.ins) == pull_at:
            self._pulled = True
            self.powered = False
            raise CardRemoved(f"{self!r}: pulled out of the reader at {pull_at} (profile "
                              f"pull_at)")
        handler = self.HANDLERS.get(cmd.ins)
        before = dict(vars(self))  # handlers replace attributes, never change one in place
        try:
            if cmd.cla not in CLASSES:
                raise StatusWordError(SW_CLA_NOT_SUPPORTED, f"CLA {cmd.cla:02X}")
            if handler is None:
                raise StatusWordError(SW_INS_NOT_SUPPORTED, f"INS {cmd.ins:02X}")
            if cmd.cla != CLASS_OF_INS[cmd.ins]:
                raise StatusWordError(SW_CLA_NOT_SUPPORTED, f"{ins_name(cmd.ins)} with CLA "
                                                            f"{cmd.cla:02X}, expected "
                                                            f"{CLASS_OF_INS[cmd.ins]:02X}")
            reply = handler(self, cmd)
        except StatusWordError as exc:
            log.debug("%r: %s -> %s", self, ins_name(cmd.ins), exc)
            return exc.sw.to_bytes(2, "big")
        resp = reply if isinstance(reply, ResponseApdu) else ResponseApdu(reply, SW_OK)
        if cmd.le is not None and len(resp.data) > cmd.le:
            # T=0 (ISO 7816-4 / EMV Book 1): Le shorter than the data → 6Cxx, xx the exact
            # length, no data and the command undone, so its re-send with Le=xx answers alike.
            vars(self).clear()
            vars(self).update(before)
            log.debug("%r: %s with Le=%d, %d bytes available -> 6C%02X", self,
                      ins_name(cmd.ins), cmd.le, len(resp.data), len(resp.data) & 0xFF)
            return (SW_WRONG_LE | len(resp.data) & 0xFF).to_bytes(2, "big")
        return resp.to_bytes()

    # -- data ----------------------------------------------------------------------------
    def _build_records(self) -> dict[int, bytes]:
        p = self.profile
        cvm_list = bytes(8) + bytes([CVM_CODES[p.cvm], 0x03]) + bytes([0x1F, 0x00])
        rec1 = tlv.encode(0x70, tlv.encode_many([
            (0x57, _bcd(p.track2_equivalent)),
            (0x5F20, p.holder_name.encode("ascii")),
        ]))
        rec2 = tlv.encode(0x70, tlv.encode_many([
            (0x5A, _bcd(p.pan)),
            (0x5F24, bytes.fromhex(p.expiry + _last_day(p.expiry))),
            (0x5F25, bytes.fromhex(p.effective + "01")),
            (0x5F28, bytes.fromhex(p.country)),
            (0x5F34, bytes.fromhex(f"{p.pan_seq:02d}")),
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

    def _directory_entry(self, aid: bytes, priority: int) -> bytes:
        return tlv.encode(0x61, tlv.encode_many([
            (0x4F, aid),
            (0x50, self.profile.label.encode("ascii")),
            (0x87, bytes([priority])),
        ]))

    def fci_pse(self) -> bytes:
        prop = tlv.encode(0x88, bytes([PSE_SFI])) + tlv.encode(0x5F2D, b"zhen")
        return tlv.encode(0x6F, tlv.encode(0x84, PSE_NAME) + tlv.encode(0xA5, prop))

    def pse_directory_record(self) -> bytes:
        return tlv.encode(0x70, self._directory_entry(self.profile.aid, 1))

    def fci_ppse(self) -> bytes:
        entries = b"".join(self._directory_entry(aid, i + 1)
                           for i, aid in enumerate(self.profile.ppse_aids))
        return tlv.encode(0x6F, tlv.encode(0x84, PPSE_NAME)
                          + tlv.encode(0xA5, tlv.encode(0xBF0C, entries)))

    def fci_aid(self) -> bytes:
        prop = tlv.encode_many([
            (0x50, self.profile.label.encode("ascii")),
            (0x87, b"\x01"),
            (0x9F38, PDOL),
            (0x5F2D, b"zhen"),
        ])
        return tlv.encode(0x6F, tlv.encode(0x84, self.profile.aid) + tlv.encode(0xA5, prop))

    def cvr(self) -> bytes:
        """The CVR as it stands (protocols.emvcard)."""
        if self._first_cid is None:
            raise StatusWordError(SW_CONDITIONS_NOT_SATISFIED, "no GENERATE AC yet")
        return CvrState(
            first=self._first_cid, second=self._second_cid,
            issuer_auth_failed=self._issuer_auth_failed,
            offline_pin_performed=self._pin_verified is not None,
            offline_pin_failed=self._pin_verified is False,
            pin_try_limit_exceeded=self.pin_try_counter == 0).to_bytes()

    # -- handlers ------------------------------------------------------------------------
    def _select(self, cmd: CommandApdu) -> Reply:
        if cmd.p1 != 0x04:
            raise StatusWordError(SW_WRONG_P1P2, "SELECT supports by DF name only (P1=04)")
        self._clear_session()
        if self.profile.blocked == "card":
            raise StatusWordError(SW_FUNC_NOT_SUPPORTED, "the card is blocked")
        if cmd.data == PSE_NAME:
            self._selected = Selected.PSE
            return self.fci_pse()
        if cmd.data == PPSE_NAME:
            if not self.profile.contactless:
                raise StatusWordError(SW_FILE_NOT_FOUND, "no PPSE on a contact-only card")
            self._selected = Selected.PPSE
            return self.fci_ppse()
        if cmd.data and self.profile.aid.startswith(cmd.data):
            self._selected = Selected.APPLICATION
            if self.profile.blocked == "application":
                self._app_blocked = True
                return ResponseApdu(self.fci_aid(), SW_SELECTED_FILE_INVALIDATED)
            return self.fci_aid()
        raise StatusWordError(SW_FILE_NOT_FOUND, f"SELECT {cmd.data.hex().upper()}")

    def _need_application(self, what: str) -> None:
        if self._selected is not Selected.APPLICATION:
            raise StatusWordError(SW_CONDITIONS_NOT_SATISFIED,
                                  f"{what} before SELECT of the application")
        if self._app_blocked:
            raise StatusWordError(SW_CONDITIONS_NOT_SATISFIED,
                                  f"{what}: the application is blocked")

    def _gpo(self, cmd: CommandApdu) -> Reply:
        self._need_application("GPO")
        if self._gpo_done:
            raise StatusWordError(SW_CONDITIONS_NOT_SATISFIED, "GPO already done")
        need = sum(e.length for e in tlv.parse_dol(PDOL))
        if len(cmd.data) != need + 2 or cmd.data[0] != 0x83 or cmd.data[1] != need:
            raise StatusWordError(SW_WRONG_LENGTH,
                                  f"GPO data must be 83 {need:02X} + {need} bytes")
        self.atc = (self.atc + 1) & 0xFFFF
        self._gpo_done = True
        return tlv.encode(0x77, tlv.encode(0x82, AIP) + tlv.encode(0x94, AFL))

    def _read_record(self, cmd: CommandApdu) -> Reply:
        if cmd.p2 & 0x07 != 0x04:
            raise StatusWordError(SW_WRONG_P1P2, "READ RECORD needs P2 = SFI<<3 | 4")
        sfi = cmd.p2 >> 3
        if self._selected is Selected.PSE:
            records = {1: self.pse_directory_record()} if sfi == PSE_SFI else None
        elif self._selected is Selected.APPLICATION and not self._app_blocked:
            records = self._records if sfi == SFI else None
        else:
            raise StatusWordError(SW_CONDITIONS_NOT_SATISFIED,
                                  f"READ RECORD with {self._selected.value} selected")
        if records is None:
            raise StatusWordError(SW_FILE_NOT_FOUND, f"SFI {sfi}")
        rec = records.get(cmd.p1)
        if rec is None:
            raise StatusWordError(SW_RECORD_NOT_FOUND, f"record {cmd.p1}")
        return rec

    def _get_data(self, cmd: CommandApdu) -> Reply:
        tag = (cmd.p1 << 8) | cmd.p2
        values: dict[int, bytes] = {
            0x9F36: self.atc.to_bytes(2, "big"),
            0x9F13: self.last_online_atc.to_bytes(2, "big"),
            0x9F17: bytes([self.pin_try_counter]),
        }
        if tag not in values:
            raise StatusWordError(SW_REF_DATA_NOT_FOUND, f"GET DATA {tag:04X}")
        return tlv.encode(tag, values[tag])

    def _verify(self, cmd: CommandApdu) -> Reply:
        """Offline plaintext PIN (EMV Book 3, 6.5.12).  Never logs or reports the PIN."""
        if cmd.p1 != 0x00 or cmd.p2 != P2_PLAINTEXT_PIN:
            raise StatusWordError(SW_INCORRECT_P1P2, f"VERIFY P1P2 {cmd.p1:02X}{cmd.p2:02X}: "
                                                     f"only 0080 (plaintext PIN) is supported")
        self._need_application("VERIFY")
        if self.pin_try_counter == 0:
            raise StatusWordError(SW_AUTH_METHOD_BLOCKED, "PIN try limit exceeded")
        if not cmd.data:   # ISO 7816-4: how many tries are left
            if self._pin_verified:
                return b""
            return ResponseApdu(b"", SW_VERIFY_FAILED | self.pin_try_counter)
        pin = plaintext_pin(cmd.data)
        if pin is None:
            raise StatusWordError(SW_WRONG_DATA, "VERIFY data is not a plaintext PIN block "
                                                 "(8 bytes, 2N PIN… F-filled)")
        if pin == self.profile.pin:
            self.pin_try_counter = self.profile.pin_try_limit
            self._pin_verified = True
            return b""
        self.pin_try_counter -= 1
        self._pin_verified = False
        log.info("%r: VERIFY with a wrong PIN, %d tries left", self, self.pin_try_counter)
        return ResponseApdu(b"", SW_VERIFY_FAILED | self.pin_try_counter)

    def _generate_ac(self, cmd: CommandApdu) -> Reply:
        if not self._gpo_done:
            raise StatusWordError(SW_CONDITIONS_NOT_SATISFIED, "GENERATE AC before GPO")
        if self._second_cid is not None:
            raise StatusWordError(SW_CONDITIONS_NOT_SATISFIED, "third GENERATE AC")
        first = self._first_cid is None
        dol = CDOL1 if first else CDOL2
        entries = tlv.parse_dol(dol)
        need = sum(e.length for e in entries)
        if len(cmd.data) != need:
            raise StatusWordError(SW_WRONG_LENGTH,
                                  f"GENERATE AC data must be {need} bytes, got {len(cmd.data)}")
        requested = cmd.p1 & 0xC0
        atc = self.atc.to_bytes(2, "big")
        session_key = derive_session_key(self._mk, atc)
        if first:
            cid = self._first_decision(requested)
            self._first_cid = cid
        else:
            if self._first_cid != CID_ARQC:
                raise StatusWordError(SW_CONDITIONS_NOT_SATISFIED,
                                      f"second GENERATE AC after a "
                                      f"{CID_NAMES[self._first_cid or 0]}")
            cid = self._second_decision(requested, tlv.split_dol(entries, cmd.data),
                                        session_key)
            self._second_cid = cid
            if cid == CID_TC:
                self.last_online_atc = self.atc
        cvr = self.cvr()
        ac = application_cryptogram(session_key, ac_input(cmd.data, AIP, atc, cvr))
        if first and cid == CID_ARQC:
            self._arqc = ac
        log.info("%r: GENERATE AC %s → %s", self, "1" if first else "2", CID_NAMES[cid])
        return tlv.encode(0x77, tlv.encode_many([
            (0x9F27, bytes([cid])), (0x9F36, atc), (0x9F26, ac), (0x9F10, iad(cvr))]))

    def _first_decision(self, requested: int) -> int:
        """An ARQC: this card wants every transaction online (a TC request too), unless an AAC
        is asked for or the profile declines here."""
        if requested == CID_AAC or self.profile.decline_at == "first_generate_ac":
            return CID_AAC
        return CID_ARQC

    def _second_decision(self, requested: int, cdol2: Mapping[int, bytes],
                         session_key: bytes) -> int:
        """A TC when asked for one, the issuer approved (8A) and its ARPC (91) verifies over
        this card's ARQC; else an AAC (an ARPC that does not verify sets the CVR's issuer
        authentication failed bit)."""
        arc = cdol2.get(0x8A, b"")
        try:
            arpc, arc_signed = split_issuer_auth_data(cdol2.get(0x91, b""))
        except DecodeError:
            arpc, arc_signed = b"", b""
        verified = (bool(arpc) and any(arpc) and arc_signed == arc
                    and arpc_method1(session_key, self._arqc, arc_signed) == arpc)
        if any(arpc) and not verified:
            self._issuer_auth_failed = True
        if requested != CID_TC or self.profile.decline_at == "second_generate_ac":
            return CID_AAC
        return CID_TC if verified and arc in APPROVED_ARCS else CID_AAC


SimEmvCard.HANDLERS = MappingProxyType({
    INS_SELECT: SimEmvCard._select,
    INS_GET_PROCESSING_OPTIONS: SimEmvCard._gpo,
    INS_READ_RECORD: SimEmvCard._read_record,
    INS_GET_DATA: SimEmvCard._get_data,
    INS_VERIFY: SimEmvCard._verify,
    INS_GENERATE_AC: SimEmvCard._generate_ac,
})

#: The class byte of each instruction (EMV Book 3, 6.5): 00 interindustry, 80 proprietary.
CLASS_OF_INS: Mapping[int, int] = MappingProxyType({
    INS_SELECT: 0x00,
    INS_READ_RECORD: 0x00,
    INS_VERIFY: 0x00,
    INS_GET_PROCESSING_OPTIONS: 0x80,
    INS_GET_DATA: 0x80,
    INS_GENERATE_AC: 0x80,
})
CLASSES = frozenset(CLASS_OF_INS.values())

__all__ = [
    "AIP",
    "CDOL1",
    "CDOL2",
    "CVR",
    "CardProfile",
    "CardRemoved",
    "PDOL",
    "PPSE_NAME",
    "PSE_NAME",
    "SimEmvCard",
    "load_profile",
    "plaintext_pin",
]
