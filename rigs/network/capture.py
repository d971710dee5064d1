"""Captures safe to attach: every frame kept, only the card data masked in place.

What crosses between terminal and acquirer carries the full PAN, track-2 data, the PIN block and
the EMV data of the card (ISO 8583 fields 2, 35, 52, 55); what crosses between terminal and QR
platform carries the customer's payment code (``auth_code``, a bearer token).  The pcap attached
to a report keeps every frame, its timing, its addresses, TCP flags, sequence numbers and
lengths (what shows a pulled cable, a retransmission or a reset) **and** every header and field
of the messages, with only the sensitive bytes overwritten.  No byte is inserted or removed, so
the file still opens, reassembles and decodes in Wireshark (with
``rigs/wireshark/posrig_iso8583.lua``, see docs/network.md) and in :func:`rigs.host.decode_pcap`.

How.  Each TCP direction of each connection to or from an ISO 8583 port (*iso_ports*) or a QR
platform port (*qr_ports*) is reassembled by sequence number (the SYN gives the ISN; a message
split over segments, several messages in one segment, retransmissions).  The stream is parsed
like the receiver does: ISO 8583 framing (2-byte length, TPDU, 6-byte header) and the message
with the dialect spec (:data:`protocols.iso8583.UNIONPAY` through pyiso8583: MTI, bitmaps, each
field's length prefix and encoding), or HTTP/1.1 messages (``Content-Length`` bodies) whose JSON
bodies are walked.  That gives the byte ranges of the sensitive values in the stream; every frame
carrying stream bytes gets the masked bytes at the same offsets, so two copies of the same bytes
(a retransmission, a re-segmentation) are masked identically.  When copies of the same stream
bytes differ (a byte corrupted by a fault and sent with a bad checksum, then retransmitted
intact), the copy with a valid TCP checksum makes the stream (the receiver's kernel dropped the
other); the other copy is parsed as the stream with its bytes in place, and masked only when
that leaves the layout as it was (same message boundaries, sensitive values at the same
offsets: a flipped byte in an amount), else zeroed (a flipped bitmap byte could move a PAN into
a field that is not masked).

What is masked (ISO 8583; every field of :data:`protocols.iso8583.SENSITIVE_FIELDS`):

- field 2, PAN: first 6 and last 4 digits kept, the digits between become ``0`` (BCD stays BCD:
  ``6214830000000017``, which :func:`protocols.masking.mask_pan` shows as ``621483******0017``);
  a PAN shorter than 13 digits becomes all ``0`` (as ``mask_pan`` hides it all).
- field 35, track 2: the PAN before the separator ``D`` masked as field 2, the separator kept,
  everything after it (expiry, service code, discretionary data) becomes ``0``.  Without a
  separator every digit becomes ``0``.
- field 36, track 3: every digit becomes ``0`` (no layout to trust beyond "digits").
- field 52, PIN block: every byte ``00``.
- field 55, ICC data: walked as BER-TLV (:func:`protocols.tlv.iter_decode`, constructed tags
  too); tags and lengths are kept, so it still parses.  The value of every tag of
  :data:`protocols.masking.SENSITIVE_TAGS` is masked: ``5A`` (PAN) like field 2 in its BCD
  (``F`` padding kept), the others (``57`` track 2 equivalent, ``5F20`` name, ``9F1F``/``9F20``
  discretionary data, …) every byte ``00``.  Bytes that stop being BER-TLV are ``00`` from
  the last whole data object to the end of the field (a warning says where).
- field 62 (working keys under the TMK) and field 64 (MAC): every byte ``00``.  The dialect
  lists both in ``SENSITIVE_FIELDS`` ("must never appear in evidence") and the decoded evidence
  (:func:`protocols.iso8583.describe`) never shows them.  Kept, they would undo the masking:
  the bench's TMK is a fixture, so field 62 gives the MAK, and the MAK plus the MAC of a 0200
  tells which candidate for the masked digits of the PAN is the card's (10^6 for 16 digits,
  a tenth of that with the Luhn check: seconds of work).  The MAC
  of a masked message would not verify anyway; that there was one is still visible (bit 64 of
  the bitmap, 8 bytes in field 64).
- any other field the dialect adds to ``SENSITIVE_FIELDS`` (a CVN, track 1…): all of it, in its
  encoding: digit nibbles ``0``, binary bytes ``00``, text ``*``.

Masked digits are ``0`` in BCD fields, so pyiso8583, :func:`rigs.host.decode_pcap` and the
dissector decode every masked message as they decoded the original; length prefixes, TPDU,
header, MTI, bitmaps and every other field are untouched.

QR platform (HTTP/1.1, JSON bodies, :mod:`protocols.qr`): the value of every ``auth_code`` key
(:data:`QR_SENSITIVE_KEYS`, at any depth, requests and answers) is masked in place, same length:
a string keeps its first 6 and last 4 characters, the rest become ``*`` (a payment code of digits
reads as :func:`protocols.qr.mask_code` shows it; a shorter one becomes all ``*``; one with
escapes or non-ASCII characters all ``*``).  A number (the platform never sends one) keeps its
first 6 and last 4 digits when it has 13 or more, the digits between become ``0``; a shorter
or non-integer one has every digit ``9`` (JSON stays valid).  The ``sign`` of a masked body no
longer verifies, which is expected.

What is zeroed.  A payload on an ISO 8583 or QR port that cannot be understood (not this
framing, a message that does not decode, a corrupted byte that breaks the bitmap, bytes after a
gap in the capture, a stream that ends inside a message, chunked HTTP, a request target with a
query, a body that is not JSON, data on a RST, IP fragments) has every byte of the TCP payload
set to ``00``, as every payload was before, and a warning names the frame number and why (never
the bytes).  UDP and TCP on other ports are copied untouched (nothing on the bench carries card
data there).

Checksums.  The IPv4 header is never changed (its checksum covers only the header).  The TCP
checksum of a changed segment is recomputed; a segment captured with a wrong checksum (a
corrupted byte a fault sent without fixing it) keeps one just as wrong, so the masked capture
shows what the wire did.  A segment captured shorter than its IP length (snap length) keeps
its checksum, which cannot be computed.

Files.  Classic pcap (either byte order, micro- or nanosecond timestamps, what
:class:`rigs.network.bridge.PcapSink` writes); the file and record headers are copied as they
are.  Link types: Ethernet (802.1Q/802.1ad tags), raw IP, Linux cooked (SLL, SLL2), BSD
loopback; IPv4 and IPv6.  A record cut short at the end of the file (a capture interrupted) is
left out with a warning.  A pcapng file or another link type is a :class:`RigError` (nothing is
written), as is an I/O error; both name the files.
"""

from __future__ import annotations

import bisect
import json
import logging
import os
import re
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import iso8583
from iso8583.decoder import DecodeError as _PyDecodeError

from protocols import tlv
from protocols.digits import ascii_digits
from protocols.iso8583 import (
    HEADER_LEN,
    LENGTH_PREFIX,
    MAX_BODY,
    MIN_BODY,
    SENSITIVE_FIELDS,
    TPDU_LEN,
    UNIONPAY,
    Dialect,
)
from protocols.masking import SENSITIVE_TAGS, TagMask
from protocols.qr import DEFAULT_PORT as QR_PORT
from protocols.qr import mask_code
from rigs.errors import RigError
from rigs.network.bridge import internet_checksum

logger = logging.getLogger(__name__)

__all__ = ["ISO_PORT", "QR_PORT", "QR_SENSITIVE_KEYS", "redact_pcap"]

#: The acquirer's TCP port on the virtual bench (docs/iso8583.md).
ISO_PORT = 8583
#: JSON keys of the QR platform's bodies whose values are card-like data (the payment code).
QR_SENSITIVE_KEYS = frozenset({"auth_code"})

_INF = 1 << 62
_SEQ_MOD = 1 << 32
_TCP_SYN, _TCP_RST = 0x02, 0x04
#: TPDU ID byte (docs/iso8583.md).
_TPDU_ID = 0x60
#: Longest HTTP header block and body read before a stream is declared not understood.
_HTTP_MAX_HEAD = 64 * 1024
_HTTP_MAX_BODY = 1024 * 1024


# --------------------------------------------------------------------------------------------
# pcap file


#: Classic pcap, microsecond and nanosecond timestamps (read in either byte order).
_PCAP_MAGICS = frozenset({0xA1B2C3D4, 0xA1B23C4D})


@dataclass
class _Record:
    head: bytes          # the 16-byte record header, copied as is
    data: bytearray      # the captured bytes (changed in place, never resized)


@dataclass
class _Pcap:
    header: bytes
    endian: str          # "<" or ">"
    linktype: int
    records: list[_Record]


def _read_pcap(src: Path, raw: bytes) -> _Pcap:
    if len(raw) < 24:
        raise RigError(f"redact_pcap(): {src} is not a pcap file ({len(raw)} bytes, no file header)")
    for endian in ("<", ">"):
        magic = struct.unpack_from(endian + "I", raw, 0)[0]
        if magic in _PCAP_MAGICS:
            break
    else:
        what = "a pcapng file (only classic pcap is read)" if raw[:4] == b"\x0a\x0d\x0d\x0a" \
            else "not a pcap file"
        raise RigError(f"redact_pcap(): {src} is {what}")
    linktype = struct.unpack_from(endian + "I", raw, 20)[0] & 0xFFFF
    records: list[_Record] = []
    pos = 24
    rec = struct.Struct(endian + "IIII")
    while pos < len(raw):
        if pos + 16 > len(raw):
            logger.warning("%s: the last record header is cut short (%d of 16 bytes at byte %d): "
                           "left out", src, len(raw) - pos, pos)
            break
        incl = rec.unpack_from(raw, pos)[2]
        if pos + 16 + incl > len(raw):
            logger.warning("%s: frame %d is cut short (%d of %d bytes at byte %d): left out", src,
                           len(records) + 1, len(raw) - pos - 16, incl, pos)
            break
        records.append(_Record(raw[pos:pos + 16], bytearray(raw[pos + 16:pos + 16 + incl])))
        pos += 16 + incl
    return _Pcap(raw[:24], endian, linktype, records)


# --------------------------------------------------------------------------------------------
# Frames: where the IP header, the TCP header and the payload are


@dataclass
class _Tcp:
    """One TCP segment in a record (offsets into the record's bytes)."""

    index: int          # record index (0-based; Wireshark's frame number is index + 1)
    v6: bool
    src: bytes
    dst: bytes
    tcp: int            # TCP header offset
    l4_end: int         # end of the TCP segment as the IP header declares it
    start: int          # payload start
    end: int            # payload end as captured (≤ l4_end)
    sport: int
    dport: int
    seq: int
    flags: int

    malformed: bool = False  # a TCP data offset that does not fit: the payload is not trusted

    @property
    def complete(self) -> bool:
        return self.end == self.l4_end


@dataclass
class _Fragment:
    """A TCP datagram fragment (IPv4 MF/offset, IPv6 fragment header): no stream to parse."""

    index: int
    key: tuple[Any, ...]
    first: bool
    start: int          # where the fragment's data starts (after the TCP header for the first)
    end: int
    ports: tuple[int, int] | None


_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_TCP_HEAD = struct.Struct("!HHI")
_VLAN_TYPES = (0x8100, 0x88A8, 0x9100)
_ETH_IPV4, _ETH_IPV6 = 0x0800, 0x86DD
_IPPROTO_TCP = 6
_IPV6_EXT = (0, 43, 60)  # hop-by-hop, routing, destination options
_IPV6_FRAGMENT = 44


def _l3_offset(data: bytearray, linktype: int, endian: str) -> tuple[int, int] | None:
    """(offset of the IP header, 4 or 6) for the frame's link type, or None (not IP)."""
    size = len(data)
    if linktype == 1:  # Ethernet
        if size < 14:
            return None
        ethertype = _U16.unpack_from(data, 12)[0]
        offset = 14
        while ethertype in _VLAN_TYPES:
            if size < offset + 4:
                return None
            ethertype = _U16.unpack_from(data, offset + 2)[0]
            offset += 4
        return _by_ethertype(ethertype, offset)
    if linktype in (101, 12, 14):  # raw IP
        return (0, data[0] >> 4) if size and data[0] >> 4 in (4, 6) else None
    if linktype == 228:
        return 0, 4
    if linktype == 229:
        return 0, 6
    if linktype == 113:  # Linux cooked v1
        return _by_ethertype(_U16.unpack_from(data, 14)[0], 16) if size >= 16 else None
    if linktype == 276:  # Linux cooked v2
        return _by_ethertype(_U16.unpack_from(data, 0)[0], 20) if size >= 20 else None
    if linktype in (0, 108):  # BSD loopback: address family in the writer's / network order
        if size < 4:
            return None
        family = struct.unpack_from((endian if linktype == 0 else ">") + "I", data, 0)[0]
        if family == 2:
            return 4, 4
        return (4, 6) if family in (10, 24, 28, 30) else None
    raise _UnsupportedLink(linktype)


class _UnsupportedLink(Exception):
    def __init__(self, linktype: int) -> None:
        super().__init__(linktype)
        self.linktype = linktype


def _by_ethertype(ethertype: int, offset: int) -> tuple[int, int] | None:
    if ethertype == _ETH_IPV4:
        return offset, 4
    if ethertype == _ETH_IPV6:
        return offset, 6
    return None


def _locate(index: int, data: bytearray, linktype: int, endian: str) -> _Tcp | _Fragment | None:
    """The TCP segment or TCP fragment in one frame; None for anything else (copied as is)."""
    where = _l3_offset(data, linktype, endian)
    if where is None:
        return None
    ip, version = where
    size = len(data)
    if version == 4:
        if size < ip + 20 or data[ip] >> 4 != 4:
            return None
        ihl = (data[ip] & 0x0F) * 4
        total = _U16.unpack_from(data, ip + 2)[0] or size - ip  # 0: segmentation offload
        if ihl < 20 or total < ihl or size < ip + ihl or data[ip + 9] != _IPPROTO_TCP:
            return None
        src, dst = bytes(data[ip + 12:ip + 16]), bytes(data[ip + 16:ip + 20])
        l4, l4_end = ip + ihl, ip + total
        frag = _U16.unpack_from(data, ip + 6)[0]
        if frag & 0x3FFF:  # MF set or an offset: a fragment
            key = (4, src, dst, _U16.unpack_from(data, ip + 4)[0])
            return _fragment(index, data, key, (frag & 0x1FFF) == 0, l4, l4_end)
        return _segment(index, data, False, src, dst, l4, l4_end)
    if size < ip + 40 or data[ip] >> 4 != 6:
        return None
    src, dst = bytes(data[ip + 8:ip + 24]), bytes(data[ip + 24:ip + 40])
    l4_end = ip + 40 + _U16.unpack_from(data, ip + 4)[0]
    nh, pos = data[ip + 6], ip + 40
    while nh in _IPV6_EXT:
        if size < pos + 2:
            return None
        nh, pos = data[pos], pos + (data[pos + 1] + 1) * 8
    if nh == _IPV6_FRAGMENT:
        if size < pos + 8:
            return None
        nh, offset = data[pos], _U16.unpack_from(data, pos + 2)[0]
        key = (6, src, dst, _U32.unpack_from(data, pos + 4)[0])
        if nh != _IPPROTO_TCP:
            return None
        return _fragment(index, data, key, (offset >> 3) == 0, pos + 8, l4_end)
    if nh != _IPPROTO_TCP:
        return None
    return _segment(index, data, True, src, dst, pos, l4_end)


def _segment(index: int, data: bytearray, v6: bool, src: bytes, dst: bytes, l4: int,
             l4_end: int) -> _Tcp | None:
    captured_end = min(l4_end, len(data))
    if captured_end < l4 + 20:
        return None  # no whole TCP header: no payload captured either
    sport, dport, seq = _TCP_HEAD.unpack_from(data, l4)
    doff = (data[l4 + 12] >> 4) * 4
    if 20 <= doff and l4 + doff <= captured_end:
        return _Tcp(index, v6, src, dst, l4, l4_end, l4 + doff, captured_end, sport, dport, seq,
                    data[l4 + 13])
    # A data offset that does not fit: everything after the fixed header is treated as
    # payload, and zeroed (never trusted).
    return _Tcp(index, v6, src, dst, l4, l4_end, l4 + 20, captured_end, sport, dport, seq,
                data[l4 + 13], malformed=True)


def _fragment(index: int, data: bytearray, key: tuple[Any, ...], first: bool, start: int,
              end: int) -> _Fragment:
    end = min(end, len(data))
    ports = None
    if first and end >= start + 4:
        sport, dport = struct.unpack_from("!HH", data, start)
        ports = (sport, dport)
        start = min(end, start + 20)
    return _Fragment(index, key, first, min(start, end), end, ports)


def _tcp_checksum(data: bytearray | bytes, seg: _Tcp) -> int:
    """The TCP checksum *seg* should carry (over the pseudo header and the whole segment)."""
    length = seg.l4_end - seg.tcp
    if seg.v6:
        pseudo = seg.src + seg.dst + struct.pack("!IxxxB", length, _IPPROTO_TCP)
    else:
        pseudo = seg.src + seg.dst + struct.pack("!xBH", _IPPROTO_TCP, length)
    body = bytearray(data[seg.tcp:seg.l4_end])
    body[16:18] = b"\0\0"
    return internet_checksum(pseudo + bytes(body))


def _ones_add(a: int, b: int) -> int:
    total = a + b
    return (total & 0xFFFF) + (total >> 16)


# --------------------------------------------------------------------------------------------
# Parsing a reassembled stream: masked copy + the ranges that could not be understood


@dataclass
class _Parse:
    masked: bytearray
    bad: list[tuple[int, int, str]] = field(default_factory=list)  # sorted, disjoint
    starts: list[int] = field(default_factory=list)                # message starts seen
    sensitive: list[tuple[int, int]] = field(default_factory=list)  # ranges masked
    notes: list[tuple[int, str]] = field(default_factory=list)     # (stream offset, warning)
    end: int = 0                                                    # where parsing stopped

    def layout(self, a: int, b: int) -> tuple[list[int], list[tuple[int, int]]]:
        """Message starts and masked ranges that begin in [a, b)."""
        return ([s for s in self.starts if a <= s < b],
                [r for r in self.sensitive if a <= r[0] < b])

    def trouble(self, a: int, b: int) -> str | None:
        """Why [a, b) of the stream is not understood, or None."""
        ends = [end for _, end, _ in self.bad]
        i = bisect.bisect_right(ends, a)
        if i < len(self.bad) and self.bad[i][0] < b:
            return self.bad[i][2]
        return None


_Parser = Callable[[bytes, int, int], _Parse]


class _NotUnderstood(Exception):
    """What in a message cannot be understood (said without showing its bytes)."""


# -- ISO 8583 ---------------------------------------------------------------------------------


def _parse_iso(buf: bytes, start: int, until: int, dialect: Dialect) -> _Parse:
    """Frames from *start* until one ends at or after *until*: length prefix, TPDU, header,
    message.  A frame that does not decode is a bad range and the next one is read (its length
    was plausible); bad framing ends the stream (nothing after it can be placed)."""
    out = _Parse(bytearray(buf))
    spec = dialect.pyiso_spec()
    o = start
    while o < len(buf) and o < until:
        out.starts.append(o)
        if len(buf) - o < LENGTH_PREFIX:
            out.bad.append((o, _INF, f"the stream ends inside a length prefix at stream offset {o}"))
            break
        declared = int.from_bytes(buf[o:o + LENGTH_PREFIX], "big")
        if not MIN_BODY <= declared <= MAX_BODY:
            out.bad.append((o, _INF, f"not ISO 8583 framing at stream offset {o} (length prefix "
                                     f"outside {MIN_BODY}..{MAX_BODY})"))
            break
        end = o + LENGTH_PREFIX + declared
        if end > len(buf):
            out.bad.append((o, _INF, f"the stream ends inside the frame of {declared} bytes at "
                                     f"stream offset {o}"))
            break
        try:
            _mask_iso_frame(buf, out, o, end, spec)
        except _NotUnderstood as exc:
            out.bad.append((o, end, f"the frame at stream offset {o}: {exc}"))
        o = end
    out.end = o
    return out


def _safe_pyiso(msg: str) -> str:
    """pyiso8583's message without what could quote data (its codec errors quote a byte)."""
    return msg.split(",", 1)[0] if msg.startswith("Failed to decode") else msg


def _mask_iso_frame(buf: bytes, out: _Parse, o: int, end: int, spec: dict[str, Any]) -> None:
    """Decode the frame buf[o:end] and mask its sensitive fields in ``out.masked``."""
    body_at = o + LENGTH_PREFIX
    if buf[body_at] != _TPDU_ID:
        raise _NotUnderstood("TPDU ID is not 0x60")
    msg_at = body_at + TPDU_LEN + HEADER_LEN
    payload = bytes(buf[msg_at:end])
    try:
        doc, enc = iso8583.decode(payload, spec)
    except _PyDecodeError as exc:
        raise _NotUnderstood(f"field {exc.field} at byte {exc.pos} of the message does not "
                             f"decode ({_safe_pyiso(exc.msg)})") from None
    except Exception as exc:  # pyiso8583 on hostile bytes: never crash, never leak
        raise _NotUnderstood(f"the message does not decode ({type(exc).__name__})") from None
    # pyiso8583 reads sequentially: header, MTI, primary bitmap, secondary bitmap, fields in
    # ascending order; each occupies its length prefix + its data.
    fields: dict[str, Any] = dict(enc)
    order: list[str] = [k for k in ("h", "t", "p", "1") if k in fields]
    order += sorted((k for k in fields if k.isdigit() and k != "1"), key=int)
    pos = msg_at
    places: dict[str, tuple[int, int]] = {}
    for key in order:
        prefix = len(fields[key].get("len", b""))
        size = len(fields[key].get("data", b""))
        places[key] = (pos + prefix, pos + prefix + size)
        pos += prefix + size
    if pos != end:
        raise _NotUnderstood(f"the fields take {pos - msg_at} bytes, the message has "
                             f"{end - msg_at}")
    for key in sorted(SENSITIVE_FIELDS & places.keys(), key=int):
        a, b = places[key]
        if a == b:
            continue
        masked, note = _mask_iso_field(key, spec[key], bytes(buf[a:b]), str(doc.get(key, "")))
        if len(masked) != b - a:  # a bug here must not shift a byte: mask it all instead
            masked = bytes(b - a)
        out.masked[a:b] = masked
        out.sensitive.append((a, b))
        if note is not None:
            out.notes.append((a, f"field {key} of the {doc.get('t', '?')} at stream offset "
                                 f"{o}: {note}"))


def _is_nibbles(spec: dict[str, Any]) -> bool:
    return spec.get("data_enc") == "b" and spec.get("len_count") == "nibbles"


def _digit_offset(spec: dict[str, Any], data: bytes, digits: int) -> int:
    """Nibble index of the first digit of a nibble-counted field (pyiso8583's pad rule)."""
    if digits % 2 == 0 or len(data) * 2 == digits:
        return 0
    left_pad = str(spec.get("left_pad", ""))[:1]
    return 1 if left_pad and data.hex().upper()[:1] == left_pad.upper() else 0


def _put_nibbles(data: bytes, at: int, nibbles: str) -> bytes:
    text = data.hex().upper()
    return bytes.fromhex(text[:at] + nibbles + text[at + len(nibbles):])


def _mask_digits(digits: str) -> str:
    """A PAN's digits in BCD: first 6 and last 4 kept, the nibbles between ``F`` — never a
    digit, so a masked PAN cannot equal a real one (a test PAN whose middle digits are zeros
    would come out unchanged if they were zeroed); below 13 digits (or not all digits) every
    nibble ``0`` (``mask_pan`` shows such a PAN as all ``*``)."""
    if len(digits) >= 13 and digits.isdigit():
        return digits[:6] + "F" * (len(digits) - 10) + digits[-4:]
    return "0" * len(digits)


def _mask_track(track: str) -> str:
    """Track 2 (``PAN D YYMM service discretionary``): the PAN masked, ``D`` kept, the rest 0."""
    sep = track.upper().find("D")
    if sep < 0:
        return "0" * len(track)
    return _mask_digits(track[:sep]) + "D" + "0" * (len(track) - sep - 1)


def _mask_all(spec: dict[str, Any], data: bytes, value: str) -> bytes:
    """Every digit, byte or character of a field, in its own encoding."""
    if _is_nibbles(spec):
        return _put_nibbles(data, _digit_offset(spec, data, len(value)), "0" * len(value))
    enc = str(spec.get("data_enc", "b"))
    if enc == "b":
        return bytes(len(data))
    try:
        star = "*".encode(enc)
    except (LookupError, UnicodeError):
        return bytes(len(data))
    return star * len(data) if len(star) == 1 else bytes(len(data))


def _mask_iso_field(key: str, spec: dict[str, Any], data: bytes, value: str
                    ) -> tuple[bytes, str | None]:
    """The masked bytes of one sensitive field's data (same length), and a warning or None."""
    if key in ("2", "35") and _is_nibbles(spec):
        masked = _mask_digits(value) if key == "2" else _mask_track(value)
        return _put_nibbles(data, _digit_offset(spec, data, len(value)), masked), None
    if key == "55" and spec.get("data_enc") == "b":
        return _mask_icc(data)
    return _mask_all(spec, data, value), None


def _mask_icc(data: bytes) -> tuple[bytes, str | None]:
    """Field 55: the value of each sensitive tag masked (tags, lengths and the rest kept)."""
    out = bytearray(data)
    good_end = 0
    try:
        for item in tlv.iter_decode(data):
            _mask_tlv_item(item, out)
            good_end = item.end
    except tlv.TlvError:
        out[good_end:] = bytes(len(data) - good_end)
        return bytes(out), (f"not BER-TLV from byte {good_end} of {len(data)}: the rest of the "
                            f"field is zeroed")
    return bytes(out), None


def _mask_tlv_item(item: tlv.Tlv, out: bytearray) -> None:
    how = SENSITIVE_TAGS.get(item.tag)
    at = item.end - len(item.value)
    if how is TagMask.PAN:
        text = item.value.hex().upper()
        digits = text.rstrip("F")
        if digits.isdigit():
            out[at:item.end] = bytes.fromhex(_mask_digits(digits) + text[len(digits):])
        else:
            out[at:item.end] = bytes(len(item.value))
    elif how is not None:
        out[at:item.end] = bytes(len(item.value))
    else:
        for child in item.children:
            _mask_tlv_item(child, out)


# -- QR platform: HTTP/1.1 + JSON -------------------------------------------------------------


_HEAD_END = re.compile(rb"\r?\n\r?\n")
_REQUEST_LINE = re.compile(r"[A-Z]{3,10} (\S+) HTTP/1\.[01]")
_STATUS_LINE = re.compile(r"HTTP/1\.[01] (\d{3})(?: .*)?")
_HEADER_LINE = re.compile(r"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*(.*?)[ \t]*")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")


def _parse_http(buf: bytes, start: int, until: int, requests: bool) -> _Parse:
    """HTTP/1.1 messages from *start* until one ends at or after *until* (requests towards the
    platform, answers from it): start line, headers, ``Content-Length`` body, JSON walked."""
    out = _Parse(bytearray(buf))
    o = start
    while o < len(buf) and o < until:
        out.starts.append(o)
        try:
            body_at, body_end, target_ok = _http_message(buf, o, requests)
        except _NotUnderstood as exc:
            out.bad.append((o, _INF, f"the HTTP message at stream offset {o}: {exc}"))
            break
        try:
            if not target_ok:
                raise _NotUnderstood("a request target with a query or fragment")
            if body_end > body_at:
                out.sensitive += _mask_json(buf, out.masked, body_at, body_end)
        except _NotUnderstood as exc:
            out.bad.append((o, body_end, f"the HTTP message at stream offset {o}: {exc}"))
        o = body_end
    out.end = o
    return out


def _http_message(buf: bytes, o: int, requests: bool) -> tuple[int, int, bool]:
    """(body start, body end, target has no query) of the message at *o*."""
    m = _HEAD_END.search(buf, o, min(len(buf), o + _HTTP_MAX_HEAD))
    if m is None:
        if len(buf) - o >= _HTTP_MAX_HEAD:
            raise _NotUnderstood(f"no end of the header block within {_HTTP_MAX_HEAD} bytes")
        raise _NotUnderstood("the stream ends inside the header block")
    lines = bytes(buf[o:m.start()]).decode("latin-1").replace("\r\n", "\n").split("\n")
    first, headers = lines[0], lines[1:]
    target_ok = True
    status = 0
    if requests:
        req = _REQUEST_LINE.fullmatch(first)
        if req is None:
            raise _NotUnderstood("not an HTTP/1.x request line")
        target_ok = not set("?#") & set(req.group(1))
    else:
        st = _STATUS_LINE.fullmatch(first)
        if st is None:
            raise _NotUnderstood("not an HTTP/1.x status line")
        status = int(st.group(1))
    lengths: set[str] = set()
    for line in headers:
        h = _HEADER_LINE.fullmatch(line)
        if h is None:
            raise _NotUnderstood("a header line that is not 'Name: value'")
        name = h.group(1).lower()
        if name == "transfer-encoding":
            raise _NotUnderstood("a Transfer-Encoding body (the platform takes Content-Length only)")
        if name == "content-length":
            lengths.add(h.group(2))
    if len(lengths) > 1 or (lengths and not ascii_digits(next(iter(lengths)))):
        raise _NotUnderstood("Content-Length is not one number")
    body_at = m.end()
    if lengths:
        size = int(next(iter(lengths)))
    elif requests or 100 <= status < 200 or status in (204, 304):
        size = 0
    else:
        size = len(buf) - body_at  # an answer without a length ends with the connection
    if size > _HTTP_MAX_BODY:
        raise _NotUnderstood(f"a body of {size} bytes (more than {_HTTP_MAX_BODY})")
    if body_at + size > len(buf):
        raise _NotUnderstood(f"the stream ends inside the body of {size} bytes")
    return body_at, body_at + size, target_ok


def _mask_json(buf: bytes, masked: bytearray, a: int, b: int) -> list[tuple[int, int]]:
    """Mask, in *masked*, the values of :data:`QR_SENSITIVE_KEYS` in the JSON body buf[a:b];
    return the ranges masked."""
    raw = bytes(buf[a:b])
    try:
        json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _NotUnderstood("the body is not UTF-8 JSON") from None
    text = raw.decode("latin-1")  # one character per byte: string offsets are byte offsets
    spans: list[tuple[int, int, str]] = []
    try:
        end = _json_value(text, 0, False, spans, 0)
    except (IndexError, ValueError, RecursionError):
        raise _NotUnderstood("the JSON body could not be walked") from None
    if text[end:].strip(" \t\r\n"):
        raise _NotUnderstood("the JSON body could not be walked")
    for s, e, kind in spans:
        masked[a + s:a + e] = _mask_json_token(raw[s:e], kind)
    return [(a + s, a + e) for s, e, _ in spans]


_JSON_WS = " \t\r\n"
_JSON_MAX_DEPTH = 64


def _skip_ws(text: str, i: int) -> int:
    while text[i] in _JSON_WS:
        i += 1
    return i


def _json_string_end(text: str, i: int) -> int:
    """*i* is at an opening quote: the index just after the closing one."""
    i += 1
    while True:
        c = text[i]
        if c == "\\":
            i += 2
        elif c == '"':
            return i + 1
        else:
            i += 1


def _json_value(text: str, i: int, sensitive: bool, spans: list[tuple[int, int, str]],
                depth: int) -> int:
    """Walk one JSON value at *i* (already known valid); record the sensitive scalars' spans
    (strings without their quotes); return the index after the value."""
    if depth > _JSON_MAX_DEPTH:
        raise ValueError("JSON nested too deep")
    i = _skip_ws(text, i)
    c = text[i]
    if c in "{[":
        close = "}" if c == "{" else "]"
        i = _skip_ws(text, i + 1)
        if text[i] == close:
            return i + 1
        while True:
            child_sensitive = sensitive
            if c == "{":
                key_end = _json_string_end(text, i)
                key = json.loads(text[i:key_end])
                child_sensitive = sensitive or key in QR_SENSITIVE_KEYS
                i = _skip_ws(text, key_end)
                if text[i] != ":":
                    raise ValueError("':' expected")
                i += 1
            i = _skip_ws(text, _json_value(text, i, child_sensitive, spans, depth + 1))
            if text[i] == close:
                return i + 1
            if text[i] != ",":
                raise ValueError("',' expected")
            i = _skip_ws(text, i + 1)
    if c == '"':
        end = _json_string_end(text, i)
        if sensitive:
            spans.append((i + 1, end - 1, "string"))
        return end
    number = _NUMBER.match(text, i)
    if number is not None and number.end() > i:
        if sensitive:
            spans.append((i, number.end(), "number"))
        return number.end()
    for literal in ("true", "false", "null"):
        if text.startswith(literal, i):
            return i + len(literal)
    raise ValueError("a JSON value expected")


def _mask_middle(text: str, fill: str = "*") -> str:
    if len(text) >= 13:
        return text[:6] + fill * (len(text) - 10) + text[-4:]
    return fill * len(text)


def _mask_json_token(raw: bytes, kind: str) -> bytes:
    if kind == "number":
        text = raw.decode("ascii")
        if text.isdigit() and len(text) >= 13:
            return _mask_middle(text, "0").encode("ascii")
        return re.sub(r"[0-9]", "9", text).encode("ascii")
    if not raw.isascii() or b"\\" in raw or not all(0x20 <= c < 0x7F for c in raw):
        return b"*" * len(raw)
    text = raw.decode("ascii")
    masked = mask_code(text) if text.isdigit() else _mask_middle(text)
    if len(masked) != len(text):
        masked = _mask_middle(text)
    return masked.encode("ascii")


# --------------------------------------------------------------------------------------------
# Streams


@dataclass
class _Stream:
    label: str
    parser: _Parser
    isn: int | None = None                       # from the SYN
    segs: list[tuple[_Tcp, bytes]] = field(default_factory=list)


def _base(stream: _Stream) -> int:
    """Sequence number of the first stream byte: ISN + 1, or without a SYN the lowest sequence
    number seen (modulo 2^32, relative to the first data segment)."""
    if stream.isn is not None:
        return (stream.isn + 1) % _SEQ_MOD
    first = stream.segs[0][0].seq
    back = max(((first - seg.seq) % _SEQ_MOD for seg, _ in stream.segs
                if (first - seg.seq) % _SEQ_MOD < (1 << 31)), default=0)
    return (first - back) % _SEQ_MOD


@dataclass
class _Outcome:
    payload: bytes
    reason: str | None = None        # why it was zeroed
    note: str | None = None          # a warning about a masked, understood payload


def _mask_stream(stream: _Stream, ok: Callable[[_Tcp], bool]) -> dict[int, _Outcome]:
    """Each segment's new payload (record index → outcome)."""
    base = _base(stream)
    placed: list[tuple[int, _Tcp, bytes]] = []
    for seg, payload in stream.segs:
        rel = (seg.seq + (1 if seg.flags & _TCP_SYN else 0) - base) % _SEQ_MOD
        placed.append((rel, seg, payload))
    # The contiguous prefix of the stream the capture holds.
    end = 0
    for rel, _, payload in sorted(placed, key=lambda p: p[0]):
        if rel > end:
            break
        end = max(end, rel + len(payload))
    # The stream's bytes: per offset, the first copy with a valid checksum, else the first copy.
    stream_bytes = bytearray(end)
    for rel, _, payload in sorted(placed, key=lambda p: (not ok(p[1]), p[1].index), reverse=True):
        if rel < end:
            stream_bytes[rel:rel + len(payload)] = payload
    primary = stream.parser(bytes(stream_bytes), 0, _INF)
    out: dict[int, _Outcome] = {}
    for rel, seg, payload in placed:
        size = len(payload)
        if rel >= end:
            why = (f"stream bytes {end}..{rel - 1} are missing from the capture (a gap)"
                   if rel < _SEQ_MOD // 2 else "a sequence number before the stream's first byte")
            out[seg.index] = _Outcome(bytes(size), why)
            continue
        parse = primary
        trouble = None
        if payload != stream_bytes[rel:rel + size]:
            # A copy that differs (a corrupted byte): parsed as the stream with this copy in
            # place, from the last message start before it.  Masked only when that changes
            # nothing of the layout (message boundaries, where the sensitive values are), so
            # a corruption that moves the fields never exposes a value as something else.
            variant = bytearray(stream_bytes)
            variant[rel:rel + size] = payload
            at = primary.starts[bisect.bisect_right(primary.starts, rel) - 1]
            parse = stream.parser(bytes(variant), at, rel + size)
            if primary.trouble(at, parse.end) is not None \
                    or parse.layout(at, parse.end) != primary.layout(at, parse.end):
                trouble = (f"a copy of stream bytes {rel}..{rel + size - 1} that differs from "
                           f"the stream (a corrupted byte?) and decodes differently")
        trouble = parse.trouble(rel, rel + size) or trouble
        if trouble is not None:
            out[seg.index] = _Outcome(bytes(size), trouble)
            continue
        note = next((text for at, text in parse.notes if rel <= at < rel + size), None)
        out[seg.index] = _Outcome(bytes(parse.masked[rel:rel + size]), None, note)
    return out


# --------------------------------------------------------------------------------------------
# The whole file


@dataclass
class _Counts:
    changed: int = 0
    masked: int = 0
    zeroed: int = 0


def _endpoint(addr: bytes, port: int) -> str:
    if len(addr) == 4:
        return f"{'.'.join(str(b) for b in addr)}:{port}"
    return f"[{':'.join(addr[i:i + 2].hex() for i in range(0, 16, 2))}]:{port}"


def _label(seg: _Tcp) -> str:
    return f"{_endpoint(seg.src, seg.sport)} → {_endpoint(seg.dst, seg.dport)}"


def _locate_all(pcap: _Pcap, src: Path) -> list[_Tcp | _Fragment | None]:
    try:
        return [_locate(i, rec.data, pcap.linktype, pcap.endian)
                for i, rec in enumerate(pcap.records)]
    except _UnsupportedLink as exc:
        raise RigError(f"redact_pcap(): {src}: link type {exc.linktype} is not supported "
                       f"(Ethernet, raw IP, Linux cooked, BSD loopback are)") from None


def _fragment_outcomes(located: list[_Tcp | _Fragment | None], ports: frozenset[int]
                       ) -> dict[int, _Outcome]:
    """Fragments of TCP datagrams to or from *ports* (or whose first fragment is not in the
    capture, so their ports are unknown): data zeroed, nothing reassembled at the IP level."""
    first: set[tuple[Any, ...]] = set()
    sensitive: set[tuple[Any, ...]] = set()
    for item in located:
        if isinstance(item, _Fragment) and item.first:
            first.add(item.key)
            if item.ports is None or ports & set(item.ports):
                sensitive.add(item.key)
    return {item.index: _Outcome(bytes(item.end - item.start),
                                 "an IP fragment of a TCP segment (not reassembled)")
            for item in located
            if isinstance(item, _Fragment) and (item.key in sensitive or item.key not in first)}


def _streams(located: list[_Tcp | _Fragment | None], pcap: _Pcap,
             parser_for: Callable[[_Tcp], _Parser | None], outcomes: dict[int, _Outcome]
             ) -> list[_Stream]:
    """Segments on the watched ports grouped by connection direction, in capture order."""
    current: dict[tuple[Any, ...], _Stream] = {}
    streams: list[_Stream] = []
    for seg in located:
        if not isinstance(seg, _Tcp):
            continue
        parser = parser_for(seg)
        if parser is None:
            continue
        key = (seg.src, seg.sport, seg.dst, seg.dport)
        stream = current.get(key)
        if seg.flags & _TCP_SYN and (stream is None or stream.isn != seg.seq):
            stream = current[key] = _Stream(_label(seg), parser, seg.seq)  # a new connection
            streams.append(stream)
        payload = bytes(pcap.records[seg.index].data[seg.start:seg.end])
        if not payload:
            continue
        if seg.malformed or seg.flags & _TCP_RST:
            why = "a TCP header whose data offset does not fit" if seg.malformed \
                else "data on a RST segment"
            outcomes[seg.index] = _Outcome(bytes(len(payload)), why)
            continue
        if stream is None:
            stream = current[key] = _Stream(_label(seg), parser)
            streams.append(stream)
        stream.segs.append((seg, payload))
    return streams


def _rewrite(data: bytearray, item: _Tcp | _Fragment, payload: bytes,
             was_ok: Callable[[_Tcp], bool]) -> None:
    """Put *payload* in place and fix the TCP checksum (a wrong one stays as wrong)."""
    if not isinstance(item, _Tcp) or not item.complete:
        data[item.start:item.end] = payload
        return
    valid = was_ok(item)
    before = _tcp_checksum(data, item)
    data[item.start:item.end] = payload
    after = _tcp_checksum(data, item)
    if not valid:  # same distance from the right value as in the capture
        old = _U16.unpack_from(data, item.tcp + 16)[0]
        after = _ones_add(old, _ones_add(after, ~before & 0xFFFF))
        after = 0 if after == 0xFFFF else after
    _U16.pack_into(data, item.tcp + 16, after)


def _redact(pcap: _Pcap, src: Path, iso_ports: frozenset[int], qr_ports: frozenset[int],
            dialect: Dialect) -> _Counts:
    located = _locate_all(pcap, src)

    def parser_for(seg: _Tcp) -> _Parser | None:
        if seg.sport in iso_ports or seg.dport in iso_ports:
            return lambda b, s, u: _parse_iso(b, s, u, dialect)
        if seg.dport in qr_ports:
            return lambda b, s, u: _parse_http(b, s, u, True)
        if seg.sport in qr_ports:
            return lambda b, s, u: _parse_http(b, s, u, False)
        return None

    checksum_ok: dict[int, bool] = {}

    def ok(seg: _Tcp) -> bool:
        """The segment's TCP checksum, as captured, is right (or cannot be checked)."""
        if seg.index not in checksum_ok:
            data = pcap.records[seg.index].data
            stored = _U16.unpack_from(data, seg.tcp + 16)[0]
            checksum_ok[seg.index] = not seg.complete or stored == _tcp_checksum(data, seg)
        return checksum_ok[seg.index]

    outcomes = _fragment_outcomes(located, iso_ports | qr_ports)
    for stream in _streams(located, pcap, parser_for, outcomes):
        if stream.segs:
            outcomes.update(_mask_stream(stream, ok))

    counts = _Counts()
    for index in sorted(outcomes):
        outcome, item, data = outcomes[index], located[index], pcap.records[index].data
        assert item is not None
        where = f"{src.name}: frame {index + 1}"
        if isinstance(item, _Tcp):
            where += f" ({_label(item)})"
        if outcome.reason is not None:
            logger.warning("%s: %d payload bytes zeroed: %s", where, item.end - item.start,
                           outcome.reason)
        elif outcome.note is not None:
            logger.warning("%s: %s", where, outcome.note)
        if data[item.start:item.end] == outcome.payload:
            continue
        _rewrite(data, item, outcome.payload, ok)
        counts.changed += 1
        if outcome.reason is not None:
            counts.zeroed += 1
        else:
            counts.masked += 1
    return counts


def redact_pcap(src: Path, dst: Path, *, iso_ports: Iterable[int] = (ISO_PORT,),
                qr_ports: Iterable[int] = (QR_PORT,), dialect: Dialect = UNIONPAY) -> int:
    """Write *dst*: *src* with the card data of ISO 8583 (*iso_ports*) and QR platform
    (*qr_ports*) traffic masked in place (see the module docstring for what and how).

    Returns how many frames were changed (masked or zeroed).  *src* is not modified (*dst* may
    be *src*); *dst* is written whole or not at all.  I/O errors and a file that is not a
    classic pcap of a supported link type raise :class:`RigError` naming the files.
    """
    src, dst = Path(src), Path(dst)
    try:
        raw = src.read_bytes()
    except OSError as exc:
        raise RigError(f"redact_pcap(): cannot read capture {src}: {exc.strerror or exc}") from exc
    pcap = _read_pcap(src, raw)
    counts = _redact(pcap, src, frozenset(iso_ports), frozenset(qr_ports), dialect)
    part = dst.with_name(dst.name + ".part")
    try:
        with open(part, "wb") as fh:
            fh.write(pcap.header)
            for rec in pcap.records:
                fh.write(rec.head)
                fh.write(rec.data)
        os.replace(part, dst)
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise RigError(f"redact_pcap(): cannot write masked capture {dst} (from {src}): "
                       f"{exc.strerror or exc}") from exc
    logger.info("%s → %s: %d frames, %d masked, %d zeroed", src.name, dst.name,
                len(pcap.records), counts.masked, counts.zeroed)
    return counts.changed
