"""The terminal's EMV kernels step by step (sim/terminal/emv.py) against a scripted card:
CVM selection, the offline PIN (VERIFY, try counter), the first and second GENERATE AC, the
contactless kernel (cryptogram in GPO or by GENERATE AC), the PSE directory, a blocked
application, a bad ATR.  Exact commands are asserted."""

from __future__ import annotations

import datetime

import pytest

from protocols import tlv
from protocols.ecr import Cvm
from sim.terminal.emv import (
    CVM_LIST_FAILED,
    CVM_NOT_PERFORMED,
    CardError,
    PinCheck,
    TxnParams,
    generate_first_ac,
    generate_second_ac,
    plaintext_pin_block,
    read_chip,
    read_contactless,
    select_cvm,
    verify_pin,
)

H = bytes.fromhex
AID = H("A000000333010101")
PDOL = H("9F0206" "9F1A02" "5F2A02" "9A03" "9C01" "9F3704")
PDOL_TTQ = PDOL + H("9F6604")
CDOL1 = H("9F0206" "9F0306" "9F1A02" "9505" "5F2A02" "9A03" "9C01" "9F3704" "9F3501" "9F3403")
CDOL2 = H("8A02" "910A" "9505" "9F3704")
TXN = TxnParams(12_345, datetime.date(2026, 5, 4), H("A1B2C3D4"))
GOOD_ATR = H("3B6500002063CB6600")


def rules(*pairs: tuple[int, int], x: int = 0, y: int = 0) -> bytes:
    return x.to_bytes(4, "big") + y.to_bytes(4, "big") + bytes(b for p in pairs for b in p)


class ScriptedCard:
    """A slot with a card behind it, answering by instruction; every command is logged."""

    def __init__(self, *, cvm_list: bytes = rules((0x02, 0x03), (0x1F, 0x00)),
                 cdol2: bytes | None = CDOL2, ppse: bool = True, pse: bool = False,
                 blocked: bool = False, pin: str = "1234", tries: int = 3,
                 qpboc: bool = False, pdol: bytes = PDOL, atr: bytes = GOOD_ATR,
                 second_sw: int = 0x9000, second_cid: int = 0x40) -> None:
        self.cvm_list, self.cdol2, self.ppse, self.pse = cvm_list, cdol2, ppse, pse
        self.blocked, self.pin, self.tries, self.qpboc, self.pdol = (blocked, pin, tries, qpboc,
                                                                     pdol)
        self.atr, self.second_sw, self.second_cid = atr, second_sw, second_cid
        self.log: list[str] = []
        self.powered = False
        self.gac = 0
        self.selected = ""

    # Slot
    def power_on(self, timeout: float) -> bytes:
        self.powered = True
        return self.atr

    def power_off(self) -> None:
        self.powered = False

    def transmit(self, capdu: bytes, timeout: float) -> bytes:
        self.log.append(capdu.hex().upper())
        ins = capdu[1]
        handler = {0xA4: self._select, 0xA8: self._gpo, 0xB2: self._record, 0xCA: self._data,
                   0x20: self._verify, 0xAE: self._gac}[ins]
        return handler(capdu)

    # the card
    def _select(self, c: bytes) -> bytes:
        name = c[5:5 + c[4]]
        entry = tlv.encode(0x61, tlv.encode(0x4F, AID) + tlv.encode(0x87, b"\x01"))
        self.selected = ""
        if name == b"2PAY.SYS.DDF01":
            if not self.ppse:
                return H("6A82")
            return tlv.encode(0x6F, tlv.encode(0xA5, tlv.encode(0xBF0C, entry))) + H("9000")
        if name == b"1PAY.SYS.DDF01":
            if not self.pse:
                return H("6A82")
            self.selected = "pse"
            return tlv.encode(0x6F, tlv.encode(0xA5, tlv.encode(0x88, b"\x01"))) + H("9000")
        if AID.startswith(name):
            self.selected = "app"
            fci = tlv.encode(0x6F, tlv.encode(0x84, AID) + tlv.encode(0xA5, tlv.encode(
                0x50, b"UnionPay Debit") + tlv.encode(0x9F38, self.pdol)))
            return fci + (H("6283") if self.blocked else H("9000"))
        return H("6A82")

    def _gpo(self, c: bytes) -> bytes:
        objects = tlv.encode(0x82, H("1800")) + tlv.encode(0x94, H("08010200"))
        if self.qpboc:
            objects += (tlv.encode(0x9F26, H("1122334455667788")) + tlv.encode(0x9F36, H("0007"))
                        + tlv.encode(0x9F10, H("07010103A00000")))
        return tlv.encode(0x77, objects) + H("9000")

    def _record(self, c: bytes) -> bytes:
        rec = c[2]
        if self.selected == "pse":
            if rec != 1:
                return H("6A83")
            entry = tlv.encode(0x61, tlv.encode(0x4F, AID) + tlv.encode(0x87, b"\x01"))
            return tlv.encode(0x70, entry) + H("9000")
        if rec == 1:
            return tlv.encode(0x70, tlv.encode(0x57, H("6214830000000017D30122200000000000"))
                              ) + H("9000")
        if rec == 2:
            objs = (tlv.encode(0x5A, H("6214830000000017")) + tlv.encode(0x5F24, H("301231"))
                    + tlv.encode(0x5F34, b"\x01") + tlv.encode(0x8C, CDOL1)
                    + tlv.encode(0x8E, self.cvm_list))
            if self.cdol2 is not None:
                objs += tlv.encode(0x8D, self.cdol2)
            return tlv.encode(0x70, objs) + H("9000")
        return H("6A83")

    def _data(self, c: bytes) -> bytes:
        return tlv.encode(0x9F17, bytes([self.tries])) + H("9000")

    def _verify(self, c: bytes) -> bytes:
        if self.tries == 0:
            return H("6983")
        if c[5:] == plaintext_pin_block(self.pin):
            return H("9000")
        self.tries -= 1
        return bytes([0x63, 0xC0 | self.tries])

    def _gac(self, c: bytes) -> bytes:
        self.gac += 1
        if self.gac == 2 and self.second_sw != 0x9000:
            return self.second_sw.to_bytes(2, "big")
        cid = 0x80 if self.gac == 1 else (self.second_cid if c[2] == 0x40 else 0x00)
        return tlv.encode(0x77, tlv.encode(0x9F27, bytes([cid])) + tlv.encode(0x9F36, H("0007"))
                          + tlv.encode(0x9F26, H("8877665544332211"))) + H("9000")


# -- CVM selection -----------------------------------------------------------------------------

@pytest.mark.parametrize(("cvm_list", "amount", "tries", "cvm", "results"), [
    (rules((0x02, 0x03), (0x1F, 0x00)), 100, None, Cvm.ONLINE_PIN, "020300"),
    (rules((0x01, 0x03), (0x1F, 0x00)), 100, 3, Cvm.OFFLINE_PIN, "010300"),
    (rules((0x1E, 0x03)), 100, None, Cvm.SIGNATURE, "1E0300"),
    (rules((0x1F, 0x00)), 100, None, Cvm.NO_CVM, "1F0002"),
    # offline PIN blocked: "apply succeeding" (bit 7) passes to the signature
    (rules((0x41, 0x03), (0x1E, 0x03)), 100, 0, Cvm.SIGNATURE, "1E0300"),
    # offline PIN blocked, no succeeding rule: the PIN is the CVM, and it failed
    (rules((0x01, 0x00), (0x1E, 0x03)), 100, 0, Cvm.OFFLINE_PIN, "010001"),
    # enciphered offline PIN is not supported here: the succeeding rule applies / fails
    (rules((0x44, 0x00), (0x02, 0x00)), 100, None, Cvm.ONLINE_PIN, "020000"),
    (rules((0x04, 0x00), (0x02, 0x00)), 100, None, Cvm.NO_CVM, CVM_LIST_FAILED.hex()),
    # amount conditions: no CVM under X (06), online PIN over X (07)
    (rules((0x1F, 0x06), (0x02, 0x07), x=30000), 29999, None, Cvm.NO_CVM, "1F0602"),
    (rules((0x1F, 0x06), (0x02, 0x07), x=30000), 30001, None, Cvm.ONLINE_PIN, "020700"),
    (b"", 100, None, Cvm.NO_CVM, CVM_NOT_PERFORMED.hex()),
    # 03 = offline PIN then a signature
    (rules((0x03, 0x03)), 100, 3, Cvm.OFFLINE_PIN, "030300"),
])
def test_select_cvm(cvm_list: bytes, amount: int, tries: int | None, cvm: Cvm,
                    results: str) -> None:
    choice = select_cvm(cvm_list, amount_minor=amount, pin_tries=tries)
    assert (choice.cvm, choice.results.hex().upper()) == (cvm, results.upper())
    assert choice.signature_too == (cvm_list[8:9] == b"\x03")


def test_amount_conditions_need_the_application_currency() -> None:
    choice = select_cvm(rules((0x02, 0x07), (0x1F, 0x00), x=10), amount_minor=100,
                        same_currency=False)
    assert choice.cvm is Cvm.NO_CVM


def test_plaintext_pin_block() -> None:
    assert plaintext_pin_block("1234") == H("241234FFFFFFFFFF")
    assert plaintext_pin_block("123456789012") == H("2C123456789012FF")
    with pytest.raises(CardError, match="4 to 12 digits"):
        plaintext_pin_block("12")


# -- offline PIN, first and second GENERATE AC --------------------------------------------------

def test_offline_pin_card_stops_before_the_first_generate_ac() -> None:
    card = ScriptedCard(cvm_list=rules((0x01, 0x03), (0x1F, 0x00)))
    read = read_chip(card, TXN)
    assert card.log == [
        "00A404000E325041592E5359532E444446303100",
        "00A4040008A00000033301010100",
        "80A80000148312" "000000012345" "0156" "0156" "260504" "00" "A1B2C3D4" "00",
        "00B2010C00", "00B2020C00",
        "80CA9F1700",                                   # PIN try counter
    ]
    assert (read.cvm, read.cryptogram_type, read.pin_tries, read.powered) == (
        "offline_pin", "", 3, True)
    assert card.powered and read.cdol2 == CDOL2 and not read.pin_blocked

    assert verify_pin(card, read, "9999") == PinCheck(False, 2)
    assert card.log[-1] == "0020008008" "2499 99FF FFFF FFFF".replace(" ", "")
    assert verify_pin(card, read, "1234") == PinCheck(True)
    done = generate_first_ac(card, read, pin_verified=True)
    gac = H(card.log[-1])
    assert gac[:5] == H("80AE800021")
    assert gac[5:][-4:-1] == H("010302")                # 9F34: offline PIN, successful
    assert done.cryptogram_type == "ARQC" and tlv.flatten(done.icc_data)[0x9F34] == H("010302")
    assert card.powered                                 # the session goes on


def test_verify_blocked_and_pin_blocked_before_asking() -> None:
    card = ScriptedCard(cvm_list=rules((0x01, 0x03)), tries=1)
    read = read_chip(card, TXN)
    check = verify_pin(card, read, "0000")
    assert check == PinCheck(False, 0) and check.blocked
    assert verify_pin(card, read, "1234").blocked       # 6983 now
    blocked = read_chip(ScriptedCard(cvm_list=rules((0x01, 0x03)), tries=0), TXN)
    assert blocked.pin_blocked and blocked.cryptogram_type == ""


def test_online_pin_card_gets_its_first_generate_ac_at_once() -> None:
    card = ScriptedCard()
    read = read_chip(card, TXN)
    assert card.log[-1].startswith("80AE800021") and read.cryptogram_type == "ARQC"
    assert read.powered and card.powered and "80CA9F1700" not in card.log


ISSUER_AUTH = H("0102030405060708") + b"00"


@pytest.mark.parametrize(("approve", "sw", "cid", "expected"), [
    (True, 0x9000, 0x40, "TC"),
    (True, 0x9000, 0x00, "AAC"),
    (False, 0x9000, 0x00, "AAC"),
    (True, 0x6D00, 0x40, "unsupported"),
])
def test_second_generate_ac(approve: bool, sw: int, cid: int, expected: str) -> None:
    card = ScriptedCard(second_sw=sw, second_cid=cid)
    read = read_chip(card, TXN)
    ac = generate_second_ac(card, read, approve=approve, response_code="00" if approve else "51",
                            issuer_auth=ISSUER_AUTH)
    assert ac.cryptogram_type == expected
    tvr, un = "0000000000", "A1B2C3D4"
    arc = "3030" if approve else "3531"
    assert card.log[-1] == (f"80AE{'40' if approve else '00'}0015{arc}"
                            f"{ISSUER_AUTH.hex().upper()}{tvr}{un}00")


def test_second_generate_ac_refused_is_a_card_error_and_no_cdol2_is_unsupported() -> None:
    card = ScriptedCard(second_sw=0x6985)
    read = read_chip(card, TXN)
    with pytest.raises(CardError) as err:
        generate_second_ac(card, read, approve=True, response_code="00")
    assert err.value.reason == "sw 6985"
    card = ScriptedCard(cdol2=None)
    read = read_chip(card, TXN)
    sent = len(card.log)
    ac = generate_second_ac(card, read, approve=True, response_code="00")
    assert ac.cryptogram_type == "unsupported" and len(card.log) == sent  # nothing sent


# -- the application: PSE directory, blocked, ATR ------------------------------------------------

def test_a_contact_only_card_is_found_through_the_pse_directory() -> None:
    card = ScriptedCard(ppse=False, pse=True)
    read_chip(card, TXN)
    assert card.log[:4] == ["00A404000E325041592E5359532E444446303100",
                            "00A404000E315041592E5359532E444446303100",
                            "00B2010C00",              # PSE SFI 1, record 1
                            "00B2020C00"]
    assert card.log[4] == "00A4040008A00000033301010100"


def test_a_blocked_application_is_no_read_failure() -> None:
    card = ScriptedCard(blocked=True)
    with pytest.raises(CardError) as err:
        read_chip(card, TXN)
    assert err.value.reason == "sw 6283" and not card.powered


def test_a_bad_atr_is_refused_before_any_command() -> None:
    card = ScriptedCard(atr=H("3B6500"))
    with pytest.raises(CardError) as err:
        read_chip(card, TXN)
    assert err.value.reason == "bad_atr" and card.log == [] and not card.powered
    assert "ATR 3B6500" in str(err.value)


# -- contactless ---------------------------------------------------------------------------------

def test_qpboc_card_gives_its_cryptogram_in_gpo() -> None:
    card = ScriptedCard(qpboc=True, pdol=PDOL_TTQ)
    read = read_contactless(card, TXN, cvm_required=True)
    assert card.log[2] == ("80A80000188316" "000000012345" "0156" "0156" "260504" "00"
                           "A1B2C3D4" "36C00000" "00")   # TTQ: online cryptogram + CVM required
    assert not any(c.startswith("80AE") for c in card.log)
    icc = tlv.flatten(read.icc_data)
    assert (icc[0x9F26], icc[0x9F27], icc[0x9F66]) == (H("1122334455667788"), b"\x80",
                                                      H("36C00000"))
    assert (read.entry, read.cvm, read.cryptogram_type) == ("tap", "online_pin", "ARQC")
    assert not card.powered                             # the field is reset at the end


def test_a_contactless_card_without_qpboc_gets_a_first_generate_ac() -> None:
    card = ScriptedCard()
    read = read_contactless(card, TXN, cvm_required=False)
    assert card.log[-1].startswith("80AE800021") and card.log[-1].endswith("1F000200")
    assert (read.cvm, read.powered, card.powered) == ("no_cvm", False, False)


def test_a_contactless_card_needs_a_ppse() -> None:
    card = ScriptedCard(ppse=False, pse=True)
    with pytest.raises(CardError) as err:
        read_contactless(card, TXN, cvm_required=False)
    assert err.value.reason == "sw 6a82" and not card.powered
