"""AcquirerEngine without sockets: sign-in, sale outcomes, ledger records."""

from __future__ import annotations

import datetime as dt

import pytest

from protocols.crypto import decode_working_keys, pin_block
from protocols.errors import ConfigError, DecodeError
from protocols.iso8583 import (
    Header,
    Tpdu,
    decode_message,
    encode_message,
    encode_with_mac,
    frame,
    mac_ok,
    unframe,
)
from protocols.masking import mask_pan
from sim.host.engine import STATUS_CODES, AcquirerEngine, load_account, load_accounts
from sim.host.ledger import MemoryLedger

from .conftest import MID, NOW, PAN, PAN_BLOCKED, PAN_LOW, PAN_OLD, PIN, TID, TMK, card_yaml


def sign_in(engine: AcquirerEngine, *, tid: str = TID, mid: str = MID, batch: int = 1,
            net: str = "004", now: dt.datetime = NOW) -> tuple[dict[str, str], bytes, bytes]:
    doc = {"t": "0800", "11": "000001", "41": tid, "42": mid, "60": f"00{batch:06d}{net}",
           "63": "01 "}
    resp = engine.handle(Tpdu(), Header(), doc, now)
    if resp["39"] != "00":
        return resp, b"", b""
    pik, mak = decode_working_keys(bytes.fromhex(resp["62"]), TMK)
    return resp, pik, mak


def sale_doc(pik: bytes, *, pan: str = PAN, pin: str | None = PIN, amount: int = 1000,
             stan: int = 2, batch: int = 1, tid: str = TID) -> dict[str, str]:
    doc = {"t": "0200", "2": pan, "3": "000000", "4": f"{amount:012d}", "11": f"{stan:06d}",
           "14": "3012", "22": "051", "25": "00", "35": f"{pan}D3012220000000000",
           "41": tid, "42": MID, "49": "156", "60": f"22{batch:06d}00050"}
    if pin is not None:
        doc["52"] = pin_block(pin, pan, pik).hex().upper()
        doc["53"] = "2600000000000000"
    return doc


def sale(engine: AcquirerEngine, pik: bytes, mak: bytes, **kw: object) -> dict[str, str]:
    raw = encode_with_mac(sale_doc(pik, **kw), mak)  # type: ignore[arg-type]
    return engine.handle(Tpdu(), Header(), decode_message(raw), NOW, mac_data=raw)


def assert_response_mac(resp: dict[str, str], mak: bytes) -> None:
    assert mac_ok(encode_message(resp), mak)


def test_sign_in_returns_keys_under_tmk(engine: AcquirerEngine, ledger: MemoryLedger) -> None:
    resp, pik, mak = sign_in(engine)
    assert resp["t"] == "0810" and resp["39"] == "00"
    assert resp["11"] == "000001" and resp["41"] == TID and resp["42"] == MID
    assert resp["60"] == "00000001004"
    assert (resp["12"], resp["13"]) == ("150926", "0314")
    assert len(resp["62"]) == 80 and len(pik) == 16 and len(mak) == 16 and pik != mak
    assert engine.sessions[TID].pik == pik and engine.sessions[TID].batch_no == "000001"
    assert "64" not in resp
    assert ledger.records[-1].mti == "0800" and ledger.records[-1].response_code == "00"


def test_single_des_sign_in(engine: AcquirerEngine) -> None:
    resp, pik, mak = sign_in(engine, net="003")
    assert len(resp["62"]) == 48 and len(pik) == 8 and len(mak) == 8
    assert sale(engine, pik, mak)["39"] == "00"


def test_sale_approved_debits_balance_and_macs_response(engine: AcquirerEngine,
                                                        ledger: MemoryLedger) -> None:
    _, pik, mak = sign_in(engine)
    before = engine.accounts[PAN].balance_minor
    resp = sale(engine, pik, mak, amount=1234)
    assert resp["t"] == "0210" and resp["39"] == "00"
    assert len(resp["38"]) == 6 and len(resp["37"]) == 12
    assert resp["4"] == "000000001234" and resp["11"] == "000002"
    assert_response_mac(resp, mak)
    assert engine.accounts[PAN].balance_minor == before - 1234
    rec = ledger.records[-1]
    assert (rec.mti, rec.response_code, rec.amount_minor, rec.stan, rec.batch_no) == (
        "0200", "00", 1234, "000002", "000001")
    assert rec.pan_masked == "621483******0017" and PAN not in repr(rec)
    assert rec.auth_code == resp["38"] and rec.rrn == resp["37"] and rec.entry_mode == "051"


@pytest.mark.parametrize("kwargs, code", [
    ({"pin": "654321"}, "55"),
    ({"pan": PAN_LOW, "amount": 501}, "51"),
    ({"pan": PAN_OLD}, "54"),
    ({"pan": PAN_BLOCKED}, "14"),
    ({"pan": "6214830000009999"}, "14"),
    ({"batch": 2}, "77"),
])
def test_sale_declines(engine: AcquirerEngine, kwargs: dict[str, object], code: str) -> None:
    _, pik, mak = sign_in(engine)
    resp = sale(engine, pik, mak, **kwargs)
    assert resp["39"] == code
    assert "38" not in resp
    assert_response_mac(resp, mak)  # the terminal's keys are good: the decline is MACed


def test_wrong_pin_three_times_locks_with_75(engine: AcquirerEngine) -> None:
    _, pik, mak = sign_in(engine)
    codes = [sale(engine, pik, mak, pin="000000", stan=s)["39"] for s in (2, 3, 4)]
    assert codes == ["55", "55", "75"]
    assert sale(engine, pik, mak, stan=5)["39"] == "75"  # even with the right PIN


def test_reset_pin_tries_unblocks_the_card(engine: AcquirerEngine) -> None:
    _, pik, mak = sign_in(engine)
    for s in (2, 3, 4):
        sale(engine, pik, mak, pin="000000", stan=s)
    assert engine.reset_pin_tries() == [mask_pan(PAN)]
    assert sale(engine, pik, mak, stan=5)["39"] == "00"
    assert engine.reset_pin_tries() == []


def test_right_pin_resets_the_try_counter(engine: AcquirerEngine) -> None:
    _, pik, mak = sign_in(engine)
    assert sale(engine, pik, mak, pin="000000", stan=2)["39"] == "55"
    assert sale(engine, pik, mak, stan=3)["39"] == "00"
    assert engine.accounts[PAN].pin_failures == 0


def test_duplicate_stan_in_batch_is_94(engine: AcquirerEngine) -> None:
    _, pik, mak = sign_in(engine)
    assert sale(engine, pik, mak, stan=7)["39"] == "00"
    assert sale(engine, pik, mak, stan=7)["39"] == "94"


def test_not_signed_in_is_22_without_mac(engine: AcquirerEngine) -> None:
    resp = sale(engine, bytes(range(16)), bytes(range(16, 32)))
    assert resp["39"] == "22" and "64" not in resp


def test_old_keys_after_new_sign_in_is_a0(engine: AcquirerEngine) -> None:
    _, pik, mak = sign_in(engine)
    sign_in(engine)  # host rolls the keys; the terminal kept the old ones
    resp = sale(engine, pik, mak)
    assert resp["39"] == "A0" and "64" not in resp


def test_bad_mac_is_a0(engine: AcquirerEngine) -> None:
    _, pik, mak = sign_in(engine)
    raw = bytearray(encode_with_mac(sale_doc(pik), mak))
    raw[-1] ^= 0x01
    resp = engine.handle(Tpdu(), Header(), decode_message(bytes(raw)), NOW, mac_data=bytes(raw))
    assert resp["39"] == "A0"
    assert engine.accounts[PAN].balance_minor == 1000000
    no_mac = encode_message(sale_doc(pik))
    resp = engine.handle(Tpdu(), Header(), decode_message(no_mac), NOW, mac_data=no_mac)
    assert resp["39"] == "A0"


def test_request_damaged_on_the_way_is_a0_and_the_answer_still_encodes(
        engine: AcquirerEngine) -> None:
    """A byte flipped in flight (the injector's corrupt_byte) leaves A-F nibbles in a numeric
    field: the MAC fails (A0), and the damaged value is not echoed, so the 0210 still encodes
    (the host used to drop the connection instead)."""
    _, pik, mak = sign_in(engine)
    raw = bytearray(encode_with_mac(sale_doc(pik), mak))
    assert raw[19:22] == bytes(3)  # MTI 2 + bitmap 8 + field 2 (1 + 8): field 3 is 000000
    raw[20] ^= 0xFF
    frame_in = frame(bytes(raw), Tpdu(), Header())
    tpdu, header, payload = unframe(frame_in)
    answer = unframe(engine.handle_frame(tpdu, header, payload, NOW))[2]
    resp = decode_message(answer)
    assert resp["39"] == "A0" and "3" not in resp and resp["11"] == "000002"


def test_unknown_terminal_is_97(engine: AcquirerEngine) -> None:
    resp, _, _ = sign_in(engine, tid="99999999")
    assert resp["39"] == "97" and "62" not in resp
    assert "99999999" not in engine.sessions


def test_wrong_merchant_is_03(engine: AcquirerEngine) -> None:
    resp, _, _ = sign_in(engine, mid="898100012349999")
    assert resp["39"] == "03"


def test_bad_field_60_is_30(engine: AcquirerEngine) -> None:
    resp, _, _ = sign_in(engine, net="009")
    assert resp["39"] == "30"


def test_unsupported_mti_and_proc_code(engine: AcquirerEngine) -> None:
    resp = engine.handle(Tpdu(), Header(), {"t": "0400", "11": "000009", "41": TID}, NOW)
    assert resp["t"] == "0410" and resp["39"] == "12"
    _, pik, mak = sign_in(engine)
    doc = {**sale_doc(pik), "3": "310000"}  # no row has it (200000 is the void's now)
    raw = encode_with_mac(doc, mak)
    assert engine.handle(Tpdu(), Header(), decode_message(raw), NOW, mac_data=raw)["39"] == "12"
    with pytest.raises(DecodeError, match="not a request MTI"):
        engine.handle(Tpdu(), Header(), {"t": "0210"}, NOW)


def test_handle_frame_swaps_tpdu_and_asks_for_sign_in_after_22(engine: AcquirerEngine) -> None:
    payload = encode_with_mac(sale_doc(bytes(range(16))), bytes(range(16, 32)))
    reply = engine.handle_frame(Tpdu(destination=3, source=0x0102), Header(), payload, NOW)
    tpdu, header, body = unframe(reply)
    assert tpdu == Tpdu(destination=0x0102, source=3)
    assert header.processing_requirement == 3
    assert decode_message(body)["39"] == "22"
    sign_in_payload = encode_message({"t": "0800", "11": "000001", "41": TID, "42": MID,
                                      "60": "00000001004"})
    reply = engine.handle_frame(Tpdu(), Header(), sign_in_payload, NOW)
    assert unframe(reply)[1].processing_requirement == 0
    assert reply == frame(unframe(reply)[2], Tpdu().swapped(), Header())


def test_card_profile_missing_key_names_file_and_key(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "broken.yaml"
    path.write_text(card_yaml(PAN).replace("  status: active\n", ""))
    with pytest.raises(ConfigError) as err:
        load_account(path)
    assert str(err.value) == (f"{path}: card profile is not valid:\n"
                              f"  issuer.status: required key is missing")
    path.write_text(card_yaml(PAN, pin="12"))
    with pytest.raises(ConfigError, match="pin: .*4..12 digits"):
        load_account(path)


def test_duplicate_pan_across_profiles_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "a.yaml").write_text(card_yaml(PAN))
    (tmp_path / "b.yaml").write_text(card_yaml(PAN))
    with pytest.raises(ConfigError) as err:
        load_accounts(tmp_path)
    assert "621483******0017 already defined in a.yaml" in str(err.value)
    assert PAN not in str(err.value)


def test_repo_fixtures_load() -> None:
    from pathlib import Path

    from sim.host.engine import load_terminals
    root = Path(__file__).resolve().parents[2]
    terminals = load_terminals(root / "fixtures/host/terminals.yaml")
    assert terminals[TID].merchant_id == MID and terminals[TID].master_key == TMK
    if (root / "fixtures/cards/good.yaml").exists():
        accounts = load_accounts(root / "fixtures/cards")
        assert all(a.status in STATUS_CODES for a in accounts.values())
        assert len(accounts) >= 12
