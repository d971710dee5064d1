"""Properties of the ISO 8583 layer (protocols.iso8583): decoding any bytes raises only the
project's DecodeError, framing any bytes only FramingError, valid messages round-trip, and a
non-decimal nibble in any numeric field is named by validate_message at the byte holding it.

The message strategies are built from the dialect's spec (one source: the spec as data), and
are used by the host engine's properties too."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.errors import DecodeError, FramingError
from protocols.iso8583 import (
    UNIONPAY,
    Dialect,
    Header,
    LengthFramer,
    Tpdu,
    decode_message,
    encode_message,
    frame,
    unframe,
    validate_message,
)

#: The dialect without its numeric check: encodes A-F nibbles in numeric fields as a broken
#: terminal (or a byte flipped before the MAC was computed) would send them.
LAX = Dialect("unionpay-lax", UNIONPAY.spec)
FIELDS = sorted((k for k in UNIONPAY.spec if k.isdigit() and k != "1"), key=int)
HEX = "0123456789ABCDEF"
DIGITS = "0123456789"
#: Variable lengths are capped to keep examples small (the spec's maxima are checked elsewhere).
CAP = 40


def field_value(key: str, spec: Mapping[str, Any] | None = None) -> st.SearchStrategy[str]:
    """A valid value of field *key* under the dialect's spec."""
    spec = UNIONPAY.spec[key] if spec is None else spec
    fixed = spec["len_type"] == 0
    size = spec["max_len"] if fixed else None
    bound = min(spec["max_len"], CAP)
    if spec["data_enc"] == "ascii":
        chars = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
        return st.text(chars, min_size=size or 0, max_size=size or bound)
    if spec.get("len_count") == "nibbles":  # the value counts nibbles: BCD digits (z: and D)
        numeric = key in UNIONPAY.numeric  # a numeric field holds one digit at least
        alphabet = DIGITS if numeric else DIGITS + "D"
        return st.text(st.sampled_from(alphabet), min_size=size or int(numeric),
                       max_size=size or bound)
    if key in UNIONPAY.numeric:  # fixed BCD: two digits a byte
        return st.text(st.sampled_from(DIGITS), min_size=2 * spec["max_len"],
                       max_size=2 * spec["max_len"])
    return st.binary(min_size=size or 0, max_size=size or bound).map(lambda b: b.hex().upper())


request_mtis = st.sampled_from(["0200", "0220", "0320", "0400", "0500", "0800"])


@st.composite
def messages(draw: st.DrawFn, mti: st.SearchStrategy[str] = request_mtis,
             fields: list[str] | None = None) -> dict[str, str]:
    """A valid message of the dialect: an MTI and some of its fields (all of *fields*)."""
    keys = fields if fields is not None else draw(st.lists(st.sampled_from(FIELDS),
                                                          unique=True, max_size=12))
    doc = {"t": draw(mti)}
    for key in keys:
        doc[key] = draw(field_value(key))
    return doc


@st.composite
def bad_nibble(draw: st.DrawFn, doc: Mapping[str, str]) -> tuple[dict[str, str], str, int]:
    """*doc* with one digit of one of its numeric fields replaced by an A-F nibble: the doc,
    the field and the index of the nibble."""
    numeric = [k for k in sorted(doc) if k in UNIONPAY.numeric and doc[k]]
    key = draw(st.sampled_from(numeric))
    index = draw(st.integers(0, len(doc[key]) - 1))
    value = doc[key][:index] + draw(st.sampled_from("ABCDEF")) + doc[key][index + 1:]
    return {**doc, key: value}, key, index


def payloads_with_a_plausible_head() -> st.SearchStrategy[bytes]:
    """An MTI and a bitmap naming fields of the dialect, then arbitrary bytes: gets past the
    bitmap into the field decoders more often than plain random bytes do."""
    def head(mti: bytes, fields: list[str], tail: bytes) -> bytes:
        numbers = {int(k) for k in fields}
        if max(numbers, default=0) > 64:
            numbers.add(1)  # a secondary bitmap follows
        size = 16 if 1 in numbers else 8
        bitmap = sum(1 << (8 * size - n) for n in numbers)
        return mti + bitmap.to_bytes(size, "big") + tail
    return st.builds(head, st.binary(min_size=2, max_size=2),
                     st.lists(st.sampled_from(FIELDS + ["1", "65", "70"]), max_size=8),
                     st.binary(max_size=120))


@given(st.one_of(st.binary(max_size=200), payloads_with_a_plausible_head()))
def test_decoding_any_bytes_raises_only_decode_error(payload: bytes) -> None:
    try:
        doc = decode_message(payload)
    except DecodeError:
        return
    try:
        validate_message(doc)
    except DecodeError:
        pass


@given(st.binary(max_size=80))
def test_unframing_any_bytes_raises_only_framing_error(data: bytes) -> None:
    try:
        tpdu, header, payload = unframe(data)
    except FramingError:
        return
    assert frame(payload, tpdu, header) == data if len(data) - 2 <= 4096 else True


@given(st.lists(st.binary(max_size=40), max_size=8))
def test_the_length_framer_takes_any_chunks_and_raises_only_framing_error(
        chunks: list[bytes]) -> None:
    framer = LengthFramer()
    got = bytearray()
    try:
        for chunk in chunks:
            for one in framer.feed(chunk):
                got += one
    except FramingError:
        return
    assert bytes(got) + b"".join(chunks)[len(got):] == b"".join(chunks)
    assert framer.pending == len(b"".join(chunks)) - len(got)


@given(messages())
def test_a_valid_message_round_trips(doc: dict[str, str]) -> None:
    raw = encode_message(doc)
    back = decode_message(raw)
    back.pop("p")
    assert back == doc
    validate_message(back)
    assert unframe(frame(raw, Tpdu(), Header()))[2] == raw


@given(messages(fields=["2", "3", "4", "11", "22", "23", "60"]).flatmap(bad_nibble))
def test_a_non_decimal_nibble_is_named_with_its_byte(bad: tuple[dict[str, str], str, int]
                                                     ) -> None:
    doc, key, index = bad
    raw = encode_message(doc, LAX)
    decoded = decode_message(raw)  # decoding stays lenient: the host must read it to answer
    with pytest.raises(DecodeError) as err:
        validate_message(decoded)
    text = str(err.value)
    assert f"field {key} (" in text
    at = int(text.split(" at byte ", 1)[1].split(" ", 1)[0])
    nibble = doc[key][index]
    assert nibble in raw[at:at + 1].hex().upper()  # the byte named holds the nibble
    if key == "2":
        assert doc["2"] not in text and f"'{nibble}'" not in text
    else:
        assert f"nibble '{nibble}' at byte {at} " in text
