"""What a cardholder does at the terminal, as the rig's robot does it: present the card the way
the step says (insert the chip, swipe the stripe, tap it), and answer the terminal's prompts
(type the PIN, try again after a chip error, swipe when the terminal falls back or asks for
another swipe, sign on the pad, take a second card out of the field) until the terminal gives
its result.

The robot reacts only to what the terminal shows, and the whole payment is bounded: a prompt
it has no answer for (a PIN it was not given) cancels the transaction.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from protocols.ecr import EntryMode, EventCode, Prompt
from protocols.transactions import TxnType
from rigs.bench import Bench
from rigs.errors import NoResponse
from rigs.terminal import Outcome

PROMPTS: tuple[str, ...] = (Prompt.INSERT_CARD, Prompt.ENTER_PIN)
ROBOT_PROMPTS: tuple[str, ...] = (
    Prompt.INSERT_CARD, Prompt.ENTER_PIN, Prompt.RETRY_CHIP, Prompt.SWIPE_CARD,
    Prompt.INSERT_CHIP, Prompt.SWIPE_AGAIN, Prompt.ONE_CARD_ONLY, Prompt.WRONG_PIN,
    Prompt.SIGNATURE)


@dataclass
class Cardholder:
    """How the cardholder behaves in one payment."""

    card: str
    entry: EntryMode = EntryMode.CHIP
    pin: str | None = None
    """The PIN typed when asked (None: cancel at the PIN prompt)."""
    pins_after_wrong: list[str] = field(default_factory=list)
    """PINs typed after each WRONG_PIN (exhausted: cancel)."""
    signs: bool = True
    second_card: str | None = None
    """Tapped together with :attr:`card` (a collision); taken away when the terminal asks."""
    chip_retries: int = 0
    """How often the card is taken out and inserted again after RETRY_CHIP."""
    swipes: int = 5
    """The most swipes in one payment: asked for another after that, the cardholder gives up
    and cancels (a stripe that never reads cannot keep the robot swiping)."""
    swiped: int = 0
    prompts_seen: list[str] = field(default_factory=list)


def pay_by_chip(bench: Bench, amount_minor: int, card: str, pin: str | None,
                timeout: float = 60.0) -> Outcome:
    """Start a purchase and play the cardholder until the terminal answers (bounded)."""
    return pay(bench, amount_minor, Cardholder(card, EntryMode.CHIP, pin), timeout)


def _present(bench: Bench, who: Cardholder) -> None:
    cards = bench.cards
    if who.entry is EntryMode.SWIPE:
        _swipe(bench, who)
    elif who.entry is EntryMode.TAP:
        if who.second_card is not None:
            cards.tap_both(who.card, who.second_card)
        else:
            cards.tap(who.card)
    else:
        cards.insert(who.card)


def pay(bench: Bench, amount_minor: int, who: Cardholder, timeout: float = 60.0) -> Outcome:
    """Start a purchase entered as ``who.entry`` and answer the terminal's prompts as *who*
    would, until the terminal answers (bounded by *timeout*)."""
    terminal = bench.terminal
    since = len(terminal.events)
    terminal.start_transaction(TxnType.SALE, amount_minor, entry=who.entry.value)
    deadline = time.monotonic() + timeout
    pins = list(who.pins_after_wrong)
    retries = who.chip_retries
    presented = False
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise NoResponse(f"purchase of {amount_minor} minor units: no result within "
                                 f"{timeout:.0f} s; prompts seen: {who.prompts_seen or 'none'}")
            got = terminal.wait_for_prompt_or_outcome(ROBOT_PROMPTS, timeout=left, since=since)
            if isinstance(got, Outcome):
                return got
            index, prompt = got
            since = index + 1
            code = prompt.code
            who.prompts_seen.append(code)
            if code == Prompt.INSERT_CARD and not presented:
                _present(bench, who)
                presented = True
            elif code == Prompt.ENTER_PIN:
                _type_pin(bench, who.pin)
            elif code == Prompt.WRONG_PIN:
                _type_pin(bench, pins.pop(0) if pins else None)
            elif code == Prompt.SIGNATURE:
                terminal.sign(signed=who.signs)
            elif code == Prompt.ONE_CARD_ONLY:
                bench.cards.tap(who.card)  # the second card leaves the field
            elif code == Prompt.RETRY_CHIP:
                if retries > 0:  # else the card stays in: the terminal gives up on its own
                    retries -= 1
                    take_card_back(bench)
                    bench.cards.insert(who.card)
            elif code in (Prompt.SWIPE_CARD, Prompt.SWIPE_AGAIN):
                if bench.cards.inserted is not None:
                    take_card_back(bench)
                if who.swiped >= who.swipes:
                    terminal.cancel()  # the cardholder gives up; the terminal answers
                else:
                    _swipe(bench, who)
            elif code == Prompt.INSERT_CHIP:
                bench.cards.insert(who.card)
    finally:
        _clear_card(bench)


def _swipe(bench: Bench, who: Cardholder) -> None:
    who.swiped += 1
    bench.cards.swipe(who.card)


def _type_pin(bench: Bench, pin: str | None) -> None:
    if pin is None:
        bench.terminal.cancel()
    else:
        bench.terminal.enter_pin(pin)


def _clear_card(bench: Bench) -> None:
    cards = bench.cards
    if cards.inserted is not None:
        take_card_back(bench)
    if cards.field:
        cards.take_away()


CARD_REMOVED_BOUND = 5.0


def take_card_back(bench: Bench) -> None:
    """Remove the card and wait until the terminal says it saw it go (``CARD_REMOVED``), so the
    next purchase cannot start while the terminal still believes a card is in the slot."""
    terminal = bench.terminal
    mark = len(terminal.events)
    bench.cards.remove()
    terminal.wait_for_event(EventCode.CARD_REMOVED, timeout=CARD_REMOVED_BOUND, since=mark)
