"""Why a scenario did not pass, in three categories a lab can act on.

* **Product defect** — the terminal did not do what the procedure says: a Then step's assertion
  failed, or the terminal itself stopped answering or sent frames the rig could not decode.
* **Bench problem** — the bench could not carry the scenario: an instrument unreachable or
  answering with an error, a bench that could not be returned to nominal (a fault that could not
  be cleared), a bench file that does not describe the bench.
* **Rig bug** — the rig failed itself (any other exception: a fault rule that raised, a
  ``TypeError`` in a step).

One table (:data:`CATEGORIES`) decides, on the failure's first line as the report shows it
(``<exception type>: <message>``, the type fully qualified for the rig's own exceptions): the
console summary classifies with :func:`classify`, and the Allure report gets the same table as
its ``categories.json`` (:func:`allure_categories`), so both always agree.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


class Category(enum.StrEnum):
    PRODUCT_DEFECT = "Product defect: the terminal did not behave as the procedure says"
    BENCH_PROBLEM = "Bench problem: an instrument unreachable or a fault that could not be cleared"
    RIG_BUG = "Rig bug: the rig itself failed"


@dataclass(frozen=True)
class Rule:
    category: Category
    statuses: tuple[str, ...]
    """Allure statuses the rule applies to (``failed``: an assertion; ``broken``: anything
    else)."""
    message: str
    """A regular expression the failure's first line must match from its start."""


_TERMINAL = r"\w*TerminalLink\("
_RIG_ERR = r"(?:protocols|rigs)\.errors\."

CATEGORIES: Sequence[Rule] = (
    Rule(Category.PRODUCT_DEFECT, ("failed", "broken"), r"AssertionError\b"),
    Rule(Category.PRODUCT_DEFECT, ("broken",),
         rf"{_RIG_ERR}(?:NoResponse|DecodeError|FramingError|ProtocolError): {_TERMINAL}"),
    Rule(Category.BENCH_PROBLEM, ("failed", "broken"),
         rf"{_RIG_ERR}(?:NoResponse|TransportError|InstrumentError|BenchNotNominal|RampError|"
         rf"TriggerError|DeviceStateError|ConfigError|LimitError|DecodeError|FramingError|"
         rf"ProtocolError)\b"),
    Rule(Category.BENCH_PROBLEM, ("failed", "broken"),
         r"Failed: (?:the virtual bench could not be brought up|the bench could not be "
         r"returned to nominal)"),
    Rule(Category.RIG_BUG, ("failed", "broken"), r"."),
)
"""First match wins; the last rule catches the rest."""

_COMPILED = [(rule, re.compile(rule.message, re.DOTALL)) for rule in CATEGORIES]


def classify(status: str, first_line: str) -> Category | None:
    """The category of a scenario that ended with *status* (Allure's: passed, failed, broken,
    skipped) and the failure line *first_line*; None when it did not fail."""
    if status not in ("failed", "broken"):
        return None
    for rule, pattern in _COMPILED:
        if status in rule.statuses and pattern.match(first_line):
            return rule.category
    return Category.RIG_BUG


def allure_categories() -> list[Mapping[str, object]]:
    """The same table as Allure's ``categories.json`` (its regex must match the whole
    message, hence the trailing ``.*``)."""
    return [{"name": rule.category.value, "matchedStatuses": list(rule.statuses),
             "messageRegex": f"(?s){rule.message}.*"} for rule in CATEGORIES]


__all__ = ["CATEGORIES", "Category", "Rule", "allure_categories", "classify"]
