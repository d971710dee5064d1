"""The issuer's card authentication (docs/cards.md): verify the ARQC a chip request carries in
ISO 8583 field 55, and answer with the ARPC (tag 91 in field 55 of the response).

Pure functions over an :class:`~sim.host.config.Account` and the field's data objects; the
engine (:mod:`sim.host.engine`) decides what a failed check answers (05).  The card's master key
is derived from the account's IMK-AC and the PAN sequence number, the session key from the ATC
the card sent (9F36), the ARQC input from CDOL1 (rebuilt from the field's tags in CDOL1 order),
AIP (82), ATC and the CVR inside the IAD (9F10): the same functions the card uses
(:mod:`protocols.crypto`, :mod:`protocols.emvcard`).  Nothing here logs or shows a key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from protocols import tlv
from protocols.crypto import (
    application_cryptogram,
    arpc_method1,
    derive_icc_master_key,
    derive_session_key,
)
from protocols.emvcard import (
    CDOL1,
    CID_ARQC,
    CID_NAMES,
    ac_input,
    arc_of,
    cvr_from_iad,
    dol_data_from,
    issuer_auth_data,
)
from protocols.errors import DecodeError
from sim.host.config import Account

#: What an ARQC check needs from field 55 besides the CDOL1 data.
NEEDED_TAGS: Mapping[int, str] = {
    0x9F26: "application cryptogram", 0x9F27: "cryptogram information data",
    0x9F36: "ATC", 0x82: "AIP", 0x9F10: "issuer application data",
}


@dataclass(frozen=True)
class ArqcCheck:
    """The outcome of checking one request's cryptogram; ``why`` says what failed (no data that
    would identify the card or a key)."""

    verified: bool
    why: str = ""
    arqc: bytes = b""
    session_key: bytes = field(default=b"", repr=False)

    def issuer_auth_tlv(self, response_code: str) -> bytes:
        """Tag 91 (ARPC || ARC) for the answer *response_code*; only for a verified ARQC."""
        if not self.verified:
            raise ValueError("issuer_auth_tlv(): no ARPC for an ARQC that did not verify")
        arc = arc_of(response_code)
        arpc = arpc_method1(self.session_key, self.arqc, arc)
        return tlv.encode(0x91, issuer_auth_data(arpc, arc))


def icc_tags(field55: str) -> dict[int, bytes]:
    """Field 55 (hex, as pyiso8583 gives binary fields) → its data objects by tag."""
    try:
        return tlv.flatten(bytes.fromhex(field55))
    except ValueError:
        raise DecodeError("field 55 is not hex") from None


def has_cryptogram(icc: Mapping[int, bytes]) -> bool:
    """Whether field 55 carries an application cryptogram to check (9F26)."""
    return 0x9F26 in icc


def check_arqc(account: Account, icc: Mapping[int, bytes]) -> ArqcCheck:
    """Verify the ARQC of *icc* (field 55's data objects) with the account's key."""
    if account.imk_ac is None:
        return ArqcCheck(False, "the issuer holds no key for this card")
    missing = [f"{t:X} ({what})" for t, what in NEEDED_TAGS.items() if t not in icc]
    if missing:
        return ArqcCheck(False, f"field 55 lacks {', '.join(missing)}")
    cid = icc[0x9F27][:1]
    if not cid or cid[0] & 0xC0 != CID_ARQC:
        name = CID_NAMES.get(cid[0] & 0xC0, "RFU") if cid else "nothing"
        return ArqcCheck(False, f"the cryptogram is an {name}, not an ARQC")
    atc = icc[0x9F36]
    if len(atc) != 2 or len(icc[0x82]) != 2 or len(icc[0x9F26]) != 8:
        return ArqcCheck(False, "ATC, AIP or cryptogram of the wrong length")
    try:
        cvr = cvr_from_iad(icc[0x9F10])
    except DecodeError as exc:
        return ArqcCheck(False, str(exc))
    master = derive_icc_master_key(account.imk_ac, account.pan, account.pan_seq)
    session_key = derive_session_key(master, atc)
    expected = application_cryptogram(
        session_key, ac_input(dol_data_from(CDOL1, icc), icc[0x82], atc, cvr))
    if expected != icc[0x9F26]:
        return ArqcCheck(False, f"the ARQC does not verify (ATC {atc.hex().upper()})")
    return ArqcCheck(True, arqc=icc[0x9F26], session_key=session_key)


__all__ = ["ArqcCheck", "NEEDED_TAGS", "check_arqc", "has_cryptogram", "icc_tags"]
