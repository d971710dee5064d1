"""The programmable card emulator on the second vpcd reader (a lab's card simulator instrument):
which profile its card has, and the control ops that change it.  Pure: no sockets (the vpcd
host, :mod:`sim.card.vpcd`, carries out the removal and insertion a load asks for).

Loading a profile takes the card out of the reader and puts the new one in: pcscd sees a
removal and an insertion, as when a person swaps cards.  Each profile's card keeps its
non-volatile state (ATC, PIN try counter) while others are loaded, as a drawer of real cards
would; ``reset`` puts every card back to its profile.  Profiles are read from one directory by
file name (``expired`` → ``<dir>/expired.yaml``, whose ``name`` must say the same).

Control socket (JSON lines, like the host's, :mod:`sim.host.control`): one request per line
``{"op": ..., "seq": n, ...}``, one answer ``{"ok": true, "seq": n, ...}`` or
``{"ok": false, "seq": n, "error": "..."}``.  Ops (:data:`EMULATOR_OPS`):

==============  ===================  ====================================================
op              request keys         answer keys
==============  ===================  ====================================================
``ping``        —                    ``pid``, plus the ``loaded`` keys
``load``        ``profile`` (name)   ``profile``, ``present``, ``atr`` (hex, "" when the
                                     card gives none), ``mute`` (no answer to reset)
``loaded``      —                    as ``load``: the profile in the reader and whether the
                                     card is in it (false after the card was pulled)
``profiles``    —                    ``profiles`` (names that ``load`` takes)
``reset``       —                    ``reset`` (names of the cards put back to their
                                     profiles, the fixed readers' cards included)
``stripe``      ``profile`` (name)   ``track1``, ``track2``: the card's stripe as a reader
                                     head reads it (sentinels, LRC; a damaged stripe's
                                     LRC wrong), "" for a card without a stripe.  The
                                     card does not have to be loaded (the rig's magstripe
                                     emulator head plays it).  Test-card data, on a 0600
                                     socket only; never logged.
==============  ===================  ====================================================
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

from protocols.controlserver import answer_request, masked_refusal
from protocols.errors import SimError
from sim.card.emv import SimEmvCard
from sim.card.profile import NAME_RE, load_profile

log = logging.getLogger(__name__)

Request = Mapping[str, Any]


class EmulatorRefused(SimError):
    """A control request the emulator refuses (answered ``{"ok": false, "error": ...}``)."""


class CardEmulator:
    """The emulator's card and its drawer of profiles (see the module doc).

    *fixed*: the cards of the process's fixed readers, put back to their profiles by
    :meth:`reset` too."""

    def __init__(self, profiles_dir: str | os.PathLike[str], initial: str,
                 fixed: Sequence[SimEmvCard] = ()) -> None:
        self.profiles_dir = Path(profiles_dir)
        if not self.profiles_dir.is_dir():
            raise SimError(f"CardEmulator: profiles directory {self.profiles_dir} does not "
                           f"exist")
        self.fixed = list(fixed)
        self._drawer: dict[str, SimEmvCard] = {}
        self.profile = initial
        self.card = self._take(initial)
        self.present = False          # the host connects the card (connect(), then inserted())
        self._insertion_pending = False

    def __repr__(self) -> str:
        return f"CardEmulator({self.profile}, {'in' if self.present else 'out of'} the reader)"

    def available(self) -> list[str]:
        """Names :meth:`load` takes: the profiles of the directory."""
        return sorted(p.stem for p in self.profiles_dir.glob("*.yaml"))

    def _take(self, name: str) -> SimEmvCard:
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            raise EmulatorRefused(f"load: 'profile' must be a card name (a-z 0-9 _ -), got "
                                  f"{name!r}")
        card = self._drawer.get(name)
        if card is not None:
            return card
        path = self.profiles_dir / f"{name}.yaml"
        if not path.is_file():
            raise EmulatorRefused(f"load: no profile {name!r} in {self.profiles_dir}; "
                                  f"available: {', '.join(self.available())}")
        profile = load_profile(path)        # a ConfigError names the file and the key
        if profile.name != name:
            raise EmulatorRefused(f"load: {path} says name {profile.name!r}; a profile's name "
                                  f"is its file name ({name!r})")
        card = SimEmvCard(profile)
        self._drawer[name] = card
        return card

    def card_of(self, name: str) -> SimEmvCard:
        """*name*'s card (from the drawer; read from its profile the first time), not loaded."""
        return self._take(name)

    def load(self, name: str) -> SimEmvCard:
        """Put *name*'s card in the reader (the host removes the old one and inserts it)."""
        card = self._take(name)
        self.card.power_off()
        self.profile, self.card = name, card
        self.present = False
        self._insertion_pending = True
        log.info("emulator: load %s (%s)", name, card.profile.masked_pan)
        return card

    def take_insertion(self) -> bool:
        """Whether the host must (re)insert the card now; cleared by asking."""
        pending, self._insertion_pending = self._insertion_pending, False
        return pending

    def inserted(self) -> None:
        """The host connected the card to the reader."""
        self.present = True

    def card_left(self) -> None:
        """The card left the reader (profile ``pull_at``); it is back at the next load."""
        self.present = False

    def reset(self) -> list[str]:
        """Every card (drawer and fixed readers) back to its profile's non-volatile state."""
        cards = [*self._drawer.values(), *self.fixed]
        for card in cards:
            card.restore_profile_state()
        return sorted({card.profile.name for card in cards})

    def state(self) -> dict[str, Any]:
        profile = self.card.profile
        return {"profile": self.profile, "present": self.present,
                "atr": profile.reset_answer.hex().upper(), "mute": not profile.answers_reset}


def _op_ping(emulator: CardEmulator, request: Request) -> dict[str, Any]:
    return {"pid": os.getpid(), **emulator.state()}


def _op_load(emulator: CardEmulator, request: Request) -> dict[str, Any]:
    name = request.get("profile")
    if not isinstance(name, str):
        raise EmulatorRefused(f"load: 'profile' must be a card name, got {name!r}")
    emulator.load(name)
    return emulator.state()


def _op_loaded(emulator: CardEmulator, request: Request) -> dict[str, Any]:
    return emulator.state()


def _op_profiles(emulator: CardEmulator, request: Request) -> dict[str, Any]:
    return {"profiles": emulator.available()}


def _op_reset(emulator: CardEmulator, request: Request) -> dict[str, Any]:
    return {"reset": emulator.reset()}


def _op_stripe(emulator: CardEmulator, request: Request) -> dict[str, Any]:
    name = request.get("profile")
    if not isinstance(name, str):
        raise EmulatorRefused(f"stripe: 'profile' must be a card name, got {name!r}")
    profile = emulator.card_of(name).profile
    return {"profile": name, "track1": profile.track1 or "", "track2": profile.track2 or ""}


EmulatorOp = Callable[[CardEmulator, Request], dict[str, Any]]
EMULATOR_OPS: Mapping[str, EmulatorOp] = MappingProxyType({
    "ping": _op_ping,
    "load": _op_load,
    "loaded": _op_loaded,
    "profiles": _op_profiles,
    "reset": _op_reset,
    "stripe": _op_stripe,
})


def handle_emulator_control(emulator: CardEmulator, request: object) -> dict[str, Any]:
    """One decoded request in, one answer out (never raises for a bad request; a refusal, a
    profile's ConfigError with its key paths, is answered with any PAN masked)."""
    return answer_request(EMULATOR_OPS, emulator, request, refusal=masked_refusal)


__all__ = ["CardEmulator", "EMULATOR_OPS", "EmulatorRefused", "handle_emulator_control"]
