"""The per-scenario event stream: one timeline of what every instrument saw, on one clock.

Every instrument driver publishes timestamped :class:`Event` records into the bench's
:class:`EventStream` (ECR events and frames, APDUs by instruction, ISO 8583 messages by MTI,
supply samples and setpoints, relay changes, faults armed / fired / cleared).  Steps query it
(``stream.find(...)``, ``stream.wait_for(...)``) and the report attaches it as one timeline a
person reads top to bottom.  The fault catalogue arms faults on patterns of it.

The clock is wall time (``time.time()``): ISO 8583 messages decoded from a capture carry the
capture's wall-clock timestamps, so every source lands on the same axis.

A driver that is not attached to a stream publishes into :data:`NULL_SINK` (nothing kept).
"""

from __future__ import annotations

import datetime as dt
import enum
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

from protocols.masking import scrub
from rigs.errors import NoResponse


class Source(enum.StrEnum):
    """Which instrument (or the rig itself) published an event."""

    TERMINAL = "terminal"
    CARDS = "cards"
    POWER = "power"
    SWITCH = "switch"
    NETWORK = "network"
    ACQUIRER = "acquirer"
    QR = "qr"  # the QR payment platform (and the customer's wallet the rig plays)
    FAULT = "fault"
    RIG = "rig"


@dataclass(frozen=True)
class Event:
    """One thing that happened.  ``name`` is the code a step matches on (``PAPER_OUT``,
    ``GENERATE AC``, ``0200``, ``sample``); ``detail`` is masked text for people; ``data`` holds
    typed values a query may test (volts, amps, relay channel, STAN)."""

    t: float
    source: Source
    kind: str
    name: str
    detail: str = ""
    data: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))
    seq: int = 0

    def line(self, t0: float | None = None) -> str:
        when = dt.datetime.fromtimestamp(self.t).strftime("%H:%M:%S.%f")[:-3]
        rel = "" if t0 is None else f" +{self.t - t0:8.3f}s"
        detail = f"  {self.detail}" if self.detail else ""
        return f"{when}{rel}  {self.source.value:<8} {self.kind:<10} {self.name}{detail}"


class EventSink(Protocol):
    """What a driver needs to publish."""

    def publish(self, source: Source, kind: str, name: str, detail: str = "", *,
                t: float | None = None, data: Mapping[str, object] | None = None) -> None: ...


class _NullSink:
    def publish(self, source: Source, kind: str, name: str, detail: str = "", *,
                t: float | None = None, data: Mapping[str, object] | None = None) -> None:
        return None


NULL_SINK: EventSink = _NullSink()

Match = Callable[[Event], bool]


def matching(*, source: Source | None = None, kind: str | None = None,
             name: str | Iterable[str] | None = None) -> Match:
    """A predicate on events: every given criterion must hold (``name`` may be a set)."""
    names = None if name is None else ({name} if isinstance(name, str) else set(name))

    def test(ev: Event) -> bool:
        return ((source is None or ev.source is source) and (kind is None or ev.kind == kind)
                and (names is None or ev.name in names))
    return test


class EventStream:
    """Thread-safe, append-only list of events with bounded waits.  ``clear()`` starts a new
    scenario; :meth:`mark` / ``since=`` let a step accept only what happened after a moment."""

    def __init__(self, clock: Callable[[], float] = time.time, limit: int = 200_000) -> None:
        self.clock = clock
        self.limit = limit
        self._events: list[Event] = []
        self._dropped = 0
        self._seq = 0
        self._cond = threading.Condition()
        self._subscribers: list[Callable[[Event], None]] = []

    def subscribe(self, callback: Callable[[Event], None]) -> None:
        """Call *callback* with every event published from now on, in the publisher's thread,
        after it is stored and outside the stream's lock (so it may query the stream).  It must
        return quickly (the fault armer hands its work to a thread)."""
        with self._cond:
            self._subscribers.append(callback)

    def publish(self, source: Source, kind: str, name: str, detail: str = "", *,
                t: float | None = None, data: Mapping[str, object] | None = None) -> None:
        with self._cond:
            self._seq += 1
            ev = Event(self.clock() if t is None else t, source, kind, name, scrub(detail),
                       MappingProxyType(dict(data or {})), self._seq)
            if len(self._events) >= self.limit:
                self._dropped += 1
            else:
                self._events.append(ev)
                self._cond.notify_all()
            subscribers = list(self._subscribers)
        for callback in subscribers:
            callback(ev)

    def clear(self) -> None:
        with self._cond:
            self._events.clear()
            self._dropped = 0

    def mark(self) -> int:
        """The sequence number of the newest event (0 if none): ``since=mark`` sees later ones."""
        with self._cond:
            return self._seq

    def events(self, match: Match | None = None, *, since: int = 0) -> list[Event]:
        with self._cond:
            return [ev for ev in self._events if ev.seq > since and (match is None or match(ev))]

    def find(self, match: Match, *, since: int = 0) -> Event | None:
        found = self.events(match, since=since)
        return found[0] if found else None

    def wait_for(self, match: Match, timeout: float, *, since: int = 0,
                 what: str = "a matching event") -> Event:
        """The first event after *since* that *match* accepts, waiting at most *timeout* s."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for ev in self._events:
                    if ev.seq > since and match(ev):
                        return ev
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            recent = ", ".join(f"{e.source.value}:{e.name}" for e in self._events[-8:]) or "none"
        raise NoResponse(f"event stream: no {what} within {timeout:.1f} s (since #{since}; "
                         f"latest: {recent})")

    def timeline(self) -> str:
        """The scenario as one masked text, in time order (ties keep publication order).
        Runs of identical periodic samples (same source, name and detail) are folded into
        their first line with a count, so a steady supply does not drown the rest."""
        evs = sorted(self.events(), key=lambda e: (e.t, e.seq))
        if not evs:
            return "(no events)\n"
        t0 = evs[0].t
        lines: list[str] = []
        run: list[Event] = []

        def flush() -> None:
            if run:
                more = f"  (×{len(run)} until +{run[-1].t - t0:.3f}s)" if len(run) > 1 else ""
                lines.append(run[0].line(t0) + more)
                run.clear()

        for ev in evs:
            if run and not (ev.kind == "sample" and (ev.source, ev.name, ev.detail)
                            == (run[0].source, run[0].name, run[0].detail)):
                flush()
            if ev.kind == "sample":
                run.append(ev)
            else:
                lines.append(ev.line(t0))
        flush()
        if self._dropped:
            lines.append(f"... {self._dropped} later event(s) not kept (limit {self.limit})")
        return "\n".join(lines) + "\n"
