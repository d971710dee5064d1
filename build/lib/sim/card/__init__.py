"""Virtual EMV cards for the virtual bench: the card state machine and its vpcd host."""

from __future__ import annotations

from sim.card.emv import SimEmvCard
from sim.card.profile import CardProfile, load_profile

__all__ = ["CardProfile", "SimEmvCard", "load_profile"]
