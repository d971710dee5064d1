"""BER-TLV as EMV uses it (EMV Book 3, Annex B): tags of one or more bytes, short and long
lengths, constructed tags, and Data Object Lists (PDOL, CDOL1: tag + length, no value).

Decoding errors are :class:`TlvError` (a :class:`DecodeError`) naming the tag and the byte
offset; its ``problem`` is the same text without the data, for renderings that must not show it.
:func:`iter_decode` is the one walker: :func:`decode`, :func:`flatten`, :func:`find` and the masked
renderer (:func:`protocols.masking.render_tlv`) all go through it.

Bounds (what this module reads, refusing the rest with a :class:`TlvError` naming the offset):
a tag is at most :data:`MAX_TAG_BYTES` bytes (ISO/IEC 7816-4 5.2.2.1 defines tag fields of one
to three bytes; EMV's own tags have one or two), a length at most 3 bytes after ``8x``, and
constructed data objects nest at most :data:`MAX_DEPTH` deep (EMV's deepest templates, an FCI
with its issuer discretionary data, nest 4), so no walker ever recurses without bound.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from protocols.errors import DecodeError, hexdump

#: The longest tag read or written: ISO/IEC 7816-4 tag fields have 1 to 3 bytes.
MAX_TAG_BYTES = 3
#: How deep constructed data objects may nest (a top-level object is at depth 1).
MAX_DEPTH = 8


class TlvError(DecodeError):
    """BER-TLV that cannot be decoded.  ``problem`` says what and where (tag, absolute offsets)
    without showing the data; ``offset`` is where the offending data object starts."""

    def __init__(self, problem: str, offset: int, data: bytes | None = None, *,
                 what: str = "TLV") -> None:
        super().__init__(f"{what}: {problem}" + (f"; data {hexdump(data)}" if data is not None
                                                 else ""))
        self.problem = problem
        self.offset = offset


def _tag_hex(tag: int) -> str:
    return f"{tag:02X}" if tag <= 0xFF else f"{tag:X}"


def tag_bytes(tag: int) -> bytes:
    """The wire form of a tag given as an int (``0x9F26`` → ``b'\\x9f\\x26'``)."""
    if tag < 0:
        raise ValueError(f"tag {tag} is negative")
    n = max(1, (tag.bit_length() + 7) // 8)
    if n > MAX_TAG_BYTES:
        raise ValueError(f"tag {tag:X} is {n} bytes; at most {MAX_TAG_BYTES}")
    return tag.to_bytes(n, "big")


def is_constructed(tag: int) -> bool:
    """Bit 6 of the first tag byte marks a constructed data object."""
    return bool(tag_bytes(tag)[0] & 0x20)


def encode_length(n: int) -> bytes:
    """Short form below 128, else ``81 xx`` / ``82 xx xx`` / ``83 xx xx xx``."""
    if n < 0:
        raise ValueError(f"length {n} is negative")
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    if len(body) > 3:
        raise ValueError(f"length {n} needs more than 3 length bytes")
    return bytes([0x80 | len(body)]) + body


def encode(tag: int, value: bytes) -> bytes:
    """One primitive or constructed data object (the caller builds a constructed value)."""
    return tag_bytes(tag) + encode_length(len(value)) + value


def encode_many(items: list[tuple[int, bytes]]) -> bytes:
    return b"".join(encode(t, v) for t, v in items)


def _read_tag(data: bytes, pos: int, base: int = 0, what: str = "TLV") -> tuple[int, int]:
    """Return (tag, position after tag); *base* makes offsets in errors absolute, *what* names
    the structure in them."""
    start = pos
    if pos >= len(data):
        raise TlvError(f"tag expected at offset {base + pos}, data ends", base + pos, data,
                       what=what)
    first = data[pos]
    tag = first
    pos += 1
    if first & 0x1F == 0x1F:
        while True:
            if pos >= len(data):
                raise TlvError(
                    f"tag {_tag_hex(tag)}… at offset {base + start} is truncated "
                    f"(subsequent tag byte missing at offset {base + pos})", base + start, data,
                    what=what)
            b = data[pos]
            tag = (tag << 8) | b
            pos += 1
            if not b & 0x80:
                break
            if pos - start >= MAX_TAG_BYTES:
                raise TlvError(
                    f"tag {_tag_hex(tag)}… at offset {base + start} is longer than "
                    f"{MAX_TAG_BYTES} bytes (byte {base + pos - 1} announces another)",
                    base + start, what=what)
    return tag, pos


def _read_length(data: bytes, pos: int, tag: int, tag_at: int, base: int = 0) -> tuple[int, int]:
    """Return (length, position after it); *tag_at* is absolute, *pos* relative to *data*."""
    if pos >= len(data):
        raise TlvError(
            f"tag {_tag_hex(tag)} at offset {tag_at}: length expected at offset {base + pos}, "
            f"data ends", tag_at, data)
    first = data[pos]
    pos += 1
    if first < 0x80:
        return first, pos
    n = first & 0x7F
    if n == 0 or n > 3:
        raise TlvError(
            f"tag {_tag_hex(tag)} at offset {tag_at}: bad length byte {first:02X} at "
            f"offset {base + pos - 1} (expected 00-7F or 81-83)", tag_at)
    if pos + n > len(data):
        raise TlvError(
            f"tag {_tag_hex(tag)} at offset {tag_at}: {n} length bytes expected at "
            f"offset {base + pos}, only {len(data) - pos} left", tag_at)
    return int.from_bytes(data[pos:pos + n], "big"), pos + n


@dataclass(frozen=True)
class Tlv:
    """One decoded data object; ``children`` is filled for constructed tags."""

    tag: int
    value: bytes
    offset: int = 0
    children: tuple[Tlv, ...] = field(default=())
    end: int = 0  # offset just after the object (its encoding may use a longer length form)

    @property
    def constructed(self) -> bool:
        return is_constructed(self.tag)

    def find(self, tag: int) -> Tlv | None:
        """Depth-first search of this object and its descendants."""
        if self.tag == tag:
            return self
        for child in self.children:
            hit = child.find(tag)
            if hit is not None:
                return hit
        return None


def iter_decode(data: bytes, *, base: int = 0, depth: int = 1) -> Iterator[Tlv]:
    """Yield the data objects of *data* one by one (constructed values decoded recursively);
    a :class:`TlvError` is raised where the data stops being BER-TLV, after every object
    before it was yielded.

    Padding bytes ``00`` and ``FF`` between objects are skipped (EMV Book 3, B.1).
    *base* is added to offsets and *depth* is the nesting level of *data*'s objects (both
    used for nested objects); a constructed object deeper than :data:`MAX_DEPTH` is refused.
    """
    pos = 0
    while pos < len(data):
        if data[pos] in (0x00, 0xFF):
            pos += 1
            continue
        tag_at = pos
        tag, pos = _read_tag(data, pos, base)
        length, pos = _read_length(data, pos, tag, base + tag_at, base)
        if pos + length > len(data):
            raise TlvError(
                f"tag {_tag_hex(tag)} at offset {base + tag_at}: value of {length} bytes "
                f"expected at offset {base + pos}, only {len(data) - pos} left",
                base + tag_at, data)
        value = bytes(data[pos:pos + length])
        children: tuple[Tlv, ...] = ()
        if is_constructed(tag):
            if depth >= MAX_DEPTH:
                raise TlvError(
                    f"constructed tag {_tag_hex(tag)} at offset {base + tag_at} is at depth "
                    f"{depth}; its value would nest deeper than {MAX_DEPTH} levels",
                    base + tag_at)
            children = tuple(iter_decode(value, base=base + pos, depth=depth + 1))
        yield Tlv(tag, value, base + tag_at, children, base + pos + length)
        pos += length


def decode(data: bytes, *, base: int = 0) -> list[Tlv]:
    """Decode a sequence of data objects (all of them, or a :class:`TlvError`); see
    :func:`iter_decode`."""
    return list(iter_decode(data, base=base))


def flatten(data: bytes) -> dict[int, bytes]:
    """All primitive data objects, nested ones included, by tag (first occurrence wins)."""
    result: dict[int, bytes] = {}

    def walk(items: list[Tlv] | tuple[Tlv, ...]) -> None:
        for item in items:
            if item.children or item.constructed:
                walk(item.children)
            else:
                result.setdefault(item.tag, item.value)

    walk(decode(data))
    return result


def find(data: bytes, tag: int) -> bytes | None:
    """Value of the first data object with *tag*, searching nested objects."""
    for item in decode(data):
        hit = item.find(tag)
        if hit is not None:
            return hit.value
    return None


@dataclass(frozen=True)
class DolEntry:
    tag: int
    length: int


def parse_dol(data: bytes) -> list[DolEntry]:
    """A Data Object List: tag + length pairs, no values (PDOL 9F38, CDOL1 8C, CDOL2 8D)."""
    out: list[DolEntry] = []
    pos = 0
    while pos < len(data):
        tag_at = pos
        tag, pos = _read_tag(data, pos, what="DOL")
        if pos >= len(data):
            raise TlvError(f"tag {_tag_hex(tag)} at offset {tag_at}: length expected at offset "
                           f"{pos}, data ends", tag_at, data, what="DOL")
        out.append(DolEntry(tag, data[pos]))
        pos += 1
    return out


def build_dol(dol: list[DolEntry], values: dict[int, bytes]) -> bytes:
    """Concatenate values for a DOL (EMV Book 3, 5.4): missing → zeros; numeric-ish values too
    long are cut on the left, others on the right; short values padded (left for n, right else).

    Which tags are format ``n`` is decided by :data:`NUMERIC_TAGS`.
    """
    out = bytearray()
    for entry in dol:
        value = values.get(entry.tag, b"")
        numeric = entry.tag in NUMERIC_TAGS
        if len(value) > entry.length:
            value = value[-entry.length:] if numeric else value[:entry.length]
        elif len(value) < entry.length:
            pad = bytes(entry.length - len(value))
            value = pad + value if numeric else value + pad
        out += value
    return bytes(out)


def split_dol(dol: list[DolEntry], data: bytes) -> dict[int, bytes]:
    """The inverse of :func:`build_dol`: cut *data* into values by the DOL's lengths."""
    need = sum(e.length for e in dol)
    if len(data) != need:
        raise TlvError(f"expected {need} bytes for {len(dol)} entries, got {len(data)}",
                       min(need, len(data)), data, what="DOL data")
    result: dict[int, bytes] = {}
    pos = 0
    for e in dol:
        result[e.tag] = data[pos:pos + e.length]
        pos += e.length
    return result


# Format-n data elements that DOLs commonly ask for (amounts, dates, codes, counters).
NUMERIC_TAGS: frozenset[int] = frozenset({
    0x9F02, 0x9F03, 0x9F1A, 0x5F2A, 0x9A, 0x9C, 0x9F21, 0x9F41, 0x5F36, 0x9F35,
})
