"""Host response rules: the rules file (pydantic, key paths named), matching, and what the
engine does with a rule's response code, delay, drop and times."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from protocols.errors import ConfigError
from protocols.iso8583 import Header, Tpdu, decode_message, encode_message
from protocols.ledger import Status
from sim.host.engine import AcquirerEngine
from sim.host.ledger import MemoryLedger
from sim.host.rules import HostRule, RequestFacts, RuleBook, load_rules, matches, parse_rule

from .business import Term, sale_doc, sign_in_doc
from .conftest import NOW, PAN, PAN_LOW, TID

ROOT = Path(__file__).resolve().parents[2]


def rule(**raw: Any) -> HostRule:
    return parse_rule(raw, "test")


# -- the file ------------------------------------------------------------------------------------

def test_repo_rules_file_loads() -> None:
    assert load_rules(ROOT / "fixtures/host/rules.yaml") == []


def test_rules_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text('rules:\n'
                    '  - match: {terminal_id: "10000001", mti: "0200", proc_code: "000000",\n'
                    '            amount_min: 5000, amount_max: 9999, pan_last4: "0017"}\n'
                    '    answer: {response_code: "51"}\n'
                    '    times: 1\n'
                    '  - answer: {delay_s: 2.5}\n'
                    '  - match: {mti: "0400"}\n'
                    '    answer: {drop: true}\n')
    first, second, third = load_rules(path)
    assert first.match.amount_min == 5000 and first.answer.response_code == "51"
    assert first.times == 1
    assert second.match == rule(answer={"drop": True}).match  # no match: every request
    assert second.answer.describe() == "delay 2.5 s" and third.answer.describe() == "drop"


def test_rules_file_mistakes_name_every_key_path(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text('rules:\n'
                    '  - match: {amout_min: 5}\n'
                    '    answer: {response_code: 51}\n'
                    '  - match: {mti: "0210", proc_code: "00", amount_min: 9, amount_max: 1}\n'
                    '    answer: {}\n'
                    '    times: 0\n'
                    '  - answer: {drop: true, delay_s: 1}\n'
                    '  - answer: {response_code: "00", delay_s: 500}\n'
                    'rule: []\n')
    with pytest.raises(ConfigError) as err:
        load_rules(path)
    text = str(err.value)
    assert text.startswith(f"{path}: host rules file is not valid:\n")
    for line in (
        "  rules[0].match.amout_min: unknown key (misspelt?)",
        "  rules[0].answer.response_code: expected a response code as a quoted string of 2 "
        "characters (YAML reads unquoted digits as a number)",
        "  rules[1].match.mti: 0210 is a response MTI; rules match requests",
        "  rules[1].match.proc_code: expected a processing code: 6 digits, got '00'",
        "  rules[1].answer: an answer needs response_code, delay_s or drop: true",
        "  rules[1].times: must be >= 1",
        "  rules[2].answer: drop never answers; delay_s makes no sense with it",
        "  rules[3].answer.response_code: a rule refuses; 00 is the host's own decision",
        "  rules[3].answer.delay_s: must be <= 120.0",
        "  rule: unknown key (misspelt?)",
    ):
        assert line in text, (line, text)


def test_amount_range_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"match: amount_min 9 > amount_max 1"):
        rule(match={"amount_min": 9, "amount_max": 1}, answer={"drop": True})


def test_parse_rule_names_the_source() -> None:
    with pytest.raises(ConfigError) as err:
        parse_rule({"answer": {"response_code": "5"}}, "add_rule: rule")
    assert str(err.value) == ("add_rule: rule: host rule is not valid:\n  answer.response_code: "
                              "expected a response code: 2 upper-case letters or digits, got '5'")


# -- matching --------------------------------------------------------------------------------------

def test_request_facts_and_matching() -> None:
    facts = RequestFacts.of({"t": "0200", "3": "000000", "4": "000000006000", "41": TID,
                             "35": f"{PAN}D3012"})
    assert facts == RequestFacts(TID, "0017", "0200", "000000", 6000)
    assert matches(rule(answer={"drop": True}).match, facts)
    for match, want in [({"terminal_id": TID, "pan_last4": "0017", "mti": "0200",
                          "proc_code": "000000", "amount_min": 6000, "amount_max": 6000}, True),
                        ({"terminal_id": "10000002"}, False),
                        ({"pan_last4": "0025"}, False),
                        ({"mti": "0400"}, False),
                        ({"proc_code": "200000"}, False),
                        ({"amount_min": 6001}, False),
                        ({"amount_max": 5999}, False)]:
        assert matches(rule(match=match, answer={"drop": True}).match, facts) is want, match
    no_amount = RequestFacts.of({"t": "0800", "41": TID})
    assert not matches(rule(match={"amount_max": 10}, answer={"drop": True}).match, no_amount)
    assert not matches(rule(match={"pan_last4": "0017"}, answer={"drop": True}).match,
                       no_amount)


def test_rule_book_first_match_times_and_clearing() -> None:
    book = RuleBook([rule(match={"mti": "0800"}, answer={"delay_s": 1})])
    first = book.add(rule(match={"mti": "0200"}, answer={"response_code": "51"}, times=2))
    second = book.add(rule(answer={"drop": True}))
    facts = RequestFacts.of({"t": "0200"})
    taken = [book.take(facts) for _ in range(3)]
    assert [t.id if t else None for t in taken] == [first, first, second]
    assert book.added_in_force() == 1  # the first is spent
    assert [r["spent"] for r in book.to_json()] == [False, True, False]
    assert book.clear_added() == [first, second]
    assert book.take(facts) is None and len(book) == 1
    assert book.take(RequestFacts.of({"t": "0800"})) is not None  # the file's rule stays


# -- the engine ------------------------------------------------------------------------------------

@pytest.fixture
def term(engine: AcquirerEngine) -> Term:
    return Term(engine)


def test_rule_code_answers_it_and_books_nothing(term: Term, engine: AcquirerEngine,
                                                ledger: MemoryLedger) -> None:
    rid = engine.add_rule(rule(match={"mti": "0200", "proc_code": "000000", "amount_min": 5000},
                               answer={"response_code": "51"}))
    refused = term.sale(6000)
    assert refused["39"] == "51" and "38" not in refused and "64" in refused  # MACed
    assert engine.accounts[PAN].balance_minor == 1000000
    row = ledger.records[-1]
    assert (row.response_code, row.status, row.rule_id, row.rule_action) == (
        "51", None, rid, "code 51")
    assert term.sale(1000)["39"] == "00"  # below the range: the host decides
    assert ledger.records[-1].rule_id is None and ledger.records[-1].status == Status.BOOKED


def test_rule_code_still_verifies_mac_and_pin(term: Term, engine: AcquirerEngine) -> None:
    engine.add_rule(rule(match={"mti": "0200"}, answer={"response_code": "96"}))
    assert term.sale(1000, pin="999999")["39"] == "55"
    assert engine.accounts[PAN].pin_failures == 1
    raw = encode_message(sale_doc(term.pik, stan=50, amount=1000))
    resp = engine.handle(Tpdu(), Header(), decode_message(raw), NOW, mac_data=raw)
    assert resp["39"] == "A0"
    assert term.sale(1000)["39"] == "96"


def test_rule_code_on_sign_in(engine: AcquirerEngine) -> None:
    engine.add_rule(rule(match={"mti": "0800"}, answer={"response_code": "96"}, times=1))
    resp = engine.handle(Tpdu(), Header(), sign_in_doc(), NOW)
    assert resp["39"] == "96" and "62" not in resp and TID not in engine.sessions
    Term(engine)  # once only: the next sign-in works


def test_rule_delay_and_drop_are_asked_of_the_server_and_the_request_is_booked(
        term: Term, engine: AcquirerEngine, ledger: MemoryLedger) -> None:
    late = engine.add_rule(rule(match={"pan_last4": "0017"}, answer={"delay_s": 2.5},
                                times=1))
    ans = term.answer(sale_doc(term.pik, stan=term.next_stan(), amount=1000))
    assert (ans.response["39"], ans.delay_s, ans.drop, ans.rule_id) == ("00", 2.5, False, late)
    assert ledger.records[-1].status == Status.BOOKED
    assert ledger.records[-1].rule_action == "delay 2.5 s"
    gone = engine.add_rule(rule(match={"terminal_id": TID, "mti": "0200"},
                                answer={"drop": True}))
    ans = term.answer(sale_doc(term.pik, stan=term.next_stan(), amount=1000))
    assert (ans.response["39"], ans.delay_s, ans.drop, ans.rule_id) == ("00", 0.0, True, gone)
    assert ledger.records[-1].status == Status.BOOKED  # booked: the terminal must reverse it
    assert engine.accounts[PAN].balance_minor == 1000000 - 2000


def test_rule_times_counts_requests(term: Term, engine: AcquirerEngine) -> None:
    engine.add_rule(rule(match={"mti": "0200"}, answer={"response_code": "05"}, times=2))
    codes = [term.sale(100)["39"] for _ in range(3)]
    assert codes == ["05", "05", "00"]


def test_first_matching_rule_wins_and_clear_rules(term: Term, engine: AcquirerEngine) -> None:
    a = engine.add_rule(rule(match={"pan_last4": "0025"}, answer={"response_code": "14"}))
    b = engine.add_rule(rule(match={"mti": "0200"}, answer={"response_code": "05"}))
    assert term.sale(100, pan=PAN_LOW)["39"] == "14"
    assert term.sale(100)["39"] == "05"
    assert engine.clear_rules() == [a, b]
    assert term.sale(100)["39"] == "00"
