"""The terminal's EMV kernels (contact and contactless), pure over an abstract card slot.

The firmware hands each step a :class:`Slot` (in the virtual bench: the harness messages
``card_power`` / ``capdu`` answered by ``atr`` / ``rapdu``, or their contactless twins
``cl_power`` / ``cl_capdu``).  A contact transaction runs in steps, because the cardholder and
the host act between them; the card stays powered from the first step to the last (its
volatile state — the selected application, the GENERATE AC count — lives only that long):

1. :func:`read_chip`: power on → SELECT PPSE (fallback: SELECT of the known UnionPay AIDs) →
   SELECT AID → GET PROCESSING OPTIONS with the PDOL data → READ RECORD for every AFL entry →
   cardholder verification method chosen from the card's CVM list (:func:`select_cvm`; for an
   offline PIN, GET DATA of the PIN try counter 9F17 first) → first GENERATE AC asking for an
   ARQC with the CDOL1 data — unless the CVM is an offline PIN, which the card checks first;
2. :func:`verify_pin` (offline plaintext PIN only): VERIFY ``00 20 00 80 08`` with the PIN in
   the ICC plaintext PIN block (``2N PP…PF…``); ``63Cx`` = wrong, *x* tries left; ``6983`` =
   blocked; then :func:`generate_first_ac`;
3. after the host's answer, :func:`generate_second_ac`: GENERATE AC asking for a TC (approved)
   or an AAC (declined) with the CDOL2 data (8D from the card's record) — the authorisation
   response code 8A and the issuer authentication data 91 (field 55 of the 0210) among them;
4. :func:`power_off`.

A card without CDOL2 in its records, or one that answers the second GENERATE AC ``6D00``
(instruction not supported), does not support the second GENERATE AC: the answer is
``unsupported`` and the host's decision stands.  (The virtual card of sim/card as of this writing
has CDOL2 ``8A02 9F0206 9505 9F3704``; it answers TC when asked for a TC, else AAC, and does not
check the ARPC.)

:func:`read_contactless` is the contactless kernel (qPBOC style), one step: activate → SELECT
PPSE → SELECT AID → GET PROCESSING OPTIONS with the terminal transaction qualifiers 9F66 in the
PDOL data → READ RECORD; a qPBOC card answers the cryptogram (9F26, 9F27, 9F36, 9F10) in the GPO
response; a card that does not gets a first GENERATE AC after the records.  No second GENERATE
AC: the card has left the field when the host answers.  Then the field is reset.

T=0 procedure bytes are handled here, as a real kernel does: ``61xx`` → GET RESPONSE with
Le=xx, ``6Cxx`` → the same command again with Le=xx.  :func:`run_chip_transaction` is the whole
contact run up to the first GENERATE AC in one call (tools and tests).

Every failure is a :class:`CardError` whose ``reason`` is one of ``mute``, ``absent``,
``removed``, ``collision``, ``bad_atr`` (the contact card's ATR breaks ISO/IEC 7816-3:
:mod:`protocols.atr`), ``unsupported`` or ``sw <hex>``; messages never contain the PAN, the PIN
or track data.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
from dataclasses import dataclass, field
from typing import Protocol

from protocols import tlv
from protocols.apdu import (
    SW_AUTH_METHOD_BLOCKED,
    SW_INS_NOT_SUPPORTED,
    SW_OK,
    SW_SELECTED_FILE_INVALIDATED,
    CommandApdu,
    ResponseApdu,
    sw_text,
)
from protocols.atr import atr_problem
from protocols.digits import ascii_digits
from protocols.ecr import Cvm, Reason
from protocols.errors import DecodeError, SimError
from protocols.masking import mask_pan

log = logging.getLogger(__name__)

PPSE = b"2PAY.SYS.DDF01"
PSE = b"1PAY.SYS.DDF01"
#: Applications this terminal supports, in priority order: UnionPay debit, credit,
#: quasi-credit; then the international networks' (Visa credit/debit, electron; Mastercard
#: credit/debit, Maestro).
SUPPORTED_AIDS: tuple[bytes, ...] = (
    bytes.fromhex("A000000333010101"),
    bytes.fromhex("A000000333010102"),
    bytes.fromhex("A000000333010103"),
    bytes.fromhex("A0000000031010"),
    bytes.fromhex("A0000000032010"),
    bytes.fromhex("A0000000041010"),
    bytes.fromhex("A0000000043060"),
)

#: 9F33: IC + magstripe + manual entry; plaintext offline PIN, online PIN, signature, no CVM
#: (byte 2 = 80 + 40 + 20 + 08); SDA, DDA, CDA.
TERMINAL_CAPABILITIES = bytes.fromhex("E0E8C8")
TERMINAL_TYPE = b"\x22"                          # 9F35: attended, online capable, merchant
APP_VERSION = bytes.fromhex("0030")              # 9F09
#: 9F66 terminal transaction qualifiers (contactless): qPBOC + contact chip + online PIN +
#: signature supported (36); online cryptogram required (80), CVM required (40) above the CVM
#: limit.
TTQ_BYTE1 = 0x36
TTQ_ONLINE_CRYPTOGRAM, TTQ_CVM_REQUIRED = 0x80, 0x40

CVM_NAMES: dict[int, str] = {
    0x01: "offline_pin", 0x02: "online_pin", 0x03: "offline_pin_signature",
    0x04: "offline_enciphered_pin", 0x1E: "signature", 0x1F: "no_cvm",
}
#: CVM codes this terminal performs (9F33 byte 2) → the ECR's name of it.  03 is an offline
#: plaintext PIN followed by a signature.
SUPPORTED_CVMS: dict[int, Cvm] = {
    0x01: Cvm.OFFLINE_PIN, 0x02: Cvm.ONLINE_PIN, 0x03: Cvm.OFFLINE_PIN,
    0x1E: Cvm.SIGNATURE, 0x1F: Cvm.NO_CVM,
}
CVM_APPLY_SUCCEEDING = 0x40
#: 9F34 byte 3.
CVM_UNKNOWN, CVM_FAILED, CVM_SUCCESSFUL = 0x00, 0x01, 0x02
#: 9F34 when no CVM was performed: the list is absent (not performed), or no rule applied
#: (failed).
CVM_NOT_PERFORMED = bytes([0x3F, 0x00, 0x00])
CVM_LIST_FAILED = bytes([0x3F, 0x00, CVM_FAILED])
CID_NAMES: dict[int, str] = {0x00: "AAC", 0x40: "TC", 0x80: "ARQC"}
#: GENERATE AC reference control parameter (P1): the cryptogram asked for.
P1_AAC, P1_TC, P1_ARQC = 0x00, 0x40, 0x80
#: The answer to a second GENERATE AC the card does not perform.
UNSUPPORTED = "unsupported"
#: TVR (95) byte 3: cardholder verification was not successful; PIN try limit exceeded.
TVR3_CVM_FAILED, TVR3_PIN_LIMIT = 0x80, 0x20

# Field 55 content, in this order (tags absent from the transaction are left out).
FIELD55_TAGS: tuple[int, ...] = (
    0x9F26, 0x9F27, 0x9F10, 0x9F37, 0x9F36, 0x95, 0x9A, 0x9C, 0x9F02, 0x5F2A, 0x82, 0x9F1A,
    0x9F03, 0x9F33, 0x9F34, 0x9F35, 0x84, 0x9F09, 0x9F41, 0x9F1E, 0x5F34, 0x9F66,
)


class CardError(SimError):
    """The chip transaction failed; ``reason`` says how (``mute``, ``absent``, ``removed``,
    ``collision``, ``unsupported``, ``sw 6a82`` …)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"card {reason}" + (f": {detail}" if detail else ""))


class Slot(Protocol):
    """The card slot as the kernel sees it.  Implementations raise :class:`CardError`."""

    def power_on(self, timeout: float) -> bytes: ...

    def transmit(self, capdu: bytes, timeout: float) -> bytes: ...

    def power_off(self) -> None: ...


@dataclass
class KernelState:
    """What the kernel keeps between its steps: the card's data objects, the terminal's, and
    the exchange bound.  Never shown (the records hold the PAN and track 2)."""

    card: dict[int, bytes] = field(repr=False)
    terminal: dict[int, bytes] = field(repr=False)
    timeout: float = 2.0

    def __repr__(self) -> str:
        return f"KernelState({len(self.card)} card tags, {len(self.terminal)} terminal tags)"


@dataclass
class CardRead:
    """What the kernel read; ``repr`` shows the PAN masked and never the track data.

    ``cryptogram_type`` is ``""`` while the first GENERATE AC is still to come (an offline PIN
    to verify first).  ``powered``: the card was left powered for the next step (the caller
    ends the session).  ``entry``: ``chip`` or ``tap`` (``protocols.ecr.EntryMode``)."""

    pan: str = field(repr=False)
    pan_seq: int | None
    expiry: str                      # YYMM
    track2_equivalent: str = field(repr=False)   # 'D' separator, no trailing F
    aid: str                         # hex
    app_label: str
    icc_data: bytes = field(repr=False)           # TLV for ISO 8583 field 55
    cvm: str
    cryptogram_type: str = "ARQC"
    atr: bytes = b""
    entry: str = "chip"
    cvm_results: bytes = b""         # 9F34
    signature_too: bool = False      # CVM 03: offline PIN, then a signature
    pin_tries: int | None = None     # 9F17 when read (offline PIN)
    powered: bool = False
    state: KernelState | None = field(default=None, repr=False)
    selected: _Selected | None = field(default=None, repr=False)

    @property
    def masked_pan(self) -> str:
        return mask_pan(self.pan)

    @property
    def service_code(self) -> str:
        _, _, rest = self.track2_equivalent.partition("D")
        return rest[4:7]

    @property
    def pin_blocked(self) -> bool:
        """The card's offline PIN cannot be tried (its try counter is 0)."""
        return self.cvm == Cvm.OFFLINE_PIN and self.pin_tries == 0

    @property
    def cdol2(self) -> bytes:
        """The card's CDOL2 (8D), b"" when it has none (no second GENERATE AC)."""
        return self.state.card.get(0x8D, b"") if self.state is not None else b""

    def __repr__(self) -> str:
        return (f"CardRead(pan={self.masked_pan}, pan_seq={self.pan_seq}, aid={self.aid}, "
                f"app_label={self.app_label!r}, entry={self.entry}, cvm={self.cvm}, "
                f"cryptogram={self.cryptogram_type or 'pending'}, "
                f"icc_data={len(self.icc_data)} bytes)")

    __str__ = __repr__


@dataclass(frozen=True)
class PinCheck:
    """The card's answer to VERIFY: right (``ok``), or wrong with ``tries_left`` (0: the PIN
    is now blocked)."""

    ok: bool
    tries_left: int | None = None

    @property
    def blocked(self) -> bool:
        return not self.ok and self.tries_left == 0


@dataclass(frozen=True)
class SecondAc:
    """The card's answer to the second GENERATE AC: ``TC`` (it takes the approval), ``AAC``
    (it declines), or ``unsupported`` (no CDOL2, or 6D00: the host's decision stands)."""

    cryptogram_type: str
    icc_data: bytes = field(default=b"", repr=False)
    detail: str = ""


@dataclass(frozen=True)
class CvmChoice:
    """The cardholder verification :func:`select_cvm` chose: its ECR name, 9F34 as known
    before it is performed, and whether a signature follows (CVM 03)."""

    cvm: Cvm
    results: bytes
    signature_too: bool = False


class _Kernel:
    def __init__(self, slot: Slot, timeout: float) -> None:
        self.slot = slot
        self.timeout = timeout

    def exchange(self, cmd: CommandApdu, what: str) -> ResponseApdu:
        """Send *cmd*; follow 61xx with GET RESPONSE and 6Cxx with a re-send (bounded)."""
        raw = self.slot.transmit(cmd.to_bytes(), self.timeout)
        resp = self._parse(raw, what)
        collected = b""
        for _ in range(16):
            if resp.sw1 == 0x6C:
                cmd = CommandApdu(cmd.cla, cmd.ins, cmd.p1, cmd.p2, cmd.data, resp.sw2 or 256)
                resp = self._parse(self.slot.transmit(cmd.to_bytes(), self.timeout), what)
            elif resp.sw1 == 0x61:
                collected += resp.data
                get = CommandApdu(0x00, 0xC0, 0x00, 0x00, b"", resp.sw2 or 256)
                resp = self._parse(self.slot.transmit(get.to_bytes(), self.timeout), what)
            else:
                return ResponseApdu(collected + resp.data, resp.sw)
        raise CardError("unsupported", f"{what}: more than 16 GET RESPONSE/6Cxx rounds")

    @staticmethod
    def _parse(raw: bytes, what: str) -> ResponseApdu:
        try:
            return ResponseApdu.from_bytes(raw)
        except DecodeError as exc:
            raise CardError("unsupported", f"{what}: {exc}") from exc

    def ok(self, cmd: CommandApdu, what: str) -> bytes:
        resp = self.exchange(cmd, what)
        if resp.sw != SW_OK:
            raise CardError(f"sw {resp.sw:04x}", f"{what} answered {sw_text(resp.sw)}")
        return resp.data

    def select(self, name: bytes) -> ResponseApdu:
        return self.exchange(CommandApdu(0x00, 0xA4, 0x04, 0x00, name, 256),
                             f"SELECT {name.hex().upper()}")


def _tlv(data: bytes, what: str) -> list[tlv.Tlv]:
    try:
        return tlv.decode(data)
    except DecodeError as exc:
        raise CardError("unsupported", f"{what}: {exc}") from exc


def _flat(data: bytes, what: str) -> dict[int, bytes]:
    try:
        return tlv.flatten(data)
    except DecodeError as exc:
        raise CardError("unsupported", f"{what}: {exc}") from exc


def _dol(data: bytes, what: str) -> list[tlv.DolEntry]:
    try:
        return tlv.parse_dol(data)
    except DecodeError as exc:
        raise CardError("unsupported", f"{what}: {exc}") from exc


def _bcd_amount(minor: int) -> bytes:
    if not 0 <= minor <= 999_999_999_999:
        raise CardError("unsupported", f"amount {minor} does not fit n12")
    return bytes.fromhex(f"{minor:012d}")


def _directory_entries(items: list[tlv.Tlv]) -> list[tuple[int, bytes]]:
    """(priority, AID) of every directory entry (61: 4F AID, 87 priority) under *items*."""
    out: list[tuple[int, bytes]] = []
    stack = list(items)
    while stack:
        node = stack.pop()
        if node.tag == 0x61:
            aid = next((c.value for c in node.children if c.tag == 0x4F), None)
            prio = next((c.value[0] & 0x0F for c in node.children if c.tag == 0x87 and c.value),
                        15)
            if aid is not None:
                out.append((prio, aid))
        stack.extend(node.children)
    return out


def _pse_entries(k: _Kernel) -> list[tuple[int, bytes]]:
    """The contact directory: SELECT 1PAY.SYS.DDF01, READ RECORD of its SFI (88) until 6A83."""
    pse = k.select(PSE)
    if pse.sw != SW_OK:
        return []
    sfi = _flat(pse.data, "PSE FCI").get(0x88, b"")
    if len(sfi) != 1:
        return []
    out: list[tuple[int, bytes]] = []
    for rec in range(1, 17):
        resp = k.exchange(CommandApdu(0x00, 0xB2, rec, (sfi[0] << 3) | 4, b"", 256),
                          f"READ RECORD PSE SFI {sfi[0]} record {rec}")
        if resp.sw != SW_OK:
            break
        out += _directory_entries(_tlv(resp.data, f"PSE record {rec}"))
    return out


def _choose_aid(k: _Kernel, *, contactless: bool = False) -> tuple[bytes, ResponseApdu]:
    """The application to use: from the PPSE (contact too: UnionPay cards list theirs there),
    else (contact) the PSE directory, else the supported AIDs one by one.  A blocked
    application (SELECT answered 6283) is not chosen; if nothing else is, ``sw 6283``."""
    entries: list[tuple[int, bytes]] = []
    ppse = k.select(PPSE)
    if ppse.sw == SW_OK:
        entries = _directory_entries(_tlv(ppse.data, "PPSE FCI"))
    elif ppse.sw != 0x6A82 or contactless:
        raise CardError(f"sw {ppse.sw:04x}", f"SELECT PPSE answered {sw_text(ppse.sw)}")
    if not entries and not contactless:
        entries = _pse_entries(k)
    ranked = [(prio, aid) for prio, aid in entries
              if any(aid.startswith(s) or s.startswith(aid) for s in SUPPORTED_AIDS)]
    candidates = [aid for _, aid in sorted(ranked, key=lambda r: r[0])]
    if not candidates:
        candidates = list(SUPPORTED_AIDS)   # no directory: try the supported AIDs
    blocked = 0
    for aid in candidates:
        resp = k.select(aid)
        if resp.sw == SW_OK:
            return aid, resp
        if resp.sw == SW_SELECTED_FILE_INVALIDATED:
            blocked = resp.sw
    if blocked:
        raise CardError(f"sw {blocked:04x}", "the card's application is blocked (SELECT "
                                             f"answered {sw_text(blocked)})")
    raise CardError("unsupported", "no supported application on the card")


@dataclass(frozen=True)
class TxnParams:
    """The transaction's data the terminal gives the card (PDOL, CDOL)."""

    amount_minor: int
    txn_date: datetime.date
    unpredictable_number: bytes = field(repr=False)
    currency_code: str = "156"
    country_code: str = "156"
    txn_type: str = "00"
    amount_other_minor: int = 0
    sequence_counter: int = 1

    def terminal_data(self, aid: bytes) -> dict[int, bytes]:
        if len(self.unpredictable_number) != 4:
            raise CardError("unsupported", "unpredictable_number must be 4 bytes")
        return {
            0x9F02: _bcd_amount(self.amount_minor),
            0x9F03: _bcd_amount(self.amount_other_minor),
            0x9F1A: bytes.fromhex(self.country_code.zfill(4)),
            0x5F2A: bytes.fromhex(self.currency_code.zfill(4)),
            0x9A: bytes.fromhex(self.txn_date.strftime("%y%m%d")),
            0x9C: bytes.fromhex(self.txn_type.zfill(2)),
            0x9F37: bytes(self.unpredictable_number),
            0x9F33: TERMINAL_CAPABILITIES,
            0x9F35: TERMINAL_TYPE,
            0x9F09: APP_VERSION,
            0x9F41: bytes.fromhex(f"{self.sequence_counter % 100_000_000:08d}"),
            0x84: aid,
            0x95: bytes(5),
        }


@dataclass(frozen=True)
class _Selected:
    aid: bytes
    label: str
    terminal: dict[int, bytes]
    objects: dict[int, bytes]   # the GPO answer's data objects (82, 94, qPBOC: 9F26…)
    afl: bytes


def _select_and_gpo(k: _Kernel, txn: TxnParams, *, ttq: bytes | None = None) -> _Selected:
    """SELECT the application, GET PROCESSING OPTIONS with the PDOL data."""
    aid, fci_resp = _choose_aid(k, contactless=ttq is not None)
    fci = _flat(fci_resp.data, "application FCI")
    label = fci.get(0x50, b"").decode("ascii", "replace")
    terminal = txn.terminal_data(aid)
    if ttq is not None:
        terminal[0x9F66] = ttq
    pdol_data = tlv.build_dol(_dol(fci.get(0x9F38, b""), "PDOL"), terminal)
    gpo = k.ok(CommandApdu(0x80, 0xA8, 0x00, 0x00, tlv.encode(0x83, pdol_data), 256),
               "GET PROCESSING OPTIONS")
    items = _tlv(gpo, "GPO response")
    if items and items[0].tag == 0x80 and len(items[0].value) >= 2:
        objects = {0x82: items[0].value[:2], 0x94: items[0].value[2:]}
    else:
        objects = _flat(gpo, "GPO response")
    aip, afl = objects.get(0x82, b""), objects.get(0x94, b"")
    if len(aip) != 2 or not afl or len(afl) % 4:
        raise CardError("unsupported", f"GPO response: AIP {aip.hex()} / AFL of "
                                       f"{len(afl)} bytes not usable")
    return _Selected(aid, label, terminal, objects, afl)


def _read_records(k: _Kernel, afl: bytes, card: dict[int, bytes]) -> None:
    for i in range(0, len(afl), 4):
        sfi, first, last = afl[i] >> 3, afl[i + 1], afl[i + 2]
        for rec in range(first, last + 1):
            data = k.ok(CommandApdu(0x00, 0xB2, rec, (sfi << 3) | 4, b"", 256),
                        f"READ RECORD SFI {sfi} record {rec}")
            for key, value in _flat(data, f"record {sfi}.{rec}").items():
                card.setdefault(key, value)


def _mandatory(card: dict[int, bytes], tags: tuple[int, ...]) -> None:
    for tag in tags:
        if tag not in card:
            raise CardError("unsupported", f"mandatory tag {tag:X} missing from records")


def _card_read(state: KernelState, sel: _Selected, *, atr: bytes, choice: CvmChoice,
               entry: str, acd: dict[int, bytes] | None, pin_tries: int | None = None,
               powered: bool = False) -> CardRead:
    card, terminal = state.card, state.terminal
    icc, cid = b"", ""
    if acd is not None:
        cid = CID_NAMES.get(acd[0x9F27][0] & 0xC0, "RFU")
        everything = {**card, **terminal, **acd}
        icc = b"".join(tlv.encode(t, everything[t]) for t in FIELD55_TAGS if t in everything)
    pan = card[0x5A].hex().upper().rstrip("F")
    track2 = card[0x57].hex().upper().rstrip("F")
    psn = card.get(0x5F34)
    return CardRead(
        pan=pan, pan_seq=int(psn.hex()) if psn and ascii_digits(psn.hex()) else None,
        expiry=card[0x5F24].hex()[:4], track2_equivalent=track2, aid=sel.aid.hex().upper(),
        app_label=sel.label, icc_data=icc, cvm=str(choice.cvm), cryptogram_type=cid, atr=atr,
        entry=entry, cvm_results=choice.results, signature_too=choice.signature_too,
        pin_tries=pin_tries, powered=powered, state=state, selected=sel)


def _ac_data(ac: bytes, what: str) -> dict[int, bytes]:
    items = _tlv(ac, f"{what} response")
    if items and items[0].tag == 0x80 and len(items[0].value) >= 11:
        v = items[0].value
        acd = {0x9F27: v[0:1], 0x9F36: v[1:3], 0x9F26: v[3:11], 0x9F10: v[11:]}
    else:
        acd = _flat(ac, f"{what} response")
    for tag in (0x9F27, 0x9F36, 0x9F26):
        if tag not in acd:
            raise CardError("unsupported", f"{what} response lacks {tag:X}")
    return acd


# ---------------------------------------------------------------------------------- CVM

def _condition_met(cond: int, code: int, amount_minor: int, x: int, y: int,
                   same_currency: bool) -> bool:
    """CVM condition codes (EMV Book 3, C3) for a purchase without cashback at an attended
    terminal; X and Y only compare in the application's currency."""
    if cond == 0x00:
        return True
    if cond == 0x02:   # not unattended cash, not manual cash, not cashback: a purchase
        return True
    if cond == 0x03:
        return code in SUPPORTED_CVMS
    amounts = {0x06: lambda: amount_minor < x, 0x07: lambda: amount_minor > x,
               0x08: lambda: amount_minor < y, 0x09: lambda: amount_minor > y}
    check = amounts.get(cond)
    return bool(same_currency and check is not None and check())


def select_cvm(cvm_list: bytes, *, amount_minor: int, same_currency: bool = True,
               pin_tries: int | None = None) -> CvmChoice:
    """The first rule of the CVM list (8E) whose condition holds and which this terminal
    performs (EMV Book 3, 10.5).  A rule it cannot perform, or an offline PIN whose try counter
    is 0, passes to the next rule when the rule says "apply succeeding" (bit 7), else
    cardholder verification fails.  No list: no CVM (not performed); no rule left: failed."""
    if len(cvm_list) < 10:
        return CvmChoice(Cvm.NO_CVM, CVM_NOT_PERFORMED)
    x, y = int.from_bytes(cvm_list[0:4], "big"), int.from_bytes(cvm_list[4:8], "big")
    rules = cvm_list[8:]
    for i in range(0, len(rules) - 1, 2):
        method, cond = rules[i], rules[i + 1]
        code = method & 0x3F
        succeeding = bool(method & CVM_APPLY_SUCCEEDING)
        if not _condition_met(cond, code, amount_minor, x, y, same_currency):
            continue
        blocked = code in (0x01, 0x03) and pin_tries == 0
        if code not in SUPPORTED_CVMS or blocked:
            if succeeding:
                continue
            if blocked:   # the offline PIN is the CVM, and it cannot be tried
                return CvmChoice(Cvm.OFFLINE_PIN, bytes([method, cond, CVM_FAILED]))
            return CvmChoice(Cvm.NO_CVM, CVM_LIST_FAILED)
        result = CVM_SUCCESSFUL if code == 0x1F else CVM_UNKNOWN
        return CvmChoice(SUPPORTED_CVMS[code], bytes([method, cond, result]),
                         signature_too=code == 0x03)
    return CvmChoice(Cvm.NO_CVM, CVM_LIST_FAILED)


def _pin_tries(k: _Kernel) -> int | None:
    """GET DATA 9F17 (PIN try counter); None when the card does not say."""
    resp = k.exchange(CommandApdu(0x80, 0xCA, 0x9F, 0x17, b"", 256), "GET DATA 9F17")
    if resp.sw != SW_OK:
        return None
    value = tlv.find(resp.data, 0x9F17) if resp.data else None
    return value[0] if value else None


def plaintext_pin_block(pin: str) -> bytes:
    """ICC plaintext PIN block (EMV Book 3, 6.5.12): control 2, PIN length, the digits, F
    filler; 8 bytes."""
    if not (ascii_digits(pin) and 4 <= len(pin) <= 12):
        raise CardError("unsupported", f"a PIN is 4 to 12 digits ({len(pin)} given)")
    return bytes.fromhex(f"2{len(pin):X}{pin}".ljust(16, "F"))


# ---------------------------------------------------------------------------------- steps

def read_chip(slot: Slot, txn: TxnParams, *, timeout: float = 2.0) -> CardRead:
    """Step 1 of a contact transaction (module doc): read the card, choose its CVM, and ask
    for the ARQC unless the CVM is an offline PIN (``cryptogram_type`` is then ``""``).  The
    card is left powered (``powered``); on failure it is powered off."""
    k = _Kernel(slot, timeout)
    atr = slot.power_on(timeout)
    try:
        problem = atr_problem(atr)
        if problem is not None:   # EMV Book 1, 8.3: a card whose ATR breaks 7816-3 is rejected
            raise CardError(Reason.BAD_ATR, problem)
        sel = _select_and_gpo(k, txn)
        card: dict[int, bytes] = {0x82: sel.objects[0x82]}
        _read_records(k, sel.afl, card)
        _mandatory(card, (0x5A, 0x5F24, 0x57, 0x8C))
        state = KernelState(card, sel.terminal, timeout)
        cvm_list = card.get(0x8E, b"")
        currency = sel.terminal[0x5F2A]
        same_currency = card.get(0x9F42, currency) == currency
        choice = select_cvm(cvm_list, amount_minor=txn.amount_minor,
                            same_currency=same_currency)
        tries: int | None = None
        if choice.cvm is Cvm.OFFLINE_PIN:
            tries = _pin_tries(k)
            if tries == 0:
                choice = select_cvm(cvm_list, amount_minor=txn.amount_minor,
                                    same_currency=same_currency, pin_tries=0)
        # an offline PIN is checked by the card before the first GENERATE AC
        acd = None if choice.cvm is Cvm.OFFLINE_PIN else _first_ac(k, state, choice.results)
        read = _card_read(state, sel, atr=atr, choice=choice, entry="chip", acd=acd,
                          pin_tries=tries, powered=True)
        log.info("chip read %r", read)
        return read
    except BaseException:
        slot.power_off()
        raise


def _first_ac(k: _Kernel, state: KernelState, cvm_results: bytes) -> dict[int, bytes]:
    state.terminal[0x9F34] = cvm_results
    if cvm_results[2:3] == bytes([CVM_FAILED]):
        tvr = bytearray(state.terminal[0x95])
        tvr[2] |= TVR3_CVM_FAILED
        state.terminal[0x95] = bytes(tvr)
    cdol1 = _dol(state.card[0x8C], "CDOL1")
    cdol_data = tlv.build_dol(cdol1, {**state.card, **state.terminal})
    ac = k.ok(CommandApdu(0x80, 0xAE, P1_ARQC, 0x00, cdol_data, 256), "GENERATE AC")
    return _ac_data(ac, "GENERATE AC")


def verify_pin(slot: Slot, read: CardRead, pin: str) -> PinCheck:
    """Step 2a: VERIFY the offline plaintext PIN (``00 20 00 80 08`` + PIN block).  The card
    stays powered; a status word other than 9000 / 63Cx / 6983 is a CardError."""
    state = _state(read, "VERIFY")
    k = _Kernel(slot, state.timeout)
    resp = k.exchange(CommandApdu(0x00, 0x20, 0x00, 0x80, plaintext_pin_block(pin)), "VERIFY")
    if resp.sw == SW_OK:
        return PinCheck(True)
    if resp.sw1 == 0x63 and resp.sw2 & 0xF0 == 0xC0:
        return PinCheck(False, resp.sw2 & 0x0F)
    if resp.sw in (SW_AUTH_METHOD_BLOCKED, 0x6984):
        return PinCheck(False, 0)
    raise CardError(f"sw {resp.sw:04x}", f"VERIFY answered {sw_text(resp.sw)}")


def generate_first_ac(slot: Slot, read: CardRead, *, pin_verified: bool) -> CardRead:
    """Step 2b, after :func:`verify_pin`: the first GENERATE AC (ARQC) with 9F34 saying
    whether the offline PIN was verified."""
    state = _state(read, "GENERATE AC")
    if read.selected is None:
        raise CardError("unsupported", "GENERATE AC: the card session is gone")
    result = CVM_SUCCESSFUL if pin_verified else CVM_FAILED
    choice = CvmChoice(Cvm(read.cvm), (read.cvm_results[:2] or bytes([0x01, 0x00]))
                       + bytes([result]), read.signature_too)
    acd = _first_ac(_Kernel(slot, state.timeout), state, choice.results)
    done = _card_read(state, read.selected, atr=read.atr, choice=choice, entry=read.entry,
                      acd=acd, pin_tries=read.pin_tries, powered=True)
    log.info("chip read %r", done)
    return done


def generate_second_ac(slot: Slot, read: CardRead, *, approve: bool, response_code: str,
                       issuer_auth: bytes = b"") -> SecondAc:
    """Step 3: the second GENERATE AC, a TC asked for when the host approved (*approve*), an
    AAC otherwise; CDOL2 filled with 8A = *response_code* (2 ASCII characters, field 39) and
    91 = *issuer_auth* (from field 55 of the answer).  The card stays powered."""
    cdol2 = read.cdol2
    if not cdol2:
        return SecondAc(UNSUPPORTED, detail="the card has no CDOL2 (8D)")
    state = _state(read, "second GENERATE AC")
    values = {**state.card, **state.terminal, 0x8A: response_code.encode("ascii")[:2]}
    if issuer_auth:
        values[0x91] = issuer_auth
    data = tlv.build_dol(_dol(cdol2, "CDOL2"), values)
    p1 = P1_TC if approve else P1_AAC
    resp = _Kernel(slot, state.timeout).exchange(CommandApdu(0x80, 0xAE, p1, 0x00, data, 256),
                                                 "second GENERATE AC")
    if resp.sw == SW_INS_NOT_SUPPORTED:
        return SecondAc(UNSUPPORTED, detail=f"the card answered {sw_text(resp.sw)}")
    if resp.sw != SW_OK:
        raise CardError(f"sw {resp.sw:04x}", f"second GENERATE AC answered {sw_text(resp.sw)}")
    acd = _ac_data(resp.data, "second GENERATE AC")
    cid = CID_NAMES.get(acd[0x9F27][0] & 0xC0, "RFU")
    if cid == "TC" and not approve:   # a card may not give more than it was asked for
        raise CardError("unsupported", "second GENERATE AC: TC given, AAC asked for")
    icc = b"".join(tlv.encode(t, acd[t]) for t in (0x9F26, 0x9F27, 0x9F36, 0x9F10) if t in acd)
    log.info("second GENERATE AC of %s: %s", mask_pan(read.pan), cid)
    return SecondAc("TC" if cid == "TC" else "AAC", icc)


def power_off(slot: Slot) -> None:
    """Step 4: end the card session."""
    slot.power_off()


def _state(read: CardRead, what: str) -> KernelState:
    if read.state is None:
        raise CardError("unsupported", f"{what}: the card session is gone (no kernel state)")
    return read.state


def read_contactless(slot: Slot, txn: TxnParams, *, cvm_required: bool,
                     timeout: float = 2.0) -> CardRead:
    """The contactless kernel (module doc).  *cvm_required* (the amount is above the
    contactless CVM limit): TTQ says so and the CVM is online PIN; else no CVM.  The field is
    reset at the end, success or not."""
    k = _Kernel(slot, timeout)
    atr = slot.power_on(timeout)
    try:
        ttq = bytes([TTQ_BYTE1, TTQ_ONLINE_CRYPTOGRAM | (TTQ_CVM_REQUIRED if cvm_required
                                                         else 0), 0x00, 0x00])
        sel = _select_and_gpo(k, txn, ttq=ttq)
        card: dict[int, bytes] = {0x82: sel.objects[0x82]}
        _read_records(k, sel.afl, card)
        _mandatory(card, (0x5A, 0x5F24, 0x57))
        state = KernelState(card, sel.terminal, timeout)
        choice = (CvmChoice(Cvm.ONLINE_PIN, bytes([0x02, 0x00, CVM_UNKNOWN])) if cvm_required
                  else CvmChoice(Cvm.NO_CVM, bytes([0x1F, 0x00, CVM_SUCCESSFUL])))
        state.terminal[0x9F34] = choice.results
        if 0x9F26 in sel.objects:   # qPBOC: the cryptogram came with the GPO answer
            acd: dict[int, bytes] = {t: sel.objects[t] for t in (0x9F26, 0x9F36, 0x9F10)
                                     if t in sel.objects}
            acd[0x9F27] = sel.objects.get(0x9F27, bytes([P1_ARQC]))
            if 0x9F36 not in acd:
                raise CardError("unsupported", "GPO response has 9F26 but lacks 9F36")
        elif 0x8C in card:
            acd = _first_ac(k, state, choice.results)
        else:
            raise CardError("unsupported", "no cryptogram in the GPO response and no CDOL1 "
                                           "for a GENERATE AC")
        read = _card_read(state, sel, atr=atr, choice=choice, entry="tap", acd=acd)
        log.info("contactless read %r", read)
        return read
    finally:
        slot.power_off()


def run_chip_transaction(slot: Slot, *, amount_minor: int, currency_code: str = "156",
                         country_code: str = "156", txn_date: datetime.date,
                         txn_type: str = "00", unpredictable_number: bytes,
                         timeout: float = 2.0, amount_other_minor: int = 0,
                         sequence_counter: int = 1) -> CardRead:
    """One contact EMV purchase up to the first GENERATE AC (ARQC), card powered off at the end.
    An offline-PIN card gets its GENERATE AC with the PIN not verified (a tool has no PIN)."""
    txn = TxnParams(amount_minor, txn_date, unpredictable_number, currency_code, country_code,
                    txn_type, amount_other_minor, sequence_counter)
    read = read_chip(slot, txn, timeout=timeout)
    try:
        if not read.cryptogram_type:
            read = generate_first_ac(slot, read, pin_verified=False)
    finally:
        slot.power_off()
    return dataclasses.replace(read, powered=False)
