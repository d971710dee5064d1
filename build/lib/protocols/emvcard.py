"""What the bench's EMV cards and their issuer agree on (docs/cards.md): the data object lists,
the cryptogram input, the Card Verification Results in the Issuer Application Data, the
Authorisation Response Code and the issuer authentication data (tag 91).

The card simulator (:mod:`sim.card.emv`) builds its answers from these; the issuer
(:mod:`sim.host.issuer`) rebuilds the ARQC input from ISO 8583 field 55 with them; a terminal
kernel reads CDOL1/CDOL2 from the card's records (tags 8C/8D) and fills them as EMV says.
Crypto primitives are :mod:`protocols.crypto`'s.

Cryptogram input (both GENERATE ACs)::

    CDOL data as the terminal sent it || AIP (82, 2) || ATC (9F36, 2) || CVR (4)

The CVR (4 bytes, after the VIS layout as far as it goes here; not a certified CVN) is
``03 b2 b3 00``:

- b2 bits 8-7: AC of the second GENERATE AC (00 AAC, 01 TC, 10 not requested);
  bits 6-5: AC of the first (00 AAC, 01 TC, 10 ARQC); bit 4 (08): issuer authentication
  performed and failed; bit 3 (04): offline PIN verification performed; bit 2 (02): offline PIN
  verification failed;
- b3 bit 6 (20): PIN try limit exceeded.

The Issuer Application Data (9F10) is ``06 01 01`` + CVR: length of what follows, derivation key
index 01, cryptogram version 01 (this bench's: EMV option A master key, common session key,
MAC algorithm 3).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from protocols import tlv
from protocols.errors import DecodeError

#: Data object lists of the bench's cards (records tags 8C, 8D); PDOL in the FCI (9F38).
PDOL: bytes = bytes.fromhex("9F0206" "9F1A02" "5F2A02" "9A03" "9C01" "9F3704")
CDOL1: bytes = bytes.fromhex(
    "9F0206" "9F0306" "9F1A02" "9505" "5F2A02" "9A03" "9C01" "9F3704" "9F3501" "9F3403")
#: Second GENERATE AC: Authorisation Response Code, issuer authentication data (ARPC || ARC),
#: TVR, unpredictable number.
CDOL2: bytes = bytes.fromhex("8A02" "910A" "9505" "9F3704")

CID_AAC, CID_TC, CID_ARQC = 0x00, 0x40, 0x80
CID_NAMES: Mapping[int, str] = {CID_AAC: "AAC", CID_TC: "TC", CID_ARQC: "ARQC"}
#: ARCs (8A, an2) the card takes as the issuer's approval.
APPROVED_ARCS: frozenset[bytes] = frozenset({b"00", b"10", b"11"})

IAD_HEADER = bytes([0x06, 0x01, 0x01])   # length 6, DKI 01, CVN 01
CVR_LEN = 4

# CVR byte 2 (index 1)
CVR_2ND_AAC, CVR_2ND_TC, CVR_2ND_NOT_REQUESTED = 0x00, 0x40, 0x80
CVR_1ST_AAC, CVR_1ST_TC, CVR_1ST_ARQC = 0x00, 0x10, 0x20
CVR_ISSUER_AUTH_FAILED = 0x08
CVR_OFFLINE_PIN_PERFORMED = 0x04
CVR_OFFLINE_PIN_FAILED = 0x02
# CVR byte 3 (index 2)
CVR_PIN_TRY_LIMIT_EXCEEDED = 0x20

_FIRST_BITS = {CID_AAC: CVR_1ST_AAC, CID_TC: CVR_1ST_TC, CID_ARQC: CVR_1ST_ARQC}
_SECOND_BITS = {CID_AAC: CVR_2ND_AAC, CID_TC: CVR_2ND_TC}


@dataclass(frozen=True)
class CvrState:
    """What the card's CVR says at one GENERATE AC."""

    first: int                      # CID of the first GENERATE AC
    second: int | None = None       # CID of the second, None while not requested
    issuer_auth_failed: bool = False
    offline_pin_performed: bool = False
    offline_pin_failed: bool = False
    pin_try_limit_exceeded: bool = False

    def to_bytes(self) -> bytes:
        b2 = _FIRST_BITS[self.first]
        b2 |= CVR_2ND_NOT_REQUESTED if self.second is None else _SECOND_BITS[self.second]
        if self.issuer_auth_failed:
            b2 |= CVR_ISSUER_AUTH_FAILED
        if self.offline_pin_performed:
            b2 |= CVR_OFFLINE_PIN_PERFORMED
        if self.offline_pin_failed:
            b2 |= CVR_OFFLINE_PIN_FAILED
        b3 = CVR_PIN_TRY_LIMIT_EXCEEDED if self.pin_try_limit_exceeded else 0
        return bytes([0x03, b2, b3, 0x00])


def iad(cvr: bytes) -> bytes:
    """Issuer Application Data (9F10) carrying *cvr*."""
    if len(cvr) != CVR_LEN:
        raise ValueError(f"iad(): the CVR is {CVR_LEN} bytes, got {len(cvr)}")
    return IAD_HEADER + cvr


def cvr_from_iad(value: bytes) -> bytes:
    """The CVR inside an IAD of this layout (DecodeError naming what differs)."""
    if len(value) != len(IAD_HEADER) + CVR_LEN or value[0] != len(value) - 1:
        raise DecodeError(f"9F10: {len(value)} bytes {value.hex().upper()}; expected 7 bytes "
                          f"starting 06 (length, DKI, CVN, CVR)")
    if value[3] != 0x03:
        raise DecodeError(f"9F10: CVR at offset 3 starts {value[3]:02X}; expected 03 (its "
                          f"length)")
    return value[3:]


def ac_input(dol_data: bytes, aip: bytes, atc: bytes, cvr: bytes) -> bytes:
    """The data an application cryptogram covers (module doc)."""
    if len(aip) != 2 or len(atc) != 2 or len(cvr) != CVR_LEN:
        raise ValueError(f"ac_input(): AIP and ATC are 2 bytes, the CVR {CVR_LEN}; got "
                         f"{len(aip)}, {len(atc)}, {len(cvr)}")
    return dol_data + aip + atc + cvr


def arc_of(response_code: str) -> bytes:
    """The ARC (8A) for an ISO 8583 response code: its two characters in ASCII."""
    if len(response_code) != 2 or not response_code.isascii():
        raise ValueError(f"arc_of(): a response code is 2 ASCII characters, got "
                         f"{response_code!r}")
    return response_code.encode("ascii")


def issuer_auth_data(arpc: bytes, arc: bytes) -> bytes:
    """Tag 91 value: ARPC (8) || ARC (2)."""
    if len(arpc) != 8 or len(arc) != 2:
        raise ValueError(f"issuer_auth_data(): ARPC 8 and ARC 2 bytes, got {len(arpc)} and "
                         f"{len(arc)}")
    return arpc + arc


def split_issuer_auth_data(value: bytes) -> tuple[bytes, bytes]:
    """(ARPC, ARC) of a tag 91 value (DecodeError when it is not 10 bytes)."""
    if len(value) != 10:
        raise DecodeError(f"91: {len(value)} bytes; expected 10 (ARPC 8 + ARC 2)")
    return value[:8], value[8:]


def dol_data_from(dol: bytes, values: Mapping[int, bytes]) -> bytes:
    """A DOL's data rebuilt from data objects (field 55's tags), as a terminal builds it."""
    return tlv.build_dol(tlv.parse_dol(dol), dict(values))


__all__ = [
    "APPROVED_ARCS",
    "CDOL1",
    "CDOL2",
    "CID_AAC",
    "CID_ARQC",
    "CID_NAMES",
    "CID_TC",
    "CvrState",
    "PDOL",
    "ac_input",
    "arc_of",
    "cvr_from_iad",
    "dol_data_from",
    "iad",
    "issuer_auth_data",
    "split_issuer_auth_data",
]
