"""The cardholder robot (rigs.cardholder.pay) against a scripted terminal and card bank: it
answers what the terminal shows and is bounded (a stripe that never reads cannot keep it
swiping)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from protocols.ecr import EntryMode, Prompt, Result
from rigs.cardholder import Cardholder, pay
from rigs.errors import NoResponse
from rigs.terminal import Outcome, TerminalEvent

CANCELLED = Outcome(result=Result.CANCELLED, ok=False)
APPROVED = Outcome(result=Result.APPROVED, ok=True)


class ScriptedTerminal:
    """Shows INSERT_CARD, then reacts to each swipe through *on_swipe* (a prompt code or an
    outcome); a cancel ends the transaction CANCELLED."""

    def __init__(self) -> None:
        self.events: list[TerminalEvent] = []
        self.outcome: Outcome | None = None
        self.cancels = 0

    def show(self, code: str) -> None:
        self.events.append(TerminalEvent("PROGRESS", code, code, 0.0))

    def start_transaction(self, txn: Any, amount: int, *, entry: str) -> None:
        self.show(Prompt.INSERT_CARD)

    def wait_for_prompt_or_outcome(self, codes: tuple[str, ...], timeout: float,
                                   since: int = 0) -> tuple[int, TerminalEvent] | Outcome:
        for i in range(since, len(self.events)):
            if self.events[i].code in codes:
                return i, self.events[i]
        if self.outcome is not None:
            return self.outcome
        raise NoResponse(f"scripted terminal: nothing within {timeout:.1f} s")

    def cancel(self) -> Outcome:
        self.cancels += 1
        self.outcome = CANCELLED
        return CANCELLED


class ScriptedCards:
    def __init__(self, terminal: ScriptedTerminal, on_swipe: Callable[[int], str | Outcome]
                 ) -> None:
        self.terminal = terminal
        self.on_swipe = on_swipe
        self.swipes = 0
        self.inserted: str | None = None
        self.field: tuple[str, ...] = ()

    def swipe(self, card: str) -> None:
        self.swipes += 1
        got = self.on_swipe(self.swipes)
        if isinstance(got, Outcome):
            self.terminal.outcome = got
        else:
            self.terminal.show(got)


class ScriptedBench:
    def __init__(self, on_swipe: Callable[[int], str | Outcome]) -> None:
        self.terminal = ScriptedTerminal()
        self.cards = ScriptedCards(self.terminal, on_swipe)


def test_a_stripe_that_never_reads_stops_the_robot_after_its_swipes() -> None:
    bench = ScriptedBench(lambda n: Prompt.SWIPE_AGAIN)
    who = Cardholder("magstripe", EntryMode.SWIPE, swipes=4)
    outcome = pay(bench, 100, who, timeout=5.0)  # type: ignore[arg-type]
    assert outcome == CANCELLED
    assert (bench.cards.swipes, bench.terminal.cancels) == (4, 1)
    assert who.prompts_seen.count(Prompt.SWIPE_AGAIN) == 4


def test_a_stripe_read_on_the_third_swipe_pays() -> None:
    bench = ScriptedBench(lambda n: APPROVED if n == 3 else Prompt.SWIPE_AGAIN)
    who = Cardholder("magstripe", EntryMode.SWIPE)
    assert pay(bench, 100, who, timeout=5.0) == APPROVED  # type: ignore[arg-type]
    assert (bench.cards.swipes, bench.terminal.cancels) == (3, 0)

