"""The terminal's EMV contact kernel, pure over an abstract card slot.

The firmware hands :func:`run_chip_transaction` a :class:`Slot` (in the virtual bench: the
harness messages ``card_power`` / ``capdu`` answered by ``atr`` / ``rapdu``).  The kernel does:
power on → SELECT PPSE (fallback: SELECT of the known UnionPay AIDs) → SELECT AID → GET
PROCESSING OPTIONS with the PDOL data → READ RECORD for every AFL entry → first GENERATE AC
asking for an ARQC with the CDOL1 data → power off.  T=0 procedure bytes are handled here, as a
real kernel does: ``61xx`` → GET RESPONSE with Le=xx, ``6Cxx`` → the same command again with Le=xx.

Every failure is a :class:`CardError` whose ``reason`` is one of ``mute``, ``absent``,
``removed``, ``unsupported`` or ``sw <hex>``; messages never contain the PAN or track data.
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass, field
from typing import Protocol

from protocols import tlv
from protocols.apdu import SW_OK, CommandApdu, ResponseApdu, sw_text
from protocols.errors import DecodeError, SimError
from protocols.masking import mask_pan

log = logging.getLogger(__name__)

PPSE = b"2PAY.SYS.DDF01"
# Applications this terminal supports (UnionPay debit, credit, quasi-credit), in priority order.
SUPPORTED_AIDS: tuple[bytes, ...] = (
    bytes.fromhex("A000000333010101"),
    bytes.fromhex("A000000333010102"),
    bytes.fromhex("A000000333010103"),
)
TERMINAL_CAPABILITIES = bytes.fromhex("E0F0C8")  # 9F33: IC+mag+manual; online PIN, sign., none
TERMINAL_TYPE = b"\x22"                          # 9F35: attended, online capable, merchant
APP_VERSION = bytes.fromhex("0030")              # 9F09

CVM_NAMES: dict[int, str] = {
    0x01: "offline_pin", 0x02: "online_pin", 0x03: "offline_pin_signature",
    0x04: "offline_enciphered_pin", 0x1E: "signature", 0x1F: "no_cvm",
}
CID_NAMES: dict[int, str] = {0x00: "AAC", 0x40: "TC", 0x80: "ARQC"}

# Field 55 content, in this order (tags absent from the transaction are left out).
FIELD55_TAGS: tuple[int, ...] = (
    0x9F26, 0x9F27, 0x9F10, 0x9F37, 0x9F36, 0x95, 0x9A, 0x9C, 0x9F02, 0x5F2A, 0x82, 0x9F1A,
    0x9F03, 0x9F33, 0x9F34, 0x9F35, 0x84, 0x9F09, 0x9F41, 0x9F1E, 0x5F34,
)


class CardError(SimError):
    """The chip transaction failed; ``reason`` says how (``mute``, ``absent``, ``removed``,
    ``unsupported``, ``sw 6a82`` …)."""

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
class CardRead:
    """What the kernel read; ``repr`` shows the PAN masked and never the track data."""

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

    @property
    def masked_pan(self) -> str:
        return mask_pan(self.pan)

    @property
    def service_code(self) -> str:
        _, _, rest = self.track2_equivalent.partition("D")
        return rest[4:7]

    def __repr__(self) -> str:
        return (f"CardRead(pan={self.masked_pan}, pan_seq={self.pan_seq}, aid={self.aid}, "
                f"app_label={self.app_label!r}, cvm={self.cvm}, "
                f"cryptogram={self.cryptogram_type}, icc_data={len(self.icc_data)} bytes)")

    __str__ = __repr__


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


def _bcd_amount(minor: int) -> bytes:
    if not 0 <= minor <= 999_999_999_999:
        raise CardError("unsupported", f"amount {minor} does not fit n12")
    return bytes.fromhex(f"{minor:012d}")


def _choose_aid(k: _Kernel) -> tuple[bytes, ResponseApdu]:
    candidates: list[bytes] = []
    ppse = k.select(PPSE)
    if ppse.sw == SW_OK:
        entries = []
        for top in _tlv(ppse.data, "PPSE FCI"):
            stack = [top]
            while stack:
                node = stack.pop()
                if node.tag == 0x61:
                    entries.append(node)
                stack.extend(node.children)
        ranked: list[tuple[int, bytes]] = []
        for entry in entries:
            aid = next((c.value for c in entry.children if c.tag == 0x4F), None)
            prio = next((c.value[0] & 0x0F for c in entry.children if c.tag == 0x87 and c.value),
                        15)
            if aid is not None and any(aid.startswith(s) or s.startswith(aid)
                                       for s in SUPPORTED_AIDS):
                ranked.append((prio, aid))
        candidates = [aid for _, aid in sorted(ranked, key=lambda r: r[0])]
    elif ppse.sw != 0x6A82:
        raise CardError(f"sw {ppse.sw:04x}", f"SELECT PPSE answered {sw_text(ppse.sw)}")
    if not candidates:
        candidates = list(SUPPORTED_AIDS)   # no PPSE: try the list of supported AIDs
    for aid in candidates:
        resp = k.select(aid)
        if resp.sw == SW_OK:
            return aid, resp
    raise CardError("unsupported", "no supported application on the card")


def run_chip_transaction(slot: Slot, *, amount_minor: int, currency_code: str = "156",
                         country_code: str = "156", txn_date: datetime.date,
                         txn_type: str = "00", unpredictable_number: bytes,
                         timeout: float = 2.0, amount_other_minor: int = 0,
                         sequence_counter: int = 1) -> CardRead:
    """Run one contact EMV purchase up to the first GENERATE AC (ARQC) and read the card."""
    if len(unpredictable_number) != 4:
        raise CardError("unsupported", "unpredictable_number must be 4 bytes")
    k = _Kernel(slot, timeout)
    atr = slot.power_on(timeout)
    try:
        aid, fci_resp = _choose_aid(k)
        fci = _flat(fci_resp.data, "application FCI")
        label = fci.get(0x50, b"").decode("ascii", "replace")
        tvr = bytearray(5)
        terminal: dict[int, bytes] = {
            0x9F02: _bcd_amount(amount_minor),
            0x9F03: _bcd_amount(amount_other_minor),
            0x9F1A: bytes.fromhex(country_code.zfill(4)),
            0x5F2A: bytes.fromhex(currency_code.zfill(4)),
            0x9A: bytes.fromhex(txn_date.strftime("%y%m%d")),
            0x9C: bytes.fromhex(txn_type.zfill(2)),
            0x9F37: bytes(unpredictable_number),
            0x9F33: TERMINAL_CAPABILITIES,
            0x9F35: TERMINAL_TYPE,
            0x9F09: APP_VERSION,
            0x9F41: bytes.fromhex(f"{sequence_counter % 100_000_000:08d}"),
            0x84: aid,
        }
        try:
            pdol = tlv.parse_dol(fci.get(0x9F38, b""))
        except DecodeError as exc:
            raise CardError("unsupported", f"PDOL: {exc}") from exc
        pdol_data = tlv.build_dol(pdol, terminal)
        gpo = k.ok(CommandApdu(0x80, 0xA8, 0x00, 0x00, tlv.encode(0x83, pdol_data), 256),
                   "GET PROCESSING OPTIONS")
        items = _tlv(gpo, "GPO response")
        if items and items[0].tag == 0x80 and len(items[0].value) >= 2:
            aip, afl = items[0].value[:2], items[0].value[2:]
        else:
            flat = _flat(gpo, "GPO response")
            aip, afl = flat.get(0x82, b""), flat.get(0x94, b"")
        if len(aip) != 2 or not afl or len(afl) % 4:
            raise CardError("unsupported", f"GPO response: AIP {aip.hex()} / AFL of "
                                           f"{len(afl)} bytes not usable")
        card: dict[int, bytes] = {0x82: aip}
        for i in range(0, len(afl), 4):
            sfi, first, last = afl[i] >> 3, afl[i + 1], afl[i + 2]
            for rec in range(first, last + 1):
                data = k.ok(CommandApdu(0x00, 0xB2, rec, (sfi << 3) | 4, b"", 256),
                            f"READ RECORD SFI {sfi} record {rec}")
                for key, value in _flat(data, f"record {sfi}.{rec}").items():
                    card.setdefault(key, value)
        for tag in (0x5A, 0x5F24, 0x57, 0x8C):
            if tag not in card:
                raise CardError("unsupported", f"mandatory tag {tag:X} missing from records")

        cvm, cvm_results = _cardholder_verification(card.get(0x8E, b""))
        terminal[0x9F34] = cvm_results
        terminal[0x95] = bytes(tvr)
        try:
            cdol1 = tlv.parse_dol(card[0x8C])
        except DecodeError as exc:
            raise CardError("unsupported", f"CDOL1: {exc}") from exc
        cdol_data = tlv.build_dol(cdol1, {**card, **terminal})
        ac = k.ok(CommandApdu(0x80, 0xAE, 0x80, 0x00, cdol_data, 256), "GENERATE AC")
        items = _tlv(ac, "GENERATE AC response")
        if items and items[0].tag == 0x80 and len(items[0].value) >= 11:
            v = items[0].value
            acd = {0x9F27: v[0:1], 0x9F36: v[1:3], 0x9F26: v[3:11], 0x9F10: v[11:]}
        else:
            acd = _flat(ac, "GENERATE AC response")
        for tag in (0x9F27, 0x9F36, 0x9F26):
            if tag not in acd:
                raise CardError("unsupported", f"GENERATE AC response lacks {tag:X}")
        cid = CID_NAMES.get(acd[0x9F27][0] & 0xC0, "RFU")
        everything = {**card, **terminal, **acd}
        icc = b"".join(tlv.encode(t, everything[t]) for t in FIELD55_TAGS if t in everything)
        pan = card[0x5A].hex().upper().rstrip("F")
        track2 = card[0x57].hex().upper().rstrip("F")
        psn = card.get(0x5F34)
        read = CardRead(
            pan=pan, pan_seq=int(psn.hex()) if psn and psn.hex().isdigit() else None,
            expiry=card[0x5F24].hex()[:4], track2_equivalent=track2, aid=aid.hex().upper(),
            app_label=label, icc_data=icc, cvm=cvm, cryptogram_type=cid, atr=atr)
        log.info("chip read %r", read)
        return read
    finally:
        slot.power_off()


def _cardholder_verification(cvm_list: bytes) -> tuple[str, bytes]:
    """Pick the first CVM rule this terminal supports; returns (name, 9F34 CVM results)."""
    rules = cvm_list[8:]
    for i in range(0, len(rules) - 1, 2):
        code, cond = rules[i] & 0x3F, rules[i + 1]
        if code in (0x02, 0x1E, 0x1F):   # the CVMs in 9F33 E0F0C8 this terminal performs
            result = 0x00 if code == 0x02 else (0x02 if code == 0x1F else 0x00)
            return CVM_NAMES[code], bytes([rules[i], cond, result])
    return "no_cvm", bytes([0x3F, 0x00, 0x01])   # no CVM performed, failed
