"""Render the Lua dissector of the bench's ISO 8583 framing from the dialect spec.

The field table of ``posrig_iso8583.lua`` (each field's name, encoding, length type, length
encoding, maximum length, nibble count and padding), the response codes and the EMV tags that
carry card data come from :mod:`protocols.iso8583` and :mod:`protocols.masking`; the dissecting
code is the fixed template below.  :func:`render` is pure; :func:`stale` compares a file with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from protocols.iso8583 import (
    HEADER_LEN,
    LENGTH_PREFIX,
    MAX_BODY,
    MIN_BODY,
    RESPONSE_CODES,
    SENSITIVE_FIELDS,
    TPDU_LEN,
    UNIONPAY,
    Dialect,
)
from protocols.masking import SENSITIVE_TAGS
from protocols.tlv import tag_bytes
from rigs.errors import ConfigError
from rigs.network.capture import ISO_PORT, QR_PORT

__all__ = ["TLV_FIELDS", "render", "stale"]

#: Fields whose value is BER-TLV (shown tag by tag).
TLV_FIELDS = frozenset({"55"})
#: Length encodings and data encodings the Lua code reads.
_LEN_ENCODINGS = ("bcd", "ascii", "b")
_TEXT_ENCODINGS = ("ascii", "latin-1", "latin_1", "iso-8859-1")


def _lua_str(text: str) -> str:
    """A Lua string literal (double quotes; backslash, quote and control characters escaped)."""
    out = []
    for ch in text:
        if ch in '\\"':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\{ord(ch):03d}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _short_name(desc: str) -> str:
    """``'PAN (n..19 LLVAR, left-aligned BCD)'`` → ``'PAN'``; ``'Reserved private: working
    keys in 0810 (…)'`` → ``'Reserved private'``."""
    return desc.split(" (", 1)[0].split(":", 1)[0].strip() or desc


def _kind(key: str, spec: Mapping[str, Any], dialect: Dialect) -> str:
    """How the dissector shows a field: ``digits`` (BCD or track nibbles, as text), ``text``
    (ASCII) or ``bytes`` (binary, as hex)."""
    enc = str(spec["data_enc"])
    if enc == "b":
        if spec.get("len_count") == "nibbles" or key in dialect.numeric or key == "t":
            return "digits"
        return "bytes"
    if enc.lower() in _TEXT_ENCODINGS:
        return "text"
    raise ConfigError(f"rigs.wireshark: field {key} of dialect {dialect.name} is encoded "
                      f"{enc!r}; the dissector reads b (binary/BCD) and ASCII only")


def _field_row(key: str, spec: Mapping[str, Any], dialect: Dialect) -> str:
    len_enc = str(spec.get("len_enc", "ascii"))
    if int(spec["len_type"]) and len_enc not in _LEN_ENCODINGS:
        raise ConfigError(f"rigs.wireshark: field {key} of dialect {dialect.name} has length "
                          f"encoding {len_enc!r}; the dissector reads {', '.join(_LEN_ENCODINGS)}")
    desc = str(spec.get("desc", f"Field {key}"))
    sensitive = key in SENSITIVE_FIELDS
    if sensitive:
        desc += "; sensitive (SENSITIVE_FIELDS): masked in the rig's captures"
    parts = [
        f"name = {_lua_str(_short_name(str(spec.get('desc', key))))}",
        f"desc = {_lua_str(desc)}",
        f"kind = {_lua_str(_kind(key, spec, dialect))}",
        f"len_type = {int(spec['len_type'])}",
        f"len_enc = {_lua_str(len_enc)}",
        f"max_len = {int(spec['max_len'])}",
        f"nibbles = {'true' if spec.get('len_count') == 'nibbles' else 'false'}",
    ]
    if spec.get("left_pad"):
        parts.append(f"left_pad = {_lua_str(str(spec['left_pad'])[:1].upper())}")
    if spec.get("right_pad"):
        parts.append(f"right_pad = {_lua_str(str(spec['right_pad'])[:1].upper())}")
    if key in TLV_FIELDS:
        parts.append("tlv = true")
    if sensitive:
        parts.append("sensitive = true")
    return "{" + ", ".join(parts) + "}"


def _tables(dialect: Dialect, iso_port: int, qr_port: int) -> str:
    spec = dialect.spec
    for key in ("t", "p"):
        if key not in spec:
            raise ConfigError(f"rigs.wireshark: dialect {dialect.name} has no {key!r} spec")
    mti, bitmap = spec["t"], spec["p"]
    if mti["data_enc"] != "b" or int(mti["len_type"]) != 0:
        raise ConfigError(f"rigs.wireshark: dialect {dialect.name}: the dissector reads a fixed "
                          f"BCD MTI only")
    if bitmap["data_enc"] != "b":
        raise ConfigError(f"rigs.wireshark: dialect {dialect.name}: the dissector reads binary "
                          f"bitmaps only")
    numbers = sorted(int(k) for k in spec if k.isdigit() and k != "1")
    lines = [
        f"local DIALECT = {_lua_str(dialect.name)}",
        f"local LENGTH_PREFIX, TPDU_LEN, HEADER_LEN = {LENGTH_PREFIX}, {TPDU_LEN}, {HEADER_LEN}",
        f"local MIN_BODY, MAX_BODY = {MIN_BODY}, {MAX_BODY}",
        f"local MTI_LEN = {int(mti['max_len'])}",
        f"local DEFAULT_PORT, DEFAULT_QR_PORT = {iso_port}, {qr_port}",
        "",
        "-- Field number -> how it is encoded (protocols/iso8583.py, dialect "
        f"{dialect.name}).",
        "local FIELDS = {",
    ]
    for n in numbers:
        lines.append(f"    [{n}] = {_field_row(str(n), spec[str(n)], dialect)},")
    lines += ["}", f"local FIELD_ORDER = {{{', '.join(str(n) for n in numbers)}}}",
              f"local SECONDARY_BITMAP = {'true' if '1' in spec else 'false'}", "",
              "-- Field 39 (protocols.iso8583.RESPONSE_CODES).", "local RESPONSE_CODES = {"]
    for code, text in RESPONSE_CODES.items():
        lines.append(f"    [{_lua_str(code)}] = {_lua_str(text)},")
    lines += ["}", "", "-- EMV tags that carry card data (protocols.masking.SENSITIVE_TAGS).",
              "local SENSITIVE_TAGS = {"]
    for tag in SENSITIVE_TAGS:
        lines.append(f"    [{_lua_str(tag_bytes(tag).hex().upper())}] = true,")
    lines.append("}")
    return "\n".join(lines)


_HEADER = """\
-- posrig_iso8583.lua: Wireshark dissector of the POS rig's acquirer link, ISO 8583 over TCP:
-- 2-byte length, TPDU (ID, destination, source), 6-byte header, MTI, bitmap(s), fields.
--
-- GENERATED by `python -m rigs.wireshark --write` from the dialect spec in
-- protocols/iso8583.py: do not edit by hand (`python -m rigs.wireshark --check` fails when
-- this file no longer matches the spec).
--
--   tshark -X lua_script:rigs/wireshark/posrig_iso8583.lua -r capture.pcap -Y posrig -V
--   tshark -X lua_script:rigs/wireshark/posrig_iso8583.lua -r capture.pcap -Y posrig \\
--          -T fields -e frame.number -e posrig.mti -e posrig.f11 -e posrig.f4 -e posrig.f39
--   wireshark -X lua_script:rigs/wireshark/posrig_iso8583.lua capture.pcap
-- (or copy it to the personal Lua plugins folder: Help > About Wireshark > Folders).
--
-- Preferences (Edit > Preferences > Protocols > POSRIG): the acquirer's TCP port (8583) and
-- the QR platform's port (8600, handed to the HTTP dissector; 0 leaves it alone).
-- Filter names: posrig.len, posrig.tpdu.{id,dst,src}, posrig.header.{app_type,version,status,
-- requirement,sub_version}, posrig.mti, posrig.bitmap, posrig.bitmap2, posrig.fields (the
-- numbers present), posrig.f<N> (each field: BCD digits and ASCII as text, binary as bytes),
-- posrig.field_len (length prefixes), posrig.icc.tag / posrig.icc.value (field 55 TLV).
"""

_CODE = """\
local TPDU_ID = 0x60

local posrig = Proto("posrig", "POS rig ISO 8583 (" .. DIALECT .. ")")

local pf = {
    len = ProtoField.uint16("posrig.len", "Length", base.DEC, nil, nil,
                            "Bytes after the 2-byte length prefix"),
    tpdu = ProtoField.bytes("posrig.tpdu", "TPDU"),
    tpdu_id = ProtoField.uint8("posrig.tpdu.id", "ID", base.HEX),
    tpdu_dst = ProtoField.uint16("posrig.tpdu.dst", "Destination", base.HEX),
    tpdu_src = ProtoField.uint16("posrig.tpdu.src", "Source", base.HEX),
    header = ProtoField.bytes("posrig.header", "Header"),
    app_type = ProtoField.uint8("posrig.header.app_type", "Application type", base.HEX),
    version = ProtoField.uint8("posrig.header.version", "Version", base.HEX),
    status = ProtoField.uint8("posrig.header.status", "Terminal status", base.DEC, nil, 0xF0),
    requirement = ProtoField.uint8("posrig.header.requirement", "Processing requirement",
                                   base.DEC, nil, 0x0F, "3: sign in again"),
    sub_version = ProtoField.bytes("posrig.header.sub_version", "Software sub-version"),
    mti = ProtoField.string("posrig.mti", "MTI"),
    bitmap = ProtoField.bytes("posrig.bitmap", "Primary bitmap"),
    bitmap2 = ProtoField.bytes("posrig.bitmap2", "Secondary bitmap"),
    fields = ProtoField.string("posrig.fields", "Fields present"),
    field_len = ProtoField.uint16("posrig.field_len", "Length prefix"),
    icc_tag = ProtoField.string("posrig.icc.tag", "Tag"),
    icc_value = ProtoField.bytes("posrig.icc.value", "Value"),
}
local field_pf = {}
local all_fields = {}
for _, v in pairs(pf) do all_fields[#all_fields + 1] = v end
for _, n in ipairs(FIELD_ORDER) do
    local f = FIELDS[n]
    local label = string.format("Field %d %s", n, f.name)
    if f.kind == "bytes" then
        field_pf[n] = ProtoField.bytes("posrig.f" .. n, label, base.NONE, f.desc)
    else
        field_pf[n] = ProtoField.string("posrig.f" .. n, label, base.ASCII, f.desc)
    end
    all_fields[#all_fields + 1] = field_pf[n]
end
posrig.fields = all_fields

local ef_malformed = ProtoExpert.new("posrig.malformed", "Malformed ISO 8583 message",
                                     expert.group.MALFORMED, expert.severity.ERROR)
posrig.experts = {ef_malformed}

posrig.prefs.port = Pref.uint("ISO 8583 TCP port", DEFAULT_PORT,
                              "TCP port of the acquirer host (ISO 8583 with this framing)")
posrig.prefs.qr_port = Pref.uint("QR platform TCP port", DEFAULT_QR_PORT,
                                 "TCP port of the QR payment platform, decoded as HTTP (0: none)")

local function malformed(tree, range, text)
    tree:add_proto_expert_info(ef_malformed, text)
    return nil
end

-- A length prefix: the count (digits or bytes) and the prefix's size, or nil and why.
local function read_len(tvb, off, stop, f)
    if f.len_type == 0 then return f.max_len, 0 end
    if off + f.len_type > stop then return nil, 0, "length prefix cut short" end
    local range = tvb(off, f.len_type)
    local count
    if f.len_enc == "bcd" then
        local hex = range:bytes():tohex()
        if not hex:match("^%d+$") then return nil, 0, "length prefix is not BCD" end
        count = tonumber(hex)
    elseif f.len_enc == "ascii" then
        local text = range:string()
        if not text:match("^%d+$") then return nil, 0, "length prefix is not ASCII digits" end
        count = tonumber(text)
    else
        count = range:uint()
    end
    if count > f.max_len then
        return nil, 0, string.format("length %d above the maximum %d", count, f.max_len)
    end
    return count, f.len_type
end

-- A digit field's value as text: hex nibbles, the pad nibble of an odd count removed.
local function digits_of(range, f, count)
    local hex = range:bytes():tohex()
    if f.nibbles and count % 2 == 1 then
        if f.left_pad and hex:sub(1, 1) == f.left_pad then return hex:sub(2) end
        if f.right_pad and hex:sub(-1) == f.right_pad then return hex:sub(1, -2) end
        return nil
    end
    return hex
end

-- BER-TLV (EMV): tags, lengths, values; constructed tags walked.
local function dissect_tlv(tvb, pos, stop, tree, depth)
    while pos < stop do
        local first = tvb(pos, 1):uint()
        if first == 0x00 or first == 0xFF then
            pos = pos + 1
        else
            local tag_len = 1
            if first % 32 == 31 then
                repeat
                    if pos + tag_len >= stop then
                        return malformed(tree, nil, "ICC data: a tag is cut short")
                    end
                    local b = tvb(pos + tag_len, 1):uint()
                    tag_len = tag_len + 1
                until b < 0x80 or tag_len > 4
            end
            local lpos = pos + tag_len
            if lpos >= stop then return malformed(tree, nil, "ICC data: a length is missing") end
            local len, len_len = tvb(lpos, 1):uint(), 1
            if len >= 0x80 then
                local n = len - 0x80
                if n == 0 or n > 3 or lpos + 1 + n > stop then
                    return malformed(tree, nil, "ICC data: a bad length")
                end
                len, len_len = tvb(lpos + 1, n):uint(), 1 + n
            end
            local vpos = lpos + len_len
            if vpos + len > stop then
                return malformed(tree, nil, "ICC data: a value is cut short")
            end
            local tag = tvb(pos, tag_len):bytes():tohex()
            local item = tree:add(pf.icc_tag, tvb(pos, vpos + len - pos), tag)
            item:append_text(string.format(" (%d bytes)", len))
            if SENSITIVE_TAGS[tag] then item:append_text(" [card data]") end
            if math.floor(first / 32) % 2 == 1 and depth < 8 then
                dissect_tlv(tvb, vpos, vpos + len, item, depth + 1)
            elseif len > 0 then
                item:add(pf.icc_value, tvb(vpos, len))
            end
            pos = vpos + len
        end
    end
end

local function bitmap_fields(range, first_number, present)
    for i = 0, range:len() - 1 do
        local byte = range(i, 1):uint()
        for bit = 0, 7 do
            if math.floor(byte / 2 ^ (7 - bit)) % 2 == 1 then
                present[#present + 1] = first_number + i * 8 + bit
            end
        end
    end
end

local pdus_in_frame = 0

local function dissect_pdu(tvb, pinfo, tree)
    local stop = tvb:len()
    local root = tree:add(posrig, tvb(0, stop))
    root:add(pf.len, tvb(0, LENGTH_PREFIX))
    local off = LENGTH_PREFIX
    if stop < MIN_BODY + LENGTH_PREFIX then
        return malformed(root, nil, "shorter than TPDU + header + MTI + bitmap")
    end
    local tpdu = root:add(pf.tpdu, tvb(off, TPDU_LEN))
    tpdu:add(pf.tpdu_id, tvb(off, 1))
    tpdu:add(pf.tpdu_dst, tvb(off + 1, 2))
    tpdu:add(pf.tpdu_src, tvb(off + 3, 2))
    off = off + TPDU_LEN
    local header = root:add(pf.header, tvb(off, HEADER_LEN))
    header:add(pf.app_type, tvb(off, 1))
    header:add(pf.version, tvb(off + 1, 1))
    header:add(pf.status, tvb(off + 2, 1))
    header:add(pf.requirement, tvb(off + 2, 1))
    header:add(pf.sub_version, tvb(off + 3, 3))
    off = off + HEADER_LEN
    local mti = tvb(off, MTI_LEN):bytes():tohex()
    root:add(pf.mti, tvb(off, MTI_LEN), mti)
    off = off + MTI_LEN
    local present = {}
    bitmap_fields(tvb(off, 8), 1, present)
    root:add(pf.bitmap, tvb(off, 8))
    off = off + 8
    local numbers = {}
    for _, n in ipairs(present) do
        if n == 1 then
            if not SECONDARY_BITMAP or off + 8 > stop then
                return malformed(root, nil, "secondary bitmap missing or not in the dialect")
            end
            root:add(pf.bitmap2, tvb(off, 8))
            bitmap_fields(tvb(off, 8), 65, present)
            off = off + 8
        else
            numbers[#numbers + 1] = tostring(n)
        end
    end
    root:add(pf.fields, tvb(off - 8, 8), table.concat(numbers, ","))
    local stan, rc
    for _, n in ipairs(present) do
        if n ~= 1 then
            local f = FIELDS[n]
            if f == nil then
                malformed(root, nil, string.format("field %d is not in dialect %s", n, DIALECT))
                break
            end
            local count, prefix, why = read_len(tvb, off, stop, f)
            if count == nil then
                malformed(root, nil, string.format("field %d: %s", n, why))
                break
            end
            local size = count
            if f.nibbles then size = math.floor((count + 1) / 2) end
            if off + prefix + size > stop then
                malformed(root, nil, string.format("field %d: %d bytes expected, %d left", n,
                                                   size, stop - off - prefix))
                break
            end
            local range = size > 0 and tvb(off + prefix, size) or tvb(off, prefix)
            local item
            if f.kind == "bytes" then
                item = size > 0 and root:add(field_pf[n], range) or root:add(field_pf[n], range, "")
            else
                local value
                if size == 0 then
                    value = ""
                elseif f.kind == "text" then
                    value = range:string()
                else
                    value = digits_of(range, f, count)
                end
                if value == nil then
                    malformed(root, nil, string.format("field %d: the pad nibble is not the spec's", n))
                    value = range:bytes():tohex()
                end
                item = root:add(field_pf[n], range, value)
                if n == 11 then stan = value end
                if n == 39 then
                    rc = value
                    item:append_text(" (" .. (RESPONSE_CODES[value] or "unknown response code") .. ")")
                end
            end
            if prefix > 0 then
                local unit = f.nibbles and " digits" or " bytes"
                item:add(pf.field_len, tvb(off, prefix), count):append_text(unit)
            end
            if f.tlv and size > 0 then dissect_tlv(tvb, off + prefix, off + prefix + size, item, 0) end
            off = off + prefix + size
        end
    end
    if off < stop then
        malformed(root, nil, string.format("%d bytes after the last field", stop - off))
    end
    local info = "ISO 8583 " .. mti .. " STAN " .. (stan or "-")
    if rc then info = info .. " RC " .. rc end
    root:append_text(", " .. info)
    pinfo.cols.protocol:set("ISO8583")
    if pdus_in_frame == 0 then
        pinfo.cols.info:set(info)
    else
        pinfo.cols.info:append("; " .. info)
    end
    pdus_in_frame = pdus_in_frame + 1
    return stop
end

local function pdu_len(tvb, pinfo, offset)
    local declared = tvb(offset, LENGTH_PREFIX):uint()
    if declared < MIN_BODY or declared > MAX_BODY then
        return 1  -- below the 2-byte minimum: Wireshark marks the rest malformed and stops
    end
    return declared + LENGTH_PREFIX
end

function posrig.dissector(tvb, pinfo, tree)
    local size = tvb:len()
    -- Not this framing (a payload the rig zeroed, another protocol): leave it to others.
    if size >= LENGTH_PREFIX then
        local declared = tvb(0, LENGTH_PREFIX):uint()
        if declared < MIN_BODY or declared > MAX_BODY then return 0 end
    end
    if size > LENGTH_PREFIX and tvb(LENGTH_PREFIX, 1):uint() ~= TPDU_ID then return 0 end
    pdus_in_frame = 0
    dissect_tcp_pdus(tvb, tree, LENGTH_PREFIX, pdu_len, dissect_pdu, true)
    return size
end

local tcp_port = DissectorTable.get("tcp.port")
local http = Dissector.get("http-over-tcp") or Dissector.get("http")
local registered, registered_qr = 0, 0

local function register_ports()
    if registered ~= 0 then tcp_port:remove(registered, posrig) end
    registered = posrig.prefs.port
    if registered ~= 0 then tcp_port:add(registered, posrig) end
    if http ~= nil then
        if registered_qr ~= 0 then tcp_port:remove(registered_qr, http) end
        registered_qr = posrig.prefs.qr_port
        if registered_qr ~= 0 then tcp_port:add(registered_qr, http) end
    end
end

function posrig.prefs_changed()
    register_ports()
end

register_ports()
"""


def render(dialect: Dialect = UNIONPAY, *, iso_port: int = ISO_PORT, qr_port: int = QR_PORT) -> str:
    """The dissector's text for *dialect*."""
    return f"{_HEADER}\n{_tables(dialect, iso_port, qr_port)}\n\n{_CODE}"


def stale(path: Path, dialect: Dialect = UNIONPAY) -> bool:
    """True when *path* is missing or differs from :func:`render`."""
    try:
        return path.read_text(encoding="utf-8") != render(dialect)
    except FileNotFoundError:
        return True
