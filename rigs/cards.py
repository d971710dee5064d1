"""The rig's card instrument: test cards in PC/SC readers (the card bank) and a probe in the
terminal's card slot, joined by a relay (docs/probe-link.md).

``PcscCardBank(name, probe, readers, pcsc_socket)``: ``open()`` starts a relay thread that reads
the probe link.  ``insert(card)`` closes the slot's card-detect switch and selects which reader
answers; the relay answers POWER_ON by connecting to (or resetting) that reader's card and
returning its ATR, CAPDU by SCardTransmit, POWER_OFF by unpowering the card.

T=0 procedure bytes are NOT handled here: the relay is transparent, so a ``61xx`` or ``6Cxx``
goes to the terminal, whose kernel issues GET RESPONSE / re-sends with the right Le, exactly as
over a real slot.  (pcscd does not resolve them either: with a T=0 card it passes them through.)

Every C-APDU / R-APDU is kept with its time in a trace; :meth:`PcscCardBank.trace_text` renders
it masked (PAN first 6 / last 4, track data and PIN data blanked).

Card faults (the fault kinds whose target is ``cards``) are carried out in the relay, where a
lab's card fault injector sits: :meth:`PcscCardBank.apply` arms a rule of
:mod:`rigs.cardfaults` (pure: bytes in, verdict out) and the relay consults the active rules at
each power on, command, response and answer.  Each firing is a trip: an ``event`` line of the
trace, an event ``(cards, fault, <kind>)`` in the stream, and a wall time in the rule's record
of :meth:`PcscCardBank.fault_ledger`.  Two faults act outside the relay thread, in the bank's
"later" thread: an answer held by ``card_slow`` (a retry of the probe meanwhile is not answered
separately: the held answer goes out once, when due, and the card is never asked twice), and
the REMOVE of a card pulled by ``card_pulled`` (the relay thread cannot wait for the STATUS it
would have to read itself).  A rule that raises kills the relay loudly (:attr:`relay_error`).
"""

from __future__ import annotations

import heapq
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from protocols.apdu import ins_name, sw_text
from protocols.errors import DecodeError, FramingError
from protocols.faults import FaultKind, FaultSpec
from protocols.masking import render_tlv, scrub
from protocols.probe import (
    MAX_RETRIES,
    RETRY_INTERVAL,
    AnswerStatus,
    FrameDecoder,
    MsgType,
    ProbeFrame,
    SeqCounter,
    StatusFlag,
    answer_payload,
    encode_frame,
    parse_status,
)
from rigs.cardfaults import (
    RULE_KINDS,
    CardAction,
    CardFaultCore,
    CardFaultRecord,
    CardRuleFactory,
    CardTrip,
    CardVerdict,
    Stage,
)
from rigs.driver import Driver, SessionState
from rigs.errors import ConfigError, InstrumentError, NoResponse, TransportError, hexdump
from rigs.events import Source
from rigs.transport import ByteTransport

log = logging.getLogger(__name__)

# PCSCLITE_CSOCK_NAME is read once per process by libpcsclite (at the first context).
_process_socket: str | None = None
_process_lock = threading.Lock()

PIN_INS = frozenset({0x20, 0x24})    # VERIFY, CHANGE REFERENCE DATA: data is PIN material
IDLE_WAKE_S = 0.5
"""Longest the "later" thread waits on its event with nothing due (new work wakes it)."""
THREAD_JOIN_S = 2.0
"""Bound of joining the relay and "later" threads on close()."""


def _scard() -> Any:
    from smartcard import scard  # imported late: PCSCLITE_CSOCK_NAME must be set first

    return scard


@dataclass(frozen=True)
class TraceEntry:
    t: float            # seconds since the bank was opened
    kind: str           # "C-APDU", "R-APDU", "ATR", "event"
    data: bytes = b""
    note: str = ""


@dataclass(frozen=True)
class _Answer:
    """What the relay sends for one probe request."""

    frame: ProbeFrame
    hold_s: float = 0.0      # card_slow: sent this much later, by the "later" thread
    pull: bool = False       # card_pulled: then the card leaves the slot (REMOVE to the probe)
    sent: tuple[str, bytes, str] | None = None
    """Trace entry (kind, data, note) added as the answer is sent: an answer the card gave is
    traced (and published) when it goes to the terminal, held or not."""


class _Later:
    """The relay's deferred actions (a held answer, a pulled card's REMOVE), run one at a time
    in one thread at their monotonic due time (ties: in the order scheduled).  It waits on an
    event, woken by new work and by stop, never longer than :data:`IDLE_WAKE_S`.  An action
    that raises ends the thread and is handed to *on_error*."""

    def __init__(self, name: str, on_error: Callable[[BaseException], None]) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._n = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._on_error = on_error
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def schedule(self, due: float, action: Callable[[], None]) -> None:
        with self._lock:
            self._n += 1
            heapq.heappush(self._heap, (due, self._n, action))
            self._wake.set()

    def stop(self, join_s: float | None = None) -> None:
        """Drop what is pending; join the thread when *join_s* is given (bounded)."""
        self._stop.set()
        self._wake.set()
        if join_s is not None and self._thread.is_alive() \
                and self._thread is not threading.current_thread():
            self._thread.join(timeout=join_s)
            if self._thread.is_alive():
                log.warning("%s did not end within %.1f s", self._thread.name, join_s)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                action: Callable[[], None] | None = None
                with self._lock:
                    now = time.monotonic()
                    if self._heap and self._heap[0][0] <= now:
                        action = heapq.heappop(self._heap)[2]
                    else:
                        wait = self._heap[0][0] - now if self._heap else IDLE_WAKE_S
                        self._wake.clear()
                if action is None:
                    self._wake.wait(min(wait, IDLE_WAKE_S))
                    continue
                action()
        except BaseException as exc:  # handed over: the relay dies loudly
            self._on_error(exc)


def render_apdu(kind: str, data: bytes) -> str:
    """Masked text of one APDU for evidence.

    Card data is masked by tag (:data:`protocols.masking.SENSITIVE_TAGS`: PAN first 6 / last 4,
    track data and names blanked); the AID (4F, 84), the label (50) and everything else are
    shown in clear.  A C-APDU is shown as sent (a terminal sends the card no card data) except
    the PIN of VERIFY / CHANGE REFERENCE DATA.
    """
    if kind == "C-APDU":
        if len(data) > 5 and data[1] in PIN_INS:
            return f"{data[:5].hex().upper()}[PIN data blanked]"
        return data.hex().upper()
    if kind == "R-APDU" and len(data) > 2:
        return f"{render_tlv(data[:-2], style='apdu')} {data[-2:].hex().upper()}"
    return scrub(data.hex().upper())


class PcscCardBank(Driver):
    """Card bank + probe relay.  See the module doc.  *fault_rules* maps each card fault kind
    to the factory of its rule (:data:`rigs.cardfaults.RULE_KINDS`)."""

    def __init__(self, name: str, probe: ByteTransport, readers: dict[str, str],
                 pcsc_socket: str | None = None, *, retry_interval: float = RETRY_INTERVAL,
                 max_retries: int = MAX_RETRIES,
                 fault_rules: Mapping[FaultKind, CardRuleFactory] = RULE_KINDS) -> None:
        super().__init__(name)
        if not readers:
            raise ConfigError(f"PcscCardBank({name}): readers: needs at least one "
                              f"card name → PC/SC reader name")
        self.probe = probe
        self.readers = dict(readers)
        self.pcsc_socket = pcsc_socket
        self.retry_interval = retry_interval
        self.max_retries = max_retries
        self._inserted: str | None = None
        self._ctx: Any = None
        self._hcard: Any = None
        self._protocol: int = 0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._write_lock = threading.Lock()
        self._card_lock = threading.RLock()
        self._cond = threading.Condition()
        self._seq = SeqCounter()
        self._pending: tuple[int, MsgType] | None = None
        self._pending_answer: ProbeFrame | None = None
        self._last_sent = b""
        self._last_probe_request: tuple[int, MsgType] | None = None
        self._last_probe_answer = b""
        self._trace: list[TraceEntry] = []
        self._trace_lock = threading.Lock()
        self._t0 = time.monotonic()
        self.relay_error: BaseException | None = None
        self._last_ins = "?"  # the instruction the next R-APDU answers (event stream)
        self.probe_flags = StatusFlag(0)
        self._faults = CardFaultCore(fault_rules, owner=repr(self))
        self._faults_lock = threading.Lock()
        self._later: _Later | None = None
        self._held_key: tuple[int, MsgType] | None = None  # a request whose answer is held
        self._pull_done = threading.Event()   # clear while a pulled card's REMOVE is pending
        self._pull_done.set()
        self._request_lock = threading.Lock()  # one INSERT/REMOVE at a time (steps, "later")

    # -- session -------------------------------------------------------------------------
    def open(self) -> None:
        if self.state is SessionState.OPEN:
            return
        self._establish_context()
        if not self.probe.is_open:
            self.probe.open()
        self.probe.reset_input_buffer()
        self._stop.clear()
        self.relay_error = None
        self._held_key = None
        self._pull_done.set()
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._relay, name=f"{self!r} relay", daemon=True)
        self._later = _Later(f"{self!r} later", self._later_died)
        super().open()
        self._thread.start()
        self._later.start()

    def _establish_context(self) -> None:
        global _process_socket
        with _process_lock:
            if self.pcsc_socket is not None:
                if _process_socket is not None and _process_socket != self.pcsc_socket:
                    raise ConfigError(
                        f"{self!r}: pcsc_socket {self.pcsc_socket} differs from "
                        f"{_process_socket}, already used in this process (libpcsclite reads "
                        f"PCSCLITE_CSOCK_NAME once); run one bench per process")
                os.environ["PCSCLITE_CSOCK_NAME"] = self.pcsc_socket
                _process_socket = self.pcsc_socket
            scard = _scard()
            hr, ctx = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
        if hr != scard.SCARD_S_SUCCESS:
            raise InstrumentError(f"{self!r}: open() cannot reach pcscd "
                                  f"({self.pcsc_socket or 'default socket'}): {_pcsc_err(hr)}")
        self._ctx = ctx

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=THREAD_JOIN_S)
            self._thread = None
        if self._later is not None:
            self._later.stop(THREAD_JOIN_S)
            self._later = None
        self._disconnect_card()
        if self._ctx is not None:
            _scard().SCardReleaseContext(self._ctx)
            self._ctx = None
        if self.probe.is_open:
            self.probe.close()
        super().close()

    # -- public API ----------------------------------------------------------------------
    @property
    def inserted(self) -> str | None:
        return self._inserted

    def insert(self, card_name: str) -> None:
        """Put *card_name*'s reader behind the probe and close the slot's card-detect switch."""
        self.require_open("insert")
        if card_name not in self.readers:
            raise ConfigError(f"{self!r}: insert(): unknown card {card_name!r}; configured "
                              f"cards are {sorted(self.readers)}")
        self._await_pull("insert")
        if self._inserted is not None:
            self.remove()
        self._disconnect_card()
        self._inserted = card_name
        self._event(f"insert {card_name} ({self.readers[card_name]})")
        try:
            self._request(MsgType.INSERT)
        except BaseException:
            self._inserted = None
            raise

    def remove(self) -> None:
        """Open the card-detect switch; the card in the reader is unpowered."""
        self.require_open("remove")
        self._await_pull("remove")
        name, self._inserted = self._inserted, None
        self._disconnect_card()
        self._event(f"remove {name}")
        self._request(MsgType.REMOVE)

    def wait_ready(self, timeout: float = 3.0) -> None:
        """Wait until every configured reader has a card (pcscd polls every 400 ms)."""
        self.require_open("wait_ready")
        scard = _scard()
        deadline = time.monotonic() + timeout
        states = [(reader, scard.SCARD_STATE_UNAWARE) for reader in self.readers.values()]
        while True:
            left_ms = int(max(0.0, deadline - time.monotonic()) * 1000)
            hr, got = scard.SCardGetStatusChange(self._ctx, left_ms, states)
            if hr == scard.SCARD_S_SUCCESS:
                missing = [r for r, st, _atr in got if not st & scard.SCARD_STATE_PRESENT]
                if not missing:
                    return
                states = [(r, st & ~scard.SCARD_STATE_CHANGED) for r, st, _atr in got]
            else:
                missing = [r for r, _ in states]
            if left_ms <= 0 or hr not in (scard.SCARD_S_SUCCESS, scard.SCARD_E_TIMEOUT):
                raise NoResponse(f"{self!r}: wait_ready(): readers {missing} have no card "
                                 f"after {timeout:.1f} s ({_pcsc_err(hr)})")

    def is_nominal(self) -> bool:
        """Open, relay alive, no card in the slot, no card fault rule active."""
        with self._faults_lock:
            faults = self._faults.any_active
        return (self.state is SessionState.OPEN and self._inserted is None
                and self._relay_alive() and not faults)

    def restore_nominal(self) -> None:
        """Clear every card fault rule and take the card out of the slot."""
        self.require_open("restore_nominal")
        self.clear_all()
        if not self._relay_alive():
            raise InstrumentError(f"{self!r}: restore_nominal(): relay thread is dead "
                                  f"({self.relay_error!r})")
        self._await_pull("restore_nominal")
        if self._inserted is not None or self.probe_flags & StatusFlag.CARD_PRESENT:
            self.remove()

    def _relay_alive(self) -> bool:
        return (self.relay_error is None and self._thread is not None
                and self._thread.is_alive() and self._later is not None
                and self._later.is_alive())

    # -- card faults ---------------------------------------------------------------------
    def apply(self, spec: FaultSpec) -> int:
        """Arm a card fault (a kind whose target is ``cards``) as a rule after the active ones;
        returns its id.  Any other kind is refused with a ConfigError naming it."""
        with self._faults_lock:
            record = self._faults.add(spec, time.time())
        log.info("%r: card fault rule #%d %s armed", self, record.id, spec.describe())
        self._event(f"fault #{record.id} {spec.describe()} armed")
        return record.id

    def clear(self, rule_id: int) -> None:
        """Clear the active rule *rule_id* (an unknown or already cleared id is refused)."""
        if isinstance(rule_id, bool) or not isinstance(rule_id, int):
            raise ConfigError(f"{self!r}: clear() takes a rule id (int), got {rule_id!r}")
        with self._faults_lock:
            record = self._faults.clear(rule_id, time.time())
        self._cleared([record])

    def clear_all(self) -> None:
        """Clear every active rule: the relay is transparent again."""
        with self._faults_lock:
            records = self._faults.clear_all(time.time())
        self._cleared(records)

    def _cleared(self, records: list[CardFaultRecord]) -> None:
        for record in records:
            log.info("%r: card fault rule #%d %s cleared", self, record.id,
                     record.spec.describe())
            self._event(f"fault #{record.id} {record.spec.describe()} cleared, fired "
                        f"{record.fired_count} time(s)")

    def active_faults(self) -> list[CardFaultRecord]:
        """The active rules, in the order they apply."""
        with self._faults_lock:
            return self._faults.active()

    def fault_ledger(self) -> list[CardFaultRecord]:
        """Every rule of this scenario (since :meth:`clear_trace`; active ones are kept across),
        oldest first, active or cleared, each with the wall times it fired."""
        with self._faults_lock:
            return self._faults.ledger()

    def trips(self, after: int = 0) -> list[CardTrip]:
        """The trips of the ledger's rules numbered above *after*, in order."""
        with self._faults_lock:
            return self._faults.trips(after)

    def faults_text(self) -> str:
        """The fault ledger for a report: each rule, then each of its trips with wall time."""
        lines: list[str] = []
        for record in self.fault_ledger():
            lines.append(record.describe())
            for trip in record.trips:
                when = time.strftime("%H:%M:%S", time.localtime(trip.wall))
                lines.append(f"  {when}.{int(trip.wall * 1000) % 1000:03d} trip #{trip.n}: "
                             f"{scrub(trip.what)}")
        return "\n".join(lines)

    def trace(self) -> list[TraceEntry]:
        with self._trace_lock:
            return list(self._trace)

    def clear_trace(self) -> None:
        """A new scenario's evidence: the trace is emptied and the fault ledger forgets the
        rules already cleared."""
        with self._trace_lock:
            self._trace.clear()
        with self._faults_lock:
            self._faults.forget_cleared()

    def trace_text(self) -> str:
        """The APDU trace, one line per entry, masked (safe to attach to a report)."""
        lines = []
        for e in self.trace():
            if e.kind in ("C-APDU", "R-APDU"):
                arrow = "→" if e.kind == "C-APDU" else "←"
                body = render_apdu(e.kind, e.data)
            elif e.kind == "ATR":
                arrow, body = "←", e.data.hex().upper()
            else:
                arrow, body = "·", scrub(e.note)
            note = f"  ({scrub(e.note)})" if e.note and e.kind != "event" else ""
            lines.append(f"{e.t:10.6f} {e.kind:<6} {arrow} {body}{note}")
        return "\n".join(lines)

    # -- link ----------------------------------------------------------------------------
    def _add(self, kind: str, data: bytes = b"", note: str = "") -> None:
        with self._trace_lock:
            self._trace.append(TraceEntry(time.monotonic() - self._t0, kind, bytes(data), note))
        self._publish(kind, bytes(data), note)

    def _publish(self, kind: str, data: bytes, note: str) -> None:
        """Into the event stream: C-APDUs by instruction name (``GENERATE AC``), R-APDUs by
        status word with the instruction they answer, ATRs and card events; all masked."""
        if kind == "C-APDU" and len(data) >= 4:
            self._last_ins = ins_name(data[1])
            self.event_sink.publish(Source.CARDS, "c-apdu", self._last_ins,
                                    render_apdu(kind, data)[:120], data={"ins": data[1]})
        elif kind == "R-APDU":
            if len(data) >= 2:
                sw = int.from_bytes(data[-2:], "big")
                self.event_sink.publish(Source.CARDS, "r-apdu", f"{sw:04X}",
                                        f"to {self._last_ins}: {sw_text(sw)}",
                                        data={"sw": sw, "ins_name": self._last_ins})
            else:
                self.event_sink.publish(Source.CARDS, "r-apdu", "none",
                                        f"to {self._last_ins}: {note}")
        elif kind == "ATR":
            self.event_sink.publish(Source.CARDS, "atr", "ATR" if data else "no ATR",
                                    note)
        else:
            self.event_sink.publish(Source.CARDS, "event", note.split(" ", 1)[0], note)

    def _event(self, note: str) -> None:
        self._add("event", note=note)

    def _judge(self, stage: Stage, capdu: bytes = b"", answer: bytes = b"") -> CardVerdict:
        """The active rules' verdict on one point of an exchange; records its trips.  A rule's
        bug raises RuleFailed, which kills the relay (never an injected fault)."""
        with self._faults_lock:
            verdict, trips = self._faults.judge(stage, time.time(), capdu, answer)
        for trip in trips:
            self._trip(trip)
        return verdict

    def _trip(self, trip: CardTrip) -> None:
        note = trip.describe()
        log.info("%r: %s", self, note)
        with self._trace_lock:
            self._trace.append(TraceEntry(time.monotonic() - self._t0, "event", b"", note))
        self.event_sink.publish(Source.CARDS, "fault", trip.kind.value, scrub(note), t=trip.wall,
                                data={"rule": trip.rule_id, "trip": trip.n})

    def _send(self, frame: ProbeFrame) -> None:
        wire = encode_frame(frame)
        with self._write_lock:
            self.probe.write(wire)
            if frame.type is not MsgType.NAK:
                self._last_sent = wire

    def _request(self, mtype: MsgType) -> None:
        """Send INSERT/REMOVE and wait for STATUS, re-sending; bounded.  Never called in the
        relay thread (it reads the STATUS this waits for)."""
        frame = ProbeFrame(self._seq.next(), mtype)
        bound = self.retry_interval * (self.max_retries + 1)
        if not self._request_lock.acquire(timeout=2 * bound):
            raise NoResponse(f"{self!r}: {mtype.name.lower()}(): another INSERT/REMOVE still "
                             f"waits for the probe after {2 * bound:.2f} s")
        try:
            with self._cond:
                self._pending, self._pending_answer = (frame.seq, MsgType.STATUS), None
            for _attempt in range(self.max_retries + 1):
                self._send(frame)
                with self._cond:
                    if self._cond.wait_for(lambda: self._pending_answer is not None
                                           or self.relay_error is not None,
                                           timeout=self.retry_interval):
                        break
            with self._cond:
                answer = self._pending_answer
            if self.relay_error is not None:
                raise TransportError(f"{self!r}: {mtype.name.lower()}(): relay thread died: "
                                     f"{self.relay_error}")
            if answer is None:
                raise NoResponse(f"{self!r}: {mtype.name.lower()}(): probe did not answer "
                                 f"{mtype.name} seq {frame.seq} within {bound:.2f} s "
                                 f"({self.max_retries + 1} tries)")
            self.probe_flags = parse_status(answer)
        finally:
            with self._cond:
                self._pending = None
            self._request_lock.release()

    def _relay(self) -> None:
        decoder = FrameDecoder()
        try:
            while not self._stop.is_set():
                chunk = self.probe.read(1)     # bounded by the transport's timeout
                if not chunk:
                    continue
                waiting = int(getattr(self.probe, "in_waiting", 0) or 0)
                if waiting:                    # the rest of the frame, without waiting
                    chunk += self.probe.read(waiting)
                for item in decoder.feed(chunk):
                    if isinstance(item, (FramingError, DecodeError)):
                        self._event(f"damaged frame from probe: {item}")
                        self._send(ProbeFrame(0, MsgType.NAK))
                        continue
                    self._on_frame(item)
        except BaseException as exc:   # the relay dies loudly: is_nominal() turns false
            self._die(exc, "relay thread")

    def _later_died(self, exc: BaseException) -> None:
        self._die(exc, '"later" thread (held answer or pulled card)')

    def _die(self, exc: BaseException, where: str) -> None:
        log.error("%r: %s died", self, where, exc_info=exc)
        if self.relay_error is None:
            self.relay_error = exc
        self._stop.set()
        later = self._later
        if later is not None:
            later.stop()
        with self._cond:
            self._cond.notify_all()

    def _await_pull(self, operation: str) -> None:
        """Wait until a card pulled by a fault has left the slot (its REMOVE answered).  The
        bound covers another INSERT/REMOVE ahead of it (2 request bounds) and its own."""
        bound = 3 * self.retry_interval * (self.max_retries + 1) + IDLE_WAKE_S
        if not self._pull_done.wait(bound):
            raise NoResponse(f"{self!r}: {operation}(): the card pulled by a fault is still "
                             f"leaving the slot after {bound:.2f} s (REMOVE to the probe)")

    def _on_frame(self, frame: ProbeFrame) -> None:
        if frame.type is MsgType.STATUS:
            with self._cond:
                if self._pending == (frame.seq, MsgType.STATUS):
                    self._pending_answer = frame
                    self._cond.notify_all()
            return
        if frame.type is MsgType.NAK:
            if self._last_sent:
                with self._write_lock:
                    self.probe.write(self._last_sent)
            return
        handler = _PROBE_REQUESTS.get(frame.type)
        if handler is None:
            self._event(f"unexpected {frame.type.name} seq {frame.seq} from probe ignored")
            return
        key = (frame.seq, frame.type)
        if key == self._last_probe_request:     # a retry: answer again, never act twice
            with self._write_lock:
                held = self._held_key == key
                if not held:
                    self.probe.write(self._last_probe_answer)
            if held:                            # the held answer goes out once, when due
                self._event(f"probe retried {frame.type.name} seq {frame.seq} while its "
                            f"answer is held: not answered again")
            return
        with self._card_lock:
            answer = handler(self, frame)
        wire = encode_frame(answer.frame)
        self._last_probe_request, self._last_probe_answer = key, wire
        later = self._later
        if later is None:
            raise InstrumentError(f"{self!r}: relay running without its \"later\" thread")
        due = time.monotonic() + answer.hold_s
        if answer.pull:        # before the terminal can hear of it: insert() waits for REMOVE
            self._pull_done.clear()
        if answer.hold_s > 0:
            with self._write_lock:
                self._held_key = key
            later.schedule(due, lambda: self._send_held(key, wire, answer.sent))
        else:
            if answer.sent is not None:
                self._add(*answer.sent)
            with self._write_lock:
                self.probe.write(wire)
                self._last_sent = wire
        if answer.pull:
            later.schedule(due, self._pull_card)

    def _send_held(self, key: tuple[int, MsgType], wire: bytes,
                   sent: tuple[str, bytes, str] | None) -> None:
        """In the "later" thread: the held answer is due."""
        if sent is not None:
            self._add(*sent)
        with self._write_lock:
            self.probe.write(wire)
            self._last_sent = wire
            if self._held_key == key:
                self._held_key = None

    def _pull_card(self) -> None:
        """In the "later" thread: the card has left the slot; the probe opens card-detect."""
        try:
            self._event("card pulled by a fault: REMOVE to the probe")
            self._request(MsgType.REMOVE)
        finally:
            self._pull_done.set()

    # -- PC/SC ---------------------------------------------------------------------------
    def _on_power_on(self, frame: ProbeFrame) -> _Answer:
        name = self._inserted
        if name is None:
            self._add("ATR", note="no card inserted: absent")
            return _Answer(ProbeFrame(frame.seq, MsgType.ATR,
                                      answer_payload(AnswerStatus.ABSENT)))
        if self._judge(Stage.POWER_ON).action is CardAction.MUTE:   # PC/SC not touched
            self._add("ATR", note=f"{name}: card fault, no ATR → mute")
            return _Answer(ProbeFrame(frame.seq, MsgType.ATR, answer_payload(AnswerStatus.MUTE)))
        scard = _scard()
        reader = self.readers[name]
        proto_mask = scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1
        if self._hcard is not None:
            hr, proto = scard.SCardReconnect(self._hcard, scard.SCARD_SHARE_SHARED, proto_mask,
                                             scard.SCARD_RESET_CARD)
            if hr != scard.SCARD_S_SUCCESS:
                self._disconnect_card()
        if self._hcard is None:
            hr, hcard, proto = scard.SCardConnect(self._ctx, reader, scard.SCARD_SHARE_SHARED,
                                                  proto_mask)
            if hr == scard.SCARD_S_SUCCESS:
                self._hcard = hcard
        if hr != scard.SCARD_S_SUCCESS:
            self._add("ATR", note=f"{name} on {reader!r}: power on failed, {_pcsc_err(hr)}"
                                  f" → mute")
            return _Answer(ProbeFrame(frame.seq, MsgType.ATR, answer_payload(AnswerStatus.MUTE)))
        self._protocol = proto
        hr, _reader, _state, _proto, atr = scard.SCardStatus(self._hcard)
        if hr != scard.SCARD_S_SUCCESS or not atr:
            self._add("ATR", note=f"{name}: SCardStatus failed, {_pcsc_err(hr)} → mute")
            return _Answer(ProbeFrame(frame.seq, MsgType.ATR, answer_payload(AnswerStatus.MUTE)))
        atr_b = bytes(atr)
        return self._card_answer(frame, b"", atr_b,
                                 f"{name}, T={0 if proto == scard.SCARD_PROTOCOL_T0 else 1}")

    def _card_answer(self, frame: ProbeFrame, capdu: bytes, data: bytes, note: str) -> _Answer:
        """An answer the card gave (the ATR when *capdu* is empty, else the R-APDU): held when
        a timing fault says so; traced when sent."""
        verdict = self._judge(Stage.ANSWER, capdu, data)
        hold = verdict.hold_s if verdict.action is CardAction.HOLD else 0.0
        mtype, kind = (MsgType.RAPDU, "R-APDU") if capdu else (MsgType.ATR, "ATR")
        return _Answer(ProbeFrame(frame.seq, mtype, answer_payload(AnswerStatus.OK, data)),
                       hold_s=hold, sent=(kind, data, note))

    def _on_power_off(self, frame: ProbeFrame) -> _Answer:
        self._disconnect_card()
        self._event("terminal powered the card off")
        return _Answer(ProbeFrame(frame.seq, MsgType.ACK))

    def _on_capdu(self, frame: ProbeFrame) -> _Answer:
        capdu = frame.payload
        self._add("C-APDU", capdu)
        if self._inserted is None:
            self._add("R-APDU", note="no card inserted: absent")
            return _Answer(ProbeFrame(frame.seq, MsgType.RAPDU,
                                      answer_payload(AnswerStatus.ABSENT)))
        action = self._judge(Stage.COMMAND, capdu).action
        if action is CardAction.MUTE:
            self._add("R-APDU", note="card fault: no answer → mute")
            return _Answer(ProbeFrame(frame.seq, MsgType.RAPDU,
                                      answer_payload(AnswerStatus.MUTE)))
        if action is CardAction.PULL:
            name, self._inserted = self._inserted, None
            self._disconnect_card()
            self._add("R-APDU", note=f"card fault: {name} left the slot → absent")
            return _Answer(ProbeFrame(frame.seq, MsgType.RAPDU,
                                      answer_payload(AnswerStatus.ABSENT)), pull=True)
        if self._hcard is None:
            self._add("R-APDU", note="card not powered: mute")
            return _Answer(ProbeFrame(frame.seq, MsgType.RAPDU,
                                      answer_payload(AnswerStatus.MUTE)))
        scard = _scard()
        hr, resp = scard.SCardTransmit(self._hcard, self._protocol, list(capdu))
        if hr != scard.SCARD_S_SUCCESS or len(resp) < 2:
            status = (AnswerStatus.ABSENT if hr == scard.SCARD_W_REMOVED_CARD
                      else AnswerStatus.MUTE)
            self._add("R-APDU", note=f"SCardTransmit failed, {_pcsc_err(hr)} → "
                                     f"{status.name.lower()}")
            return _Answer(ProbeFrame(frame.seq, MsgType.RAPDU, answer_payload(status)))
        rapdu = bytes(resp)
        note = ""
        verdict = self._judge(Stage.RESPONSE, capdu, rapdu)
        if verdict.action is CardAction.REPLACE:
            note = (f"card fault: the card answered {rapdu[-2:].hex().upper()} with "
                    f"{len(rapdu) - 2} data byte(s)")
            rapdu = verdict.data
        return self._card_answer(frame, capdu, rapdu, note)

    def _disconnect_card(self) -> None:
        with self._card_lock:
            if self._hcard is not None:
                scard = _scard()
                scard.SCardDisconnect(self._hcard, scard.SCARD_UNPOWER_CARD)
                self._hcard = None


_PROBE_REQUESTS: dict[MsgType, Callable[[PcscCardBank, ProbeFrame], _Answer]] = {
    MsgType.POWER_ON: PcscCardBank._on_power_on,
    MsgType.POWER_OFF: PcscCardBank._on_power_off,
    MsgType.CAPDU: PcscCardBank._on_capdu,
}


def _pcsc_err(hr: int) -> str:
    code = hr & 0xFFFFFFFF
    try:
        text = _scard().SCardGetErrorMessage(hr)
    except Exception:  # noqa: BLE001 - the message is best effort; the code is what counts
        text = "unknown"
    return f"PC/SC 0x{code:08X} ({text})"


__all__ = ["PcscCardBank", "TraceEntry", "render_apdu", "hexdump"]
