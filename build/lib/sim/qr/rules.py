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

from dataclasses import dataclass

from pydantic import Field, field_validator, model_validator

from protocols.qr import RULE_ERRORS, ErrorCode, Operation, Wallet
from protocols.yamlmodel import TerminalId
from sim import rules
from sim.rules import BaseRule, BaseRuleAnswer, BaseRuleMatch, RuleReader


class RuleMatch(BaseRuleMatch):
    """Which requests a rule takes (every key given must hold): these, and the amount range."""

    operation: Operation | None = None
    terminal_id: TerminalId | None = None
    wallet: Wallet | None = Field(default=None,
                                  description="The wallet of a micropay's payment code.")


class RuleAnswer(BaseRuleAnswer):
    """What the platform does with a request the rule takes: refuse it, late, never, or make a
    micropay wait for the wallet password."""

    NEEDS = "error, delay_s, drop: true or user_paying: true"

    error: ErrorCode | None = Field(default=None,
                                    description="Refuse with this code; nothing is done.")
    user_paying: bool = Field(False, description="A micropay waits for the wallet password.")

    @field_validator("error")
    @classmethod
    def _rule_error(cls, value: ErrorCode | None) -> ErrorCode | None:
        if value is not None and value not in RULE_ERRORS:
            raise ValueError(f"{value.value} is not a refusal a rule may force; expected one of "
                             f"{', '.join(sorted(e.value for e in RULE_ERRORS))}")
        return value

    @model_validator(mode="after")
    def _refusal_alone(self) -> RuleAnswer:
        if self.error is not None and self.user_paying:
            raise ValueError("error refuses the request; user_paying makes no sense with it")
        return self

    def actions(self) -> list[str]:
        error = [f"error {self.error.value}"] if self.error is not None else []
        return [*error, *super().actions(), *(["user paying"] if self.user_paying else [])]


class QrRule(BaseRule):
    """One rule: which requests (``match``), what to do (``answer``), how often (``times``)."""

    LIST_DEFAULTS = False

    match: RuleMatch = Field(default_factory=RuleMatch)
    answer: RuleAnswer

    @model_validator(mode="after")
    def _user_paying_is_micropay(self) -> QrRule:
        if self.answer.user_paying and self.match.operation not in (None, Operation.MICROPAY):
            raise ValueError(f"user_paying applies to micropay; match.operation is "
                             f"{self.match.operation}")
        return self


RulesFile = rules.RulesFile[QrRule]
RuleBook = rules.RuleBook[QrRule]
READER = RuleReader(QrRule, "QR platform rules file", "QR platform rule")
load_rules = READER.load
parse_rule = READER.parse


# -- the rules in force --------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestFacts:
    """What rules match on, taken from an authenticated request."""

    operation: Operation
    terminal_id: str
    wallet: Wallet | None = None
    amount: int | None = None


__all__ = [
    "QrRule",
    "RequestFacts",
    "RuleAnswer",
    "RuleBook",
    "RuleMatch",
    "RulesFile",
    "load_rules",
    "parse_rule",
]
