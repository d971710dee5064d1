"""Card faults as pure rules: what the card bank's relay (:class:`rigs.cards.PcscCardBank`) does
to the traffic between the probe in the terminal's slot and the test card, one rule per fault
kind of :data:`protocols.faults.FAULT_KINDS` whose target is ``cards``.

Layers, each testable on its own (no PC/SC, no threads, no clock: wall time is passed in):

* **Rules** — objects ``rule(message) -> CardVerdict``.  The relay consults the rules at four
  :class:`Stage` s of an exchange: the terminal powers the card (``POWER_ON``, before the reader
  is touched), a C-APDU is about to go to the card (``COMMAND``), the card's R-APDU is about to
  go to the terminal (``RESPONSE``), and an answer the card gave (ATR or R-APDU, after any
  replacement) is about to be sent to the probe (``ANSWER``, where timing faults act).  The
  bank's stripe head asks them once more, as a card is swiped (``SWIPE``).  A rule
  is built from a :class:`~protocols.faults.FaultSpec` by the factory :data:`RULE_KINDS` maps its
  kind to; it may keep its own state (a counter), nothing else.
* :class:`CardFaultCore` — the active rules (in the order they were added; at each stage the
  first verdict that is not PASS decides), the fault ledger (every rule of the scenario: armed /
  fired / cleared with wall times, and what each trip did) and which instruction a response
  answers (a GET RESPONSE after ``61xx`` completes the command before it, as on a T=0 card).
  A rule that raises, or returns a verdict its stage cannot carry out, is a bug: the core raises
  :class:`RuleFailed` naming the rule, and the relay dies loudly; it never looks like a fault.

Trip texts name instructions, status words, byte offsets and lengths, never data bytes: they go
to the APDU trace and the event stream as they are.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from protocols.apdu import INS_GET_RESPONSE, ins_name
from protocols.errors import ConfigError, RigError
from protocols.faults import STRIPE_MISREADS, FaultKind, FaultSpec, Target, ins_byte

LEDGER_KEPT = 200
"""Rules the ledger keeps (active ones are never dropped; the oldest cleared ones go)."""
TRIPS_PER_RULE = 50
"""Trips kept per rule (``fired_count`` counts them all)."""


class RuleFailed(RigError):
    """A card fault rule raised or returned a verdict it may not give: a bug, not a fault."""


class Stage(enum.Enum):
    """Where in an exchange the relay consults the rules."""

    POWER_ON = "power on"
    """The terminal powers the card; the reader has not been touched yet."""
    COMMAND = "command"
    """A C-APDU from the terminal, before it goes to the card."""
    RESPONSE = "response"
    """The card's R-APDU (SW1 SW2 included), before it goes to the terminal."""
    ANSWER = "answer"
    """An answer the card gave (ATR, or R-APDU as possibly replaced), before it is sent."""
    SWIPE = "swipe"
    """A card's tracks, before the stripe head plays them to the terminal's reader."""


class CardAction(enum.Enum):
    PASS = "pass"
    """Relay unchanged (a rule with nothing to do here)."""
    MUTE = "mute"
    """Answer MUTE (no ATR / no R-APDU); the card is not asked."""
    PULL = "pull"
    """Answer ABSENT, unpower the card and open the slot's card-detect (REMOVE to the probe)."""
    REPLACE = "replace"
    """Send ``data`` to the terminal as the R-APDU instead of the card's."""
    HOLD = "hold"
    """Send the answer ``hold_s`` later."""
    MISREAD = "misread"
    """Play the swipe spoiled as ``how`` says (``lrc``: wrong LRCs, ``data``: track 2 cut)."""


#: What each stage can carry out (PASS everywhere).
STAGE_ACTIONS: Mapping[Stage, frozenset[CardAction]] = MappingProxyType({
    Stage.POWER_ON: frozenset({CardAction.PASS, CardAction.MUTE}),
    Stage.COMMAND: frozenset({CardAction.PASS, CardAction.MUTE, CardAction.PULL}),
    Stage.RESPONSE: frozenset({CardAction.PASS, CardAction.REPLACE}),
    Stage.ANSWER: frozenset({CardAction.PASS, CardAction.HOLD}),
    Stage.SWIPE: frozenset({CardAction.PASS, CardAction.MISREAD}),
})


@dataclass(frozen=True)
class CardMessage:
    """One point of an exchange, as a rule sees it."""

    stage: Stage
    capdu: bytes = b""
    """The C-APDU (COMMAND, RESPONSE, ANSWER to a command); empty for a power on and its ATR."""
    answer: bytes = b""
    """RESPONSE / ANSWER: the R-APDU, or the ATR when ``capdu`` is empty."""
    ins: int | None = None
    """COMMAND: the C-APDU's INS.  RESPONSE / ANSWER: the instruction the R-APDU answers (a GET
    RESPONSE following ``61xx`` answers the command it completes).  None for a power on."""

    card: str = ""
    """SWIPE: the card's name in the bank."""

    @property
    def what(self) -> str:
        """``ATR``, ``power on``, ``swipe`` or the instruction's name (``GENERATE AC``)."""
        if self.stage is Stage.SWIPE:
            return "swipe"
        if self.ins is None:
            return "ATR" if self.stage is Stage.ANSWER else "power on"
        return ins_name(self.ins)


@dataclass(frozen=True)
class CardVerdict:
    """What a rule decided.  ``what`` (no data bytes) marks a trip; empty: not a trip."""

    action: CardAction
    data: bytes = b""
    hold_s: float = 0.0
    how: str = ""
    """MISREAD: how the swipe is spoiled (one of protocols.faults.STRIPE_MISREADS)."""
    what: str = ""

    @staticmethod
    def mute(what: str) -> CardVerdict:
        return CardVerdict(CardAction.MUTE, what=what)

    @staticmethod
    def pull(what: str) -> CardVerdict:
        return CardVerdict(CardAction.PULL, what=what)

    @staticmethod
    def replace(rapdu: bytes | bytearray, what: str) -> CardVerdict:
        return CardVerdict(CardAction.REPLACE, data=bytes(rapdu), what=what)

    @staticmethod
    def hold(seconds: float, what: str) -> CardVerdict:
        return CardVerdict(CardAction.HOLD, hold_s=seconds, what=what)

    @staticmethod
    def misread(how: str, what: str) -> CardVerdict:
        return CardVerdict(CardAction.MISREAD, how=how, what=what)


PASS = CardVerdict(CardAction.PASS)

CardRule = Callable[[CardMessage], CardVerdict]
"""A card fault rule: a function or an object with ``__call__``; no I/O."""
CardRuleFactory = Callable[[FaultSpec], CardRule]
"""Builds the rule of one (validated) fault spec; raises ConfigError for a spec it refuses."""


def _sw(rapdu: bytes) -> int:
    return int.from_bytes(rapdu[-2:], "big")


# --- the rules ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CardMute:
    """CARD_MUTE: every power on and every command is answered MUTE without asking the card
    (a trip each)."""

    @classmethod
    def from_spec(cls, spec: FaultSpec) -> CardMute:
        return cls()

    def __call__(self, msg: CardMessage) -> CardVerdict:
        if msg.stage is Stage.POWER_ON:
            return CardVerdict.mute("power on answered mute (no ATR)")
        if msg.stage is Stage.COMMAND:
            return CardVerdict.mute(f"{msg.what} answered mute")
        return PASS


class CardPulled:
    """CARD_PULLED: count the commands of one instruction after arming; at the ``nth`` the card
    leaves the slot (that command is answered ABSENT, the card unpowered, card-detect opens).
    One-shot: it passes everything afterwards."""

    __slots__ = ("ins", "nth", "seen")

    def __init__(self, ins: int, nth: int = 1) -> None:
        if nth < 1:
            raise ConfigError(f"card_pulled: nth counts from 1, got {nth}")
        self.ins = ins
        self.nth = nth
        self.seen = 0

    @classmethod
    def from_spec(cls, spec: FaultSpec) -> CardPulled:
        return cls(ins_byte(str(spec.params["ins"])), int(spec.params["nth"]))

    def __call__(self, msg: CardMessage) -> CardVerdict:
        if msg.stage is not Stage.COMMAND or msg.ins != self.ins or self.seen >= self.nth:
            return PASS
        self.seen += 1
        if self.seen < self.nth:
            return PASS
        return CardVerdict.pull(f"the card left the slot at {msg.what} #{self.nth} "
                                f"(answered absent, card-detect opens)")


class CardStatusWord:
    """CARD_STATUS_WORD: the R-APDU to an instruction is replaced by the two SW bytes alone,
    ``times`` of them (0: every one; a trip each)."""

    __slots__ = ("ins", "sw", "times", "done")

    def __init__(self, ins: int, sw: int, times: int = 1) -> None:
        if not 0 <= sw <= 0xFFFF:
            raise ConfigError(f"card_status_word: sw must be 4 hex digits, got {sw:X}")
        self.ins = ins
        self.sw = sw
        self.times = times
        self.done = 0

    @classmethod
    def from_spec(cls, spec: FaultSpec) -> CardStatusWord:
        p = spec.params
        return cls(ins_byte(str(p["ins"])), int(str(p["sw"]), 16), int(p["times"]))

    def __call__(self, msg: CardMessage) -> CardVerdict:
        if msg.stage is not Stage.RESPONSE or msg.ins != self.ins:
            return PASS
        if self.times and self.done >= self.times:
            return PASS
        self.done += 1
        data_len = len(msg.answer) - 2
        dropped = f", {data_len} data byte(s) dropped" if data_len > 0 else ""
        return CardVerdict.replace(self.sw.to_bytes(2, "big"),
                                   f"{msg.what} answered {self.sw:04X} instead of "
                                   f"{_sw(msg.answer):04X}{dropped}")


class CardCorrupt:
    """CARD_CORRUPT: in the R-APDU to an instruction, XOR one response data byte with FF (the
    one at ``offset``, or the last when the data is shorter), ``times`` of them (0: every one;
    a trip each).  The status word is kept; a response without data is left alone and not
    counted."""

    __slots__ = ("ins", "offset", "times", "done")

    def __init__(self, ins: int, offset: int = 0, times: int = 1) -> None:
        if offset < 0:
            raise ConfigError(f"card_corrupt: offset must be >= 0, got {offset}")
        self.ins = ins
        self.offset = offset
        self.times = times
        self.done = 0

    @classmethod
    def from_spec(cls, spec: FaultSpec) -> CardCorrupt:
        p = spec.params
        return cls(ins_byte(str(p["ins"])), int(p["offset"]), int(p["times"]))

    def __call__(self, msg: CardMessage) -> CardVerdict:
        if msg.stage is not Stage.RESPONSE or msg.ins != self.ins:
            return PASS
        if self.times and self.done >= self.times:
            return PASS
        data_len = len(msg.answer) - 2
        if data_len <= 0:
            return PASS
        index = min(self.offset, data_len - 1)
        out = bytearray(msg.answer)
        out[index] ^= 0xFF
        self.done += 1
        clamped = f" (offset {self.offset} is past the data: the last byte)" \
            if index != self.offset else ""
        return CardVerdict.replace(out, f"{msg.what} response data byte {index} of {data_len} "
                                        f"flipped (XOR FF){clamped}, SW "
                                        f"{_sw(msg.answer):04X} kept")


@dataclass(frozen=True)
class CardSlow:
    """CARD_SLOW: every answer the card gives (ATR, R-APDU) is sent ``ms`` later (a trip
    each).  Answers the card did not give (mute, absent) are not held."""

    hold_s: float

    @classmethod
    def from_spec(cls, spec: FaultSpec) -> CardSlow:
        ms = float(spec.params["ms"])
        if not ms > 0:
            raise ConfigError(f"card_slow: ms must be > 0, got {ms:g}")
        return cls(ms / 1000.0)

    def __call__(self, msg: CardMessage) -> CardVerdict:
        if msg.stage is not Stage.ANSWER:
            return PASS
        answer = "ATR" if msg.ins is None else f"{msg.what} answer"
        return CardVerdict.hold(self.hold_s, f"{answer} held {self.hold_s * 1000:g} ms")


MISREAD_TEXT: Mapping[str, str] = MappingProxyType({
    "lrc": "LRC of each track wrong (a dirty stripe)",
    "data": "track 2 cut short after the PAN, LRC right (a swipe too fast)",
})


class StripeUnreadable:
    """STRIPE_UNREADABLE: the next ``times`` swipes (0: every one) are played to the terminal
    spoiled as ``how`` says (a trip each)."""

    __slots__ = ("how", "times", "done")

    def __init__(self, how: str = "lrc", times: int = 1) -> None:
        if how not in STRIPE_MISREADS:
            raise ConfigError(f"stripe_unreadable: how must be one of "
                              f"{', '.join(STRIPE_MISREADS)}, got {how!r}")
        self.how = how
        self.times = times
        self.done = 0

    @classmethod
    def from_spec(cls, spec: FaultSpec) -> StripeUnreadable:
        return cls(str(spec.params["how"]), int(spec.params["times"]))

    def __call__(self, msg: CardMessage) -> CardVerdict:
        if msg.stage is not Stage.SWIPE or (self.times and self.done >= self.times):
            return PASS
        self.done += 1
        of = f" of {self.times}" if self.times else ""
        return CardVerdict.misread(self.how, f"swipe {self.done}{of} of card {msg.card} read "
                                             f"badly: {MISREAD_TEXT[self.how]}")


#: Fault kind → the factory of its rule; one row per card kind of FAULT_KINDS.
RULE_KINDS: Mapping[FaultKind, CardRuleFactory] = MappingProxyType({
    FaultKind.CARD_MUTE: CardMute.from_spec,
    FaultKind.CARD_PULLED: CardPulled.from_spec,
    FaultKind.CARD_STATUS_WORD: CardStatusWord.from_spec,
    FaultKind.CARD_CORRUPT: CardCorrupt.from_spec,
    FaultKind.CARD_SLOW: CardSlow.from_spec,
    FaultKind.STRIPE_UNREADABLE: StripeUnreadable.from_spec,
})


# --- the ledger ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CardTrip:
    """One firing of a rule: what it did, when (wall time), numbered across the bank."""

    n: int
    rule_id: int
    kind: FaultKind
    wall: float
    what: str

    def describe(self) -> str:
        return f"fault #{self.rule_id} {self.kind.value}: {self.what}"


@dataclass(frozen=True)
class CardFaultRecord:
    """One rule of the fault ledger (a snapshot): armed / fired / cleared with wall times.
    ``fired`` holds the wall times of its latest trips, ``trips`` what they did
    (``fired_count`` counts them all)."""

    id: int
    spec: FaultSpec
    armed: float
    fired: list[float]
    trips: tuple[CardTrip, ...]
    fired_count: int
    cleared: float | None

    @property
    def active(self) -> bool:
        return self.cleared is None

    @property
    def kind(self) -> FaultKind:
        return self.spec.kind

    def describe(self) -> str:
        state = "active" if self.active else "cleared"
        return f"rule #{self.id} {self.spec.describe()}: {state}, fired {self.fired_count} time(s)"


class _Entry:
    __slots__ = ("id", "spec", "rule", "armed", "cleared", "trips", "fired_count")

    def __init__(self, rule_id: int, spec: FaultSpec, rule: CardRule, armed: float) -> None:
        self.id = rule_id
        self.spec = spec
        self.rule = rule
        self.armed = armed
        self.cleared: float | None = None
        self.trips: deque[CardTrip] = deque(maxlen=TRIPS_PER_RULE)
        self.fired_count = 0

    def record(self) -> CardFaultRecord:
        return CardFaultRecord(self.id, self.spec, self.armed, [t.wall for t in self.trips],
                               tuple(self.trips), self.fired_count, self.cleared)


class CardFaultCore:
    """Active rules, the ledger and the verdict of each stage.  Not thread-safe: the caller
    (the relay) holds a lock around it."""

    def __init__(self, rule_kinds: Mapping[FaultKind, CardRuleFactory] = RULE_KINDS, *,
                 ledger_kept: int = LEDGER_KEPT, owner: str = "card faults") -> None:
        self.owner = owner
        """Who the error messages name (the card bank)."""
        self.rule_kinds = rule_kinds
        self.ledger_kept = ledger_kept
        self._active: list[_Entry] = []
        self._ledger: dict[int, _Entry] = {}
        self._next_id = 1
        self._trip_count = 0
        self._continues: int | None = None  # INS whose latest answer was 61xx

    # --- rules and the ledger --------------------------------------------------------------------

    def add(self, spec: FaultSpec, wall: float) -> CardFaultRecord:
        """Build *spec*'s rule and append it to the active ones (it applies after them)."""
        if not isinstance(spec, FaultSpec):
            raise ConfigError(f"{self.owner}: apply() takes a FaultSpec, got "
                              f"{type(spec).__name__}")
        kinds = ", ".join(k.value for k in self.rule_kinds)
        if spec.target is not Target.CARDS:
            raise ConfigError(f"{self.owner}: apply({spec.describe()}): {spec.kind.value} is a "
                              f"{spec.target.value} fault; the card bank carries out card "
                              f"faults only ({kinds})")
        factory = self.rule_kinds.get(spec.kind)
        if factory is None:
            raise ConfigError(f"{self.owner}: apply({spec.describe()}): kind {spec.kind.value} "
                              f"has no rule in this card bank; it has {kinds}")
        try:
            rule = factory(spec)  # anything but ConfigError is a bug and propagates as it is
        except ConfigError as exc:
            raise ConfigError(f"{self.owner}: apply({spec.describe()}): {exc}") from exc
        if len(self._ledger) >= self.ledger_kept:
            oldest = next((e for e in self._ledger.values() if e.cleared is not None), None)
            if oldest is None:
                raise ConfigError(f"{self.owner}: apply({spec.describe()}): "
                                  f"{len(self._ledger)} rules are active, the most this card "
                                  f"bank keeps; clear some first")
            del self._ledger[oldest.id]
        entry = _Entry(self._next_id, spec, rule, wall)
        self._next_id += 1
        self._ledger[entry.id] = entry
        self._active.append(entry)
        return entry.record()

    def clear(self, rule_id: int, wall: float) -> CardFaultRecord:
        entry = self._ledger.get(rule_id)
        if entry is None:
            kept = ", ".join(f"#{i}" for i in self._ledger) or "none"
            raise ConfigError(f"{self.owner}: clear(): no card fault rule #{rule_id} (rules "
                              f"kept: {kept})")
        if entry.cleared is not None:
            raise ConfigError(f"{self.owner}: clear(): rule #{rule_id} {entry.spec.describe()} "
                              f"was already cleared")
        entry.cleared = wall
        self._active.remove(entry)
        return entry.record()

    def clear_all(self, wall: float) -> list[CardFaultRecord]:
        return [self.clear(entry.id, wall) for entry in list(self._active)]

    def forget_cleared(self) -> None:
        """A new scenario: the ledger keeps only the rules still active."""
        self._ledger = {i: e for i, e in self._ledger.items() if e.cleared is None}

    def active(self) -> list[CardFaultRecord]:
        """The active rules, in the order they apply."""
        return [e.record() for e in self._active]

    def ledger(self) -> list[CardFaultRecord]:
        """Every rule kept, oldest first."""
        return [e.record() for e in self._ledger.values()]

    def trips(self, after: int = 0) -> list[CardTrip]:
        """The kept trips numbered above *after*, in order."""
        return sorted((t for e in self._ledger.values() for t in e.trips if t.n > after),
                      key=lambda t: t.n)

    @property
    def any_active(self) -> bool:
        return bool(self._active)

    # --- verdicts ----------------------------------------------------------------------------------

    def judge(self, stage: Stage, wall: float, capdu: bytes = b"",
              answer: bytes = b"", card: str = "") -> tuple[CardVerdict, list[CardTrip]]:
        """The verdict on one point of an exchange (the first rule not passing decides) and the
        trip it recorded, if any.  Raises :class:`RuleFailed` for a rule's bug."""
        msg = CardMessage(stage, capdu, answer, self._ins(stage, capdu), card)
        if stage is Stage.POWER_ON:
            self._continues = None
        verdict, trips = PASS, []
        for entry in self._active:
            try:
                got = entry.rule(msg)
            except Exception as exc:
                raise RuleFailed(f"card fault rule #{entry.id} {entry.spec.describe()} raised "
                                 f"{type(exc).__name__}: {exc} at {stage.value} of "
                                 f"{msg.what}") from exc
            if got is PASS:
                continue
            self._check(entry, stage, got, msg)
            if got.what:
                trips.append(self._trip(entry, got.what, wall))
            if got.action is not CardAction.PASS:
                verdict = got
                break
        if stage is Stage.ANSWER and capdu:
            final = answer
            self._continues = msg.ins if len(final) >= 2 and final[-2] == 0x61 else None
        return verdict, trips

    def _ins(self, stage: Stage, capdu: bytes) -> int | None:
        if len(capdu) < 4:
            return None
        if (stage in (Stage.RESPONSE, Stage.ANSWER) and capdu[1] == INS_GET_RESPONSE
                and self._continues is not None):
            return self._continues
        return capdu[1]

    @staticmethod
    def _check(entry: _Entry, stage: Stage, verdict: object, msg: CardMessage) -> None:
        who = f"card fault rule #{entry.id} {entry.spec.describe()}"
        if not isinstance(verdict, CardVerdict):
            raise RuleFailed(f"{who} returned {type(verdict).__name__}, not a CardVerdict, at "
                             f"{stage.value} of {msg.what}")
        if verdict.action not in STAGE_ACTIONS[stage]:
            allowed = ", ".join(sorted(a.value for a in STAGE_ACTIONS[stage]))
            raise RuleFailed(f"{who}: verdict {verdict.action.value} at {stage.value} of "
                             f"{msg.what}; that stage carries out {allowed}")
        if verdict.action is CardAction.REPLACE and (not isinstance(verdict.data, bytes)
                                                     or len(verdict.data) < 2):
            raise RuleFailed(f"{who}: a replaced R-APDU needs SW1 SW2, got "
                             f"{len(verdict.data)} byte(s)")
        if verdict.action is CardAction.HOLD and not 0 <= verdict.hold_s < float("inf"):
            raise RuleFailed(f"{who}: hold of {verdict.hold_s!r} s is not a finite time >= 0")
        if verdict.action is CardAction.MISREAD and verdict.how not in STRIPE_MISREADS:
            raise RuleFailed(f"{who}: a misread swipe is spoiled one of "
                             f"{', '.join(STRIPE_MISREADS)} ways, got {verdict.how!r}")

    def _trip(self, entry: _Entry, what: str, wall: float) -> CardTrip:
        self._trip_count += 1
        trip = CardTrip(self._trip_count, entry.id, entry.spec.kind, wall, what)
        entry.trips.append(trip)
        entry.fired_count += 1
        return trip


__all__ = [
    "MISREAD_TEXT", "PASS", "RULE_KINDS", "CardAction", "CardCorrupt", "CardFaultCore", "CardFaultRecord",
    "CardMessage", "CardMute", "CardPulled", "CardRule", "CardRuleFactory", "CardSlow",
    "CardStatusWord", "CardTrip", "CardVerdict", "RuleFailed", "Stage", "STAGE_ACTIONS",
    "StripeUnreadable",
]
