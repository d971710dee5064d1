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

from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import Field, field_validator

from protocols.digits import ascii_digits
from protocols.yamlmodel import TerminalId
from sim import rules
from sim.rules import BaseRule, BaseRuleAnswer, BaseRuleMatch, RuleReader, matches


def _digits(value: object, n: int, what: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        raise ValueError(f"expected {what} as a quoted string of {n} digits (YAML reads "
                         f"unquoted digits as a number)")
    if not isinstance(value, str) or len(value) != n or not value.isdigit():
        raise ValueError(f"expected {what}: {n} digits, got {value!r}")
    return value


class RuleMatch(BaseRuleMatch):
    """Which requests a rule takes (every key given must hold): these, and the amount range."""

    terminal_id: TerminalId | None = None
    pan_last4: str | None = Field(default=None, description="Last 4 digits of the card number.")
    mti: str | None = Field(default=None, description="Request MTI, e.g. 0200.")
    proc_code: str | None = Field(default=None, description="Processing code (field 3), 6 digits.")

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


class RuleAnswer(BaseRuleAnswer):
    """What the host does with a request the rule takes: a response code, late, or never."""

    NEEDS = "response_code, delay_s or drop: true"

    response_code: str | None = Field(default=None, description="Field 39 to answer (not 00).")

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

    def actions(self) -> list[str]:
        code = [f"code {self.response_code}"] if self.response_code is not None else []
        return [*code, *super().actions()]


class HostRule(BaseRule):
    """One rule: which requests (``match``), what to do (``answer``), how often (``times``)."""

    match: RuleMatch = Field(default_factory=RuleMatch)
    answer: RuleAnswer


RulesFile = rules.RulesFile[HostRule]
RuleBook = rules.RuleBook[HostRule]
READER = RuleReader(HostRule, "host rules file", "host rule")
load_rules = READER.load
parse_rule = READER.parse


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
                   amount=int(amount) if amount and ascii_digits(amount) else None)


__all__ = [
    "HostRule",
    "RequestFacts",
    "RuleAnswer",
    "RuleBook",
    "RuleMatch",
    "RulesFile",
    "load_rules",
    "matches",
    "parse_rule",
]
