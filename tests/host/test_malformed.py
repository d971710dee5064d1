"""A request that decodes but is malformed (a non-decimal nibble in a numeric field, field 55
that is not BER-TLV, field 61 that names no original) is answered 30 with nothing changed, so
its corrected retry under the same STAN is answered as if it had never come.  The host used to
record the trace number first and then crash on the amount (ValueError), so the retry was
refused as a duplicate (94).  A request damaged on its way still fails its MAC first (A0)."""

from __future__ import annotations

import logging
from dataclasses import astuple

import pytest

from protocols.errors import DecodeError
from protocols.iso8583 import (
    UNIONPAY,
    Dialect,
    Header,
    Tpdu,
    decode_message,
    encode_message,
    encode_with_mac,
    frame,
    mac_ok,
    unframe,
    validate_message,
)
from protocols.ledger import Status
from sim.host.engine import AcquirerEngine
from sim.host.ledger import MemoryLedger
from sim.host.rules import parse_rule

from .business import Term, sale_doc, sign_in_doc, void_doc
from .conftest import NOW, PAN, TID

#: The dialect without its numeric check: what a terminal with a bug (or a byte flipped before
#: the MAC was computed) would send.
LAX = Dialect("unionpay-lax", UNIONPAY.spec)


def send(engine: AcquirerEngine, term: Term, doc: dict[str, str]) -> dict[str, str]:
    """*doc* encoded as is (A-F nibbles too) and MACed right, as the engine gets it off the wire."""
    raw = encode_with_mac(doc, term.mak, LAX)
    return engine.answer(Tpdu(), Header(), decode_message(raw), NOW, mac_data=raw).response


def state(engine: AcquirerEngine, ledger: MemoryLedger) -> tuple[object, ...]:
    """Everything a request may change but the ledger row it adds."""
    return (sorted(engine.sessions[TID].seen), engine.sessions[TID].batch_no,
            {pan: (a.balance_minor, a.pin_failures) for pan, a in engine.accounts.items()},
            [astuple(r) for r in ledger.records], engine.rules.to_json())


def test_validate_message_names_field_nibble_and_byte() -> None:
    doc = sale_doc(bytes(16), stan=2, amount=1000, pin=None)
    raw = encode_message({**doc, "4": "00000000100A"}, LAX)
    with pytest.raises(DecodeError) as err:
        validate_message(decode_message(raw))
    # MTI 2 + bitmap 8 + field 2 (1 + 8) + field 3 (3): field 4 at bytes 22-27
    assert str(err.value) == ("validate_message(): field 4 (Amount, transaction): non-decimal "
                              "nibble 'A' at byte 27 of 91 (digit 12 of 12; MTI 0200)")
    assert raw[27] == 0x0A
    raw = encode_message({**doc, "2": "62148300000A0017"}, LAX)
    with pytest.raises(DecodeError) as err:
        validate_message(decode_message(raw))
    assert str(err.value) == ("validate_message(): field 2 (PAN): non-decimal nibble at byte "
                              "16 of 91 (digit 12 of 16; MTI 0200); sensitive field, value "
                              "not shown")
    raw = encode_message({**doc, "23": "0B1"}, LAX)  # n3 right-aligned: pad nibble first
    with pytest.raises(DecodeError, match=r"field 23 \(Card sequence number\): non-decimal "
                                          r"nibble 'B' at byte 36 of 91 \(digit 2 of 3"):
        validate_message(decode_message(raw))
    assert raw[35:37] == b"\x00\xb1"
    validate_message(decode_message(encode_message(doc)))


def test_validate_message_refuses_what_does_not_encode() -> None:
    with pytest.raises(DecodeError, match=r"^validate_message\(\): field 52 \(PIN data\): .*"
                                          r"\(MTI 0200, dialect unionpay-pos\)$"):
        validate_message({"t": "0200", "52": "not hex!"})


def test_amount_with_a_hex_nibble_is_30_and_the_retry_is_approved(
        engine: AcquirerEngine, ledger: MemoryLedger, caplog: pytest.LogCaptureFixture) -> None:
    term = Term(engine)
    before = state(engine, ledger)
    doc = sale_doc(term.pik, stan=5, amount=1000)
    caplog.set_level(logging.INFO, "sim.host.engine")
    resp = send(engine, term, {**doc, "4": "0000000010A0"})
    assert resp["39"] == "30" and "4" not in resp and resp["11"] == "000005"
    assert mac_ok(encode_message(resp), term.mak)  # the keys are good: the refusal is MACed
    assert "field 4 (Amount, transaction): non-decimal nibble 'A' at byte 27 of" in caplog.text
    row = ledger.records[-1]
    assert (row.response_code, row.status, row.amount_minor, row.stan) == (
        "30", None, None, "000005")
    assert state(engine, ledger)[:3] == before[:3]  # trace, batch, balances untouched
    assert state(engine, ledger)[3][:-1] == before[3]  # only its own row was added
    retry = term.send(doc)
    assert retry["39"] == "00" and retry["11"] == "000005"
    assert engine.accounts[PAN].balance_minor == 1000000 - 1000


@pytest.mark.parametrize(("field", "value", "says"), [
    ("11", "00000C", "field 11 (System trace audit number): non-decimal nibble 'C'"),
    ("60", "2200000F00050", "field 60 (Reserved private): non-decimal nibble 'F'"),
    ("55", "9F2608AABB", "field 55 (ICC data) is not BER-TLV: tag 9F26 at offset 0: value of 8"),
    ("61", "0001", "field 61 original data '0001': expected batch (6) + STAN (6)"),
])
def test_a_malformed_field_is_30_with_nothing_changed(
        engine: AcquirerEngine, ledger: MemoryLedger, caplog: pytest.LogCaptureFixture,
        field: str, value: str, says: str) -> None:
    term = Term(engine)
    engine.add_rule(parse_rule({"match": {"mti": "0200"}, "answer": {"response_code": "96"},
                                "times": 1}, "test"))
    before = state(engine, ledger)
    caplog.set_level(logging.INFO, "sim.host.engine")
    assert send(engine, term, {**sale_doc(term.pik, stan=5, amount=1000), field: value}
                )["39"] == "30"
    assert says in caplog.text
    assert "AABB" not in caplog.text.upper().replace(" ", "")  # field 55 is card data
    after = state(engine, ledger)
    assert after[:3] == before[:3] and after[3][:-1] == before[3]
    assert after[4] == before[4]  # the rule was not taken
    assert term.sale(1000)["39"] == "96"  # … it is there for the next request


def test_a_malformed_void_leaves_its_sale_alone(engine: AcquirerEngine,
                                                 ledger: MemoryLedger) -> None:
    term = Term(engine)
    assert term.sale(1000)["39"] == "00"
    sale_stan = term.stan
    doc = void_doc(stan=term.next_stan(), amount=1000, ostan=sale_stan)
    assert send(engine, term, {**doc, "4": "00000000A000"})["39"] == "30"
    assert ledger.find_original(TID, stan=f"{sale_stan:06d}") is not None
    assert ledger.records[-2].status == Status.BOOKED
    assert term.send(doc)["39"] == "00"  # the corrected void, same STAN
    assert engine.accounts[PAN].balance_minor == 1000000


def test_a_sign_in_with_a_hex_batch_opens_no_session(engine: AcquirerEngine) -> None:
    doc = {**sign_in_doc(stan=1, batch=1), "60": "000000A1004"}
    raw = encode_message(doc, LAX)
    resp = engine.handle(Tpdu(), Header(), decode_message(raw), NOW, mac_data=raw)
    assert resp["39"] == "30" and "62" not in resp and "64" not in resp
    assert TID not in engine.sessions
    assert engine.handle(Tpdu(), Header(), sign_in_doc(stan=1, batch=1), NOW)["39"] == "00"


def test_damaged_on_its_way_is_still_a0_not_30(engine: AcquirerEngine,
                                               ledger: MemoryLedger) -> None:
    """The MAC comes first: a byte flipped after the terminal MACed the request is A0 (the
    terminal signs in again), whichever field it hit."""
    term = Term(engine)
    raw = bytearray(encode_with_mac(sale_doc(term.pik, stan=5, amount=1000), term.mak))
    raw[27] = 0x0A  # the amount's last byte
    payload = bytes(raw)
    resp = decode_message(unframe(engine.handle_frame(Tpdu(), Header(), payload, NOW))[2])
    assert resp["39"] == "A0" and "4" not in resp and "64" not in resp
    assert ledger.records[-1].response_code == "A0"
    assert frame(payload, Tpdu(), Header())  # it frames: only its content is wrong


def test_an_empty_numeric_field_is_named() -> None:
    with pytest.raises(DecodeError, match=r"^validate_message\(\): field 2 \(PAN\): empty; a "
                                          r"numeric field holds one digit at least \(MTI 0200\)$"):
        validate_message(decode_message(encode_message({"t": "0200", "2": ""}, LAX)))
