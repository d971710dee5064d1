"""Property tests of the rig's side of the ECR link: whatever a terminal (a broken one, another
firmware) answers, the rig's readers of those answers (Outcome, TerminalStatus, Totals,
Settlement, TerminalEvent) give a value or refuse with the project's DecodeError, never a
foreign exception from int() or float()."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.ecr import MESSAGE_SPECS, Message
from protocols.errors import DecodeError
from rigs.terminal import Outcome, Settlement, TerminalStatus, Totals

ANSWER_CODES = sorted({code for (sender, code) in MESSAGE_SPECS if sender == "terminal"})
KEYS = ["rc", "amt", "stan", "rrn", "auth", "pan", "hrc", "text", "volts", "state", "batch",
        "signed_in", "paper", "card", "battery_low", "faults", "clock", "reversal", "entries",
        "txn_limit", "daily_limit", "refund_limit", "day_sales", "sale_n", "sale_amt",
        "refund_n", "refund_amt", "chip_n", "chip_amt", "balanced", "uploaded", "next_batch",
        "print", "entry", "fallback", "cvm", "signature", "printer", "paper_low", "model"]
VALUES = st.one_of(
    st.text(max_size=16),
    st.text(alphabet="0123456789.", max_size=14),
    st.sampled_from(["0", "1", "", "7.40", "1_0", "nan", "inf", "-1", "\u00b2", "\uff17",
                     "\u0661\u0662", "9" * 40, "APPROVED", "IDLE", "E02,E11", "20261301250000",
                     "99999999999999"]),
)
MESSAGES = st.builds(Message, st.sampled_from(ANSWER_CODES),
                     st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=12))
READERS = [Outcome.from_message, TerminalStatus.from_message, Totals.from_message,
           Settlement.from_message]


@pytest.mark.parametrize("read", READERS, ids=lambda r: r.__qualname__.split(".")[0])
@given(msg=MESSAGES)
def test_a_reader_of_terminal_answers_refuses_only_with_decode_error(read: object,
                                                                      msg: Message) -> None:
    try:
        read(msg)  # type: ignore[operator]
    except DecodeError:
        pass


@pytest.mark.parametrize("volts", ["1_0", "nan", "inf", "\uff17.40", "7.4.0", "-7.40"])
def test_status_volts_only_as_a_decimal(volts: str) -> None:
    with pytest.raises(DecodeError, match="field volts must be a decimal such as 7.40"):
        TerminalStatus.from_message(Message("ST", {"state": "IDLE", "volts": volts}))
    assert TerminalStatus.from_message(Message("ST", {"volts": "7.40"})).supply_volts == 7.4
