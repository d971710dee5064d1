"""Payment crypto against published vectors."""

from __future__ import annotations

import warnings

import pyemv
import pytest

from protocols.crypto import (
    CryptoError,
    KeyCheckError,
    WrappedKey,
    decode_working_keys,
    encode_working_keys,
    kcv,
    mac_x919,
    pin_block,
    pin_block_clear,
    tdes_cbc_decrypt,
    tdes_cbc_encrypt,
    tdes_ecb_decrypt,
    tdes_ecb_encrypt,
    unwrap_key,
    verify_mac,
    verify_pin_block,
    wrap_key,
)

K2 = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")


def test_kcv_of_known_keys() -> None:
    # Widely published check values of the classic test keys.
    assert kcv(K2) == bytes.fromhex("08D7B4")
    assert kcv(K2, 8) == bytes.fromhex("08D7B4FB629D0885")
    assert kcv(bytes.fromhex("0123456789ABCDEF"), 8) == bytes.fromhex("D5D44FF720683D0D")


def test_des_cbc_known_vector_and_roundtrips() -> None:
    # DES-CBC vector (key 0123456789abcdef, IV fedcba9876543210, "7654321 Now is the time for ").
    key = bytes.fromhex("0123456789abcdef")
    iv = bytes.fromhex("fedcba9876543210")
    data = b"7654321 Now is the time for \0\0\0\0"
    expected = bytes.fromhex("ccd173ffab2039f4acd8aefddfd8a1eb"
                             "468e91157888ba681d269397f7fe62b4")
    assert tdes_cbc_encrypt(key, data, iv) == expected
    assert tdes_cbc_encrypt(key + key, data, iv) == expected  # degenerate 3DES = DES
    assert tdes_cbc_decrypt(key, expected, iv) == data
    block = bytes(range(16))
    assert tdes_ecb_decrypt(K2, tdes_ecb_encrypt(K2, block)) == block


def test_bad_lengths_raise() -> None:
    with pytest.raises(CryptoError, match="key must be 8, 16 or 24 bytes; got 5 bytes"):
        tdes_ecb_encrypt(b"12345", bytes(8))
    with pytest.raises(CryptoError, match="multiple of 8 bytes; got 7"):
        tdes_ecb_encrypt(K2, bytes(7))


def test_pin_block_format0_known_example() -> None:
    # ISO 9564-1 format 0: PIN 1234, PAN 43219876543210987 -> 0412AC89ABCDEF67.
    assert pin_block_clear("1234", "43219876543210987") == bytes.fromhex("0412AC89ABCDEF67")
    enc = pin_block("1234", "43219876543210987", K2)
    assert enc == tdes_ecb_encrypt(K2, bytes.fromhex("0412AC89ABCDEF67"))
    assert verify_pin_block(enc, "43219876543210987", K2, "1234")
    assert not verify_pin_block(enc, "43219876543210987", K2, "1235")
    assert not verify_pin_block(enc, "43219876543210995", K2, "1234")  # other PAN
    assert not verify_pin_block(enc[:7], "43219876543210987", K2, "1234")


def test_pin_block_rejects_bad_pin_without_showing_it() -> None:
    with pytest.raises(CryptoError) as err:
        pin_block("12a4", "43219876543210987", K2)
    assert "12a4" not in str(err.value)


def test_mac_x919_iso9797_vectors() -> None:
    # ISO/IEC 9797-1 annex B, MAC algorithm 3, padding method 1.
    assert mac_x919(K2, b"Now is the time for all ") == bytes.fromhex("A1C72E74EA3FA9B6")
    assert mac_x919(K2, b"Now is the time for it") == bytes.fromhex("2E2B1428CC78254F")
    # Single-length MAK = DES CBC-MAC: last block of the DES-CBC vector (IV folded in).
    key = bytes.fromhex("0123456789abcdef")
    data = bytearray(b"7654321 Now is the time for \0\0\0\0")
    for i, b in enumerate(bytes.fromhex("fedcba9876543210")):
        data[i] ^= b
    assert mac_x919(key, bytes(data)) == bytes.fromhex("1d269397f7fe62b4")
    assert verify_mac(K2, b"Now is the time for all ", bytes.fromhex("A1C72E74EA3FA9B6"))
    assert not verify_mac(K2, b"Now is the time for alL ", bytes.fromhex("A1C72E74EA3FA9B6"))


def test_working_keys_wrap_and_check() -> None:
    pik = bytes.fromhex("11223344556677888877665544332211")
    mak = bytes.fromhex("A1A2A3A4A5A6A7A8B1B2B3B4B5B6B7B8")
    field62 = encode_working_keys(pik, mak, K2)
    assert len(field62) == 40
    assert field62[:16] == tdes_ecb_encrypt(K2, pik)
    assert field62[16:20] == kcv(pik, 4)
    assert field62[36:40] == kcv(mak, 4)
    assert decode_working_keys(field62, K2) == (pik, mak)
    single = encode_working_keys(pik[:8], mak[:8], K2)
    assert len(single) == 24 and decode_working_keys(single, K2) == (pik[:8], mak[:8])


def test_working_keys_wrong_master_key_is_named() -> None:
    field62 = encode_working_keys(bytes(range(16)), bytes(range(16, 32)), K2)
    other = bytes.fromhex("11111111111111112222222222222222")
    with pytest.raises(KeyCheckError, match="PIK check value mismatch"):
        decode_working_keys(field62, other)
    with pytest.raises(KeyCheckError, match="field 62 is 39 bytes"):
        decode_working_keys(field62[:-1], K2)
    wrapped = wrap_key(bytes(range(16)), K2)
    assert unwrap_key(wrapped, K2) == bytes(range(16))
    assert "cipher" not in repr(wrapped)
    with pytest.raises(KeyCheckError):
        unwrap_key(WrappedKey(wrapped.cipher, b"\0\0\0\0"), K2)


# --------------------------------------------------------------------------------------------
# More published vectors (cross-check of the pyemv-backed MAC/KCV and the hand-written rest)


def test_kcv_published_values() -> None:
    # pyemv documentation, pyemv.tools.key_check_digits example: 0123..3210 -> 08D7.
    assert kcv(K2, 2) == bytes.fromhex("08D7")
    # GlobalPlatform default test key 404142..4F (card manager ENC/MAC/DEK): KCV 8BAF47.
    assert kcv(bytes.fromhex("404142434445464748494A4B4C4D4E4F")) == bytes.fromhex("8BAF47")
    # Triple-length form K1K2K1 of the same key gives the same check value.
    assert kcv(K2 + K2[:8]) == bytes.fromhex("08D7B4")


def test_des_ecb_fips81_vector() -> None:
    # FIPS PUB 81, appendix B (ECB mode): key 0123456789ABCDEF, "Now is the time for all ".
    key = bytes.fromhex("0123456789ABCDEF")
    expected = bytes.fromhex("3FA40E8A984D4815" "6A271787AB8883F9" "893D51EC4B563B53")
    assert tdes_ecb_encrypt(key, b"Now is the time for all ") == expected
    assert tdes_ecb_decrypt(key, expected) == b"Now is the time for all "
    assert tdes_ecb_encrypt(key * 3, b"Now is the time for all ") == expected  # K1=K2=K3: DES


def test_mac_fips113_daa_vector() -> None:
    # FIPS PUB 113 / ANSI X9.9 DAA example (also Bouncy Castle MacTest, RustCrypto cbc-mac):
    # key 0123456789ABCDEF, "7654321 Now is the time for " zero-padded -> F1D30F6849312CA4.
    key = bytes.fromhex("0123456789ABCDEF")
    assert mac_x919(key, b"7654321 Now is the time for ") == bytes.fromhex("F1D30F6849312CA4")
    assert mac_x919(key + key, b"7654321 Now is the time for ") == bytes.fromhex("F1D30F6849312CA4")


def test_mac_x919_emv_secure_messaging_vectors() -> None:
    # pyemv documentation, pyemv.sm.generate_command_mac examples (EMV Book 2 A1.2: MAC
    # algorithm 3 with ISO 9797-1 padding method 2). mac_x919 pads with zeros (method 1), so
    # the method-2 padding (80 00..) is applied here first; method 1 then adds nothing.
    def pad2(data: bytes) -> bytes:
        data += b"\x80"
        return data + bytes(-len(data) % 8)

    assert mac_x919(K2, pad2(bytes.fromhex("8424000008"))) == bytes.fromhex("0BFFF5DF3FAA24E1")
    command = bytes.fromhex("8424000008" "FFFF" "1234567890123456")  # header, ATC, ARQC
    assert mac_x919(K2, pad2(command)) == bytes.fromhex("E07B8DF1B4184282")
    # And the same through pyemv's own EMV function (which hands cryptography 8-byte DES keys:
    # its deprecation warnings are pyemv's business, not this test's).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert pyemv.sm.generate_command_mac(K2, command) == bytes.fromhex("E07B8DF1B4184282")


def test_pin_block_format0_thales_example() -> None:
    # Thales payShield host command manual, PIN block format 01 (= ANSI X9.8 / ISO 9564-1
    # format 0): PIN 92389, 13-digit PAN 4000001234562 (check digit 2) -> 0592789FFFEDCBA9.
    assert pin_block_clear("92389", "4000001234562") == bytes.fromhex("0592789FFFEDCBA9")
    enc = pin_block("92389", "4000001234562", K2)
    assert enc == tdes_ecb_encrypt(K2, bytes.fromhex("0592789FFFEDCBA9"))
    assert verify_pin_block(enc, "4000001234562", K2, "92389")
    assert not verify_pin_block(enc, "4000001234562", K2, "9238")


def test_pyemv_boundary_is_quiet_and_wraps_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    # No deprecation noise from pyemv's use of cryptography leaks out of our calls.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kcv(K2)
        kcv(K2[:8])
        mac_x919(K2, b"abc")
        mac_x919(K2[:8], b"abc")

    def boom(*_args: object, **_kwargs: object) -> bytes:
        raise ValueError("pyemv says no: " + K2.hex())

    monkeypatch.setattr(pyemv.tools, "key_check_digits", boom)
    monkeypatch.setattr(pyemv.mac, "mac_iso9797_3", boom)
    with pytest.raises(CryptoError, match=r"kcv\(\): pyemv rejected the input") as err:
        kcv(K2)
    assert K2.hex() not in str(err.value) and err.value.__cause__ is None
    with pytest.raises(CryptoError, match=r"mac_x919\(\): pyemv rejected the input") as err:
        mac_x919(K2, b"abc")
    assert K2.hex() not in str(err.value)


#: A double-length key whose halves differ only in their parity bits: single DES with K1.
K1 = bytes.fromhex("0123456789ABCDEF")
PARITY_TWIN = K1 + bytes(b ^ 0x01 for b in K1)
K3 = bytes.fromhex("FEDCBA9876543210")


@pytest.mark.parametrize(("key", "single"), [
    (PARITY_TWIN, K1),                      # K1 ~ K2: E(K1)
    (PARITY_TWIN + K3, K3),                 # K1 ~ K2: E(K3)
    (K3 + PARITY_TWIN, K3),                 # K2 ~ K3: E(K1) with K1 = K3 here
])
def test_a_3des_key_that_degenerates_only_by_parity_is_the_single_des_it_is(
        key: bytes, single: bytes) -> None:
    """pycryptodome refuses such keys (ValueError "degenerates to single DES"); they used to
    escape from every 3DES call, field 62 under such a master key included."""
    data = bytes(range(16))
    assert tdes_ecb_encrypt(key, data) == tdes_ecb_encrypt(single, data)
    assert tdes_ecb_decrypt(key, data) == tdes_ecb_decrypt(single, data)
    assert tdes_cbc_decrypt(key, tdes_cbc_encrypt(key, data)) == data
    assert kcv(key) == kcv(single)


def test_field_62_under_a_parity_twin_master_key_decodes() -> None:
    pik, mak = K3 + K1, PARITY_TWIN
    field62 = encode_working_keys(pik, mak, PARITY_TWIN)
    assert decode_working_keys(field62, PARITY_TWIN) == (pik, mak)
    assert mac_x919(mak, b"x" * 8) == mac_x919(K1, b"x" * 8)
    with pytest.raises(KeyCheckError, match=r"PIK check value mismatch"):
        decode_working_keys(field62, K2)


def test_a_cbc_iv_of_the_wrong_length_is_a_crypto_error() -> None:
    for op in (tdes_cbc_encrypt, tdes_cbc_decrypt):
        with pytest.raises(CryptoError, match=r"\(\): the IV must be 8 bytes; got 7$"):
            op(K2, bytes(8), bytes(7))
