"""Properties of the payment crypto (protocols.crypto): any key material and any field 62
raise only the project's errors (CryptoError, KeyCheckError), never pycryptodome's or pyemv's
ValueError; keys that degenerate to single DES (also by their parity bits only) work as the DES
they are; wrap/unwrap and field 62 round trip."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from protocols.crypto import (
    CryptoError,
    KeyCheckError,
    WrappedKey,
    decode_working_keys,
    encode_working_keys,
    kcv,
    mac_x919,
    tdes_cbc_decrypt,
    tdes_cbc_encrypt,
    tdes_ecb_decrypt,
    tdes_ecb_encrypt,
    unwrap_key,
    verify_pin_block,
    wrap_key,
)

half = st.binary(min_size=8, max_size=8)
parity = st.binary(min_size=8, max_size=8).map(lambda b: bytes(x & 0x01 for x in b))


def _twin(k: bytes, flips: bytes) -> bytes:
    """*k* followed by itself with some parity bits flipped: single DES in 3DES' clothes."""
    return k + bytes(a ^ b for a, b in zip(k, flips, strict=True))


double_keys = st.one_of(st.binary(min_size=16, max_size=16), st.builds(_twin, half, parity))
any_keys = st.one_of(double_keys, half, st.binary(min_size=24, max_size=24),
                     st.builds(lambda a, b: a + b, double_keys, half),
                     st.builds(lambda a, b: a + b, half, double_keys),
                     st.binary(max_size=30))
blocks = st.integers(0, 4).flatmap(lambda n: st.binary(min_size=8 * n, max_size=8 * n))


@given(any_keys, st.binary(max_size=40), st.binary(max_size=10))
def test_any_key_and_data_raise_only_crypto_error(key: bytes, data: bytes, iv: bytes) -> None:
    for call in (lambda: tdes_ecb_encrypt(key, data), lambda: tdes_ecb_decrypt(key, data),
                 lambda: tdes_cbc_encrypt(key, data, iv), lambda: tdes_cbc_decrypt(key, data, iv),
                 lambda: kcv(key), lambda: mac_x919(key, data),
                 lambda: verify_pin_block(data, "6214830000000017", key, "1234")):
        try:
            call()
        except CryptoError:
            pass


@given(any_keys, blocks)
def test_3des_round_trips_under_any_valid_key(key: bytes, data: bytes) -> None:
    if len(key) not in (8, 16, 24):
        return
    assert tdes_ecb_decrypt(key, tdes_ecb_encrypt(key, data)) == data
    assert tdes_cbc_decrypt(key, tdes_cbc_encrypt(key, data)) == data


@given(half, parity, blocks)
def test_a_parity_twin_is_single_des(k1: bytes, flips: bytes, data: bytes) -> None:
    assert tdes_ecb_encrypt(_twin(k1, flips), data) == tdes_ecb_encrypt(k1, data)
    assert kcv(_twin(k1, flips)) == kcv(k1)


@given(double_keys, double_keys, double_keys)
def test_field_62_round_trips(pik: bytes, mak: bytes, master: bytes) -> None:
    assert decode_working_keys(encode_working_keys(pik, mak, master), master) == (pik, mak)
    assert unwrap_key(wrap_key(pik, master), master) == pik


@given(st.one_of(st.binary(max_size=48), st.binary(min_size=40, max_size=40),
                 st.binary(min_size=24, max_size=24)), any_keys)
def test_any_field_62_raises_only_key_check_or_crypto_error(field62: bytes,
                                                            master: bytes) -> None:
    try:
        pik, mak = decode_working_keys(field62, master)
    except (KeyCheckError, CryptoError) as exc:
        assert field62.hex() not in str(exc).lower() or not field62
        return
    assert len(pik) == len(mak) == (len(field62) - 8) // 2


@given(st.binary(max_size=30), st.binary(max_size=6), any_keys)
def test_unwrapping_anything_raises_only_key_check_or_crypto_error(
        cipher: bytes, check: bytes, master: bytes) -> None:
    try:
        unwrap_key(WrappedKey(cipher, check), master)
    except (KeyCheckError, CryptoError):
        pass
