"""What the simulators' answer rules share (the acquirer host's :mod:`sim.host.rules`, the QR
platform's :mod:`sim.qr.rules`): a rule takes some requests (``match``), answers them another
way (``answer``), a number of times (``times``); the first matching rule in force wins.

Each simulator declares its own keys as data: a :class:`BaseRuleMatch` subclass whose fields
are the request facts it compares for equality (``terminal_id``, ``mti``, ``operation``…;
:func:`matches` reads the request's fact of the same name), a :class:`BaseRuleAnswer` subclass
with its own refusal (a response code, an error code…) beside the two every simulator has
(``delay_s``, ``drop``), and a :class:`BaseRule` naming both.  Here: the amount range, the
checks and wording of an answer, the rules file (:class:`RulesFile`, read through
:mod:`protocols.yamlmodel`: a mistake names the file and the key path) and the book of the
rules in force (:class:`RuleBook`: the file's rules are the baseline, those added over the
control socket come after them and are what ``clear_rules`` removes).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from protocols.yamlmodel import load_model, validate_model

#: Longest delay a rule may ask for (s); the server bounds it again (--max-delay).
MAX_RULE_DELAY_S = 120.0
SOURCE_FILE = "file"
SOURCE_CONTROL = "control"
#: Keys of a match that are not compared for equality.
AMOUNT_KEYS = ("amount_min", "amount_max")


class RequestFacts(Protocol):
    """What a rule matches on: the request's facts named as the match's keys, and its amount
    (minor units; None when the request has none)."""

    @property
    def amount(self) -> int | None: ...


class BaseRuleMatch(BaseModel):
    """Which requests a rule takes (every key given must hold; none given: every request).
    A subclass declares the keys compared for equality with the request's facts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    amount_min: int | None = Field(default=None, ge=0, description="Minor units, inclusive.")
    amount_max: int | None = Field(default=None, ge=0, description="Minor units, inclusive.")

    @model_validator(mode="after")
    def _range(self) -> BaseRuleMatch:
        if (self.amount_min is not None and self.amount_max is not None
                and self.amount_min > self.amount_max):
            raise ValueError(f"amount_min {self.amount_min} > amount_max {self.amount_max}")
        return self


def matches(match: BaseRuleMatch, facts: RequestFacts) -> bool:
    """Whether every key *match* gives holds for the request (a request without an amount
    never matches an amount bound)."""
    for key in type(match).model_fields:
        want = getattr(match, key)
        if key not in AMOUNT_KEYS and want is not None and want != getattr(facts, key):
            return False
    if match.amount_min is None and match.amount_max is None:
        return True
    if facts.amount is None:
        return False
    return ((match.amount_min is None or facts.amount >= match.amount_min)
            and (match.amount_max is None or facts.amount <= match.amount_max))


class BaseRuleAnswer(BaseModel):
    """What a simulator does with a request a rule takes: answer late (``delay_s``) or never
    (``drop``: what the request asks is still done, the answer is lost), and what a subclass
    adds (:meth:`actions`).  An answer must do something."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: The keys an answer needs one of, for the error that it has none.
    NEEDS: ClassVar[str] = "delay_s or drop: true"

    delay_s: float | None = Field(default=None, gt=0, le=MAX_RULE_DELAY_S,
                                  description="Answer this many seconds late.")
    drop: bool = Field(False, description="Never answer (the request is still carried out).")

    def actions(self) -> list[str]:
        """What the answer does, in words and in order (``"delay 2.5 s"``, ``"drop"``)."""
        return [*([f"delay {self.delay_s:g} s"] if self.delay_s is not None else []),
                *(["drop"] if self.drop else [])]

    def describe(self) -> str:
        return ", ".join(self.actions())

    @model_validator(mode="after")
    def _something(self) -> BaseRuleAnswer:
        if not self.actions():
            raise ValueError(f"an answer needs {self.NEEDS}")
        if self.drop and self.delay_s is not None:
            raise ValueError("drop never answers; delay_s makes no sense with it")
        return self


class BaseRule(BaseModel):
    """One rule: which requests (``match``), what to do (``answer``), how often (``times``).
    A subclass narrows ``match`` and ``answer`` to its simulator's models."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Whether the listing (:meth:`to_json`) shows keys left at their defaults
    #: (``"drop": false``); keys not given (None) are never shown.
    LIST_DEFAULTS: ClassVar[bool] = True

    match: BaseRuleMatch = Field(default_factory=BaseRuleMatch)
    answer: BaseRuleAnswer
    times: int | None = Field(default=None, ge=1, description="Requests it applies to; default all.")

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True,
                                exclude_defaults=not self.LIST_DEFAULTS)


R = TypeVar("R", bound=BaseRule)


class RulesFile(BaseModel, Generic[R]):
    """A rules file: ``rules: [{match, answer, times}]`` (``RulesFile[HostRule]``…)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rules: list[R] = Field(default_factory=list)


@dataclass(frozen=True)
class RuleReader(Generic[R]):
    """How one simulator's rules are read: its rule model, and what its errors call a rules
    file and a rule (``"host rules file"``, ``"host rule"``)."""

    model: type[R]
    file_what: str
    rule_what: str

    def load(self, path: str | os.PathLike[str]) -> list[R]:
        """The rules of a rules file (a mistake is a ConfigError naming file and key path)."""
        model: type[RulesFile[R]] = RulesFile[self.model]  # type: ignore[name-defined]
        return list(load_model(model, path, what=self.file_what).rules)

    def parse(self, data: Any, source: str) -> R:
        """One rule from a decoded JSON object (the control socket's ``add_rule``)."""
        return validate_model(self.model, data, source, what=self.rule_what)


# -- the rules in force --------------------------------------------------------------------------


@dataclass
class ActiveRule(Generic[R]):
    """A rule in force: its id, where it came from, how often it applied."""

    id: int
    rule: R
    source: str
    used: int = 0

    @property
    def spent(self) -> bool:
        return self.rule.times is not None and self.used >= self.rule.times

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "source": self.source, "used": self.used, "spent": self.spent,
                **self.rule.to_json()}


class RuleBook(Generic[R]):
    """The rules in force, in order: the file's, then those added over the control socket."""

    def __init__(self, rules: Iterable[R] = ()) -> None:
        self._rules: list[ActiveRule[R]] = []
        self._next_id = 1
        for rule in rules:
            self.add(rule, SOURCE_FILE)

    def add(self, rule: R, source: str = SOURCE_CONTROL) -> int:
        entry = ActiveRule(self._next_id, rule, source)
        self._next_id += 1
        self._rules.append(entry)
        return entry.id

    def clear_added(self) -> list[int]:
        """Remove the rules added over the control socket; returns their ids."""
        gone = [r.id for r in self._rules if r.source == SOURCE_CONTROL]
        self._rules = [r for r in self._rules if r.source != SOURCE_CONTROL]
        return gone

    def added_in_force(self) -> int:
        """How many rules added over the control socket still apply (not spent)."""
        return sum(1 for r in self._rules if r.source == SOURCE_CONTROL and not r.spent)

    def take(self, facts: RequestFacts) -> ActiveRule[R] | None:
        """The first rule in force that matches (its use counted), or None."""
        for entry in self._rules:
            if not entry.spent and matches(entry.rule.match, facts):
                entry.used += 1
                return entry
        return None

    def to_json(self) -> list[dict[str, Any]]:
        return [r.to_json() for r in self._rules]

    def __len__(self) -> int:
        return len(self._rules)


__all__ = [
    "ActiveRule",
    "BaseRule",
    "BaseRuleAnswer",
    "BaseRuleMatch",
    "MAX_RULE_DELAY_S",
    "RequestFacts",
    "RuleBook",
    "RuleReader",
    "RulesFile",
    "matches",
]
