"""The terminal's magnetic stripe reader: what a swipe gives the firmware.

The harness brings ``{"t":"swipe","track1":…,"track2":…}``, the tracks as the head read them
(start sentinel … end sentinel, LRC; ``""`` for a track not read; docs/probe-link.md, SWIPE).
:func:`read_swipe` checks track 2 with :func:`protocols.magstripe.decode_track` (sentinels,
character set, LRC: a bad read is a :class:`~protocols.errors.DecodeError`, shown as "swipe
again") and turns it into a :class:`~sim.terminal.emv.CardRead` with ``entry="swipe"``, so the
rest of the firmware handles every entry mode alike.  Track 1 is not used (the 0200 carries
track 2 in field 35).

Service code rules (ISO/IEC 7813), applied by the firmware:

* first digit 2 or 6: the card has a chip (:func:`is_chip_card`) — swiped, it must be inserted,
  unless the chip failed often enough in this transaction (fallback);
* third digit 0, 3, 5, 6 or 7: the cardholder is verified by PIN (:func:`pin_required`: online
  PIN, this terminal has a PIN pad), else by signature.

Nothing here logs or shows track data; the PAN only masked.
"""

from __future__ import annotations

from protocols.digits import ascii_digits
from protocols.ecr import Cvm, EntryMode
from protocols.errors import DecodeError
from protocols.magstripe import TRACKS, decode_track
from sim.terminal.emv import CardRead

#: Service code first digits of a chip card; third digits that ask for a PIN.
CHIP_FIRST_DIGITS = frozenset("26")
PIN_THIRD_DIGITS = frozenset("03567")


def is_chip_card(service_code: str) -> bool:
    return service_code[:1] in CHIP_FIRST_DIGITS


def pin_required(service_code: str) -> bool:
    return service_code[2:3] in PIN_THIRD_DIGITS


def read_swipe(track1: str, track2: str) -> CardRead:
    """The card data of a swipe (see module doc); DecodeError when track 2 read badly or is
    not a card's track 2 (naming what, never the data)."""
    if not track2:
        raise DecodeError("track 2: nothing read" + (" (track 1 only)" if track1 else ""))
    data = decode_track(2, track2)
    pan, sep, rest = data.partition(TRACKS[2].separator)
    if not sep or not (ascii_digits(pan) and 12 <= len(pan) <= 19):
        raise DecodeError(f"track 2: a PAN of 12 to 19 digits and the separator expected, got "
                          f"{len(pan)} character(s) {'with' if sep else 'without'} separator")
    if len(rest) < 7 or not ascii_digits(rest[:7]):
        raise DecodeError(f"track 2: expiry and service code (7 digits) expected at character "
                          f"{len(pan) + 2}")
    service_code = rest[4:7]
    return CardRead(pan=pan, pan_seq=None, expiry=rest[:4],
                    track2_equivalent=f"{pan}D{rest}".upper(), aid="", app_label="",
                    icc_data=b"", cvm=str(Cvm.ONLINE_PIN if pin_required(service_code)
                                          else Cvm.SIGNATURE),
                    cryptogram_type="", entry=str(EntryMode.SWIPE))
