"""Property tests of the probe link: the frame decoder takes any bytes and gives frames or
FramingError / DecodeError; the simulated probe answers any frame from the rig (a STATUS, a
NAK, the harness message it stands for) and raises, if at all, only the project's
ProtocolError (a rig answering a request with the wrong kind of frame is a rig bug)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from protocols.errors import DecodeError, FramingError, ProtocolError
from protocols.probe import MAX_PAYLOAD, FrameDecoder, MsgType, ProbeFrame, encode_frame
from sim.probe import SimProbe

FRAMES = st.builds(lambda seq, mtype, payload: encode_frame(ProbeFrame(seq, mtype, payload)),
                   st.integers(0, 255), st.sampled_from(MsgType), st.binary(max_size=80))
WIRE = st.lists(st.one_of(FRAMES, st.binary(max_size=40),
                          st.binary(min_size=5, max_size=5).map(lambda b: b"\x02" + b)),
                max_size=8)
HARNESS = st.one_of(
    st.fixed_dictionaries({"t": st.sampled_from(["card_power", "cl_power"]),
                           "on": st.one_of(st.booleans(), st.integers(), st.none())}),
    st.fixed_dictionaries({"t": st.sampled_from(["capdu", "cl_capdu"]),
                           "data": st.one_of(st.binary(max_size=20).map(bytes.hex),
                                             st.text(max_size=12), st.integers())}),
)


@given(WIRE)
def test_decoder_gives_frames_or_project_errors(chunks: list[bytes]) -> None:
    decoder = FrameDecoder()
    for chunk in chunks:
        for item in decoder.feed(chunk):
            assert isinstance(item, (ProbeFrame, FramingError, DecodeError))
            if isinstance(item, ProbeFrame):
                assert len(item.payload) <= MAX_PAYLOAD


@given(st.lists(st.one_of(WIRE.map(lambda c: ("link", b"".join(c))), HARNESS.map(
    lambda h: ("harness", h))), max_size=10), st.booleans())
def test_probe_answers_any_frame(inputs: list[tuple[str, object]], terminal_up: bool) -> None:
    probe = SimProbe()
    if terminal_up:
        probe.harness_connected(0.0)
    now = 0.0
    for kind, item in inputs:
        now += 0.01
        errors = probe.link_errors
        if kind == "link":
            assert isinstance(item, bytes)
            try:
                out = probe.feed_link(item, now)
            except ProtocolError as err:  # not a DecodeError: a damaged frame is NAKed
                assert type(err) is ProtocolError and "rig answered" in str(err), err
                continue
        else:
            assert isinstance(item, dict)
            try:
                out = probe.feed_harness(item, now)
            except DecodeError as err:
                assert str(err).startswith("SimProbe: "), err
                continue
        if probe.link_errors > errors:  # a damaged frame: NAKed
            assert bytes([MsgType.NAK]) in out.link_out
        for msg in out.harness_out:
            assert isinstance(msg.get("t"), str)
        probe.poll(now + 1.0)


@given(st.sampled_from([MsgType.ATR, MsgType.RAPDU]), st.binary(max_size=40))
def test_an_answer_with_any_payload_is_taken_or_naked(mtype: MsgType, payload: bytes) -> None:
    """The rig answers the probe's pending POWER_ON / CAPDU (right SEQ) with any payload: a
    malformed one (no status byte, unknown status, data with an error status) is NAKed and the
    request stays pending; parse_answer's DecodeError escaped before."""
    probe = SimProbe()
    probe.harness_connected(0.0)
    probe.feed_link(encode_frame(ProbeFrame(1, MsgType.INSERT, b"")), 0.0)
    probe.feed_harness({"t": "card_power", "on": True}, 0.0)
    if mtype is MsgType.RAPDU:
        probe.feed_link(encode_frame(ProbeFrame(probe._queue[0].frame.seq, MsgType.ATR,
                                                b"\x00\x3b\x00")), 0.0)
        probe.feed_harness({"t": "capdu", "data": "00A4040000"}, 0.0)
    seq = probe._queue[0].frame.seq
    out = probe.feed_link(encode_frame(ProbeFrame(seq, mtype, payload)), 0.1)
    if out.harness_out:
        assert len(out.harness_out) == 1 and not probe._queue
    else:
        assert bytes([MsgType.NAK]) in out.link_out and probe._queue[0].frame.seq == seq
