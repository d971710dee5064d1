"""Response rules of the acquirer host simulator (virtual bench): answer some requests with a
given response code, late, or never.

``fixtures/host/rules.yaml`` is :class:`RulesFile`::

    rules:
      - match: {terminal_id: "10000001", mti: "0200", proc_code: "000000", amount_min: 5000}
        answer: {response_code: "51"}
        times: 1

``match`` keys (all optional; every key given must hold; an empty match takes every request):
``terminal_id``, ``pan_last4`` (of field 2 or 35; a request without a PAN never matches it),
``mti`` (the request's), ``proc_code``, ``amount_min`` / ``amount_max`` (minor units, inclusive;
a request without an amount never matches them).  ``answer``: ``response_code`` (the host still
checks terminal, sign-in, MAC and PIN block first, then answers this code instead of deciding,
booking nothing), ``delay_s`` (answer that much later; the server bounds it), ``drop: true``
(never answer; the request is processed as usual, so an approval is booked and the terminal
must reverse it).  ``times``: how many requests the rule applies to (default: all).

The first matching rule wins.  The file's rules are the bench's baseline; rules added over the
control socket (:mod:`sim.host.control`) come after them and are what ``clear_rules`` removes.
Read through :mod:`protocols.yamlmodel`: a mistake names the file and the key path.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from protocols.yamlmodel import TerminalId, load_model, validate_model

WHAT = "host rules file"
#: Longest delay a rule may ask for (s); the server bounds it again (--max-delay).
MAX_RULE_DELAY_S = 120.0
SOURCE_FILE = "file"
SOURCE_CONTROL = "control"


def _digits(value: object, n: int, what: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        raise ValueError(f"expected {what} as a quoted string of {n} digits (YAML reads "
                         f"unquoted digits as a number)")
    if not isinstance(value, str) or len(value) != n or not value.isdigit():
        raise ValueError(f"expected {what}: {n} digits, got {value!r}")
    return value


class RuleMatch(BaseModel):
    """Which requests a rule takes (every key given must hold)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    terminal_id: TerminalId | None = None
    pan_last4: str | None = Field(default=None, description="Last 4 digits of the card number.")
    mti: str | None = Field(default=None, description="Request MTI, e.g. 0200.")
    proc_code: str | None = Field(default=None, description="Processing code (field 3), 6 digits.")
    amount_min: int | None = Field(default=None, ge=0, description="Minor units, inclusive.")
    amount_max: int | None = Field(default=None, ge=0, description="Minor units, inclusive.")

    @field_validator("pan_last4", mode="before")
    @classmethod
    def _last4(cls, value: object) -> object:
        return None if value is None else _digits(value, 4, "the last 4 digits of the PAN")

    @field_validator("mti", mode="before")
    @classmethod
    def _mti(cls, value: object) -> object:
        if value is None:
            return None
        mti = _digits(value, 4, "a message type (MTI)")
        if int(mti[2]) % 2:
            raise ValueError(f"{mti} is a response MTI; rules match requests (third digit even)")
        return mti

    @field_validator("proc_code", mode="before")
    @classmethod
    def _proc(cls, value: object) -> object:
        return None if value is None else _digits(value, 6, "a processing code")

    @model_validator(mode="after")
    def _range(self) -> RuleMatch:
        if (self.amount_min is not None and self.amount_max is not None
                and self.amount_min > self.amount_max):
            raise ValueError(f"amount_min {self.amount_min} > amount_max {self.amount_max}")
        return self


class RuleAnswer(BaseModel):
    """What the host does with a request the rule takes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    response_code: str | None = Field(default=None, description="Field 39 to answer (not 00).")
    delay_s: float | None = Field(default=None, gt=0, le=MAX_RULE_DELAY_S,
                                  description="Answer this many seconds late.")
    drop: bool = Field(False, description="Never answer.")

    @field_validator("response_code", mode="before")
    @classmethod
    def _code(cls, value: object) -> object:
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            raise ValueError("expected a response code as a quoted string of 2 characters "
                             "(YAML reads unquoted digits as a number)")
        if not (isinstance(value, str) and len(value) == 2 and value.isascii()
                and value.isalnum() and value == value.upper()):
            raise ValueError(f"expected a response code: 2 upper-case letters or digits, got "
                             f"{value!r}")
        if value == "00":
            raise ValueError("a rule refuses; 00 is the host's own decision (leave "
                             "response_code out to let the host decide)")
        return value

    @model_validator(mode="after")
    def _something(self) -> RuleAnswer:
        if self.response_code is None and self.delay_s is None and not self.drop:
            raise ValueError("an answer needs response_code, delay_s or drop: true")
        if self.drop and self.delay_s is not None:
            raise ValueError("drop never answers; delay_s makes no sense with it")
        return self

    def describe(self) -> str:
        parts = []
        if self.response_code is not None:
            parts.append(f"code {self.response_code}")
        if self.delay_s is not None:
            parts.append(f"delay {self.delay_s:g} s")
        if self.drop:
            parts.append("drop")
        return ", ".join(parts)


class HostRule(BaseModel):
    """One rule: which requests (``match``), what to do (``answer``), how often (``times``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    match: RuleMatch = Field(default_factory=lambda: RuleMatch())
    answer: RuleAnswer
    times: int | None = Field(default=None, ge=1, description="Requests it applies to; default all.")


class RulesFile(BaseModel):
    """fixtures/host/rules.yaml: ``rules: [{match, answer, times}]``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rules: list[HostRule] = Field(default_factory=list)


def load_rules(path: str | os.PathLike[str]) -> list[HostRule]:
    """The rules of a rules file (a mistake is a ConfigError naming file and key path)."""
    return list(load_model(RulesFile, path, what=WHAT).rules)


def parse_rule(data: Any, source: str) -> HostRule:
    """One rule from a decoded JSON object (the control socket's ``add_rule``)."""
    return validate_model(HostRule, data, source, what="host rule")


# -- the rules in force --------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestFacts:
    """What rules match on, taken from a request."""

    terminal_id: str | None
    pan_last4: str | None
    mti: str | None
    proc_code: str | None
    amount: int | None

    @classmethod
    def of(cls, doc: Mapping[str, str]) -> RequestFacts:
        pan = doc.get("2") or (doc.get("35") or "").upper().split("D", 1)[0] or None
        amount = doc.get("4")
        return cls(terminal_id=doc.get("41"), pan_last4=pan[-4:] if pan else None,
                   mti=doc.get("t"), proc_code=doc.get("3"),
                   amount=int(amount) if amount and amount.isdigit() else None)


def matches(match: RuleMatch, facts: RequestFacts) -> bool:
    """Whether every key *match* gives holds for the request."""
    pairs = ((match.terminal_id, facts.terminal_id), (match.pan_last4, facts.pan_last4),
             (match.mti, facts.mti), (match.proc_code, facts.proc_code))
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
    rule: HostRule
    source: str
    used: int = 0

    @property
    def spent(self) -> bool:
        return self.rule.times is not None and self.used >= self.rule.times

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "source": self.source, "used": self.used, "spent": self.spent,
                **self.rule.model_dump(mode="json", exclude_none=True)}


class RuleBook:
    """The rules in force, in order: the file's, then those added over the control socket."""

    def __init__(self, rules: Iterable[HostRule] = ()) -> None:
        self._rules: list[ActiveRule] = []
        self._next_id = 1
        for rule in rules:
            self.add(rule, SOURCE_FILE)

    def add(self, rule: HostRule, source: str = SOURCE_CONTROL) -> int:
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
    "HostRule",
    "MAX_RULE_DELAY_S",
    "RequestFacts",
    "RuleAnswer",
    "RuleBook",
    "RuleMatch",
    "RulesFile",
    "load_rules",
    "matches",
    "parse_rule",
]
