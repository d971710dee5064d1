"""Rules of the QR platform simulator: answer some requests late, refuse them, never answer
them, or make a payment code wait for the customer's password.

``fixtures/qr/rules.yaml`` is :class:`RulesFile`::

    rules:
      - match: {operation: micropay, terminal_id: "10000001", wallet: wechat, amount_min: 5000}
        answer: {user_paying: true}
        times: 1

``match`` keys (all optional; every key given must hold; an empty match takes every request):
``operation`` (:class:`protocols.qr.Operation`), ``terminal_id``, ``wallet`` (the wallet of a
micropay's payment code; other requests never match it), ``amount_min`` / ``amount_max``
(minor units, inclusive; a request without an amount never matches them).  ``answer``:
``error`` (a code of :data:`protocols.qr.RULE_ERRORS`: the platform checks the terminal and the
signature first, then refuses with it and does nothing), ``delay_s`` (answer that much later;
the server bounds it), ``drop: true`` (never answer: the request is carried out, the answer is
lost), ``user_paying: true`` (a micropay waits for the customer's password whatever the code
says).  ``times``: how many requests the rule applies to (default: all).

The first matching rule wins.  The file's rules are the platform's baseline; rules added over
the control socket (:mod:`sim.qr.control`) come after them and are what ``clear_rules``
removes.  Read through :mod:`protocols.yamlmodel`: a mistake names the file and the key path.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from protocols.qr import RULE_ERRORS, ErrorCode, Operation, Wallet
from protocols.yamlmodel import TerminalId, load_model, validate_model

WHAT = "QR platform rules file"
#: Longest delay a rule may ask for (s); the server bounds it again (--max-delay).
MAX_RULE_DELAY_S = 120.0
SOURCE_FILE = "file"
SOURCE_CONTROL = "control"


class RuleMatch(BaseModel):
    """Which requests a rule takes (every key given must hold)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    operation: Operation | None = None
    terminal_id: TerminalId | None = None
    wallet: Wallet | None = Field(default=None,
                                  description="The wallet of a micropay's payment code.")
    amount_min: int | None = Field(default=None, ge=0, description="Minor units, inclusive.")
    amount_max: int | None = Field(default=None, ge=0, description="Minor units, inclusive.")

    @model_validator(mode="after")
    def _range(self) -> RuleMatch:
        if (self.amount_min is not None and self.amount_max is not None
                and self.amount_min > self.amount_max):
            raise ValueError(f"amount_min {self.amount_min} > amount_max {self.amount_max}")
        return self


class RuleAnswer(BaseModel):
    """What the platform does with a request the rule takes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    error: ErrorCode | None = Field(default=None,
                                    description="Refuse with this code; nothing is done.")
    delay_s: float | None = Field(default=None, gt=0, le=MAX_RULE_DELAY_S,
                                  description="Answer this many seconds late.")
    drop: bool = Field(False, description="Never answer (the request is carried out).")
    user_paying: bool = Field(False, description="A micropay waits for the wallet password.")

    @field_validator("error")
    @classmethod
    def _rule_error(cls, value: ErrorCode | None) -> ErrorCode | None:
        if value is not None and value not in RULE_ERRORS:
            raise ValueError(f"{value.value} is not a refusal a rule may force; expected one of "
                             f"{', '.join(sorted(e.value for e in RULE_ERRORS))}")
        return value

    @model_validator(mode="after")
    def _something(self) -> RuleAnswer:
        if self.error is None and self.delay_s is None and not self.drop and not self.user_paying:
            raise ValueError("an answer needs error, delay_s, drop: true or user_paying: true")
        if self.drop and self.delay_s is not None:
            raise ValueError("drop never answers; delay_s makes no sense with it")
        if self.error is not None and self.user_paying:
            raise ValueError("error refuses the request; user_paying makes no sense with it")
        return self

    def describe(self) -> str:
        parts = []
        if self.error is not None:
            parts.append(f"error {self.error.value}")
        if self.delay_s is not None:
            parts.append(f"delay {self.delay_s:g} s")
        if self.drop:
            parts.append("drop")
        if self.user_paying:
            parts.append("user paying")
        return ", ".join(parts)


class QrRule(BaseModel):
    """One rule: which requests (``match``), what to do (``answer``), how often (``times``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    match: RuleMatch = Field(default_factory=lambda: RuleMatch())
    answer: RuleAnswer
    times: int | None = Field(default=None, ge=1, description="Requests it applies to; default all.")

    @model_validator(mode="after")
    def _user_paying_is_micropay(self) -> QrRule:
        if self.answer.user_paying and self.match.operation not in (None, Operation.MICROPAY):
            raise ValueError(f"user_paying applies to micropay; match.operation is "
                             f"{self.match.operation}")
        return self


class RulesFile(BaseModel):
    """fixtures/qr/rules.yaml: ``rules: [{match, answer, times}]``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rules: list[QrRule] = Field(default_factory=list)


def load_rules(path: str | os.PathLike[str]) -> list[QrRule]:
    """The rules of a rules file (a mistake is a ConfigError naming file and key path)."""
    return list(load_model(RulesFile, path, what=WHAT).rules)


def parse_rule(data: Any, source: str) -> QrRule:
    """One rule from a decoded JSON object (the control socket's ``add_rule``)."""
    return validate_model(QrRule, data, source, what="QR platform rule")


# -- the rules in force --------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestFacts:
    """What rules match on, taken from an authenticated request."""

    operation: Operation
    terminal_id: str
    wallet: Wallet | None = None
    amount: int | None = None


def matches(match: RuleMatch, facts: RequestFacts) -> bool:
    """Whether every key *match* gives holds for the request."""
    pairs = ((match.operation, facts.operation), (match.terminal_id, facts.terminal_id),
             (match.wallet, facts.wallet))
    if any(want is not None and want != got for want, got in pairs):
        return False
    if match.amount_min is None and match.amount_max is None:
        return True
    if facts.amount is None:
        return False
    return ((match.amount_min is None or facts.amount >= match.amount_min)
            and (match.amount_max is None or facts.amount <= match.amount_max))


@dataclass
class ActiveRule:
    """A rule in force: its id, where it came from, how often it applied."""

    id: int
    rule: QrRule
    source: str
    used: int = 0

    @property
    def spent(self) -> bool:
        return self.rule.times is not None and self.used >= self.rule.times

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "source": self.source, "used": self.used, "spent": self.spent,
                **self.rule.model_dump(mode="json", exclude_none=True, exclude_defaults=True)}


class RuleBook:
    """The rules in force, in order: the file's, then those added over the control socket."""

    def __init__(self, rules: Iterable[QrRule] = ()) -> None:
        self._rules: list[ActiveRule] = []
        self._next_id = 1
        for rule in rules:
            self.add(rule, SOURCE_FILE)

    def add(self, rule: QrRule, source: str = SOURCE_CONTROL) -> int:
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

    def take(self, facts: RequestFacts) -> ActiveRule | None:
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
    "MAX_RULE_DELAY_S",
    "QrRule",
    "RequestFacts",
    "RuleAnswer",
    "RuleBook",
    "RuleMatch",
    "RulesFile",
    "load_rules",
    "matches",
    "parse_rule",
]
