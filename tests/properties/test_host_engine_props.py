"""Properties of the acquirer host's message handler (sim.host.engine.AcquirerEngine): for
requests built by strategies (valid ones, ones with an A-F nibble in a numeric field, fields
dropped or replaced, other MTIs and processing codes, a bad MAC) and for arbitrary bytes, the
engine answers with a response code of the dialect, or raises DecodeError for a request it
cannot read.  A refused request changes no booked row of the ledger nor any balance; a request
refused for its format (30) changes nothing at all, and its corrected retry is approved."""

from __future__ import annotations

import copy
from dataclasses import astuple
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.errors import DecodeError
from protocols.iso8583 import (
    RESPONSE_CODES,
    UNIONPAY,
    Header,
    Tpdu,
    decode_message,
    encode_with_mac,
    unframe,
    validate_message,
)
from protocols.ledger import Totals
from sim.host.config import Account
from sim.host.engine import AcquirerEngine, load_accounts, load_terminals
from sim.host.ledger import MemoryLedger
from tests.host.business import (
    Term,
    refund_doc,
    reversal_doc,
    sale_doc,
    settlement_doc,
    upload_doc,
    upload_end_doc,
    void_doc,
)
from tests.host.conftest import NOW, PAN, PAN_LOW, TERMINALS_YAML, card_yaml, counting_keys
from tests.host.conftest import TID as TERMINAL_ID

from .test_iso8583_props import LAX, bad_nibble, field_value

Config = tuple[dict[str, object], dict[str, Account]]


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    """The host tests' terminal and two cards, loaded once (each example copies them)."""
    root: Path = tmp_path_factory.mktemp("host")
    (root / "terminals.yaml").write_text(TERMINALS_YAML)
    (root / "cards").mkdir()
    (root / "cards/good.yaml").write_text(card_yaml(PAN))
    (root / "cards/low.yaml").write_text(card_yaml(PAN_LOW, balance=500))
    return dict(load_terminals(root / "terminals.yaml")), load_accounts(root / "cards")


def fresh(config: Config) -> tuple[AcquirerEngine, MemoryLedger, Term]:
    """A new engine with its own ledger and a signed-in terminal that made one sale (its STAN
    is ``term.stan``), so that voids, refunds and reversals have an original."""
    terminals, accounts = config
    ledger = MemoryLedger()
    engine = AcquirerEngine(terminals, copy.deepcopy(accounts),  # type: ignore[arg-type]
                            ledger=ledger, key_source=counting_keys(), pan_salt=b"salt")
    term = Term(engine)
    assert term.sale(1000)["39"] == "00"
    return engine, ledger, term


def snapshot(engine: AcquirerEngine, ledger: MemoryLedger) -> tuple[object, ...]:
    """Everything a request may change, but the row it adds to the ledger."""
    return ({t: (sorted(s.seen), s.batch_no, s.mak) for t, s in engine.sessions.items()},
            {p: (a.balance_minor, a.pin_failures) for p, a in engine.accounts.items()},
            [astuple(r) for r in ledger.records], engine.rules.to_json())


def base_requests(term: Term) -> st.SearchStrategy[dict[str, str]]:
    """The requests of the business day, as the terminal builds them after its sale."""
    sold, stan = term.stan, term.stan + 1
    return st.sampled_from([
        sale_doc(term.pik, stan=stan, amount=700),
        void_doc(stan=stan, amount=1000, ostan=sold),
        refund_doc(stan=stan, amount=400, ostan=sold, batch=1),
        reversal_doc(term.sent[sold]),
        settlement_doc(Totals(), stan=stan),
        upload_doc(stan=sold, amount=1000),
        upload_end_doc(stan=stan, count=1),
    ])


@st.composite
def mutated(draw: st.DrawFn, doc: dict[str, str]) -> dict[str, str]:
    """*doc* with a few fields dropped, replaced by other valid values, or given an A-F
    nibble; sometimes another MTI or processing code."""
    out = dict(doc)
    for _ in range(draw(st.integers(0, 3))):
        how = draw(st.sampled_from(["drop", "replace", "nibble", "mti", "proc"]))
        keys = sorted(k for k in out if k != "t")
        if how == "drop" and keys:
            out.pop(draw(st.sampled_from(keys)))
        elif how == "replace" and keys:
            key = draw(st.sampled_from(keys))
            out[key] = draw(field_value(key))
        elif how == "nibble" and any(k in UNIONPAY.numeric and out[k] for k in keys):
            out = draw(bad_nibble(out))[0]
        elif how == "mti":
            out["t"] = draw(st.sampled_from(["0200", "0220", "0320", "0400", "0500", "0800",
                                             "0100", "0600"]))
        elif how == "proc":
            out["3"] = draw(st.sampled_from(["000000", "200000", "310000", "00000A"]))
    return out


@given(st.data())
def test_every_request_gets_a_response_code_and_a_refusal_books_nothing(
        config: Config, data: st.DataObject) -> None:
    engine, ledger, term = fresh(config)
    doc = data.draw(base_requests(term).flatmap(mutated))
    good_mac = data.draw(st.booleans())
    raw = encode_with_mac(doc, term.mak if good_mac else bytes(16), LAX)
    before = snapshot(engine, ledger)
    try:
        answer = engine.answer_frame(Tpdu(), Header(), raw, NOW)
    except DecodeError:  # only a request the engine cannot read (here: not a request MTI)
        assert doc["t"][2] not in "02468"
        assert snapshot(engine, ledger) == before
        return
    resp = decode_message(unframe(answer.frame)[2])
    code = resp["39"]
    assert code in RESPONSE_CODES
    after = snapshot(engine, ledger)
    assert after[2][:len(before[2])] == before[2] or code == "00"  # no row changed
    if code != "00":
        assert after[1] == before[1] or code in ("55", "75")  # a wrong PIN counts its try
        assert {k: v[0] for k, v in after[1].items()} == {k: v[0] for k, v in before[1].items()}
        assert ledger.records[-1].response_code == code and ledger.records[-1].status is None
    malformed = True
    try:
        validate_message(decode_message(raw))
        malformed = False
    except DecodeError:
        pass
    if malformed and good_mac and doc["t"] in ("0200", "0220", "0320", "0400", "0500"):
        assert code in ("30", "03", "97", "12", "A0")  # the checks before it, then 30
        if code == "30":
            assert after[:2] == before[:2] and after[3] == before[3]
            assert after[2][:-1] == before[2]  # only its own row, nothing booked


@given(st.data())
def test_a_sale_with_a_bad_nibble_is_30_and_its_retry_is_approved(
        config: Config, data: st.DataObject) -> None:
    engine, ledger, term = fresh(config)
    doc = sale_doc(term.pik, stan=term.stan + 1, amount=data.draw(st.integers(1, 50_000)))
    bad, key, _ = data.draw(bad_nibble({k: v for k, v in doc.items()
                                        if k in ("t", "3", "4", "11", "25", "60")}))
    broken = {**doc, key: bad[key]}
    before = snapshot(engine, ledger)
    raw = encode_with_mac(broken, term.mak, LAX)
    resp = engine.answer(Tpdu(), Header(), decode_message(raw), NOW, mac_data=raw).response
    after = snapshot(engine, ledger)
    assert resp["39"] == "30", resp  # also an A-F processing code: the format comes first
    assert after[:2] == before[:2] and after[2][:-1] == before[2] and after[3] == before[3]
    assert term.send(doc)["39"] == "00"  # same STAN: not a duplicate


@given(st.binary(max_size=160))
def test_any_bytes_get_an_answer_or_decode_error(config: Config, payload: bytes) -> None:
    engine, ledger, _ = fresh(config)
    before = snapshot(engine, ledger)
    try:
        answer = engine.answer_frame(Tpdu(), Header(), payload, NOW)
    except DecodeError:
        assert snapshot(engine, ledger) == before
        return
    assert decode_message(unframe(answer.frame)[2])["39"] in RESPONSE_CODES
    assert snapshot(engine, ledger)[1] == before[1]
    assert TERMINAL_ID in engine.sessions
