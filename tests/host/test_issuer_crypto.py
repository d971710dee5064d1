"""The issuer's cryptogram checks and the response codes of the card catalogue.

Crypto primitives against published vectors and an independent computation; then the engine
over the real fixtures/cards: each chip card read by the terminal's kernel, its field 55 sent in
a MACed 0200, and the answer checked: response code, and the ARPC (field 55, tag 91) that the
card itself accepts at its second GENERATE AC.  Every code of docs/terminal-behaviour.md's
table is reached from a profile or an issuer state."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from Crypto.Cipher import DES3

from protocols import tlv
from protocols.crypto import (
    CryptoError,
    application_cryptogram,
    arpc_method1,
    derive_icc_master_key,
    derive_session_key,
)
from protocols.iso8583 import (
    Header,
    Tpdu,
    decode_message,
    encode_message,
    encode_with_mac,
    mac_ok,
    response_text,
)
from sim.card.emv import SimEmvCard, load_profile
from sim.host.engine import AcquirerEngine, load_accounts, load_terminals
from sim.host.ledger import MemoryLedger
from tests.cards.slots import MemorySlot, chip_read

from .conftest import NOW, counting_keys
from .test_engine import sale_doc, sign_in

ROOT = Path(__file__).resolve().parents[2]
CARDS = ROOT / "fixtures/cards"
H = bytes.fromhex


# -- primitives ----------------------------------------------------------------------------------

def _odd_parity(key: bytes) -> bytes:
    return bytes((b & 0xFE) | (bin(b & 0xFE).count("1") % 2 == 0) for b in key)


def test_option_a_master_key_against_the_published_vector_and_by_hand() -> None:
    imk = H("0123456789ABCDEFFEDCBA9876543210")
    assert derive_icc_master_key(imk, "12345678901234567", 1).hex().upper() == \
        "73AD54688CEF2934B0979857E3C719F1"                   # pyemv's documented example
    # EMV Book 2 A1.4.1 option A: Y = rightmost 16 digits of PAN || PSN
    y = H("4567890123456701")
    cipher = DES3.new(imk, DES3.MODE_ECB)
    by_hand = _odd_parity(cipher.encrypt(y) + cipher.encrypt(bytes(b ^ 0xFF for b in y)))
    assert derive_icc_master_key(imk, "12345678901234567", 1) == by_hand


def test_session_key_ac_and_arpc_vectors() -> None:
    mk = H("0123456789ABCDEFFEDCBA9876543210")
    assert derive_session_key(mk, H("001C")).hex().upper() == "E9FB384AF807B940FEDCEA613461B0C4"
    sk = H("29B33180E567CE38EA4CBC9D753B0E61")
    arqc = application_cryptogram(sk, H("0123456789ABCDEF0123456789ABCDEF"))
    assert arqc.hex().upper() == "FA624250B008B59A"
    assert arpc_method1(sk, arqc, H("0000")).hex().upper() == "45D4255EEF10C920"
    # ARPC method 1 by hand: 3DES(SK, ARQC XOR ARC || 00…)
    assert arpc_method1(sk, arqc, b"00") == DES3.new(sk, DES3.MODE_ECB).encrypt(
        bytes(a ^ b for a, b in zip(arqc, b"00" + bytes(6), strict=True)))


def test_crypto_refuses_wrong_sizes_without_showing_keys() -> None:
    key = H("0123456789ABCDEFFEDCBA98765432")
    with pytest.raises(CryptoError, match=r"must be a double-length key \(16 bytes\); got 15"):
        derive_icc_master_key(key, "6214830000000017", 1)
    with pytest.raises(CryptoError, match="the ATC is 2 bytes"):
        derive_session_key(key + b"\x10", b"\x01")
    with pytest.raises(CryptoError, match="PAN must be 12..19 digits"):
        derive_icc_master_key(key + b"\x10", "12345", 1)


# -- the catalogue through the engine ------------------------------------------------------------

@pytest.fixture
def catalogue() -> Iterator[tuple[AcquirerEngine, bytes, bytes]]:
    engine = AcquirerEngine(load_terminals(ROOT / "fixtures/host/terminals.yaml"),
                            load_accounts(CARDS), ledger=MemoryLedger(),
                            key_source=counting_keys(), pan_salt=b"salt")
    _, pik, mak = sign_in(engine)
    yield engine, pik, mak


class _Till:
    stan = 1


def _pay(engine: AcquirerEngine, pik: bytes, mak: bytes, name: str, *, amount: int = 2500,
         pin: str | None = None, pin_block: bool = True, chip: bool = True) -> dict[str, str]:
    """The 0200 a terminal sends for card *name* (chip: field 55 of the kernel's read;
    stripe: track 2 only) with *pin* (default: the card's; none when not *pin_block*: the PIN
    was verified offline by the card) and its answer (whose MAC is checked)."""
    profile = load_profile(CARDS / f"{name}.yaml")
    _Till.stan += 1
    doc = sale_doc(pik, pan=profile.pan, pin=(pin or profile.pin) if pin_block else None,
                   amount=amount, stan=_Till.stan)
    doc["14"] = profile.expiry
    if chip:
        read = chip_read(profile, amount)
        doc["55"] = read.icc_data.hex().upper()
        doc["35"] = read.track2_equivalent
        doc["23"] = f"{profile.pan_seq:03d}"
    else:
        doc["22"] = "021"
        doc["35"] = profile.track2_equivalent
    raw = encode_with_mac(doc, mak)
    resp = engine.handle(Tpdu(), Header(), decode_message(raw), NOW, mac_data=raw)
    assert mac_ok(encode_message(resp), mak)
    return resp


CASES = [
    # (profile, how, response code, why)
    ("good", {}, "00", "funded, active, ARQC verified"),
    ("counterfeit", {}, "05", "the ARQC does not verify"),
    ("blocked", {"chip": False}, "14", "issuer status blocked (the chip's application is too)"),
    ("insufficient_funds", {}, "51", "balance 5.00 below the amount"),
    ("expired", {}, "54", "expiry 2312 before the host's date"),
    ("good", {"pin": "000000"}, "55", "wrong online PIN"),
    ("credit", {"amount": 500001}, "61", "above the card's per-transaction limit"),
    ("credit", {"amount": 500000}, "00", "at the limit"),
    ("restricted", {}, "62", "issuer status restricted"),
    ("pin_exhausted", {}, "75", "issuer counted 3 wrong PINs"),
    ("issuer_unavailable", {}, "91", "issuer fault unreachable"),
    ("issuer_malfunction", {}, "96", "issuer fault malfunction"),
    ("international", {}, "00", "foreign card, its own IMK"),
    ("offline_pin", {"pin_block": False}, "00", "offline PIN: no PIN block online"),
    ("magstripe", {"chip": False}, "00", "a swipe: no cryptogram to check"),
]


@pytest.mark.parametrize(("name", "how", "code", "why"), CASES,
                         ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_response_codes_of_the_catalogue(catalogue: tuple[AcquirerEngine, bytes, bytes],
                                         name: str, how: dict[str, object], code: str,
                                         why: str) -> None:
    engine, pik, mak = catalogue
    resp = _pay(engine, pik, mak, name, **how)  # type: ignore[arg-type]
    assert resp["39"] == code, f"{name}: {why}: got {resp['39']} {response_text(resp['39'])}"
    assert response_text(code) != f"UNKNOWN RESPONSE {code}"
    booked = engine.ledger.records[-1]  # type: ignore[union-attr]
    assert (booked.status == "booked") == (code == "00")


def test_every_documented_code_is_reachable() -> None:
    assert {c for _, _, c, _ in CASES} >= {"00", "05", "14", "51", "54", "55", "61", "62", "75",
                                             "91", "96"}
    text = (ROOT / "docs/terminal-behaviour.md").read_text(encoding="utf-8")
    for name, _, code, _ in CASES:
        assert f"`{code}`" in text and f"`{name}`" in text, (name, code)


def _arpc_to_card(resp: dict[str, str]) -> bytes:
    return tlv.flatten(H(resp["55"]))[0x91]


def test_the_arpc_of_an_approval_gets_a_tc_from_the_card(
        catalogue: tuple[AcquirerEngine, bytes, bytes]) -> None:
    engine, pik, mak = catalogue
    profile = load_profile(CARDS / "good.yaml")
    card = SimEmvCard(profile)
    slot = _KeepPowered(card)
    from sim.terminal.emv import run_chip_transaction

    read = run_chip_transaction(slot, amount_minor=2500, txn_date=dt.date(2026, 3, 14),
                                unpredictable_number=H("11223344"))
    doc = sale_doc(pik, pan=profile.pan, pin=profile.pin, amount=2500, stan=70)
    doc["55"] = read.icc_data.hex().upper()
    raw = encode_with_mac(doc, mak)
    resp = engine.handle(Tpdu(), Header(), decode_message(raw), NOW, mac_data=raw)
    assert resp["39"] == "00" and set(tlv.flatten(H(resp["55"]))) == {0x91}
    issuer_auth = _arpc_to_card(resp)
    assert issuer_auth[8:] == b"00"
    # the terminal's second GENERATE AC (docs/cards.md): 8A ARC, 91, TVR, UN
    data = b"00" + issuer_auth + bytes(5) + H("11223344")
    tc = card.apdu(bytes([0x80, 0xAE, 0x40, 0x00, len(data)]) + data + b"\x00")
    assert tc[-2:] == H("9000") and tlv.flatten(tc[:-2])[0x9F27] == b"\x40"


def test_a_decline_after_a_verified_arqc_carries_an_arpc_for_its_code(
        catalogue: tuple[AcquirerEngine, bytes, bytes]) -> None:
    engine, pik, mak = catalogue
    resp = _pay(engine, pik, mak, "insufficient_funds")
    assert resp["39"] == "51" and _arpc_to_card(resp)[8:] == b"51"
    resp = _pay(engine, pik, mak, "counterfeit")
    assert resp["39"] == "05" and "55" not in resp          # no ARPC for a cryptogram it refused
    resp = _pay(engine, pik, mak, "magstripe", chip=False)
    assert resp["39"] == "00" and "55" not in resp          # no cryptogram, no ARPC


def test_field_55_that_is_not_tlv_is_a_format_error(
        catalogue: tuple[AcquirerEngine, bytes, bytes]) -> None:
    engine, pik, mak = catalogue
    doc = sale_doc(pik, pan=load_profile(CARDS / "good.yaml").pan, stan=80)
    doc["55"] = "9F2608A1"
    raw = encode_with_mac(doc, mak)
    assert engine.handle(Tpdu(), Header(), decode_message(raw), NOW, mac_data=raw)["39"] == "30"


def test_restore_puts_issuer_pin_counts_back_to_the_profiles(
        catalogue: tuple[AcquirerEngine, bytes, bytes]) -> None:
    engine, pik, mak = catalogue
    assert _pay(engine, pik, mak, "good", pin="000000")["39"] == "55"
    assert engine.reset_pin_tries() == ["621483******0017"]
    good = engine.accounts[load_profile(CARDS / "good.yaml").pan]
    exhausted = engine.accounts[load_profile(CARDS / "pin_exhausted.yaml").pan]
    assert good.pin_failures == 0 and exhausted.pin_failures == 3   # as their profiles say
    assert _pay(engine, pik, mak, "pin_exhausted")["39"] == "75"


class _KeepPowered(MemorySlot):
    """The kernel powers the card off at its end; this slot keeps the card's session (as the
    second GENERATE AC of a terminal that runs it would)."""

    def power_off(self) -> None:
        pass
