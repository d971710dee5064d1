"""Property tests of the terminal's Concert port: any bytes on the line, framed or not, give
only ECR requests the firmware takes as well formed (or nothing); the record decoders refuse
with DecodeError / FramingError only."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from protocols.concert import (
    ACK,
    AMOUNT_MAX,
    ENQ,
    EOT,
    MAX_PAYLOAD,
    PRIVATE,
    AnswerFlag,
    Authorization,
    ConcertAnswer,
    ConcertRequest,
    Delay,
    PaymentMode,
    TransactionKind,
    decode_frame,
    encode_frame,
)
from protocols.ecr import MESSAGE_SPECS, request_problem
from protocols.errors import DecodeError, FramingError
from sim.terminal.concert import ConcertPort

PRINTABLE = st.binary(max_size=MAX_PAYLOAD).map(lambda b: bytes(0x20 + x % 0x5F for x in b))


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    """A well-formed request payload with any field values the layout takes (amount 0 and
    the largest, any currency digits, any private data)."""
    plus = draw(st.booleans())
    request = ConcertRequest(
        amount_minor=draw(st.one_of(st.just(0), st.just(AMOUNT_MAX), st.integers(0, AMOUNT_MAX))),
        currency=draw(st.text(alphabet="0123456789", min_size=3, max_size=3)),
        pos_number=draw(st.text(alphabet="0123456789", min_size=2, max_size=2)),
        transaction=draw(st.sampled_from(TransactionKind)),
        payment_mode=draw(st.sampled_from(PaymentMode)),
        answer_flag=draw(st.sampled_from(AnswerFlag)),
        private=draw(st.text(alphabet="0123456789 AZ", min_size=PRIVATE.size,
                             max_size=PRIVATE.size)),
        delay=draw(st.sampled_from(Delay)) if plus else None,
        authorization=draw(st.sampled_from(Authorization)) if plus else None)
    return request.encode()


RECORDS = st.one_of(PRINTABLE, requests())
# What a register says: ENQ, a frame (well formed, or any bytes), EOT, stray bytes.
LINE = st.lists(st.one_of(
    st.just(bytes([ENQ])), st.just(bytes([EOT])), st.just(bytes([ACK])),
    RECORDS.map(encode_frame), st.binary(max_size=40)), max_size=8)


@given(LINE, st.lists(st.floats(0.0, 5.0), max_size=8))
def test_any_line_gives_only_well_formed_requests(chunks: list[bytes], gaps: list[float]) -> None:
    port = ConcertPort()
    now = 0.0
    seen = 0
    for i, chunk in enumerate(chunks):
        now += gaps[i] if i < len(gaps) else 0.01
        for msg in port.receive(chunk, now):
            assert request_problem(msg, MESSAGE_SPECS) is None, msg
            seen += 1
            port.after_request([], now)
        port.poll(now)
        port.take_output()
    assert seen <= len(chunks)


@given(st.one_of(st.binary(max_size=60), RECORDS))
def test_record_decoders_refuse_with_decode_error(payload: bytes) -> None:
    for decode in (ConcertRequest.decode, ConcertAnswer.decode):
        try:
            decode(payload)
        except DecodeError:
            pass
    try:
        decode_frame(payload)
    except FramingError:
        pass
