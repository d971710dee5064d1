"""The firmware state machine without sockets: inputs and time in, actions out."""

from __future__ import annotations

from typing import Any

import pytest

from protocols.ecr import (
    MAX_PAYLOAD,
    MESSAGE_SPECS,
    EventCode,
    Key,
    Kind,
    MsgCode,
    Prompt,
    decode_message,
    encode_message,
)
from protocols.transactions import SALE, TRANSACTIONS, OriginalRef, TransactionTable
from sim.terminal.acquirer import NO_LINK_TEXT
from sim.terminal.firmware import (
    Action,
    AuthJob,
    ChipJob,
    FlushEcr,
    JobResult,
    SendHarness,
    SignInJob,
    State,
    TerminalFirmware,
    perform,
)
from sim.terminal.nvram import FileNvram, MemoryNvram, NvramData
from tests.terminal.fakes import (
    MASKED,
    NOW,
    PAN,
    REFUND,
    TEST_TABLE,
    VOID,
    FakeAuthResult,
    FakeCard,
    FakeCardError,
    FakeCommsError,
    FakeServices,
    FakeSignInResult,
    FirmwareHands,
    codes,
    ecr_out,
    fast_profile,
    job_of,
    loads,
)

PU = SALE.ecr_code


class Bench(FirmwareHands):
    """A firmware instance and a clock to drive it."""

    def __init__(self, nvram: MemoryNvram | None = None,
                 transactions: TransactionTable = TRANSACTIONS) -> None:
        self.nvram = nvram or MemoryNvram()
        self.fw = TerminalFirmware(fast_profile(), self.nvram, clock=lambda: NOW,
                                   rng=lambda n: bytes(range(1, n + 1)),
                                   transactions=transactions)

    def done(self, job: Any, value: Any = None, failure: str = "", reason: str = "",
             message: str = "") -> list[Action]:
        return self.result(job, value, failure, reason, message)

    def login(self) -> None:
        assert codes(self.req(MsgCode.LOGIN, op="01", pw="0000")) == ["LI:OK"]

    def sign_in(self) -> None:
        self.login()
        job = job_of(self.req(MsgCode.SIGN_IN))
        assert codes(self.done(job, FakeSignInResult())) == ["SI:APPROVED"]


@pytest.fixture
def bench() -> Bench:
    b = Bench()
    b.boot()
    return b


def test_boot_flushes_ecr_then_ready_after_post() -> None:
    b = Bench()
    out = b.fw.start(0.0)
    assert out == [FlushEcr(), SendHarness({"t": "load", "state": "booting"})]
    assert codes(b.req(PU, amt="100", cur="156")) == ["PU:BUSY"]
    assert ecr_out(b.req(MsgCode.STATUS))[0].get("state") == "BOOTING"
    assert b.advance(0.049) == []
    out = b.advance(0.001)
    assert codes(out) == ["RD"] and loads(out) == ["idle"]
    assert b.fw.state is State.IDLE
    assert b.nvram.data.boot_count == 1


def test_boot_with_paper_out_and_low_battery_reports_both_after_ready() -> None:
    b = Bench()
    b.fw.start(0.0)
    assert b.hw(t="paper", present=False) == []  # nothing on the ECR before READY
    assert b.hw(t="rail", volts=6.5) == []
    assert codes(b.advance(0.05)) == ["RD", "EV:PAPER_OUT", "EV:LOW_BATTERY"]


def test_login_ok_and_wrong_password(bench: Bench) -> None:
    assert codes(bench.req(MsgCode.LOGIN, op="01", pw="9999")) == ["LI:LOGIN_FAILED"]
    assert codes(bench.req(MsgCode.LOGIN, op="07", pw="0000")) == ["LI:LOGIN_FAILED"]
    (msg,) = ecr_out(bench.req(MsgCode.LOGIN, op="00", pw="123456"))
    assert msg.get("rc") == "OK" and msg.get("role") == "admin"
    assert bench.fw.operator == "00"
    assert codes(bench.req(MsgCode.LOGOUT)) == ["LO:OK"] and bench.fw.operator is None


def test_purchase_refused_when_not_logged_in_or_not_signed_in(bench: Bench) -> None:
    assert codes(bench.req(PU, amt="100", cur="156")) == ["PU:NOT_LOGGED_IN"]
    assert codes(bench.req(MsgCode.SIGN_IN)) == ["SI:NOT_LOGGED_IN"]
    bench.login()
    assert codes(bench.req(PU, amt="100", cur="156")) == ["PU:NOT_SIGNED_IN"]
    assert bench.fw.state is State.IDLE


def test_sign_in_stores_keys_in_ram_and_batch_stan_in_nvram(bench: Bench) -> None:
    bench.login()
    out = bench.req(MsgCode.SIGN_IN)
    job = job_of(out)
    assert isinstance(job, SignInJob) and (job.operator, job.stan, job.batch_no) == ("01", 1, 1)
    assert loads(out) == ["comms"] and codes(out) == ["PG:CONNECTING"]
    assert codes(bench.req(PU, amt="1", cur="156")) == ["PU:BUSY"]
    out = bench.done(job, FakeSignInResult(batch_no=2))
    assert codes(out) == ["SI:APPROVED"] and loads(out) == ["idle"]
    assert bench.fw.signed_in
    assert bench.nvram.data == NvramData(stan=2, batch_no=2, boot_count=1)
    # power loss: a new process on the same NVRAM is not signed in, counters survive
    fw2 = TerminalFirmware(fast_profile(), bench.nvram)
    fw2.start(0.0)
    assert not fw2.signed_in and fw2.nv.stan == 2 and fw2.nv.batch_no == 2


def test_sign_in_declined_and_comms_error(bench: Bench) -> None:
    bench.login()
    job = job_of(bench.req(MsgCode.SIGN_IN))
    (msg,) = ecr_out(bench.done(job, FakeSignInResult(response_code="97", keys=None)))
    assert (msg.get("rc"), msg.get("hrc")) == ("DECLINED", "97")
    job = job_of(bench.req(MsgCode.SIGN_IN))
    assert codes(bench.done(job, failure="comms", reason="connect",
                            message="connect to 198.18.0.20:8583 timed out after 3.0 s")) \
        == ["SI:COMMS_ERROR"]
    assert not bench.fw.signed_in
    assert "COMMS_ERROR" in ecr_out(bench.req(MsgCode.STATUS))[0].get("faults")


def test_purchase_approved_with_masked_receipts(bench: Bench) -> None:
    bench.sign_in()
    out = bench.req(PU, amt="12345", cur="156")
    assert codes(out) == ["PG:INSERT_CARD"]
    assert bench.fw.state is State.WAIT_CARD
    out = bench.hw(t="card", present=True)
    chip = job_of(out)
    assert isinstance(chip, ChipJob)
    assert (chip.amount_minor, chip.currency_code, chip.txn_date) == (12345, "156", NOW.date())
    assert chip.unpredictable_number == b"\x01\x02\x03\x04"
    assert codes(out) == ["EV:CARD_INSERTED", "PG:READING_CARD"] and loads(out) == ["card"]
    out = bench.done(chip, FakeCard())
    assert codes(out) == ["PG:ENTER_PIN"]
    for k in "9876":
        assert bench.req(MsgCode.KEY, k=k) == []
    out = bench.req(MsgCode.KEY, k=Key.ENTER)
    auth = job_of(out)
    assert isinstance(auth, AuthJob)
    assert (auth.pin, auth.stan, auth.batch_no, auth.amount_minor) == ("9876", 2, 2, 12345)
    assert "9876" not in repr(auth) and PAN not in repr(auth)
    assert codes(out) == ["PG:PROCESSING", "PG:CONNECTING"] and loads(out) == ["comms"]
    out = bench.done(auth, FakeAuthResult())
    assert codes(out) == ["PG:PRINTING"] and loads(out) == ["printing"]
    assert codes(bench.advance(0.02)) == ["PR:merchant"]
    out = bench.advance(0.02)
    assert codes(out) == ["PR:customer", "PU:APPROVED"] and loads(out) == ["idle"]
    final = ecr_out(out)[-1]
    assert final.fields["pan"] == MASKED
    assert (final.get("hrc"), final.get("stan"), final.get("rrn"), final.get("auth"),
            final.get("amt"), final.get("print")) == ("00", "000002", "000000001234", "123456",
                                                      "12345", "OK")
    receipt = ecr_out(out)[0].get("text")
    assert MASKED in receipt and PAN not in receipt and "RMB 123.45" in receipt
    assert "持卡人存根" in receipt


def test_purchase_refused_on_paper_out(bench: Bench) -> None:
    bench.sign_in()
    assert codes(bench.hw(t="paper", present=False)) == ["EV:PAPER_OUT"]
    assert codes(bench.req(PU, amt="100", cur="156")) == ["PU:PAPER_OUT"]
    assert codes(bench.hw(t="paper", present=True)) == ["EV:PAPER_OK"]
    assert codes(bench.req(PU, amt="100", cur="156")) == ["PG:INSERT_CARD"]


@pytest.mark.parametrize("volts, refused", [(6.80, True), (6.5, True), (6.81, False)])
def test_purchase_refused_on_low_battery(bench: Bench, volts: float, refused: bool) -> None:
    bench.sign_in()
    out = bench.hw(t="rail", volts=volts)
    assert codes(out) == (["EV:LOW_BATTERY"] if refused else [])
    expect = "PU:LOW_BATTERY" if refused else "PG:INSERT_CARD"
    assert codes(bench.req(PU, amt="100", cur="156")) == [expect]
    st = ecr_out(bench.req(MsgCode.STATUS))[0]
    assert st.get("battery_low") == ("1" if refused else "0")
    assert st.get("volts") == f"{volts:.2f}"


def test_battery_recovers(bench: Bench) -> None:
    bench.hw(t="rail", volts=6.7)
    assert codes(bench.hw(t="rail", volts=7.4)) == ["EV:BATTERY_OK"]
    assert codes(bench.hw(t="rail", volts=7.3)) == []


def test_card_error(bench: Bench) -> None:
    bench.sign_in()
    bench.req(PU, amt="100", cur="156")
    chip = job_of(bench.hw(t="card", present=True))
    (msg,) = ecr_out(bench.done(chip, failure="card", reason="mute", message="card mute"))
    assert (msg.code, msg.get("rc"), msg.get("reason")) == ("PU", "CARD_ERROR", "mute")
    assert "读卡失败" in msg.get("text")
    assert bench.fw.state is State.IDLE
    assert ecr_out(bench.req(MsgCode.STATUS))[0].get("faults").endswith("CARD_ERROR")


def test_comms_error_during_authorisation(bench: Bench) -> None:
    bench.sign_in()
    bench.req(PU, amt="100", cur="156")
    bench.done(job_of(bench.hw(t="card", present=True)), FakeCard())
    for k in ["1", "2", "3", "4", Key.ENTER]:
        out = bench.req(MsgCode.KEY, k=k)
    out = bench.done(job_of(out), failure="comms", reason="response", message="no response")
    (msg,) = ecr_out(out)
    assert (msg.get("rc"), msg.get("pan"), msg.get("stan")) == ("COMMS_ERROR", MASKED, "000002")


def test_no_network_link_is_a_comms_error_showing_its_own_text(bench: Bench) -> None:
    bench.sign_in()
    bench.req(PU, amt="100", cur="156")
    bench.done(job_of(bench.hw(t="card", present=True)), FakeCard())
    for k in ["1", "2", "3", "4", Key.ENTER]:
        out = bench.req(MsgCode.KEY, k=k)
    job = job_of(out)
    out = bench.fw.on_job(JobResult(job.job_id, failure="comms", reason="connect",
                                    message=f"{NO_LINK_TEXT}: term0 has no carrier",
                                    text=NO_LINK_TEXT), bench.now)
    (msg,) = ecr_out(out)
    assert (msg.get("rc"), msg.get("reason"), msg.get("text")) == (
        "COMMS_ERROR", "connect", NO_LINK_TEXT)
    assert bench.fw.journal.pending_reversals() == []  # it never left the terminal
    assert "COMMS_ERROR" in ecr_out(bench.req(MsgCode.STATUS))[0].get("faults")
    job = job_of(bench.req(MsgCode.SIGN_IN))
    (msg,) = ecr_out(bench.fw.on_job(JobResult(
        job.job_id, failure="comms", reason="connect", message=f"{NO_LINK_TEXT}: term0 has no "
        "carrier", text=NO_LINK_TEXT), bench.now))
    assert msg.get("rc") == "COMMS_ERROR" and msg.get("text", "").startswith(NO_LINK_TEXT)


def test_a_comms_error_without_its_own_text_shows_the_comms_error_text(bench: Bench) -> None:
    bench.sign_in()
    bench.req(PU, amt="100", cur="156")
    bench.done(job_of(bench.hw(t="card", present=True)), FakeCard())
    for k in ["1", "2", "3", "4", Key.ENTER]:
        out = bench.req(MsgCode.KEY, k=k)
    (msg,) = ecr_out(bench.done(job_of(out), failure="comms", reason="connect",
                                message="connect timed out"))
    assert msg.get("text") == "通讯失败 COMMS ERROR"


def test_declined_and_host_asks_for_sign_in(bench: Bench) -> None:
    bench.sign_in()
    bench.req(PU, amt="100", cur="156")
    bench.done(job_of(bench.hw(t="card", present=True)), FakeCard(cvm="no_cvm"))
    # no PIN asked: the job started right after the card read
    assert bench.fw.state is State.PROCESSING
    job_id = bench.fw._pending_job or 0
    out = bench.fw.on_job(JobResult(job_id, FakeAuthResult(
        response_code="22", approved=False, auth_code=None)), bench.now)
    (msg,) = ecr_out(out)
    assert (msg.get("rc"), msg.get("hrc")) == ("DECLINED", "22")
    assert not bench.fw.signed_in


def test_card_wait_and_pin_timeouts(bench: Bench) -> None:
    bench.sign_in()
    bench.req(PU, amt="100", cur="156")
    assert bench.advance(1.9) == []
    assert codes(bench.advance(0.2)) == ["PU:TIMEOUT"]
    bench.req(PU, amt="100", cur="156")
    bench.done(job_of(bench.hw(t="card", present=True)), FakeCard())
    bench.req(MsgCode.KEY, k="1")
    assert codes(bench.advance(2.1)) == ["PU:TIMEOUT"]


def test_cancel_and_short_pin(bench: Bench) -> None:
    bench.sign_in()
    assert codes(bench.req(MsgCode.CANCEL)) == ["CN:OK"]
    bench.req(PU, amt="100", cur="156")
    bench.done(job_of(bench.hw(t="card", present=True)), FakeCard())
    bench.req(MsgCode.KEY, k="1")
    assert bench.req(MsgCode.KEY, k=Key.ENTER) == []  # too short: still waiting
    assert codes(bench.req(MsgCode.CANCEL)) == ["CN:OK", "PU:CANCELLED"]
    assert bench.fw.state is State.IDLE


def test_bad_requests(bench: Bench) -> None:
    bench.sign_in()
    assert codes(bench.req(PU, amt="12a", cur="156")) == ["PU:BAD_REQUEST"]
    for not_ascii in ("²", "１２", "١٢"):  # superscript, fullwidth, Arabic-Indic: isdigit() says yes
        assert codes(bench.req(PU, amt=not_ascii, cur="156")) == ["PU:BAD_REQUEST"], not_ascii
    assert codes(bench.req("ZZ")) == ["ER:BAD_REQUEST"]
    assert codes(bench.fw.on_bad_request("ECR message: unknown code")) == ["ER:BAD_REQUEST"]


def test_a_bad_request_without_a_response_is_answered_er(bench: Bench) -> None:
    """'KY' FS 'k=<NUL>' was answered 'KY rc=BAD_REQUEST', a message the spec table has not
    (KEY has no response) and the rig's decoder refused as unknown (fuzz finding
    terminal_firmware/key-control-character).  Every request code without a terminal response
    in the table is refused with ER, the answer decodes, and nothing changes."""
    bench.sign_in()
    silent = [code for (sender, code), spec in MESSAGE_SPECS.items()
              if sender == "rig" and spec.kind is Kind.REQUEST
              and ("terminal", code) not in MESSAGE_SPECS]
    assert silent == [MsgCode.KEY]
    nv, state = bench.fw.nv, bench.fw.state
    for code in silent:
        fields = {name: "\x00" for name in MESSAGE_SPECS[("rig", code)].required}
        (msg,) = ecr_out(bench.req(code, **fields))
        assert (msg.code, msg.get("rc")) == (MsgCode.ERROR, "BAD_REQUEST"), code
        assert msg.get("text") == f"{code}(KEY): field k holds a control character at position 0"
        assert decode_message(encode_message(msg), "terminal") == msg
    assert codes(bench.req(MsgCode.KEY)) == ["ER:BAD_REQUEST"]  # k missing
    assert bench.fw.nv == nv and bench.fw.state is state


def _frames_fit(actions: list[Action]) -> None:
    for msg in ecr_out(actions):
        assert len(encode_message(msg)) <= MAX_PAYLOAD, msg.code


def test_an_over_long_request_is_bad_request_without_echoing_it(bench: Bench) -> None:
    """An answer that quoted the request (NOT_FOUND "no operator '…'", "bad amount '…'") grew
    past the ECR frame limit with it, and the runner's send() failed."""
    bench.login()
    bench.req(MsgCode.LOGOUT)
    assert codes(bench.req(MsgCode.LOGIN, op="00", pw="123456")) == ["LI:OK"]  # the admin
    nv = bench.fw.nv
    for code, fields in (
            (MsgCode.UNLOCK, {"op": "x" * 5000}),
            (MsgCode.PARAMETER, {"name": "n" * MAX_PAYLOAD, "value": "1"}),
            (MsgCode.QUERY, {"stan": "1" * 5000}),
            (PU, {"amt": "1" * 5000, "cur": "156"}),
            (PU, {"amt": "100", "cur": "9" * 5000}),
            (PU, {"amt": "100", "cur": "156", "entry": "qr", "qr": "m" * 5000})):
        out = bench.req(code, **fields)
        _frames_fit(out)
        (msg,) = ecr_out(out)
        assert (msg.code, msg.get("rc")) == (code, "BAD_REQUEST"), fields
        assert "at most 128" in msg.get("text")
    assert bench.fw.nv == nv and bench.fw.state is State.IDLE


@pytest.mark.parametrize(("fields", "why"), [
    # int() of more than 4300 digits raised ValueError out of the handler
    ({"amt": "1" * 120, "cur": "156"}, "bad amount '1111111111111111': minor units"),
    ({"amt": "0", "cur": "156"}, "bad amount '0'"),
    ({"amt": "-5", "cur": "156"}, "bad amount '-5'"),
    ({"amt": "100", "cur": "15"}, "bad currency '15'"),
    ({"amt": "100", "cur": "１５６"}, "bad currency"),
    ({"amt": "100"}, "missing field(s) cur"),
    ({"amt": "10\x00", "cur": "156"}, "field amt holds a control character at position 2"),
    ({"amt": "100", "cur": "156", "\u00e9": "1"},
     "field name 'é' is not 1-16 printable ASCII characters without '='"),
])
def test_malformed_purchase_is_bad_request_and_changes_nothing(
        bench: Bench, fields: dict[str, str], why: str) -> None:
    bench.sign_in()
    nv, journal = bench.fw.nv, len(bench.fw.journal.entries(bench.fw.nv.batch_no))
    (msg,) = ecr_out(bench.req(PU, **fields))
    assert msg.get("rc") == "BAD_REQUEST" and why in msg.get("text"), msg.get("text")
    assert bench.fw.nv == nv and bench.fw.state is State.IDLE
    assert len(bench.fw.journal.entries(bench.fw.nv.batch_no)) == journal


def test_original_fields_in_other_scripts_are_bad_request(txn_bench: Bench) -> None:
    """'²'.isdigit() is True but int('²') raises: OriginalRef's odate check crashed.  The
    refusal is OriginalRef's own (no second check in the firmware)."""
    for fields, why in (
            ({"orrn": "000000001234", "odate": "0²01"}, "odate must be MMDD, got '0²01'"),
            ({"ostan": "١٢٣٤٥٦"}, "ostan must be 6 digits, got '١٢٣٤٥٦'")):
        (msg,) = ecr_out(txn_bench.req(REFUND.ecr_code, amt="500", cur="156", **fields))
        assert msg.get("rc") == "BAD_REQUEST", fields
        assert msg.get("text") == f"REFUND: original transaction reference: {why}"
    assert txn_bench.fw.state is State.IDLE


def test_a_pin_key_in_another_script_is_no_digit(bench: Bench) -> None:
    bench.sign_in()
    bench.req(PU, amt="100", cur="156")
    bench.fw.state = State.PIN_ENTRY  # what a card asking for an online PIN leads to
    bench.fw._txn = bench.fw._txn or pytest.fail("no transaction")
    assert bench.req(MsgCode.KEY, k="\u0663") == []      # Arabic-Indic 3
    assert bench.fw._txn.pin == []


def test_perform_classifies_failures() -> None:
    svc = FakeServices()
    job = SignInJob(7, "01", 1, 1)
    svc.sign_in_result = FakeCommsError("connect", "refused")
    assert perform(job, svc) == JobResult(7, None, "comms", "connect", "refused")
    chip = ChipJob(8, 100, "156", "156", NOW.date(), b"\0" * 4, 1.0)
    svc.card = FakeCardError("mute", "no ATR")
    assert perform(chip, svc) == JobResult(8, None, "card", "mute", "card mute: no ATR")
    svc.card = KeyError("bug")
    res = perform(chip, svc)
    assert (res.failure, res.reason) == ("internal", "KeyError")


def test_perform_passes_what_a_comms_error_displays() -> None:
    class NoLink(FakeCommsError):
        display = NO_LINK_TEXT

    svc = FakeServices()
    svc.sign_in_result = NoLink("connect", "no carrier")
    assert perform(SignInJob(7, "01", 1, 1), svc) == JobResult(
        7, None, "comms", "connect", "no carrier", "", NO_LINK_TEXT)


def test_file_nvram_roundtrip(tmp_path: Any) -> None:
    nv = FileNvram(tmp_path)
    assert nv.load() == NvramData()
    nv.save(NvramData(stan=42, batch_no=3, boot_count=9))
    assert FileNvram(tmp_path).load() == NvramData(42, 3, 9)
    assert [p.name for p in tmp_path.iterdir()] == ["terminal-nvram.json"]


def test_card_detect_changes_are_events_and_in_status(bench: Bench) -> None:
    """The robot waits for CARD_REMOVED before the next purchase: a removal still in flight on
    the slot's wire made the next purchase read an absent card (seen under CPU load)."""
    assert codes(bench.hw(t="card", present=True)) == ["EV:CARD_INSERTED"]
    assert bench.hw(t="card", present=True) == []  # no change, no event
    (st,) = ecr_out(bench.req(MsgCode.STATUS))
    assert st.get("card") == "1"
    assert codes(bench.hw(t="card", present=False)) == ["EV:CARD_REMOVED"]
    (st,) = ecr_out(bench.req(MsgCode.STATUS))
    assert st.get("card") == "0"


# ------------------------------------------------------------------ generic transaction types

@pytest.fixture
def txn_bench() -> Bench:
    """A firmware with a test-only table: sale, refund (card, original, no PIN), void (no card)."""
    b = Bench(transactions=TEST_TABLE)
    b.boot()
    b.sign_in()
    return b


def test_original_needing_type_without_original_is_refused_naming_the_field(
        txn_bench: Bench) -> None:
    (msg,) = ecr_out(txn_bench.req(REFUND.ecr_code, amt="500", cur="156"))
    assert (msg.code, msg.get("rc")) == ("RF", "BAD_REQUEST")
    assert "ostan" in msg.get("text") and "orrn + odate" in msg.get("text")
    (msg,) = ecr_out(txn_bench.req(REFUND.ecr_code, amt="500", cur="156", orrn="000000001234"))
    assert msg.get("rc") == "BAD_REQUEST" and "orrn needs odate" in msg.get("text")
    (msg,) = ecr_out(txn_bench.req(VOID.ecr_code, amt="500", cur="156", ostan="12"))
    assert msg.get("rc") == "BAD_REQUEST" and "ostan must be 6 digits" in msg.get("text")
    assert txn_bench.fw.state is State.IDLE


def test_second_type_flows_through_the_generic_handler(txn_bench: Bench) -> None:
    b = txn_bench
    original = OriginalRef.by_rrn("000000001234", "0504")
    out = b.req(REFUND.ecr_code, amt="700", cur="156", **original.ecr_fields())
    assert codes(out) == ["PG:INSERT_CARD"]
    chip = job_of(b.hw(t="card", present=True))
    out = b.done(chip, FakeCard())  # the card asks for online PIN, the refund row never does
    auth = job_of(out)
    assert codes(out) == ["PG:PROCESSING", "PG:CONNECTING"]
    assert isinstance(auth, AuthJob)
    assert (auth.txn_type, auth.original, auth.pin, auth.amount_minor) == (
        REFUND, original, None, 700)
    assert codes(b.done(auth, FakeAuthResult())) == ["PG:PRINTING"]
    merchant = ecr_out(b.advance(0.02))[0].get("text")
    assert "交易类型 TYPE: 退货 REFUND" in merchant and "消费 SALE" not in merchant
    assert "原交易 ORIGINAL: RRN 000000001234 (0504)" in merchant
    out = b.advance(0.02)
    assert codes(out) == ["PR:customer", "RF:APPROVED"]
    final = ecr_out(out)[-1]
    assert (final.get("amt"), final.get("pan"), final.get("stan")) == ("700", MASKED, "000002")
    # the sale still answers with its own code from the same firmware
    assert codes(b.hw(t="card", present=False)) == ["EV:CARD_REMOVED"]
    assert codes(b.req(PU, amt="100", cur="156")) == ["PG:INSERT_CARD"]
    assert codes(b.req(MsgCode.CANCEL)) == ["CN:OK", "PU:CANCELLED"]


def test_type_without_card_goes_online_at_once(txn_bench: Bench) -> None:
    out = txn_bench.req(VOID.ecr_code, amt="100", cur="156", ostan="000001")
    auth = job_of(out)
    assert codes(out) == ["PG:PROCESSING", "PG:CONNECTING"]
    assert (auth.txn_type, auth.card, auth.original) == (VOID, None, OriginalRef.by_trace(1))
    (msg,) = ecr_out(txn_bench.done(auth, FakeAuthResult(response_code="25", approved=False)))
    assert (msg.code, msg.get("rc"), msg.get("hrc")) == ("VD", "DECLINED", "25")
    assert "pan" not in msg.fields


def test_event_and_prompt_codes_are_the_enums(bench: Bench) -> None:
    bench.sign_in()
    out = bench.req(PU, amt="100", cur="156") + bench.hw(t="card", present=True)
    got = [m.get("code") for m in ecr_out(out)]
    assert got == [Prompt.INSERT_CARD, EventCode.CARD_INSERTED, Prompt.READING_CARD]
