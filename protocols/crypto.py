"""Payment crypto for the UnionPay POS dialect: DES/3DES, KCV, PIN block, MAC, working keys
under the terminal master key.

Choices (docs/iso8583.md):
- PIN block: ISO 9564-1 format 0 (ANSI X9.8), encrypted with the PIK in 3DES ECB.
- MAC: ANSI X9.19 / ISO 9797-1 MAC algorithm 3 with padding method 1 (zeros): single-DES
  CBC-MAC with K1 over all blocks, then decrypt with K2 and encrypt with K1 on the last block;
  8-byte result in field 64.  MAC input (MAB) = MTI .. last field before 64.  With a single-length
  key (or K1 == K2) this is plain DES CBC-MAC (ANSI X9.9).
- Working keys in field 62 of 0810: for each of PIK then MAK: key encrypted under the TMK in
  3DES ECB, followed by a 4-byte check value (first 4 bytes of the clear key's encryption of
  eight zero bytes).
- Application cryptograms of the bench's EMV cards (docs/cards.md), shared by the card
  simulator and the issuer so both compute them one way:
  * ICC master key (MK-AC) from the issuer master key (IMK-AC): EMV Book 2 A1.4.1 option A
    over PAN and PAN sequence number (:func:`derive_icc_master_key`);
  * session key per transaction: EMV common session key derivation, Book 2 A1.3.1, with
    R = ATC || 00 00 00 00 00 00 (:func:`derive_session_key`);
  * AC (ARQC, TC, AAC): ISO/IEC 9797-1 MAC algorithm 3 with DES, padding method 2, 8 bytes,
    under the session key (:func:`application_cryptogram`);
  * ARPC: EMV Book 2 8.2.1 method 1, 3DES of ARQC XOR (ARC || 00…00) under the session key
    (:func:`arpc_method1`).

Where each piece comes from:
- From pyemv (maintained payment-crypto library, on top of ``cryptography``):
  :func:`mac_x919` is ``pyemv.mac.mac_iso9797_3`` (padding 1) and :func:`kcv` is
  ``pyemv.tools.key_check_digits``; the EMV cryptogram functions are ``pyemv.kd``'s
  ``derive_icc_mk_a`` and ``derive_common_sk`` and ``pyemv.ac``'s ``generate_arpc_1``; the AC
  is the MAC ``pyemv.ac.generate_ac`` computes (``mac_iso9797_3``, padding 2), called directly.
  pyemv wants DES keys as ``cryptography`` TripleDES keys; ``cryptography`` deprecates 8- and
  16-byte TripleDES keys, so single and double-length keys are handed over as the equivalent
  24-byte keys (K1K1K1, K1K2K1) where pyemv lets us: same result, no reliance on the
  deprecated key sizes.  pyemv's key derivations and ARPC insist on double-length keys, and
  pyemv still imports TripleDES from ``cryptography``'s old location: those two deprecation
  warnings are silenced around our pyemv calls only (they say nothing about our data).
  pyemv's exceptions are turned into :class:`CryptoError` naming the operation.
- Hand-written, because pyemv has no equivalent:
  * ISO 9564-1 format 0 PIN block encode/decode: pyemv only has format 2 and the VIS PIN-change
    block (``pyemv.sm``);
  * 3DES ECB/CBC encrypt *and decrypt* (pyemv has encryption only): pycryptodome; a
    degenerate 3DES key (K1 == K2 or K2 == K3, parity bits left out), which pycryptodome
    refuses, is run as the single DES it amounts to;
  * the UnionPay field 62 working-key layout (key under TMK ‖ 4-byte KCV, PIK then MAK) and
    its length/KCV checks: dialect framing that no library covers.
The published vectors in tests/host/test_crypto.py and tests/host/test_issuer_crypto.py pin
all of it.

Nothing here logs; keys and PINs never appear in exception messages.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from Crypto.Cipher import DES, DES3
from pyemv import ac as _pyemv_ac
from pyemv import kd as _pyemv_kd
from pyemv import mac as _pyemv_mac
from pyemv import tools as _pyemv_tools

from protocols.digits import ascii_digits
from protocols.errors import ProtocolError, RigError

__all__ = [
    "CryptoError",
    "application_cryptogram",
    "arpc_method1",
    "derive_icc_master_key",
    "derive_session_key",
    "KeyCheckError",
    "WrappedKey",
    "decode_working_keys",
    "encode_working_keys",
    "kcv",
    "mac_x919",
    "pin_block",
    "pin_block_clear",
    "tdes_cbc_decrypt",
    "tdes_cbc_encrypt",
    "tdes_ecb_decrypt",
    "tdes_ecb_encrypt",
    "unwrap_key",
    "verify_mac",
    "verify_pin_block",
    "wrap_key",
]

BLOCK = 8
ZERO_IV = bytes(BLOCK)


class CryptoError(RigError):
    """Bad key length, bad block length, malformed clear PIN block (never shows key or PIN)."""


class KeyCheckError(ProtocolError):
    """A key's check value does not match: wrong master key, or a corrupted field 62."""


def _check_key(key: bytes, op: str) -> None:
    if len(key) not in (8, 16, 24):
        raise CryptoError(f"{op}: key must be 8, 16 or 24 bytes; got {len(key)} bytes")


def _check_blocks(data: bytes, op: str) -> None:
    if len(data) % BLOCK:
        raise CryptoError(f"{op}: data must be a multiple of {BLOCK} bytes; got {len(data)}")


def _check_iv(iv: bytes, op: str) -> None:
    if len(iv) != BLOCK:
        raise CryptoError(f"{op}: the IV must be {BLOCK} bytes; got {len(iv)}")


def _same_des_key(a: bytes, b: bytes) -> bool:
    """Whether two 8-byte DES keys are the same key: DES ignores the parity bit (the lowest)
    of every byte, so keys that differ only there encrypt alike."""
    return all((x ^ y) & 0xFE == 0 for x, y in zip(a, b, strict=True))


def _single_des_key(key: bytes) -> bytes | None:
    """The single DES key a key amounts to, or None when it is a true 3DES key.

    A single-length key is one; EDE with K1 == K2 is E(K3) and with K2 == K3 is E(K1) (for a
    double-length key K3 is K1), parity bits left out.  pycryptodome refuses such 3DES keys
    (ValueError "degenerates to single DES"), so they are run as the DES they are."""
    if len(key) == 8:
        return key
    k1, k2, k3 = key[:8], key[8:16], key[16:24] or key[:8]
    if _same_des_key(k1, k2):
        return k3
    if _same_des_key(k2, k3):
        return k1
    return None


def _cipher(key: bytes, mode: int, iv: bytes | None = None) -> object:
    """DES for single-length keys and degenerate 3DES keys (:func:`_single_des_key`), else
    3DES.  The caller checked the key length (:func:`_check_key`) and the IV's."""
    single = _single_des_key(key)
    if single is not None:
        return DES.new(single, mode) if iv is None else DES.new(single, mode, iv=iv)
    return DES3.new(key, mode) if iv is None else DES3.new(key, mode, iv=iv)


def tdes_ecb_encrypt(key: bytes, data: bytes) -> bytes:
    _check_key(key, "tdes_ecb_encrypt()")
    _check_blocks(data, "tdes_ecb_encrypt()")
    return _cipher(key, DES.MODE_ECB).encrypt(data)  # type: ignore[attr-defined,no-any-return]


def tdes_ecb_decrypt(key: bytes, data: bytes) -> bytes:
    _check_key(key, "tdes_ecb_decrypt()")
    _check_blocks(data, "tdes_ecb_decrypt()")
    return _cipher(key, DES.MODE_ECB).decrypt(data)  # type: ignore[attr-defined,no-any-return]


def tdes_cbc_encrypt(key: bytes, data: bytes, iv: bytes = ZERO_IV) -> bytes:
    _check_key(key, "tdes_cbc_encrypt()")
    _check_blocks(data, "tdes_cbc_encrypt()")
    _check_iv(iv, "tdes_cbc_encrypt()")
    return _cipher(key, DES.MODE_CBC, iv).encrypt(data)  # type: ignore[attr-defined,no-any-return]


def tdes_cbc_decrypt(key: bytes, data: bytes, iv: bytes = ZERO_IV) -> bytes:
    _check_key(key, "tdes_cbc_decrypt()")
    _check_blocks(data, "tdes_cbc_decrypt()")
    _check_iv(iv, "tdes_cbc_decrypt()")
    return _cipher(key, DES.MODE_CBC, iv).decrypt(data)  # type: ignore[attr-defined,no-any-return]


# --------------------------------------------------------------------------------------------
# pyemv boundary


@contextmanager
def _pyemv(op: str) -> Iterator[None]:
    """Around a pyemv call: pyemv's errors become :class:`CryptoError` naming *op* (the
    original is dropped: the message stays ours), and the ``cryptography`` warning about
    pyemv's TripleDES import path is not shown."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="TripleDES has been moved", module=r"pyemv\.")
        warnings.filterwarnings("ignore", message="Two-key TripleDES")
        try:
            yield
        except (ValueError, TypeError) as exc:
            raise CryptoError(f"{op}: pyemv rejected the input "
                              f"({type(exc).__name__})") from None


def _tdes24(key: bytes) -> bytes:
    """The 24-byte 3DES key equivalent to a single-, double- or triple-length key."""
    if len(key) == 8:
        return key * 3
    if len(key) == 16:
        return key + key[:8]
    return key


def kcv(key: bytes, length: int = 3) -> bytes:
    """Key check value: the first *length* bytes of the key's encryption of eight zero bytes."""
    _check_key(key, "kcv()")
    with _pyemv("kcv()"):
        return _pyemv_tools.key_check_digits(_tdes24(key), length)


# --------------------------------------------------------------------------------------------
# PIN block, ISO 9564-1 format 0


def _pan_field(pan: str) -> bytes:
    digits = pan.strip().rstrip("Ff")
    if not ascii_digits(digits) or len(digits) < 13:
        raise CryptoError(f"pin block: PAN must be 13..19 digits; got {len(digits)} characters")
    return bytes.fromhex("0000" + digits[-13:-1])


def pin_block_clear(pin: str, pan: str) -> bytes:
    """The clear format-0 block: (0 | len | PIN | F…) XOR (0000 | 12 rightmost PAN digits
    excluding the check digit)."""
    if not ascii_digits(pin) or not 4 <= len(pin) <= 12:
        raise CryptoError(f"pin_block(): PIN must be 4..12 digits; got {len(pin)} characters")
    pin_field = bytes.fromhex(f"0{len(pin):X}{pin}".ljust(16, "F"))
    return bytes(a ^ b for a, b in zip(pin_field, _pan_field(pan), strict=True))


def pin_block(pin: str, pan: str, pik: bytes) -> bytes:
    """Format-0 PIN block encrypted with the PIK (3DES ECB): field 52."""
    return tdes_ecb_encrypt(pik, pin_block_clear(pin, pan))


def _pin_from_block(block: bytes, pan: str, pik: bytes) -> str | None:
    if len(block) != BLOCK:
        return None
    clear = tdes_ecb_decrypt(pik, block)
    pin_field = bytes(a ^ b for a, b in zip(clear, _pan_field(pan), strict=True)).hex().upper()
    if pin_field[0] != "0":
        return None
    n = int(pin_field[1], 16)
    if not 4 <= n <= 12:
        return None
    pin, fill = pin_field[2:2 + n], pin_field[2 + n:]
    if not ascii_digits(pin) or fill != "F" * len(fill):
        return None
    return pin


def verify_pin_block(block: bytes, pan: str, pik: bytes, expected_pin: str) -> bool:
    """True when *block* decrypts (PIK) to a well-formed format-0 block carrying *expected_pin*."""
    return _pin_from_block(block, pan, pik) == expected_pin


# --------------------------------------------------------------------------------------------
# MAC, ANSI X9.19


def mac_x919(mak: bytes, data: bytes) -> bytes:
    """ISO 9797-1 MAC algorithm 3 (ANSI X9.19 retail MAC), zero padding, 8-byte result."""
    if len(mak) not in (8, 16):
        raise CryptoError(f"mac_x919(): MAK must be 8 or 16 bytes; got {len(mak)} bytes")
    k1, k2 = mak[:8], mak[8:16] or mak[:8]
    with _pyemv("mac_x919()"):
        # Single DES as 3DES K|K|K (see module docstring); K1 == K2 gives plain CBC-MAC.
        return _pyemv_mac.mac_iso9797_3(_tdes24(k1), _tdes24(k2), bytes(data), padding=1)


def verify_mac(mak: bytes, data: bytes, mac: bytes) -> bool:
    return len(mac) == BLOCK and mac_x919(mak, data) == mac


# --------------------------------------------------------------------------------------------
# Working keys under the master key


@dataclass(frozen=True)
class WrappedKey:
    """A key encrypted under a master key plus its 4-byte check value (of the clear key)."""

    cipher: bytes = field(repr=False)
    check: bytes

    def to_bytes(self) -> bytes:
        return self.cipher + self.check


def wrap_key(key: bytes, master: bytes) -> WrappedKey:
    _check_key(key, "wrap_key()")
    return WrappedKey(tdes_ecb_encrypt(master, key), kcv(key, 4))


def unwrap_key(wrapped: WrappedKey, master: bytes, what: str = "key") -> bytes:
    """Decrypt under *master* and verify the check value (KeyCheckError names *what*)."""
    key = tdes_ecb_decrypt(master, wrapped.cipher)
    actual = kcv(key, 4)
    if actual != wrapped.check:
        raise KeyCheckError(
            f"unwrap_key(): {what} check value mismatch: field says {wrapped.check.hex()}, "
            f"decrypted key gives {actual.hex()} (wrong master key or corrupted key field)")
    return key


def encode_working_keys(pik: bytes, mak: bytes, master: bytes) -> bytes:
    """Field 62 of 0810: PIK cipher + check (4) then MAK cipher + check (4)."""
    if len(pik) != len(mak):
        raise CryptoError(f"encode_working_keys(): PIK and MAK lengths differ "
                          f"({len(pik)} vs {len(mak)} bytes)")
    return wrap_key(pik, master).to_bytes() + wrap_key(mak, master).to_bytes()


def decode_working_keys(data: bytes, master: bytes) -> tuple[bytes, bytes]:
    """Inverse of :func:`encode_working_keys`: 24 bytes (single DES) or 40 bytes (3DES)."""
    sizes = {24: 8, 40: 16}
    klen = sizes.get(len(data))
    if klen is None:
        raise KeyCheckError(f"decode_working_keys(): field 62 is {len(data)} bytes; expected "
                            f"24 (single-length keys) or 40 (double-length keys)")
    step = klen + 4
    pik = unwrap_key(WrappedKey(data[:klen], data[klen:step]), master, "PIK")
    mak = unwrap_key(WrappedKey(data[step:step + klen], data[step + klen:2 * step]), master,
                     "MAK")
    return pik, mak


# --------------------------------------------------------------------------------------------
# EMV application cryptograms (card and issuer; docs/cards.md)


def _double_key(key: bytes, op: str, what: str) -> None:
    if len(key) != 16:
        raise CryptoError(f"{op}: {what} must be a double-length key (16 bytes); got "
                          f"{len(key)} bytes")


def derive_icc_master_key(imk: bytes, pan: str, pan_seq: int | None) -> bytes:
    """EMV option A: the card's MK-AC from the issuer's IMK-AC, the PAN and the PAN sequence
    number (00 when the card has none); parity adjusted, 16 bytes."""
    _double_key(imk, "derive_icc_master_key()", "the issuer master key")
    digits = pan.strip().rstrip("Ff")
    if not ascii_digits(digits) or not 12 <= len(digits) <= 19:
        raise CryptoError(f"derive_icc_master_key(): PAN must be 12..19 digits; got "
                          f"{len(digits)} characters")
    if pan_seq is not None and not 0 <= pan_seq <= 99:
        raise CryptoError(f"derive_icc_master_key(): PAN sequence number {pan_seq} not in "
                          f"0..99")
    with _pyemv("derive_icc_master_key()"):
        return _pyemv_kd.derive_icc_mk_a(imk, digits, f"{pan_seq or 0:02d}")


def derive_session_key(icc_mk: bytes, atc: bytes) -> bytes:
    """EMV common session key of one transaction (R = ATC || 00 × 6); 16 bytes."""
    _double_key(icc_mk, "derive_session_key()", "the ICC master key")
    if len(atc) != 2:
        raise CryptoError(f"derive_session_key(): the ATC is 2 bytes; got {len(atc)}")
    with _pyemv("derive_session_key()"):
        return _pyemv_kd.derive_common_sk(icc_mk, atc + bytes(6))


def application_cryptogram(session_key: bytes, data: bytes) -> bytes:
    """ARQC / TC / AAC: ISO/IEC 9797-1 MAC algorithm 3, padding method 2, 8 bytes."""
    _double_key(session_key, "application_cryptogram()", "the session key")
    k1, k2 = session_key[:8], session_key[8:]
    with _pyemv("application_cryptogram()"):
        # pyemv.ac.generate_ac is this call with 8-byte keys; 24-byte equivalents as above
        return _pyemv_mac.mac_iso9797_3(_tdes24(k1), _tdes24(k2), bytes(data), padding=2)


def arpc_method1(session_key: bytes, arqc: bytes, arc: bytes) -> bytes:
    """ARPC method 1: 3DES(session key, ARQC XOR (ARC || 00 × 6)); 8 bytes."""
    _double_key(session_key, "arpc_method1()", "the session key")
    if len(arqc) != BLOCK or len(arc) != 2:
        raise CryptoError(f"arpc_method1(): ARQC is 8 bytes and ARC 2 bytes; got "
                          f"{len(arqc)} and {len(arc)}")
    with _pyemv("arpc_method1()"):
        return _pyemv_ac.generate_arpc_1(session_key, arqc, arc)
