"""What a cardholder does at the terminal, as the rig's robot does it: answer the terminal's
prompts (insert the card, type the PIN) until the terminal gives its result."""

from __future__ import annotations

import time

from protocols.ecr import EventCode, Prompt
from protocols.transactions import TxnType
from rigs.bench import Bench
from rigs.errors import NoResponse
from rigs.terminal import Outcome

PROMPTS: tuple[str, ...] = (Prompt.INSERT_CARD, Prompt.ENTER_PIN)


def pay_by_chip(bench: Bench, amount_minor: int, card: str, pin: str | None,
                timeout: float = 60.0) -> Outcome:
    """Start a purchase and play the cardholder until the terminal answers (bounded)."""
    terminal = bench.terminal
    cards = bench.cards
    since = len(terminal.events)
    terminal.start_transaction(TxnType.SALE, amount_minor)
    deadline = time.monotonic() + timeout
    answered: set[str] = set()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise NoResponse(f"purchase of {amount_minor} minor units: no result within "
                             f"{timeout:.0f} s; prompts answered: {sorted(answered) or 'none'}")
        got = terminal.wait_for_prompt_or_outcome(PROMPTS, timeout=left, since=since)
        if isinstance(got, Outcome):
            if cards.inserted is not None:
                take_card_back(bench)
            return got
        index, prompt = got
        since = index + 1
        if prompt.code == Prompt.INSERT_CARD and Prompt.INSERT_CARD not in answered:
            cards.insert(card)
        elif prompt.code == Prompt.ENTER_PIN and Prompt.ENTER_PIN not in answered:
            if pin is None:
                terminal.cancel()
            else:
                terminal.enter_pin(pin)
        answered.add(prompt.code)


CARD_REMOVED_BOUND = 5.0


def take_card_back(bench: Bench) -> None:
    """Remove the card and wait until the terminal says it saw it go (``CARD_REMOVED``), so the
    next purchase cannot start while the terminal still believes a card is in the slot."""
    terminal = bench.terminal
    mark = len(terminal.events)
    bench.cards.remove()
    terminal.wait_for_event(EventCode.CARD_REMOVED, timeout=CARD_REMOVED_BOUND, since=mark)
