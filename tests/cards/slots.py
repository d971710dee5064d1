"""Test helper: the terminal's chip kernel talking straight to a card state machine (no vpcd,
no pcscd), and a kernel run that gives the field 55 of a real chip read."""

from __future__ import annotations

import datetime

from protocols.crypto import application_cryptogram, derive_icc_master_key, derive_session_key
from protocols.emvcard import ac_input
from sim.card.emv import AIP, CVR, SimEmvCard
from sim.card.profile import CardProfile
from sim.terminal.emv import CardError, CardRead, run_chip_transaction

TXN_DATE = datetime.date(2025, 6, 30)
UN = bytes.fromhex("A1B2C3D4")


class MemorySlot:
    """An in-memory slot: the kernel talks straight to the card state machine."""

    def __init__(self, card: SimEmvCard, t0: bool = False) -> None:
        self.card, self.t0 = card, t0
        self.log: list[tuple[str, str]] = []
        self._pending = b""

    def power_on(self, timeout: float) -> bytes:
        atr = self.card.power_on()
        if not atr:
            raise CardError("mute", "no ATR")
        return atr

    def transmit(self, capdu: bytes, timeout: float) -> bytes:
        if self.t0 and capdu[1] == 0xC0:            # GET RESPONSE
            out, self._pending = self._pending[:capdu[4]] + b"\x90\x00", b""
        else:
            out = self.card.apdu(capdu)
            if self.t0 and len(out) > 2 and out[-2:] == b"\x90\x00":
                # behave like a T=0 card: case 4 data comes through GET RESPONSE
                self._pending, out = out[:-2], bytes([0x61, len(out) - 2])
        self.log.append((capdu.hex().upper(), out.hex().upper()))
        return out

    def power_off(self) -> None:
        self.card.power_off()


def chip_read(profile: CardProfile, amount_minor: int = 2500) -> CardRead:
    """The terminal kernel's read of a fresh card of *profile* (first GENERATE AC: ARQC)."""
    return run_chip_transaction(MemorySlot(SimEmvCard(profile)), amount_minor=amount_minor,
                                txn_date=TXN_DATE, unpredictable_number=UN)


def expected_ac(profile: CardProfile, dol_data: bytes, atc: bytes, cvr: bytes = CVR) -> bytes:
    """The AC as docs/cards.md defines it, computed here from the profile's IMK."""
    mk = derive_icc_master_key(profile.keys.imk_ac, profile.pan, profile.pan_seq)
    return application_cryptogram(derive_session_key(mk, atc), ac_input(dol_data, AIP, atc, cvr))
