"""Properties of BER-TLV (protocols.tlv): any bytes decode or raise TlvError (never
RecursionError or IndexError), the masked renderer never raises, encode_many → decode round
trips for trees within the documented bounds, and DOLs parse, build and split consistently."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from protocols import tlv
from protocols.masking import render_tlv


def _tag(constructed: bool) -> st.SearchStrategy[int]:
    """A well-formed tag of 1 to MAX_TAG_BYTES bytes (never a padding byte 00 / FF first)."""
    bit = 0x20 if constructed else 0x00
    firsts = [b for b in range(0x01, 0xFF) if b & 0x20 == bit and b & 0x1F != 0x1F]
    single = st.sampled_from(firsts)
    lead = st.sampled_from([b for b in range(0x1F, 0xFF, 0x20) if b & 0x20 == bit])

    def multi(first: int, middle: list[int], last: int) -> int:
        return int.from_bytes(bytes([first, *middle, last]), "big")
    longer = st.builds(multi, lead,
                       st.lists(st.integers(0x80, 0xFF), max_size=tlv.MAX_TAG_BYTES - 2),
                       st.integers(0x00, 0x7F))
    return st.one_of(single, longer)


Tree = tuple[int, bytes | list["Tree"]]


def trees(depth: int = 1) -> st.SearchStrategy[Tree]:
    """A data object: primitive (tag, value) or constructed (tag, children), at most
    MAX_DEPTH deep."""
    primitive = st.tuples(_tag(False), st.binary(max_size=140))
    if depth >= tlv.MAX_DEPTH:
        return primitive
    return st.one_of(primitive, st.tuples(_tag(True), st.deferred(
        lambda: st.lists(trees(depth + 1), max_size=3))))


def encoded(tree: Tree) -> bytes:
    tag, body = tree
    value = body if isinstance(body, bytes) else b"".join(encoded(c) for c in body)
    return tlv.encode(tag, value)


def shape(item: tlv.Tlv) -> Tree:
    return (item.tag, [shape(c) for c in item.children] if item.constructed else item.value)


def _nested(levels: int) -> bytes:
    inner = tlv.encode(0x5A, b"\x01")
    for _ in range(levels):
        inner = tlv.encode(0x70, inner)
    return inner


any_bytes = st.one_of(
    st.binary(max_size=300),
    # runs of constructed headers: deep nesting, long tags and lengths more often
    st.lists(st.sampled_from([b"\x70", b"\xe0", b"\x9f", b"\x81", b"\x82\x01", b"\x00",
                              b"\x5a\x01\x01", b"\xbf\x0c", b"\xff"]), max_size=200
             ).map(b"".join),
    # around the bound, and far beyond Python's recursion limit (RecursionError before)
    st.one_of(st.integers(0, 3 * tlv.MAX_DEPTH), st.just(1500)).map(_nested),
)


@given(any_bytes)
def test_decoding_any_bytes_raises_only_tlv_error(data: bytes) -> None:
    for walk in (tlv.decode, tlv.flatten, lambda d: tlv.find(d, 0x5A)):
        try:
            walk(data)
        except tlv.TlvError as exc:
            assert 0 <= exc.offset <= len(data)
    assert isinstance(render_tlv(data), str)
    assert isinstance(render_tlv(data, style="fields"), str)


@given(st.lists(trees(), max_size=4))
def test_encode_then_decode_round_trips(items: list[Tree]) -> None:
    raw = b"".join(encoded(t) for t in items)
    assert [shape(i) for i in tlv.decode(raw)] == items
    flat = [(t, v) for t, v in items if isinstance(v, bytes)]
    assert tlv.decode(tlv.encode_many(flat)) == tlv.decode(b"".join(encoded(t) for t in flat))


@given(st.integers(1, 3 * tlv.MAX_DEPTH))
def test_nesting_beyond_max_depth_is_refused(levels: int) -> None:
    data = _nested(levels)
    if levels < tlv.MAX_DEPTH:
        assert tlv.find(data, 0x5A) == b"\x01"
        return
    try:
        tlv.decode(data)
    except tlv.TlvError as exc:
        assert f"deeper than {tlv.MAX_DEPTH} levels" in exc.problem
    else:
        raise AssertionError(f"{levels} levels decoded")


@given(st.binary(max_size=60))
def test_parsing_any_dol_raises_only_tlv_error(data: bytes) -> None:
    try:
        dol = tlv.parse_dol(data)
    except tlv.TlvError:
        return
    assert b"".join(tlv.tag_bytes(e.tag) + bytes([e.length]) for e in dol) == data


dol_entries = st.lists(st.builds(tlv.DolEntry, st.one_of(_tag(False), _tag(True)),
                                 st.integers(0, 255)), max_size=8)


@given(dol_entries, st.data())
def test_a_dol_round_trips_and_splits_what_it_builds(dol: list[tlv.DolEntry],
                                                     data: st.DataObject) -> None:
    raw = b"".join(tlv.tag_bytes(e.tag) + bytes([e.length]) for e in dol)
    assert tlv.parse_dol(raw) == dol
    values = {e.tag: data.draw(st.binary(max_size=e.length)) for e in dol}
    built = tlv.build_dol(dol, values)
    assert len(built) == sum(e.length for e in dol)
    split = tlv.split_dol(dol, built)
    assert set(split) == {e.tag for e in dol}
    try:
        tlv.split_dol(dol, built + b"\x00")
    except tlv.TlvError as exc:
        assert "DOL data: expected" in str(exc)
    else:
        raise AssertionError("a DOL split data one byte too long")
