"""The transaction table (protocols.transactions) and what protocols.ecr builds from it."""

from __future__ import annotations

import dataclasses

import pytest

from protocols import ecr
from protocols.errors import ConfigError, DecodeError
from protocols.transactions import (
    REFUND as REAL_REFUND,
)
from protocols.transactions import (
    SALE,
    TRANSACTIONS,
    Book,
    OriginalRef,
    SettlementTotals,
    TransactionTable,
    TxnType,
    by_ecr_code,
    by_iso,
    parse_field61,
    transaction_type,
    upload_count_field48,
)
from protocols.transactions import (
    VOID as REAL_VOID,
)
from tests.terminal.fakes import REFUND, TEST_TABLE, VOID


def test_sale_row_says_how_a_sale_looks_on_every_wire() -> None:
    assert list(TRANSACTIONS) == [SALE, REAL_VOID, REAL_REFUND] and len(TRANSACTIONS) == 3
    assert (SALE.type, SALE.ecr_code, SALE.ecr_name, SALE.mti, SALE.proc_code,
            SALE.condition_code, SALE.message_type_code, SALE.receipt_title) == (
        "sale", "PU", "PURCHASE", "0200", "000000", "00", "22", "消费 SALE")
    assert (SALE.needs_card, SALE.needs_original, SALE.needs_pin) == (True, False, True)
    assert SALE.description
    assert (SALE.amount_from_original, SALE.book) == (False, Book.DEBIT)


def test_void_and_refund_rows_are_the_contract_s() -> None:
    """docs/business-day.md, "Transaction table rows"."""
    assert (REAL_VOID.type, REAL_VOID.ecr_code, REAL_VOID.ecr_name, REAL_VOID.mti,
            REAL_VOID.proc_code, REAL_VOID.condition_code, REAL_VOID.message_type_code,
            REAL_VOID.receipt_title) == (
        "void", "VD", "VOID", "0200", "200000", "00", "23", "消费撤销 VOID")
    assert (REAL_VOID.needs_card, REAL_VOID.needs_original, REAL_VOID.needs_pin,
            REAL_VOID.amount_from_original, REAL_VOID.book) == (
        False, True, False, True, Book.CANCEL)
    assert (REAL_REFUND.type, REAL_REFUND.ecr_code, REAL_REFUND.ecr_name, REAL_REFUND.mti,
            REAL_REFUND.proc_code, REAL_REFUND.condition_code, REAL_REFUND.message_type_code,
            REAL_REFUND.receipt_title) == (
        "refund", "RF", "REFUND", "0220", "200000", "00", "25", "退货 REFUND")
    assert (REAL_REFUND.needs_card, REAL_REFUND.needs_original, REAL_REFUND.needs_pin,
            REAL_REFUND.amount_from_original, REAL_REFUND.book) == (
        False, True, False, False, Book.CREDIT)


def test_settlement_totals_field48_roundtrip_and_errors() -> None:
    totals = SettlementTotals(2, 3000, 1, 500)
    assert totals.field48() == "002000000003000001000000000500" + "0"
    back = SettlementTotals.parse(totals.with_code("1").field48())
    assert back.code == "1" and back.same_totals(totals) and back != totals
    assert upload_count_field48(7) == "0007"
    with pytest.raises(DecodeError, match="expected 31 digits"):
        SettlementTotals.parse("123")
    with pytest.raises(DecodeError, match="debit_count must be 0..999, got 1000"):
        SettlementTotals(1000, 0, 0, 0)


def test_void_field61_has_no_date() -> None:
    ref = OriginalRef(stan="000012", batch_no="000003", rrn="000000001234", date="0504")
    assert ref.field61(9, with_date=False) == "000003000012"
    assert ref.field61(9) == "0000030000120504"


def test_lookups_by_type_ecr_code_and_iso_key() -> None:
    assert transaction_type(TxnType.SALE) is SALE and TRANSACTIONS.get("sale") is SALE
    assert by_ecr_code("PU") is SALE and by_ecr_code("RF") is REAL_REFUND
    assert by_ecr_code("XX") is None
    assert by_iso("0200", "000000") is SALE and by_iso("0200", "200000") is REAL_VOID
    assert by_iso("0220", "200000") is REAL_REFUND and by_iso("0200", "300000") is None
    assert TEST_TABLE.for_ecr_code("RF") is REFUND
    assert TEST_TABLE.for_iso("0200", "200000") is VOID
    assert TEST_TABLE.by_type["refund"] is REFUND
    with pytest.raises(ConfigError, match=r"no type 'preauth'; known: sale, void, refund"):
        TRANSACTIONS.get("preauth")


def test_table_is_frozen() -> None:
    for mapping in (TRANSACTIONS.by_type, TRANSACTIONS.by_ecr_code, TRANSACTIONS.by_iso):
        with pytest.raises(TypeError):
            mapping["x"] = SALE  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        SALE.ecr_code = "XX"  # type: ignore[misc]
    assert isinstance(TRANSACTIONS.rows, tuple)


def test_table_refuses_clashes_and_bad_rows() -> None:
    with pytest.raises(ConfigError, match=r"ECR code 'PU' of refund is already used by sale"):
        TransactionTable((SALE, dataclasses.replace(REFUND, ecr_code="PU")))
    with pytest.raises(ConfigError, match=r"MTI \+ processing code \('0200', '000000'\)"):
        TransactionTable((SALE, dataclasses.replace(VOID, proc_code="000000")))
    with pytest.raises(ConfigError, match=r"transaction type sale: proc_code must be 6 digits, "
                                          r"got '00'"):
        dataclasses.replace(SALE, proc_code="00")


def test_ecr_specs_exist_for_every_row() -> None:
    for table in (TRANSACTIONS, TEST_TABLE):
        specs = ecr.message_specs(table)
        for row in table:
            req, resp = specs[("rig", row.ecr_code)], specs[("terminal", row.ecr_code)]
            required = () if row.amount_from_original else ("amt", "cur")
            assert (req.name, req.kind, req.required) == (row.ecr_name, ecr.Kind.REQUEST,
                                                          required)
            assert (resp.name, resp.kind, resp.required) == (row.ecr_name, ecr.Kind.RESPONSE,
                                                             ("rc",))
        with pytest.raises(TypeError):
            specs[("rig", "ZZ")] = specs[("rig", "ST")]  # type: ignore[index]
    assert ("rig", "RF") in ecr.MESSAGE_SPECS and ("rig", "XX") not in ecr.MESSAGE_SPECS
    assert ecr.REQUEST_CODES["PURCHASE"] == "PU" and ecr.REQUEST_CODES["STATUS"] == "ST"
    msg = ecr.decode_message(b"RF\x1camt=5\x1ccur=156", "rig", ecr.message_specs(TEST_TABLE))
    assert msg.describe("rig", ecr.message_specs(TEST_TABLE)) == "RF(REFUND) amt=5 cur=156"
    only_sale = ecr.message_specs(TransactionTable((SALE,)))
    with pytest.raises(DecodeError, match="unknown code 'RF' from rig"):
        ecr.decode_message(b"RF\x1camt=5\x1ccur=156", "rig", only_sale)
    assert ecr.decode_message(b"VD\x1costan=000001", "rig").fields == {"ostan": "000001"}


def test_transaction_code_may_not_clash_with_a_fixed_message() -> None:
    table = TransactionTable((dataclasses.replace(REFUND, ecr_code="ST"),))
    with pytest.raises(ConfigError, match="transaction type refund uses code ST, a fixed"):
        ecr.message_specs(table)


def test_ecr_vocabulary_enums_compare_as_strings() -> None:
    assert ecr.EventCode.CARD_REMOVED == "CARD_REMOVED" and ecr.Prompt.ENTER_PIN == "ENTER_PIN"
    assert ecr.MsgCode.STATUS == "ST" and f"{ecr.MsgCode.KEY}" == "KY"
    assert {e.value for e in ecr.EventCode} == {
        "READY", "PAPER_OUT", "PAPER_OK", "LOW_BATTERY", "BATTERY_OK", "CARD_INSERTED",
        "CARD_REMOVED", "PAPER_LOW", "PAPER_LOW_OK", "PRINTER_MISSING", "PRINTER_OK",
        "SHUTDOWN"}
    assert {c.value for c in ecr.FaultCode} == {"E01", "E02", "E03", "E11", "E12"}
    assert set(ecr.FAULT_TEXTS) == set(ecr.FaultCode)
    assert all(text.startswith(code) for code, text in ecr.FAULT_TEXTS.items())
    assert {p.value for p in ecr.Prompt} == {
        "INSERT_CARD", "READING_CARD", "ENTER_PIN", "PROCESSING", "CONNECTING", "PRINTING",
        "RETRY_CHIP", "SWIPE_CARD", "INSERT_CHIP", "SWIPE_AGAIN", "ONE_CARD_ONLY", "WRONG_PIN",
        "PIN_BLOCKED", "SIGNATURE", "SHOW_QR", "SCAN_CODE", "WAIT_PASSWORD"}
    assert ecr.KEY_NAMES == {"ENTER", "CANCEL", "CLEAR"} and "ENTER" in ecr.KEY_NAMES
    assert ecr.TerminalState.BOOTING == "BOOTING" and ecr.Copy.MERCHANT == "merchant"


def test_original_ref_by_trace_and_by_rrn() -> None:
    by_trace = OriginalRef.by_trace(12)
    assert by_trace.ecr_fields() == {"ostan": "000012"}
    assert by_trace.field61(current_batch=3) == "000003000012" + "0000"
    assert OriginalRef.by_trace(12, batch_no=2).field61(3) == "0000020000120000"
    by_rrn = OriginalRef.by_rrn("000000001234", "0504")
    assert by_rrn.ecr_fields() == {"orrn": "000000001234", "odate": "0504"}
    assert by_rrn.field61(current_batch=3) == "000000" + "000000" + "0504"
    assert OriginalRef.from_ecr_fields({"amt": "1", **by_rrn.ecr_fields()}) == by_rrn
    assert OriginalRef.from_ecr_fields({"amt": "1"}) is None
    assert parse_field61("0000030000120504") == ("000003", "000012", "0504")
    assert parse_field61("000000000000") == ("", "", "")
    assert by_trace.describe() == "TRACE 000012" and by_rrn.describe() == "RRN 000000001234 (0504)"


@pytest.mark.parametrize("fields, error", [
    ({"orrn": "000000001234"}, "orrn needs odate"),
    ({"orrn": "000000001234", "odate": "1399"}, "odate must be MMDD, got '1399'"),
    ({"ostan": "12"}, "ostan must be 6 digits, got '12'"),
    ({"obatch": "000001"}, "obatch needs ostan"),
    # str.isdigit() says yes to these; int('²') raised ValueError, '١٢٣٤٥٦' was accepted
    ({"orrn": "000000001234", "odate": "0²01"}, "odate must be MMDD, got '0²01'"),
    ({"ostan": "١٢٣٤٥٦"}, "ostan must be 6 digits, got '١٢٣٤٥٦'"),
    ({"ostan": "000001", "obatch": "０００００１"}, "obatch must be 6 digits, got '０００００１'"),
])
def test_original_ref_errors_name_the_field(fields: dict[str, str], error: str) -> None:
    with pytest.raises(DecodeError, match=error):
        OriginalRef.from_ecr_fields(fields)
    with pytest.raises(DecodeError, match="expected batch"):
        parse_field61("12ab")


def test_wire_digits_of_the_table_module_are_ascii_digits() -> None:
    """Field 61 and field 48 from a host, the reconciliation code: '²' passed isdigit() and
    then int() raised ValueError."""
    with pytest.raises(DecodeError, match=r"field 61 original data '00000300001²': expected batch"):
        parse_field61("00000300001²")
    with pytest.raises(DecodeError, match="field 48 settlement totals .* expected 31 digits"):
        SettlementTotals.parse("0" * 30 + "¹")
    with pytest.raises(DecodeError, match="reconciliation code must be 1 digit, got '١'"):
        SettlementTotals(code="١")
