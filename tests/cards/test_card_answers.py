"""The card state machine's answers, byte for byte (docs/cards.md): PSE and PPSE, blocked
application and card, offline PIN with its try counter, the first and second GENERATE AC with
the issuer's ARPC (computed by the issuer's own code: the card ↔ host round trip), expired
data, a pulled card, a garbage ATR and a chipless card.  Pure: no sockets."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from protocols import tlv
from protocols.atr import atr_problem
from protocols.emvcard import CDOL1, CDOL2, cvr_from_iad
from sim.card.emv import CardRemoved, SimEmvCard, load_profile, profile_from_dict
from sim.card.profile import CardProfile
from sim.host.config import account_of
from sim.host.issuer import check_arqc
from tests.cards.conftest import CARDS_DIR, GOOD
from tests.cards.slots import chip_read, expected_ac

H = bytes.fromhex
SELECT_PSE = H("00A404000E315041592E5359532E444446303100")
SELECT_PPSE = H("00A404000E325041592E5359532E444446303100")
SELECT_AID = H("00A4040008A00000033301010100")
GPO = H("80A8000014831200000001234501560156250630" "00A1B2C3D4" "00")
CDOL1_DATA = H("000000012345" "000000000000" "0156" "0000000000" "0156" "250630" "00"
               "A1B2C3D4" "22" "020300")
GEN_AC_ARQC = H("80AE800021") + CDOL1_DATA + b"\x00"
GET_PTC = H("80CA9F1700")
LABEL = b"UnionPay Debit".hex().upper()


def _card(name: str) -> SimEmvCard:
    card = SimEmvCard(load_profile(CARDS_DIR / f"{name}.yaml"))
    assert card.power_on()
    return card


def _profile(**changes: Any) -> CardProfile:
    data = yaml.safe_load(GOOD.read_text())
    data.update(changes)
    return profile_from_dict(data)


def _verify(pin: str) -> bytes:
    block = f"2{len(pin):X}{pin}".ljust(16, "F")
    return H("0020008008" + block)


# -- directories ---------------------------------------------------------------------------------

def test_pse_lists_the_application_for_generic_tools() -> None:
    card = _card("good")
    assert card.apdu(SELECT_PSE).hex().upper() == (
        "6F1C" "840E315041592E5359532E4444463031" "A50A" "880101" "5F2D047A68656E" "9000")
    assert card.apdu(H("00B2010C00")).hex().upper() == (
        "701F" "611D" "4F08A000000333010101" "500E" + LABEL + "870101" "9000")
    assert card.apdu(H("00B2020C00")).hex().upper() == "6A83"    # one directory record
    assert card.apdu(H("00B2011400")).hex().upper() == "6A82"    # SFI 2: no such file


def test_le_shorter_than_the_data_is_6cxx_with_nothing_changed() -> None:
    """SELECT PSE with Le=04 was answered with the whole 30-byte FCI (fuzz finding
    card_emv/select-le-ignored).  T=0: 6Cxx, xx the exact length, no data, no state change —
    for every instruction, in the card's one dispatch."""
    card = _card("good")
    assert card.apdu(SELECT_PSE[:-1] + b"\x04").hex().upper() == "6C1E"
    assert card.apdu(H("00B2010C00")).hex().upper() == "6985"    # the PSE was not selected
    assert card.apdu(SELECT_PSE[:-1] + b"\x1E")[-2:] == H("9000")  # Le = the exact length
    assert card.apdu(SELECT_AID)[-2:] == H("9000")
    atc = card.atc
    assert card.apdu(GPO[:-1] + b"\x05").hex().upper() == "6C0C"  # 77 0A 82 02 … 94 04 …
    assert card.atc == atc                                        # the ATC did not count
    assert card.apdu(GPO[:-1] + b"\x0C")[-2:] == H("9000") and card.atc == atc + 1
    assert card.apdu(GET_PTC[:-1] + b"\x01").hex().upper() == "6C04"
    assert card.apdu(GET_PTC[:-1] + b"\x04").hex().upper() == "9F170103" "9000"
    assert card.apdu(GET_PTC[:-1] + b"\xFF")[-2:] == H("9000")       # longer Le: the data
    first = card.apdu(GEN_AC_ARQC[:-1] + b"\x10")
    assert first[:1] == b"\x6C" and len(first) == 2
    again = card.apdu(GEN_AC_ARQC[:-1] + first[1:])                # the first GENERATE AC
    assert len(again) == first[1] + 2 and tlv.find(again[:-2], 0x9F27) == b"\x80"


def test_ppse_of_a_contactless_card_lists_its_contactless_aids() -> None:
    card = _card("contactless")
    assert card.apdu(SELECT_PPSE).hex().upper() == (
        "6F32" "840E325041592E5359532E4444463031" "A520" "BF0C1D" "611B" "4F08A000000333010101"
        "500C" + b"UnionPay QPS".hex().upper() + "870101" "9000")
    assert card.apdu(H("00B2010C00")).hex().upper() == "6985"    # nothing to read in PPSE


def test_contact_only_card_has_no_ppse_but_a_pse() -> None:
    card = _card("offline_pin")
    assert card.apdu(SELECT_PPSE).hex().upper() == "6A82"
    assert card.apdu(SELECT_PSE)[-2:] == H("9000")


def test_the_good_cards_ppse_is_what_it_always_was() -> None:
    card = _card("good")        # dual interface: PPSE lists the debit application
    assert card.apdu(SELECT_PPSE).hex().upper() == (
        "6F34" "840E325041592E5359532E4444463031" "A522" "BF0C1F" "611D" "4F08A000000333010101"
        "500E" + LABEL + "870101" "9000")


# -- blocked -------------------------------------------------------------------------------------

def test_blocked_application_answers_6283_with_its_fci_and_refuses_gpo() -> None:
    card = _card("blocked")
    answer = card.apdu(SELECT_AID)
    assert answer[-2:] == H("6283")
    assert tlv.flatten(answer[:-2])[0x84] == H("A000000333010101")
    assert card.apdu(GPO).hex().upper() == "6985"
    assert card.apdu(H("00B2010C00")).hex().upper() == "6985"
    assert card.apdu(SELECT_PSE)[-2:] == H("9000")                # the directory still lists it


def test_blocked_card_answers_6a81_to_every_select() -> None:
    card = SimEmvCard(_profile(blocked="card"))
    card.power_on()
    for select in (SELECT_PSE, SELECT_PPSE, SELECT_AID):
        assert card.apdu(select).hex().upper() == "6A81"


# -- offline PIN ---------------------------------------------------------------------------------

def test_offline_pin_try_counter_counts_down_resets_and_blocks() -> None:
    card = _card("offline_pin")
    assert card.apdu(_verify("1234")).hex().upper() == "6985"      # no application selected
    card.apdu(SELECT_AID)
    assert card.apdu(H("00200080")).hex().upper() == "63C3"         # tries left, no PIN
    assert card.apdu(GET_PTC).hex().upper() == "9F1701039000"
    assert card.apdu(_verify("9999")).hex().upper() == "63C2"
    assert card.apdu(_verify("12345")).hex().upper() == "63C1"
    assert card.apdu(GET_PTC).hex().upper() == "9F1701019000"
    assert card.apdu(_verify("1234")).hex().upper() == "9000"       # right: counter reset
    assert card.apdu(GET_PTC).hex().upper() == "9F1701039000"
    assert card.apdu(H("00200080")).hex().upper() == "9000"         # verified this session
    for left in ("63C2", "63C1", "63C0"):
        assert card.apdu(_verify("0000")).hex().upper() == left
    assert card.apdu(_verify("1234")).hex().upper() == "6983"       # blocked, right PIN too
    assert card.apdu(H("00200080")).hex().upper() == "6983"
    assert card.apdu(GET_PTC).hex().upper() == "9F1701009000"
    card.power_off()                                                 # non-volatile
    card.power_on()
    card.apdu(SELECT_AID)
    assert card.apdu(GET_PTC).hex().upper() == "9F1701009000"
    card.restore_profile_state()
    assert card.apdu(GET_PTC).hex().upper() == "9F1701039000"


def test_verify_refuses_enciphered_pin_and_malformed_blocks() -> None:
    card = _card("offline_pin")
    card.apdu(SELECT_AID)
    assert card.apdu(H("0020008808241234FFFFFFFFFF")).hex().upper() == "6A86"
    assert card.apdu(H("0020008008141234FFFFFFFFFF")).hex().upper() == "6A80"   # not 2N
    assert card.apdu(H("0020008008241234FFFFFF")).hex().upper() == "6700"       # Lc says 8
    assert card.apdu(GET_PTC).hex().upper() == "9F1701039000"                   # not counted


def test_pin_exhausted_card_is_blocked_from_the_start() -> None:
    card = _card("pin_exhausted")
    card.apdu(SELECT_AID)
    assert card.apdu(_verify("123456")).hex().upper() == "6983"
    assert card.apdu(GET_PTC).hex().upper() == "9F1701009000"
    card.apdu(GPO)
    ac = tlv.flatten(card.apdu(GEN_AC_ARQC)[:-2])
    assert cvr_from_iad(ac[0x9F10]).hex().upper() == "03A02000"     # PIN try limit exceeded


def test_offline_pin_result_is_in_the_cvr() -> None:
    card = _card("offline_pin")
    card.apdu(SELECT_AID)
    card.apdu(_verify("0000"))
    card.apdu(GPO)
    first = tlv.flatten(card.apdu(GEN_AC_ARQC)[:-2])
    assert first[0x9F10].hex().upper() == "06010103A60000"   # ARQC, PIN performed + failed
    card.apdu(SELECT_AID)
    card.apdu(_verify("1234"))
    card.apdu(GPO)
    assert tlv.flatten(card.apdu(GEN_AC_ARQC)[:-2])[0x9F10].hex().upper() == "06010103A40000"


# -- GENERATE AC ---------------------------------------------------------------------------------

def _online(card: SimEmvCard) -> dict[int, bytes]:
    """SELECT, GPO, READ RECORD, first GENERATE AC; returns field 55's data objects."""
    card.apdu(SELECT_AID)
    gpo = tlv.flatten(card.apdu(GPO)[:-2])
    card.apdu(H("00B2010C00"))
    card.apdu(H("00B2020C00"))
    ac = card.apdu(GEN_AC_ARQC)
    assert ac[-2:] == H("9000")
    dol = tlv.split_dol(tlv.parse_dol(CDOL1), CDOL1_DATA)
    return {**dol, 0x82: gpo[0x82], **tlv.flatten(ac[:-2])}


def _second(card: SimEmvCard, arc: bytes, issuer_auth: bytes, p1: int = 0x40) -> dict[int, bytes]:
    data = arc + issuer_auth + bytes(5) + H("A1B2C3D4")
    assert len(data) == sum(e.length for e in tlv.parse_dol(CDOL2)) == 21
    answer = card.apdu(bytes([0x80, 0xAE, p1, 0x00, len(data)]) + data + b"\x00")
    assert answer[-2:] == H("9000"), answer.hex()
    return tlv.flatten(answer[:-2])


def test_arqc_verifies_at_the_issuer_and_the_arpc_gets_a_tc() -> None:
    card = _card("good")
    icc = _online(card)
    assert icc[0x9F27] == b"\x80" and icc[0x9F10].hex().upper() == "06010103A00000"
    assert icc[0x9F26] == expected_ac(card.profile, CDOL1_DATA, icc[0x9F36])
    check = check_arqc(account_of(card.profile), icc)
    assert check.verified, check.why
    issuer_auth = tlv.flatten(check.issuer_auth_tlv("00"))[0x91]
    assert issuer_auth[8:] == b"00" and len(issuer_auth) == 10
    tc = _second(card, b"00", issuer_auth)
    assert tc[0x9F27] == b"\x40"
    cvr = cvr_from_iad(tc[0x9F10])
    assert cvr.hex().upper() == "03600000"               # TC in 2nd, ARQC in 1st
    cdol2_data = b"00" + issuer_auth + bytes(5) + H("A1B2C3D4")
    assert tc[0x9F26] == expected_ac(card.profile, cdol2_data, icc[0x9F36], cvr)
    assert card.apdu(H("80CA9F1300")).hex().upper() == "9F1302" + icc[0x9F36].hex().upper() \
        + "9000"                                           # last online ATC


def test_a_wrong_arpc_gets_an_aac_and_says_issuer_authentication_failed() -> None:
    card = _card("good")
    check = check_arqc(account_of(card.profile), _online(card))
    issuer_auth = bytearray(tlv.flatten(check.issuer_auth_tlv("00"))[0x91])
    issuer_auth[0] ^= 0x01
    aac = _second(card, b"00", bytes(issuer_auth))
    assert aac[0x9F27] == b"\x00"
    assert cvr_from_iad(aac[0x9F10]).hex().upper() == "03280000"   # AAC 2nd, auth failed


def test_an_issuer_decline_gets_an_aac_even_with_a_good_arpc() -> None:
    card = _card("good")
    check = check_arqc(account_of(card.profile), _online(card))
    issuer_auth = tlv.flatten(check.issuer_auth_tlv("51"))[0x91]
    aac = _second(card, b"51", issuer_auth)
    assert aac[0x9F27] == b"\x00"
    assert cvr_from_iad(aac[0x9F10]).hex().upper() == "03200000"   # verified, no failure bit


def test_an_arc_that_differs_from_the_signed_one_is_not_an_approval() -> None:
    card = _card("good")
    check = check_arqc(account_of(card.profile), _online(card))
    issuer_auth = tlv.flatten(check.issuer_auth_tlv("51"))[0x91]
    assert _second(card, b"00", issuer_auth)[0x9F27] == b"\x00"


def test_terminal_asking_for_an_aac_gets_one() -> None:
    card = _card("good")
    check = check_arqc(account_of(card.profile), _online(card))
    assert _second(card, b"00", tlv.flatten(check.issuer_auth_tlv("00"))[0x91],
                   p1=0x00)[0x9F27] == b"\x00"


def test_card_declining_after_approval() -> None:
    card = _card("decline_after_approval")
    check = check_arqc(account_of(card.profile), _online(card))
    assert check.verified
    aac = _second(card, b"00", tlv.flatten(check.issuer_auth_tlv("00"))[0x91])
    assert aac[0x9F27] == b"\x00"
    assert cvr_from_iad(aac[0x9F10]).hex().upper() == "03200000"


def test_card_declining_at_the_first_generate_ac() -> None:
    card = _card("decline_gac")
    card.apdu(SELECT_AID)
    card.apdu(GPO)
    aac = card.apdu(GEN_AC_ARQC)
    flat = tlv.flatten(aac[:-2])
    assert flat[0x9F27] == b"\x00"
    assert cvr_from_iad(flat[0x9F10]).hex().upper() == "03800000"  # AAC 1st, 2nd not asked
    assert flat[0x9F26] == expected_ac(card.profile, CDOL1_DATA, flat[0x9F36],
                                       H("03800000"))
    assert card.apdu(H("80AE400015") + bytes(21) + b"\x00").hex().upper() == "6985"


def test_counterfeit_arqc_does_not_verify() -> None:
    card = _card("counterfeit")
    check = check_arqc(account_of(card.profile), _online(card))
    assert not check.verified and "does not verify" in check.why
    with pytest.raises(ValueError, match="no ARPC"):
        check.issuer_auth_tlv("05")


def test_a_tampered_field_55_does_not_verify() -> None:
    card = _card("good")
    icc = _online(card)
    icc[0x9F02] = H("000000099999")                      # the amount changed on the way
    assert not check_arqc(account_of(card.profile), icc).verified
    icc = _online(_card("good"))
    del icc[0x9F10]
    assert check_arqc(account_of(card.profile), icc).why == \
        "field 55 lacks 9F10 (issuer application data)"


# -- the rest of the catalogue -------------------------------------------------------------------

def test_expired_card_records_carry_its_dates() -> None:
    card = _card("expired")
    card.apdu(SELECT_AID)
    record = tlv.flatten(card.apdu(H("00B2020C00"))[:-2])
    assert record[0x5F24] == H("231231") and record[0x5F25] == H("210101")
    assert tlv.flatten(card.apdu(H("00B2010C00"))[:-2])[0x57].hex().upper().startswith(
        "6214830000000074D2312220")


def test_pulled_card_leaves_at_generate_ac_every_time_it_is_inserted() -> None:
    card = _card("pulled")
    card.apdu(SELECT_AID)
    card.apdu(GPO)
    assert card.apdu(H("00B2010C00"))[-2:] == H("9000")
    with pytest.raises(CardRemoved, match="pulled out of the reader at GENERATE AC"):
        card.apdu(GEN_AC_ARQC)
    assert card.apdu(SELECT_AID) == b""                   # gone: no answer
    card.power_on()
    card.apdu(SELECT_AID)
    card.apdu(GPO)
    with pytest.raises(CardRemoved):
        card.apdu(GEN_AC_ARQC)


def test_garbage_atr_card_answers_behind_its_invalid_atr() -> None:
    card = SimEmvCard(load_profile(CARDS_DIR / "garbage_atr.yaml"))
    atr = card.power_on()
    assert atr.hex().upper() == "3B8880014A434F503231400006" and atr_problem(atr)
    assert card.apdu(SELECT_AID)[-2:] == H("9000")


@pytest.mark.parametrize("name", ["magstripe", "mute", "damaged_stripe"])
def test_cards_without_an_answer_to_reset(name: str) -> None:
    card = SimEmvCard(load_profile(CARDS_DIR / f"{name}.yaml"))
    assert card.power_on() == b""
    assert card.apdu(SELECT_PSE) == b""


def test_every_chip_profile_answers_the_kernel() -> None:
    """The terminal's first-GAC kernel still runs against every profile with a working chip."""
    for path in sorted(CARDS_DIR.glob("*.yaml")):
        profile = load_profile(path)
        if (not profile.answers_reset or profile.blocked or profile.pull_at
                or profile.faulty_atr is not None or profile.network != "unionpay"):
            continue
        read = chip_read(profile)
        wanted = "AAC" if profile.decline_at == "first_generate_ac" else "ARQC"
        assert read.cryptogram_type == wanted, profile.name
        assert read.pan == profile.pan


@pytest.mark.parametrize(("capdu", "sw"), [
    ("FFA404000E315041592E5359532E4444463031", "6E00"),  # CLA FF: no such class
    ("84A404000E315041592E5359532E4444463031", "6E00"),  # secure messaging: not spoken
    ("80A404000E315041592E5359532E4444463031", "6E00"),  # SELECT is CLA 00
    ("00CA9F1700", "6E00"),                              # GET DATA is CLA 80
    ("0084000008", "6D00"),                              # GET CHALLENGE: not an instruction
    ("00A4", "6700"),                                    # short header
    ("00A40400FF0102", "6700"),                          # Lc 255, 2 bytes follow
    ("00A4040000", "6A82"),                              # Le only: no name to select
    ("00A40400" + "FF" + "00" * 255 + "00", "6A82"),     # the largest short C-APDU
    ("00A4040000" + "00" * 300, "6700"),                 # extended length: refused
    ("00200001", "6A86"),                                # VERIFY P2 01: no such PIN kind
])
def test_malformed_or_foreign_apdus_get_a_status_word(capdu: str, sw: str) -> None:
    card = _card("good")
    atc, tries = card.atc, card.pin_try_counter
    assert card.apdu(H(capdu))[-2:] == H(sw)
    assert (card.atc, card.pin_try_counter) == (atc, tries)
