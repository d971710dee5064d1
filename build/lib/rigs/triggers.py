"""Faults armed on the scenario's event stream: "cut the power when the terminal starts
printing", "pull the card at the second GENERATE AC", "dip the supply when it draws more than
1 A", "drop the link 200 ms after the 0200 leaves".

A :class:`Trigger` is a pattern over :class:`~rigs.events.Event` (source, kind, name, a numeric
threshold on a data value), the occurrence that fires it (``nth``) and a delay after it.  The
:class:`Armer` subscribes to the stream; when the nth matching event is published it hands the
firing to its own worker thread (publishers are instrument threads that must not block), waits
the delay, and calls the fire function the bench gave it.  Arming, firing and clearing land in
the fault ledger and the timeline with the triggering event's time and the firing time, on the
stream's one clock.

Only events published live can trigger (what the terminal says, APDUs relayed by the card
bank, supply samples and setpoints, relay changes, faults firing).  An ISO 8583 message type
(:func:`on_mti`) is noted by a ``watch_message`` rule of the in-line injector as the message
crosses; the bench polls the injector for those notes every :data:`WIRE_POLL_S` while such a
trigger is armed and publishes them as ``network``/``seen`` events at the wire's time, so a
fault armed on one fires tens of milliseconds after the message crossed.  For the very frame
(drop only the 0210, corrupt the 0200) use the injector's own rules, which act on it.

An exception inside a fire function is kept and raised at the end of the scenario
(:meth:`Armer.raise_errors`): a broken fault never passes for an injected one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from rigs.errors import ConfigError, TriggerError
from rigs.events import Event, EventStream, Source

log = logging.getLogger(__name__)

MAX_DELAY_MS = 600_000.0
WIRE_POLL_S = 0.02
"""How often the bench asks the injector for ISO 8583 messages it noted (on_mti triggers)."""
SEEN = "seen"
"""Event kind of an ISO 8583 message the injector noted as it crossed (name: the MTI)."""


@dataclass(frozen=True)
class Trigger:
    """Which event fires an armed fault.  Every given criterion must hold; ``at_least`` /
    ``at_most`` compare the number ``data[value_key]`` of the event."""

    source: Source | None = None
    kind: str | None = None
    name: frozenset[str] | None = None
    value_key: str | None = None
    at_least: float | None = None
    at_most: float | None = None
    nth: int = 1
    delay_ms: float = 0.0
    text: str = ""
    """How a person says it ("when the terminal starts printing"): the ledger shows it."""

    def __post_init__(self) -> None:
        if self.nth < 1:
            raise ConfigError(f"trigger {self.describe()}: nth must be >= 1, got {self.nth}")
        if not 0.0 <= self.delay_ms <= MAX_DELAY_MS:
            raise ConfigError(f"trigger {self.describe()}: delay_ms must be within "
                              f"0..{MAX_DELAY_MS:g}, got {self.delay_ms!r}")
        if (self.at_least is not None or self.at_most is not None) and not self.value_key:
            raise ConfigError(f"trigger {self.describe()}: a threshold needs value_key")

    def matches(self, ev: Event) -> bool:
        if self.source is not None and ev.source is not self.source:
            return False
        if self.kind is not None and ev.kind != self.kind:
            return False
        if self.name is not None and ev.name not in self.name:
            return False
        if self.value_key is not None:
            value = ev.data.get(self.value_key)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                return False
            if self.at_least is not None and value < self.at_least:
                return False
            if self.at_most is not None and value > self.at_most:
                return False
        return True

    def describe(self) -> str:
        if self.text:
            base = self.text
        else:
            parts = [p for p in (self.source and self.source.value, self.kind,
                                 self.name and "|".join(sorted(self.name))) if p]
            if self.value_key:
                if self.at_least is not None:
                    parts.append(f"{self.value_key}>={self.at_least:g}")
                if self.at_most is not None:
                    parts.append(f"{self.value_key}<={self.at_most:g}")
            base = "on " + ":".join(parts) if parts else "on any event"
        nth = f" (occurrence {self.nth})" if self.nth > 1 else ""
        delay = f" + {self.delay_ms:g} ms" if self.delay_ms else ""
        return f"{base}{nth}{delay}"


# -- the triggers steps use ---------------------------------------------------------------------
def on_terminal(code: str, *, nth: int = 1, delay_ms: float = 0.0, text: str = "") -> Trigger:
    """A display event or progress code of the terminal (``PRINTING``, ``PRINT``, ``PAPER_OUT``)."""
    return Trigger(Source.TERMINAL, None, frozenset({code}), nth=nth, delay_ms=delay_ms,
                   text=text or f"when the terminal shows {code}")


def on_apdu(ins_name: str, *, nth: int = 1, delay_ms: float = 0.0, text: str = "") -> Trigger:
    """A command APDU the card bank relayed, by instruction name (``GENERATE AC``)."""
    return Trigger(Source.CARDS, "c-apdu", frozenset({ins_name}), nth=nth, delay_ms=delay_ms,
                   text=text or f"when the terminal sends {ins_name} to the card")


def on_current_above(amps: float, *, nth: int = 1, delay_ms: float = 0.0,
                     text: str = "") -> Trigger:
    """A supply sample drawing at least *amps*."""
    return Trigger(Source.POWER, "sample", None, "amps", at_least=amps, nth=nth,
                   delay_ms=delay_ms, text=text or f"when the terminal draws >= {amps:g} A")


def on_mti(mti: str, *, nth: int = 1, delay_ms: float = 0.0, text: str = "") -> Trigger:
    """An ISO 8583 message of *mti* crossing the in-line injector (either direction)."""
    return Trigger(Source.NETWORK, SEEN, frozenset({mti}), nth=nth, delay_ms=delay_ms,
                   text=text or f"when a {mti} crosses the network")


def on_fault_fired(kind: str, *, nth: int = 1, delay_ms: float = 0.0, text: str = "") -> Trigger:
    """Another fault of *kind* firing (chains: "two seconds after the cable is pulled")."""
    return Trigger(Source.FAULT, "fired", frozenset({kind}), nth=nth, delay_ms=delay_ms,
                   text=text or f"when fault {kind} fires")


# -- arming -------------------------------------------------------------------------------------
Fire = Callable[[Event], None]


@dataclass
class Armed:
    """One armed trigger: its counter and what fires it."""

    id: int
    trigger: Trigger
    fire: Fire
    seen: int = 0
    done: bool = False
    event: Event | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)


class Armer:
    """Watches one event stream for the bench's armed triggers.  See the module doc."""

    def __init__(self, stream: EventStream) -> None:
        self.stream = stream
        self._armed: dict[int, Armed] = {}
        self._next = 1
        self._lock = threading.Lock()
        self._workers: list[threading.Thread] = []
        self._errors: list[str] = []
        stream.subscribe(self._on_event)

    def arm(self, trigger: Trigger, fire: Fire) -> int:
        with self._lock:
            armed = Armed(self._next, trigger, fire)
            self._next += 1
            self._armed[armed.id] = armed
        return armed.id

    def disarm(self, armed_id: int) -> bool:
        """Stop a trigger; True if it had not fired (a delayed firing still waiting is
        cancelled too)."""
        with self._lock:
            armed = self._armed.pop(armed_id, None)
        if armed is None:
            return False
        armed.cancelled.set()
        return not armed.done

    def pending(self) -> list[Armed]:
        with self._lock:
            return [a for a in self._armed.values() if not a.done]

    def _on_event(self, ev: Event) -> None:
        """Called by the stream under no lock of ours, in the publisher's thread: count, and
        hand a firing to a worker."""
        due: list[Armed] = []
        with self._lock:
            for armed in self._armed.values():
                if armed.done or not armed.trigger.matches(ev):
                    continue
                armed.seen += 1
                if armed.seen >= armed.trigger.nth:
                    armed.done, armed.event = True, ev
                    due.append(armed)
        for armed in due:
            worker = threading.Thread(target=self._fire, args=(armed,), daemon=True,
                                      name=f"trigger-{armed.id}")
            self._workers.append(worker)
            worker.start()

    def _fire(self, armed: Armed) -> None:
        assert armed.event is not None
        if armed.trigger.delay_ms and armed.cancelled.wait(armed.trigger.delay_ms / 1000.0):
            return
        if armed.cancelled.is_set():
            return
        try:
            armed.fire(armed.event)
        except Exception as exc:  # kept; raised at the end of the scenario
            log.exception("trigger %s: firing failed", armed.trigger.describe())
            with self._lock:
                self._errors.append(f"fault armed {armed.trigger.describe()} could not be "
                                    f"fired: {type(exc).__name__}: {exc}")

    def settle(self, bound_s: float = 5.0) -> None:
        """Wait (bounded) for firings in progress: a delayed one still waiting is cancelled."""
        with self._lock:
            armed = list(self._armed.values())
            workers, self._workers = self._workers, []
        for a in armed:
            a.cancelled.set()
        for worker in workers:
            worker.join(timeout=bound_s)
            if worker.is_alive():
                with self._lock:
                    self._errors.append(f"a fault firing ({worker.name}) did not finish within "
                                        f"{bound_s:.1f} s")

    def reset(self) -> None:
        """A new scenario: forget every trigger (call :meth:`settle` first)."""
        with self._lock:
            for a in self._armed.values():
                a.cancelled.set()
            self._armed.clear()
            self._errors.clear()

    def errors(self) -> list[str]:
        with self._lock:
            return list(self._errors)

    def raise_errors(self) -> None:
        errors = self.errors()
        if errors:
            raise TriggerError("; ".join(errors))
