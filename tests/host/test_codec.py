"""ISO 8583 codec (UnionPay dialect) against hand-built bytes, field by field."""

from __future__ import annotations

import pytest

from protocols.crypto import mac_x919
from protocols.errors import DecodeError
from protocols.iso8583 import (
    UNIONPAY,
    decode_message,
    describe,
    encode_message,
    encode_with_mac,
    mac_ok,
    response_mti,
)

from .conftest import MID, PAN, TID

SIGN_IN_DOC = {"t": "0800", "11": "000001", "41": TID, "42": MID, "60": "00000001004",
               "63": "01 "}
SIGN_IN_FIELDS = [
    ("MTI", "0800"),
    ("bitmap: 11 41 42 60 63", "0020000000C00012"),
    ("11 STAN n6", "000001"),
    ("41 TID ans8", "3130303030303031"),
    ("42 MID ans15", "383938313030303132333430303031"),
    ("60 LLLVAR n11: len 0011, 00|000001|004 + pad", "0011" "000000010040"),
    ("63 LLLVAR ans3: len 0003, '01 '", "0003" "303120"),
]

TRACK2 = f"{PAN}D3012220123456789"  # 33 nibbles: odd, padded right with 0
SALE_DOC = {
    "t": "0200", "2": PAN, "3": "000000", "4": "000000001000", "11": "000002", "14": "3012",
    "22": "051", "23": "001", "25": "00", "26": "12", "35": TRACK2, "41": TID, "42": MID,
    "49": "156", "52": "0102030405060708", "53": "2600000000000000",
    "55": "9F2701809F36020001", "60": "2200000100050", "64": "1122334455667788",
}
SALE_FIELDS = [
    ("MTI", "0200"),
    ("bitmap: 2 3 4 11 14 22 23 25 26 35 41 42 49 52 53 55 60 64", "702406C020C09A11"),
    ("2 PAN LLVAR n16, left-aligned", "16" "6214830000000017"),
    ("3 processing code", "000000"),
    ("4 amount n12", "000000001000"),
    ("11 STAN", "000002"),
    ("14 expiry YYMM", "3012"),
    ("22 entry mode n3 left-aligned", "0510"),
    ("23 PAN sequence n3 right-aligned", "0001"),
    ("25 condition code", "00"),
    ("26 PIN capture code", "12"),
    ("35 track 2 LLVAR z33, D separator, pad 0", "33" "6214830000000017D301222012345678" "90"),
    ("41 TID", "3130303030303031"),
    ("42 MID", "383938313030303132333430303031"),
    ("49 currency an3", "313536"),
    ("52 PIN block b64", "0102030405060708"),
    ("53 security control n16", "2600000000000000"),
    ("55 ICC LLLVAR b9", "0009" "9F2701809F36020001"),
    ("60 LLLVAR n13: 22|000001|000|5|0 + pad", "0013" "22000001000500"),
    ("64 MAC", "1122334455667788"),
]


def _joined(fields: list[tuple[str, str]]) -> bytes:
    return bytes.fromhex("".join(h for _, h in fields))


def test_sign_in_request_exact_bytes() -> None:
    assert encode_message(SIGN_IN_DOC) == _joined(SIGN_IN_FIELDS)
    back = decode_message(_joined(SIGN_IN_FIELDS))
    assert back == {**SIGN_IN_DOC, "p": "0020000000C00012"}


def test_sale_request_exact_bytes_field_by_field() -> None:
    raw = encode_message(SALE_DOC)
    expected = _joined(SALE_FIELDS)
    offset = 0
    for name, hexpart in SALE_FIELDS:  # pinpoint the first field that differs
        part = bytes.fromhex(hexpart)
        assert raw[offset:offset + len(part)] == part, name
        offset += len(part)
    assert raw == expected
    assert decode_message(expected) == {**SALE_DOC, "p": "702406C020C09A11"}


def test_encode_does_not_mutate_the_doc() -> None:
    doc = dict(SIGN_IN_DOC)
    encode_message(doc)
    assert doc == SIGN_IN_DOC


def test_spec_is_frozen_and_derive_copies() -> None:
    with pytest.raises(TypeError):
        UNIONPAY.spec["2"]["max_len"] = 99  # type: ignore[index]
    other = UNIONPAY.derive("longer-63", f63={**UNIONPAY.spec["63"], "max_len": 999})
    assert other.spec["63"]["max_len"] == 999
    assert UNIONPAY.spec["63"]["max_len"] == 63


def test_encode_rejects_non_digits_in_numeric_field_without_echoing_pan() -> None:
    with pytest.raises(DecodeError) as err:
        encode_message({**SALE_DOC, "2": "62148300000000AB"})
    assert str(err.value) == ("encode_message(): field 2 must be decimal digits; got "
                              "(sensitive, not shown)")
    with pytest.raises(DecodeError) as err:
        encode_message({**SALE_DOC, "4": "12"})
    assert str(err.value) == ("encode_message(): field 4: Field data is 1 bytes, expecting 6 "
                              "(MTI 0200, dialect unionpay-pos)")


def test_decode_error_names_field_and_byte_position() -> None:
    raw = _joined(SIGN_IN_FIELDS)
    with pytest.raises(DecodeError) as err:
        decode_message(raw[:-1])
    assert str(err.value) == ("decode_message(): field 63 at byte 46 of 48: Field data is 2 "
                              "bytes, expecting 3; at 30 31 (2 bytes)")
    with pytest.raises(DecodeError) as err:
        decode_message(raw + b"\x00")
    assert str(err.value) == ("decode_message(): field 63 at byte 49 of 50: Extra data after "
                              "last field; at 00 (1 bytes)")


def test_decode_error_in_sensitive_field_hides_bytes() -> None:
    raw = _joined(SALE_FIELDS)
    with pytest.raises(DecodeError) as err:
        decode_message(raw[:15])
    assert str(err.value) == ("decode_message(): field 2 at byte 11 of 15: Field data is 8 "
                              "nibbles, expecting 16; (sensitive field, bytes not shown)")
    assert "62 14 83" not in str(err.value)


def test_a_bitmap_naming_an_undefined_field_is_a_decode_error_not_a_key_error() -> None:
    raw = bytearray(encode_message({"t": "0200", "3": "000000", "4": "000000000100",
                                    "11": "000001", "41": TID, "42": MID, "49": "156"}))
    raw[2:4] = b"\xff\xff"  # a corrupted bitmap: fields 1 to 16 present
    with pytest.raises(DecodeError, match=r"the bitmap names field 5, which dialect \S+ does "
                                          r"not define \(\d+ bytes; bitmap ff ff"):
        decode_message(bytes(raw))


def test_mac_is_over_mti_to_field_before_64() -> None:
    mak = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
    raw = encode_with_mac({k: v for k, v in SALE_DOC.items() if k != "64"}, mak)
    assert raw[:-8] == _joined(SALE_FIELDS)[:-8]
    assert raw[-8:] == mac_x919(mak, raw[:-8])
    assert mac_ok(raw, mak)
    tampered = raw[:20] + bytes([raw[20] ^ 1]) + raw[21:]
    assert not mac_ok(tampered, mak)


def test_describe_masks_pan_and_redacts_secrets() -> None:
    icc = "5A086214830000000017" "9F270180" "5710" "6214830000000017D30122201234567F"
    doc = {**SALE_DOC, "55": icc}
    text = repr(describe(doc))
    assert PAN not in text and "D3012" not in text
    out = describe(doc)
    assert out["2"] == "621483******0017"
    assert out["35"] == "[track data redacted, PAN 621483******0017]"
    assert out["52"] == "[PIN block redacted]"
    assert out["64"] == "[MAC present]"
    assert out["55"] == "5A=[redacted 8 bytes] 9F27=80 57=[redacted 16 bytes]"
    assert out["4"] == "000000001000"
    assert list(out)[:3] == ["2", "3", "4"]


def test_response_mti() -> None:
    assert response_mti("0800") == "0810"
    assert response_mti("0200") == "0210"
    with pytest.raises(DecodeError, match="not a request MTI"):
        response_mti("0210")
