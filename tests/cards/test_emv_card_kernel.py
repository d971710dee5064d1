from __future__ import annotations

import datetime
from pathlib import Path

import pytest
import yaml
from Crypto.Cipher import DES

from protocols import tlv
from protocols.crypto import application_cryptogram
from protocols.errors import ConfigError
from sim.card.emv import SimEmvCard, load_profile
from sim.terminal.emv import CardError, CardRead, run_chip_transaction
from tests.cards.conftest import GOOD, MUTE
from tests.cards.slots import MemorySlot, expected_ac

PPSE_SELECT = "00A404000E325041592E5359532E444446303100"
AID_SELECT = "00A4040008A00000033301010100"


def _card() -> SimEmvCard:
    return SimEmvCard(load_profile(GOOD))


def _run(slot: MemorySlot) -> CardRead:
    return run_chip_transaction(slot, amount_minor=12_345, txn_date=datetime.date(2025, 6, 30),
                                unpredictable_number=bytes.fromhex("A1B2C3D4"))


def test_full_kernel_run_exact_commands() -> None:
    card = _card()
    slot = MemorySlot(card)
    read = _run(slot)
    sent = [c for c, _ in slot.log]
    assert sent == [
        PPSE_SELECT,
        AID_SELECT,
        "80A80000148312" "000000012345" "0156" "0156" "250630" "00" "A1B2C3D4" "00",
        "00B2010C00",
        "00B2020C00",
        "80AE800021" "000000012345" "000000000000" "0156" "0000000000" "0156" "250630" "00"
        "A1B2C3D4" "22" "020300" "00",
    ]
    assert all(r.endswith("9000") for _, r in slot.log)
    assert read.pan == "6214830000000017" and read.expiry == "3012" and read.pan_seq == 1
    assert read.track2_equivalent.startswith("6214830000000017D3012220")
    assert (read.aid, read.app_label, read.cvm) == ("A000000333010101", "UnionPay Debit",
                                                    "online_pin")
    assert read.service_code == "220" and read.cryptogram_type == "ARQC"
    icc = tlv.flatten(read.icc_data)
    assert list(icc)[:5] == [0x9F26, 0x9F27, 0x9F10, 0x9F37, 0x9F36]
    assert icc[0x9F27] == b"\x80" and icc[0x9F36] == b"\x00\x02" and icc[0x9F02].hex() == \
        "000000012345"
    cdol_data = bytes.fromhex(slot.log[-1][0][10:-2])
    assert icc[0x9F26] == expected_ac(card.profile, cdol_data, b"\x00\x02")
    assert not card.powered                                   # kernel powered the card off
    assert "6214830000000017" not in repr(read) and "621483******0017" in repr(read)
    assert "D3012" not in repr(read) and "D3012" not in str(read)


def test_kernel_handles_t0_get_response() -> None:
    slot = MemorySlot(_card(), t0=True)
    read = _run(slot)
    assert slot.log[1] == ("00C0000036", "6F34" + slot.log[1][1][4:])   # GET RESPONSE
    assert read.pan == "6214830000000017"


def test_ac_is_mac_algorithm_3_padding_2_under_the_session_key() -> None:
    """ISO/IEC 9797-1 MAC algorithm 3 (single-DES CBC with K1, last block D(K2) E(K1)),
    padding method 2, computed here with pycryptodome, equals protocols.crypto's."""
    key = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
    data = bytes(range(13))
    padded = data + b"\x80\x00\x00"
    k1, k2 = DES.new(key[:8], DES.MODE_ECB), DES.new(key[8:], DES.MODE_ECB)
    chain = bytes(8)
    for i in range(0, len(padded), 8):
        chain = k1.encrypt(bytes(a ^ b for a, b in zip(chain, padded[i:i + 8], strict=True)))
    assert application_cryptogram(key, data) == k1.encrypt(k2.decrypt(chain))
    assert application_cryptogram(key, bytes(8)) != application_cryptogram(key, bytes(7))


def test_status_words_from_one_place() -> None:
    card = _card()
    card.power_on()
    assert card.apdu(bytes.fromhex("80A80000028300")).hex() == "6985"     # GPO before SELECT
    assert card.apdu(bytes.fromhex("00A4040005A000000999")).hex() == "6a82"
    assert card.apdu(bytes.fromhex("0084000008")).hex() == "6d00"         # GET CHALLENGE
    assert card.apdu(bytes.fromhex(AID_SELECT)).hex().endswith("9000")
    assert card.apdu(bytes.fromhex("80A80000028300")).hex() == "6700"     # PDOL data missing
    assert card.apdu(bytes.fromhex("80AE80000100")).hex() == "6985"       # GEN AC before GPO
    assert card.apdu(bytes.fromhex("00B2030C00")).hex() == "6a83"
    assert card.apdu(bytes.fromhex("80CA9F3600")).hex() == "9f360200019000"
    assert card.apdu(bytes.fromhex("80CA9F1700")).hex() == "9f1701039000"
    assert card.apdu(bytes.fromhex("80CA9F4F00")).hex() == "6a88"
    assert card.apdu(bytes.fromhex("00A4")).hex() == "6700"               # malformed


def test_second_generate_ac_and_third_refused() -> None:
    """Without the issuer's ARPC (91 zeros: unable to go online) the second GENERATE AC asked
    for a TC answers an AAC; a third is refused (tests/cards/test_card_answers.py has the TC)."""
    card = _card()
    card.power_on()
    card.apdu(bytes.fromhex(AID_SELECT))
    card.apdu(bytes.fromhex("80A8000014831200000000123401560156250630" "00A1B2C3D400"))
    assert card.apdu(bytes.fromhex("80AE8000210" + "0" * 65 + "00"))[-2:] == b"\x90\x00"
    cdol2 = "5A33" + "00" * 10 + "00" * 5 + "A1B2C3D4"         # ARC "Z3", no ARPC
    second = card.apdu(bytes.fromhex("80AE400015" + cdol2 + "00"))
    assert second[-2:] == b"\x90\x00" and tlv.flatten(second[:-2])[0x9F27] == b"\x00"
    assert card.apdu(bytes.fromhex("80AE400015" + cdol2 + "00")).hex() == "6985"


def test_mute_card_answers_nothing() -> None:
    card = SimEmvCard(load_profile(MUTE))
    assert card.power_on() == b""
    assert card.apdu(bytes.fromhex(PPSE_SELECT)) == b""
    with pytest.raises(CardError) as err:
        _run(MemorySlot(card))
    assert err.value.reason == "mute"


def test_unpowered_card_answers_nothing() -> None:
    assert _card().apdu(bytes.fromhex(PPSE_SELECT)) == b""


def _write(tmp_path: Path, **changes: object) -> Path:
    data = yaml.safe_load(GOOD.read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key)
        else:
            data[key] = value
    path = tmp_path / "card.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(("change", "message"), [
    ({"pan": "6214830000000018"}, r"pan: 621483\*\*\*\*\*\*0018 fails the Luhn check"),
    ({"pan": "4111111111111111"}, r"pan: expected a UnionPay PAN: 16-19 digits starting "
                                  r"with 62, got <hidden>"),
    ({"expiry": "3013"}, r"expiry: expected YYMM, got '3013'"),
    ({"pin": None}, r"pin: required key is missing"),
    ({"cvm": "telepathy"}, r"cvm: expected one of"),
    ({"keys": {"imk_ac": "0011"}}, r"keys.imk_ac: expected 16 bytes of hex, got 2"),
    ({"issuer": {"status": "active", "balance_minor": "lots"}},
     r"issuer.balance_minor: expected an integer"),
    ({"issuer": {"status": "active"}}, r"issuer.balance_minor: required key is missing"),
    ({"colour": "red"}, r"colour: unknown key"),
    ({"atr": "zz"}, r"atr: expected a hex string"),
])
def test_profile_errors_name_file_and_key(tmp_path: Path, change: dict[str, object],
                                          message: str) -> None:
    path = _write(tmp_path, **change)
    with pytest.raises(ConfigError, match=rf"^{path}: card profile is not valid:\n  {message}"):
        load_profile(path)


def test_profiles_load_and_hide_secrets() -> None:
    good, mute = load_profile(GOOD), load_profile(MUTE)
    assert not good.mute and mute.mute
    assert good.issuer == {"balance_minor": 1000000, "status": "active"}
    assert good.pan not in repr(good) and good.pin not in repr(good)
    with pytest.raises(ConfigError, match="cannot read"):
        load_profile("/nonexistent/card.yaml")
