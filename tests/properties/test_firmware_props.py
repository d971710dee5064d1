"""Property tests of the terminal's ECR side: any request to the firmware gets answers that fit
an ECR frame, and a BAD_REQUEST changes nothing; the framing and message decoders take any
bytes and refuse only with FramingError / DecodeError."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from protocols.ecr import (
    MAX_PAYLOAD,
    MESSAGE_SPECS,
    BadFrame,
    EcrLink,
    Frame,
    FrameDecoder,
    Message,
    Rejected,
    Result,
    decode_message,
    encode_frame,
    encode_message,
)
from protocols.errors import DecodeError
from sim.terminal.firmware import State
from tests.terminal.fakes import ecr_out
from tests.terminal.test_firmware import Bench

REQUEST_CODES = sorted({code for (sender, code) in MESSAGE_SPECS if sender == "rig"})
KEYS = ["amt", "cur", "op", "pw", "k", "stan", "batch", "name", "value", "orrn", "odate",
        "ostan", "obatch", "entry", "qr"]
VALUES = st.one_of(
    st.text(max_size=20),
    st.text(alphabet="0123456789", max_size=14),
    st.integers(-10**15, 10**15).map(str),
    st.sampled_from(["00", "01", "0000", "123456", "156", "qr", "merchant", "clock", "ENTER",
                     "txn_limit", "\u00b2", "\uff11\uff12", "\u0661", "1" * 5000, "9" * 130]),
)
LONG = st.one_of(st.just("1" * 5000), st.just("9" * 130), st.text(min_size=129, max_size=400))


@st.composite
def requests(draw: st.DrawFn) -> Message:
    """A request code (mostly a real one) with its required fields (mostly present) and a few
    more, values from plausible to hostile (other scripts' digits, over-long, control chars)."""
    code = draw(st.one_of(st.sampled_from(REQUEST_CODES), st.text(max_size=3)))
    spec = MESSAGE_SPECS.get(("rig", code))
    keys = [k for k in (spec.required if spec else ()) if draw(st.integers(0, 9))]
    keys += draw(st.lists(st.one_of(st.sampled_from(KEYS), st.text(max_size=5)), max_size=3))
    value = st.one_of(VALUES, LONG) if draw(st.booleans()) else VALUES
    return Message(code, {k: draw(value) for k in keys})


def _snapshot(bench: Bench) -> tuple[object, ...]:
    fw = bench.fw
    return (fw.nv, fw.state, fw.operator, len(fw.journal.entries(fw.nv.batch_no)),
            list(fw.faults), fw._txn)


@given(st.lists(requests(), min_size=1, max_size=4), st.booleans())
def test_any_request_gets_framable_answers_and_bad_request_changes_nothing(
        requests: list[Message], admin: bool) -> None:
    bench = Bench()
    bench.boot()
    bench.sign_in()
    if admin:  # the working keys stay: an admin signed in too (SETTLE, PARAMETER, UNLOCK)
        bench.req("LO")
        bench.req("LI", op="00", pw="123456")
    for msg in requests:
        before = _snapshot(bench)
        out = bench.fw.on_ecr(msg, bench.now)
        answers = ecr_out(out)
        for answer in answers:
            assert len(encode_message(answer)) <= MAX_PAYLOAD, answer.code
        if any(a.get("rc") == Result.BAD_REQUEST for a in answers):
            assert len(answers) == 1 and _snapshot(bench) == before, msg
        bench.advance(0.01)
    assert bench.fw.state in State


@given(st.binary(max_size=300))
def test_message_decode_refuses_with_decode_error(payload: bytes) -> None:
    for sender in (None, "rig", "terminal"):
        try:
            msg = decode_message(payload, sender)  # type: ignore[arg-type]
        except DecodeError:
            continue
        assert len(msg.code) == 2 and msg.code.isascii()


FRAMEISH = st.one_of(
    st.binary(max_size=200),
    st.builds(lambda seq, payload: encode_frame(seq, payload), st.integers(0, 255),
              st.binary(max_size=200)),
    st.builds(lambda head, tail: b"\x02" + head + tail, st.binary(min_size=2, max_size=2),
              st.binary(max_size=100)),
)


@given(st.lists(FRAMEISH, max_size=6), st.lists(st.integers(1, 64), max_size=5))
def test_frame_decoding_of_any_bytes(chunks: list[bytes], cuts: list[int]) -> None:
    data = b"".join(chunks)
    decoder = FrameDecoder()
    items = []
    pos = 0
    for cut in [*cuts, len(data)]:
        items += decoder.feed(data[pos:pos + cut], now=0.0)
        pos += cut
    items += decoder.feed(data[pos:], now=0.0)
    items += decoder.expire(10.0)
    for item in items:
        if isinstance(item, Frame):
            assert len(item.payload) <= MAX_PAYLOAD
        if isinstance(item, BadFrame):
            assert "ECR frame:" in str(item.error)
    link = EcrLink()
    events = link.receive(data, 0.0) + link.poll(10.0)
    for ev in events:
        if isinstance(ev, Rejected):
            assert ev.error
