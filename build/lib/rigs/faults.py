"""The per-scenario fault ledger: every fault a scenario injected, when it was armed, when it
fired, when it was cleared.

A fault is a :class:`~protocols.faults.FaultSpec` (kind + parameters).  The bench applies it
through the instrument that carries that kind out (:meth:`rigs.bench.Bench.inject`) and records
it here; arming, firing and clearing are also published into the scenario's event stream, so
the report's timeline shows them next to what the terminal did.  A fault that is still active
when the scenario ends is cleared by the bench's restore and marked so here; the ledger is
attached to the report.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from protocols.faults import FaultKind, FaultSpec, Target
from rigs.events import NULL_SINK, EventSink, Source


@dataclass
class FaultRecord:
    """One injected fault.  ``remote_id`` is the instrument's own id for it (a network rule)."""

    id: int
    spec: FaultSpec
    armed: float
    fired: list[float] = field(default_factory=list)
    cleared: float | None = None
    cleared_by: str = ""
    remote_id: int | None = None
    trigger: str = ""
    """What it was armed on ("when the terminal shows PRINTING"); empty: applied at once."""
    armed_id: int | None = None
    """The bench's trigger id while armed on one."""

    @property
    def kind(self) -> FaultKind:
        return self.spec.kind

    @property
    def target(self) -> Target:
        return self.spec.target

    @property
    def active(self) -> bool:
        return self.cleared is None

    def line(self) -> str:
        def at(t: float | None) -> str:
            return "-" if t is None else dt.datetime.fromtimestamp(t).strftime("%H:%M:%S.%f")[:-3]
        fired = ", ".join(at(t) for t in self.fired) or "-"
        how = f" ({self.cleared_by})" if self.cleared_by else ""
        on = f" {self.trigger}" if self.trigger else ""
        return (f"#{self.id:<3} {self.spec.describe():<40} on {self.target.value:<8} armed "
                f"{at(self.armed)}{on}  fired {fired}  cleared {at(self.cleared)}{how}")


class FaultLedger:
    """Thread-safe list of :class:`FaultRecord` for one scenario."""

    def __init__(self, sink: EventSink = NULL_SINK,
                 clock: Callable[[], float] = time.time) -> None:
        self.sink = sink
        self.clock = clock
        self._records: list[FaultRecord] = []
        self._next = 1
        self._lock = threading.Lock()

    def reset(self) -> None:
        with self._lock:
            self._records.clear()

    def armed(self, spec: FaultSpec, *, fires_now: bool, remote_id: int | None = None,
              trigger: str = "") -> FaultRecord:
        """Record *spec* as armed now; a fault applied at once (paper out, a sag) fires now."""
        now = self.clock()
        with self._lock:
            rec = FaultRecord(self._next, spec, now, remote_id=remote_id, trigger=trigger)
            self._next += 1
            self._records.append(rec)
        self._publish("armed", rec, now)
        if fires_now:
            self.fired(rec, now)
        return rec

    def fired(self, rec: FaultRecord, t: float | None = None) -> None:
        when = self.clock() if t is None else t
        with self._lock:
            if when in rec.fired:
                return
            rec.fired.append(when)
        self._publish("fired", rec, when)

    def cleared(self, rec: FaultRecord, by: str, t: float | None = None) -> None:
        when = self.clock() if t is None else t
        with self._lock:
            if rec.cleared is not None:
                return
            rec.cleared, rec.cleared_by = when, by
        self._publish("cleared", rec, when)

    def records(self) -> list[FaultRecord]:
        with self._lock:
            return list(self._records)

    def active(self, kind: FaultKind | None = None) -> list[FaultRecord]:
        return [r for r in self.records() if r.active and (kind is None or r.kind is kind)]

    def text(self) -> str:
        recs = self.records()
        if not recs:
            return "(no faults injected)\n"
        return "\n".join(r.line() for r in recs) + "\n"

    def _publish(self, what: str, rec: FaultRecord, t: float) -> None:
        on = f" {rec.trigger}" if rec.trigger and what == "armed" else ""
        self.sink.publish(Source.FAULT, what, rec.kind.value,
                          f"#{rec.id} {rec.spec.describe()} on {rec.target.value}{on}",
                          t=t, data={"fault_id": rec.id})
