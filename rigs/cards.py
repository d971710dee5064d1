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

A card that really leaves its reader while the terminal talks to it (pcscd: no R-APDU, then the
reader reports it gone within one poll, bounded by :data:`REMOVAL_WAIT_S`) is answered absent
and card-detect opens, as for ``card_pulled``.

The terminal's other two card readers go through the probe too (docs/probe-link.md):
:meth:`PcscCardBank.swipe` plays a card's stripe to the terminal's stripe reader (``SWIPE``: the
tracks as the head reads them, a bad read with a wrong LRC), :meth:`~PcscCardBank.tap`,
:meth:`~PcscCardBank.tap_both` and :meth:`~PcscCardBank.take_away` put cards into (or out of)
its contactless field (``TAP``), and the relay answers the contactless reader's ``CL_POWER_ON`` /
``CL_CAPDU`` / ``CL_POWER_OFF`` from the tapped card's reader (its own PC/SC connection; the
card fault rules act on the contact slot only).  Track data never reaches the trace, the log or
the event stream: only which card, which tracks and their lengths.

Card emulator (``emulated``, :class:`CardEmulator`): a bank card may live in a programmable
card emulator instead of a reader of its own (docs/cards.md).  ``insert(card)`` of such a card
first has the emulator load its profile (the emulator's card leaves the reader and comes back
with the new profile), waits until pcscd reports a new card event on that reader with the
expected ATR (or, for a card without an answer to reset, a present card without one), bounded by
the emulator's ``load_timeout``; then goes on as for any card.  :meth:`restore_nominal` also
puts the emulator's cards back to their profiles (PIN try counters, ATCs).
"""

from __future__ import annotations

import heapq
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from protocols import tlv
from protocols.apdu import ins_name, sw_text
from protocols.digits import ascii_digits
from protocols.errors import DecodeError, FramingError
from protocols.faults import FaultKind, FaultSpec
from protocols.magstripe import TRACKS, encode_track, lrc, stripe_of
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
    scan_payload,
    swipe_payload,
    tap_payload,
)
from protocols.qr import mask_code
from rigs.answers import as_bool, as_list, as_object, as_str, required
from rigs.cardfaults import (
    MISREAD_TEXT,
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
from rigs.jsonctl import SocketControlDriver
from rigs.transport import ByteTransport

log = logging.getLogger(__name__)

# PCSCLITE_CSOCK_NAME is read once per process by libpcsclite (at the first context).
_process_socket: str | None = None
_process_lock = threading.Lock()

PIN_INS = frozenset({0x20, 0x24})    # VERIFY, CHANGE REFERENCE DATA: data is PIN material
IDLE_WAKE_S = 0.5
SCANNED = "code shown to the scanner"
"""The card bank's event text (then ``: <masked code>``) when a payment code is presented."""
"""Longest the "later" thread waits on its event with nothing due (new work wakes it)."""
THREAD_JOIN_S = 2.0
"""Bound of joining the relay and "later" threads on close()."""
REMOVAL_WAIT_S = 1.0
"""How long the relay waits, after a card gave no R-APDU, for its reader to report it gone
(pcscd polls every 400 ms)."""
EMULATOR_ANSWER_MAX = 64 * 1024
"""Longest answer line accepted from the card emulator."""


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
    pulled_by: str = "a fault"
    """Who took the card out, for the trace: a fault rule, or the card leaving its reader."""
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


# -- the card emulator ---------------------------------------------------------------------------


@dataclass(frozen=True)
class EmulatorState:
    """The card emulator's answer to ``load`` / ``loaded``: the profile in its reader, whether
    the card is in it, the answer to reset it gives (``b""``: none) and whether it is mute."""

    profile: str
    present: bool
    atr: bytes
    mute: bool

    @classmethod
    def from_json(cls, raw: object, where: str = "answer") -> EmulatorState:
        obj = as_object(raw, where)
        atr_text = as_str(required(obj, "atr", where, "hex"), f"{where}.atr")
        try:
            atr = bytes.fromhex(atr_text)
        except ValueError:
            raise TransportError(f"{where}.atr must be hex, got {atr_text[:40]!r}") from None
        return cls(profile=as_str(required(obj, "profile", where, "a string"),
                                  f"{where}.profile"),
                   present=as_bool(required(obj, "present", where, "true or false"),
                                   f"{where}.present"),
                   atr=atr,
                   mute=as_bool(required(obj, "mute", where, "true or false"), f"{where}.mute"))


class CardEmulator(Protocol):
    """A programmable card on one reader (the seam :class:`PcscCardBank` uses; a lab's card
    simulator instrument gets a driver of its own with these operations)."""

    reader: str
    load_timeout: float

    def open(self) -> None: ...

    def close(self) -> None: ...

    def load(self, profile: str) -> EmulatorState: ...

    def loaded(self) -> EmulatorState: ...

    def reset(self) -> list[str]: ...

    def stripe(self, profile: str) -> tuple[str, str]: ...


class SocketCardEmulator(SocketControlDriver[EmulatorState]):
    """The virtual bench's card emulator (``python -m sim.card --emulator …``) through its
    control socket at *path* (JSON lines, ops in :mod:`sim.card.emulator`); *reader* is its
    PC/SC reader.  Every request is bounded by ``reply_timeout_s``."""

    peer = "the card emulator"
    refuser = "the emulator"
    where = "card emulator control socket"
    started_as = "the card process"
    answer_max = EMULATOR_ANSWER_MAX
    reply_timeout_s = 5.0
    """Bound of one control request (a load includes the card's reconnection)."""

    def __init__(self, name: str, path: str | Path, reader: str, *,
                 load_timeout: float = 5.0) -> None:
        super().__init__(name, path)
        self.reader = reader
        self.load_timeout = load_timeout

    def status(self) -> EmulatorState:
        """Round trip (``ping``): the profile in the reader, whether the card is in it."""
        answer = self._request("status", {"op": "ping"})
        return self._parsed("ping", lambda: EmulatorState.from_json(answer))

    def load(self, profile: str) -> EmulatorState:
        """Load *profile* (the card leaves the reader and comes back with it)."""
        answer = self._request("load", {"op": "load", "profile": profile})
        return self._parsed("load", lambda: EmulatorState.from_json(answer))

    def loaded(self) -> EmulatorState:
        answer = self._request("loaded", {"op": "loaded"})
        return self._parsed("loaded", lambda: EmulatorState.from_json(answer))

    def stripe(self, profile: str) -> tuple[str, str]:
        """*profile*'s stripe as a reader head reads it (track 1, track 2; "" for none).  The
        tracks stay in this process: never traced, logged or attached."""
        answer = self._request("stripe", {"op": "stripe", "profile": profile})

        def tracks() -> tuple[str, str]:
            return (as_str(required(answer, "track1", "answer", "a string"), "answer.track1"),
                    as_str(required(answer, "track2", "answer", "a string"), "answer.track2"))

        return self._parsed("stripe", tracks)

    def reset(self) -> list[str]:
        """Every card of the emulator back to its profile; returns their names."""
        answer = self._request("reset", {"op": "reset"})

        def names() -> list[str]:
            items = as_list(required(answer, "reset", "answer", "a list"), "answer.reset")
            return [as_str(item, f"answer.reset[{i}]") for i, item in enumerate(items)]

        return self._parsed("reset", names)


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
                 fault_rules: Mapping[FaultKind, CardRuleFactory] = RULE_KINDS,
                 emulator: CardEmulator | None = None,
                 emulated: Mapping[str, str] | None = None) -> None:
        """*readers*: card name → its PC/SC reader; *emulated*: card name → the profile the
        *emulator* loads for it."""
        super().__init__(name)
        emulated = dict(emulated or {})
        if not readers and not emulated:
            raise ConfigError(f"PcscCardBank({name}): readers: needs at least one "
                              f"card name → PC/SC reader name")
        if emulated and emulator is None:
            raise ConfigError(f"PcscCardBank({name}): emulated cards "
                              f"{sorted(emulated)} need an emulator")
        both = sorted(set(readers) & set(emulated))
        if both:
            raise ConfigError(f"PcscCardBank({name}): card(s) {both} are both in a reader and "
                              f"in the emulator")
        self.probe = probe
        self.emulator = emulator
        self.emulated = emulated
        self.readers = dict(readers)
        if emulator is not None:
            self.readers.update({card: emulator.reader for card in emulated})
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
        self._field: tuple[str, ...] = ()  # cards in the terminal's contactless field
        self._cl_hcard: Any = None  # PC/SC handle of the card the contactless reader activated
        self._cl_protocol: int = 0
        self._stripes: dict[str, tuple[str, str]] = {}  # card → (track 1, track 2) as read

    # -- session -------------------------------------------------------------------------
    def open(self) -> None:
        if self.state is SessionState.OPEN:
            return
        self._establish_context()
        if self.emulator is not None:
            try:
                self.emulator.open()
            except BaseException:
                _scard().SCardReleaseContext(self._ctx)
                self._ctx = None
                raise
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
        self._disconnect_cl()
        if self._later is not None:
            self._later.stop(THREAD_JOIN_S)
            self._later = None
        self._disconnect_card()
        if self._ctx is not None:
            _scard().SCardReleaseContext(self._ctx)
            self._ctx = None
        if self.emulator is not None:
            self.emulator.close()
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
        if card_name in self.emulated:
            self._load_emulated(card_name)
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
        """Wait until every configured reader has a card (pcscd polls every 400 ms); the card
        emulator's reader only while its card is in it (a pulled card is out until the next
        insert loads it)."""
        self.require_open("wait_ready")
        scard = _scard()
        deadline = time.monotonic() + timeout
        readers = {reader for card, reader in self.readers.items() if card not in self.emulated}
        if self.emulator is not None and self.emulator.loaded().present:
            readers.add(self.emulator.reader)
        states = [(reader, scard.SCARD_STATE_UNAWARE) for reader in sorted(readers)]
        if not states:
            return
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

    def identity(self) -> str:
        """Each reader the bank uses and the ATR of the card in it (PC/SC, shared, the card
        left as it was); a reader without an answering card says why."""
        self.require_open("identity")
        scard = _scard()
        shown = []
        for reader in dict.fromkeys(self.readers.values()):
            hr, hcard, _proto = scard.SCardConnect(self._ctx, reader, scard.SCARD_SHARE_SHARED,
                                                   scard.SCARD_PROTOCOL_T0
                                                   | scard.SCARD_PROTOCOL_T1)
            if hr != scard.SCARD_S_SUCCESS:
                shown.append(f"{reader}: no card ({_pcsc_err(hr)})")
                continue
            try:
                hr, _r, _state, _p, atr = scard.SCardStatus(hcard)
                shown.append(f"{reader}: ATR {bytes(atr).hex().upper()}"
                             if hr == scard.SCARD_S_SUCCESS else
                             f"{reader}: no ATR ({_pcsc_err(hr)})")
            finally:
                scard.SCardDisconnect(hcard, scard.SCARD_LEAVE_CARD)
        return "; ".join(shown) or "no reader configured"

    def is_nominal(self) -> bool:
        """Open, relay alive, no card in the slot nor in the contactless field, no card fault
        rule active."""
        with self._faults_lock:
            faults = self._faults.any_active
        return (self.state is SessionState.OPEN and self._inserted is None
                and not self._field and self._relay_alive() and not faults)

    def restore_nominal(self) -> None:
        """Clear every card fault rule, take the card out of the slot, and put the emulator's
        cards back to their profiles."""
        self.require_open("restore_nominal")
        self.clear_all()
        if not self._relay_alive():
            raise InstrumentError(f"{self!r}: restore_nominal(): relay thread is dead "
                                  f"({self.relay_error!r})")
        self._await_pull("restore_nominal")
        if self._inserted is not None or self.probe_flags & StatusFlag.CARD_PRESENT:
            self.remove()
        if self._field or self.probe_flags & StatusFlag.FIELD_CARD:
            self.take_away()
        if self.emulator is not None:
            names = self.emulator.reset()
            self._event(f"card emulator: {len(names)} card(s) back to their profiles")

    # -- the card emulator -----------------------------------------------------------------
    def _load_emulated(self, card_name: str) -> None:
        """Have the emulator load *card_name*'s profile and wait (bounded) until pcscd shows
        the new card in its reader.  Nothing to do when that profile is in the reader already
        and pcscd shows it."""
        emulator = self.emulator
        assert emulator is not None
        profile, reader = self.emulated[card_name], emulator.reader
        scard = _scard()
        hr, ctx = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)  # this thread's own
        if hr != scard.SCARD_S_SUCCESS:
            raise InstrumentError(f"{self!r}: insert({card_name!r}): cannot reach pcscd: "
                                  f"{_pcsc_err(hr)}")
        try:
            current = emulator.loaded()
            state, events, atr = _reader_state(ctx, reader)
            if (current.profile == profile and current.present
                    and _shows(state, atr, current)):
                self._event(f"card emulator: {profile} is in {reader!r} already")
                return
            wanted = emulator.load(profile)
            self._event(f"card emulator: load {profile} into {reader!r}")
            self._await_emulated(ctx, card_name, wanted, events, emulator.load_timeout)
        finally:
            scard.SCardReleaseContext(ctx)

    def _await_emulated(self, ctx: Any, card_name: str, wanted: EmulatorState,
                        events_before: int, bound: float) -> None:
        """Until the emulator's reader has had a card event since *events_before* and shows
        *wanted*; bounded by *bound*."""
        scard = _scard()
        reader = self.readers[card_name]
        deadline = time.monotonic() + bound
        states = [(reader, scard.SCARD_STATE_UNAWARE)]
        last = "not read yet"
        while True:
            left_ms = int(max(0.0, deadline - time.monotonic()) * 1000)
            hr, got = scard.SCardGetStatusChange(ctx, left_ms, states)
            if hr == scard.SCARD_S_SUCCESS:
                _reader, state, atr = got[0]
                events = (state >> 16) & 0xFFFF
                last = (f"{_state_text(state)}, ATR {bytes(atr).hex().upper() or 'none'}, "
                        f"{(events - events_before) & 0xFFFF} card event(s)")
                if events != events_before and _shows(state, bytes(atr), wanted):
                    shown = ("no answer to reset" if wanted.mute
                             else f"ATR {bytes(atr).hex().upper()}")
                    self._event(f"card emulator: {wanted.profile} in {reader!r} ({shown})")
                    return
                states = [(reader, state & ~scard.SCARD_STATE_CHANGED)]
            elif hr != scard.SCARD_E_TIMEOUT:
                last = _pcsc_err(hr)
            if left_ms <= 0:
                shown = "no answer to reset" if wanted.mute else f"ATR {wanted.atr.hex().upper()}"
                raise NoResponse(f"{self!r}: insert({card_name!r}): the card emulator's reader "
                                 f"{reader!r} did not show profile {wanted.profile!r} ({shown}) "
                                 f"within {bound:.1f} s; last: {last}")

    # -- the stripe reader and the contactless field ----------------------------------------
    @property
    def field(self) -> tuple[str, ...]:
        """The cards in the terminal's contactless field (tap order)."""
        return self._field

    def set_stripe(self, card_name: str, *, track2: str, track1: str = "") -> None:
        """The tracks of *card_name*'s stripe as a reader head reads them (start sentinel …
        end sentinel, LRC; a card sheet's data — a damaged stripe's with its wrong LRC).
        Without them :meth:`swipe` reads the stripe image off the card's chip."""
        self._known_card("set_stripe", card_name)
        for n, track in ((1, track1), (2, track2)):
            if not track and n == 1:
                continue
            problem = _track_problem(n, track)
            if problem:   # names the position, never the data
                raise ConfigError(f"{self!r}: set_stripe({card_name!r}): track {n}: {problem}")
        self._stripes[card_name] = (track1, track2)

    def swipe(self, card_name: str, *, bad_read: bool = False) -> None:
        """Swipe *card_name* through the terminal's stripe reader: its tracks go to the probe
        (SWIPE) as the head reads them; *bad_read*: with a wrong LRC on each track (a dirty
        stripe, a swipe too fast).  The card must not be in the slot or the field."""
        self.require_open("swipe")
        self._known_card("swipe", card_name)
        if card_name == self._inserted or card_name in self._field:
            where = "slot" if card_name == self._inserted else "contactless field"
            raise ConfigError(f"{self!r}: swipe({card_name!r}): the card is in the {where}; "
                              f"take it out first")
        self._await_pull("swipe")
        track1, track2 = self._stripes.get(card_name) or self._stripe_of(card_name)
        verdict = self._judge(Stage.SWIPE, card=card_name)  # a stripe fault spoils it
        how = verdict.how if verdict.action is CardAction.MISREAD else ("lrc" if bad_read
                                                                         else "")
        if how == "lrc":
            track1, track2 = (_bad_lrc(1, track1), _bad_lrc(2, track2))
        elif how == "data":
            track2 = _cut_track2(track2)
        self._event(f"swipe {card_name}: track 1 {len(track1)} characters, track 2 "
                    f"{len(track2)} characters"
                    + (f", {MISREAD_TEXT[how]}" if how else "") + "; track data not shown")
        self._request(MsgType.SWIPE, swipe_payload(track1, track2))

    def tap(self, card_name: str) -> None:
        """Hold *card_name* to the terminal's contactless field (alone: a card there before
        leaves it)."""
        self._set_field("tap", (card_name,))

    def tap_both(self, card_a: str, card_b: str) -> None:
        """Hold two cards to the field at once: the terminal's reader sees a collision."""
        if card_a == card_b:
            raise ConfigError(f"{self!r}: tap_both(): two different cards, got {card_a!r} "
                              f"twice")
        self._set_field("tap_both", (card_a, card_b))

    def take_away(self) -> None:
        """Take every card out of the contactless field."""
        self._set_field("take_away", ())

    def _known_card(self, operation: str, card_name: str) -> None:
        if card_name not in self.readers:
            raise ConfigError(f"{self!r}: {operation}(): unknown card {card_name!r}; "
                              f"configured cards are {sorted(self.readers)}")

    def _set_field(self, operation: str, cards: tuple[str, ...]) -> None:
        self.require_open(operation)
        for card in cards:
            self._known_card(operation, card)
            if card == self._inserted:
                raise ConfigError(f"{self!r}: {operation}({card!r}): the card is in the slot; "
                                  f"remove() it first")
        emulated = [card for card in cards if card in self.emulated]
        if len(emulated) > 1 or (emulated and self._inserted in self.emulated):
            raise ConfigError(f"{self!r}: {operation}(): the card emulator holds one card at "
                              f"a time; {emulated} cannot join {self._inserted!r}")
        self._await_pull(operation)
        self._disconnect_cl()
        for card in emulated:
            self._load_emulated(card)
        self._field = cards
        self._event(f"contactless field: {', '.join(cards) or 'empty'}"
                    + (" (collision)" if len(cards) > 1 else ""))
        self._request(MsgType.TAP, tap_payload(len(cards)))

    def _stripe_of(self, card_name: str) -> tuple[str, str]:
        """The stripe a swipe presents: an emulated card's from the card emulator (its card
        sheet, as a lab's magstripe emulator head is loaded), any other card's read off its
        chip.  A card without a stripe cannot be swiped (ConfigError)."""
        if card_name in self.emulated and self.emulator is not None:
            track1, track2 = self.emulator.stripe(self.emulated[card_name])
            if not track2:
                raise ConfigError(f"{self!r}: swipe({card_name!r}): the card has no stripe")
            return track1, track2
        return self._stripe_from_chip(card_name)

    def _stripe_from_chip(self, card_name: str) -> tuple[str, str]:
        """The card's stripe image from its chip: track 2 from the track 2 equivalent (57),
        track 1 from it and the cardholder name (5F20), read through the card's reader with a
        context of this thread (SELECT, GET PROCESSING OPTIONS, READ RECORD; the card's ATC
        counts one up).  A card whose chip gives none needs :meth:`set_stripe`."""
        if card_name in self.emulated:
            if self._inserted in self.emulated:
                raise ConfigError(f"{self!r}: swipe({card_name!r}): the card emulator holds "
                                  f"{self._inserted!r} (in the slot); set_stripe() the card")
            self._load_emulated(card_name)
        reader = self.readers[card_name]
        scard = _scard()
        hr, ctx = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
        if hr != scard.SCARD_S_SUCCESS:
            raise InstrumentError(f"{self!r}: swipe({card_name!r}): cannot reach pcscd: "
                                  f"{_pcsc_err(hr)}")
        try:
            hr, hcard, proto = scard.SCardConnect(ctx, reader, scard.SCARD_SHARE_SHARED,
                                                  scard.SCARD_PROTOCOL_T0
                                                  | scard.SCARD_PROTOCOL_T1)
            if hr != scard.SCARD_S_SUCCESS:
                raise InstrumentError(
                    f"{self!r}: swipe({card_name!r}): no stripe set (set_stripe) and the "
                    f"card's chip in {reader!r} cannot give its stripe image: {_pcsc_err(hr)}")
            try:
                tags = _chip_tags(lambda capdu: _transmit(scard, hcard, proto, capdu),
                                  f"{self!r}: swipe({card_name!r})")
            finally:
                scard.SCardDisconnect(hcard, scard.SCARD_RESET_CARD)
        finally:
            scard.SCardReleaseContext(ctx)
        return _stripe_image(tags, f"{self!r}: swipe({card_name!r})")

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

    def _judge(self, stage: Stage, capdu: bytes = b"", answer: bytes = b"",
               card: str = "") -> CardVerdict:
        """The active rules' verdict on one point of an exchange; records its trips.  A rule's
        bug raises RuleFailed, which kills the relay (never an injected fault)."""
        with self._faults_lock:
            verdict, trips = self._faults.judge(stage, time.time(), capdu, answer, card)
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

    def _request(self, mtype: MsgType, payload: bytes = b"") -> None:
        """Send INSERT/REMOVE/SWIPE/TAP and wait for STATUS, re-sending; bounded.  Never
        called in the relay thread (it reads the STATUS this waits for)."""
        frame = ProbeFrame(self._seq.next(), mtype, payload)
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
            pulled_by = answer.pulled_by
            later.schedule(due, lambda: self._pull_card(pulled_by))

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

    def _pull_card(self, pulled_by: str = "a fault") -> None:
        """In the "later" thread: the card has left the slot; the probe opens card-detect."""
        try:
            self._event(f"card pulled by {pulled_by}: REMOVE to the probe")
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
            name = self._inserted
            reader = self.readers[name]
            if hr == scard.SCARD_W_REMOVED_CARD or self._card_left(reader):
                self._inserted = None
                self._disconnect_card()
                self._add("R-APDU", note=f"SCardTransmit gave no R-APDU ({_pcsc_err(hr)}, "
                                         f"{len(resp)} bytes): {name} left {reader!r} → absent")
                return _Answer(ProbeFrame(frame.seq, MsgType.RAPDU,
                                          answer_payload(AnswerStatus.ABSENT)), pull=True,
                               pulled_by="leaving its reader")
            self._add("R-APDU", note=f"SCardTransmit failed, {_pcsc_err(hr)} → mute")
            return _Answer(ProbeFrame(frame.seq, MsgType.RAPDU,
                                      answer_payload(AnswerStatus.MUTE)))
        rapdu = bytes(resp)
        note = ""
        verdict = self._judge(Stage.RESPONSE, capdu, rapdu)
        if verdict.action is CardAction.REPLACE:
            note = (f"card fault: the card answered {rapdu[-2:].hex().upper()} with "
                    f"{len(rapdu) - 2} data byte(s)")
            rapdu = verdict.data
        return self._card_answer(frame, capdu, rapdu, note)

    def _card_left(self, reader: str) -> bool:
        """After a transmit without R-APDU: whether *reader* reports its card gone within
        :data:`REMOVAL_WAIT_S` (relay thread; its context)."""
        scard = _scard()
        deadline = time.monotonic() + REMOVAL_WAIT_S
        states = [(reader, scard.SCARD_STATE_UNAWARE)]
        while True:
            left_ms = int(max(0.0, deadline - time.monotonic()) * 1000)
            hr, got = scard.SCardGetStatusChange(self._ctx, left_ms, states)
            if hr == scard.SCARD_S_SUCCESS:
                _reader, state, _atr = got[0]
                if state & scard.SCARD_STATE_EMPTY:
                    return True
                states = [(reader, state & ~scard.SCARD_STATE_CHANGED)]
            elif hr != scard.SCARD_E_TIMEOUT:
                return False
            if left_ms <= 0:
                return False

    # -- the contactless reader ------------------------------------------------------------
    def _on_cl_power_on(self, frame: ProbeFrame) -> _Answer:
        """The terminal's contactless reader activates the card in its field: the field's
        one card's reader is connected (ABSENT: none; COLLISION: more than one)."""
        field = self._field
        if not field or len(field) > 1:
            status = AnswerStatus.ABSENT if not field else AnswerStatus.COLLISION
            self._add("ATR", note=f"contactless: {len(field)} card(s) in the field → "
                                  f"{status.name.lower()}")
            return _Answer(ProbeFrame(frame.seq, MsgType.ATR, answer_payload(status)))
        name = field[0]
        reader = self.readers[name]
        scard = _scard()
        self._disconnect_cl()
        hr, hcard, proto = scard.SCardConnect(self._ctx, reader, scard.SCARD_SHARE_SHARED,
                                              scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1)
        atr: bytes = b""
        if hr == scard.SCARD_S_SUCCESS:
            self._cl_hcard, self._cl_protocol = hcard, proto
            hr, _reader, _state, _proto, raw = scard.SCardStatus(hcard)
            atr = bytes(raw) if hr == scard.SCARD_S_SUCCESS else b""
        if not atr:
            self._disconnect_cl()
            self._add("ATR", note=f"contactless {name} on {reader!r}: activation failed, "
                                  f"{_pcsc_err(hr)} → mute")
            return _Answer(ProbeFrame(frame.seq, MsgType.ATR, answer_payload(AnswerStatus.MUTE)))
        note = f"contactless {name}"
        return _Answer(ProbeFrame(frame.seq, MsgType.ATR, answer_payload(AnswerStatus.OK, atr)),
                       sent=("ATR", atr, note))

    def _on_cl_capdu(self, frame: ProbeFrame) -> _Answer:
        capdu = frame.payload
        self._add("C-APDU", capdu, "contactless")
        if not self._field:
            self._add("R-APDU", note="contactless: the field is empty → absent")
            return _Answer(ProbeFrame(frame.seq, MsgType.RAPDU,
                                      answer_payload(AnswerStatus.ABSENT)))
        if self._cl_hcard is None:
            self._add("R-APDU", note="contactless: card not activated → mute")
            return _Answer(ProbeFrame(frame.seq, MsgType.RAPDU,
                                      answer_payload(AnswerStatus.MUTE)))
        scard = _scard()
        hr, resp = scard.SCardTransmit(self._cl_hcard, self._cl_protocol, list(capdu))
        if hr != scard.SCARD_S_SUCCESS or len(resp) < 2:
            self._add("R-APDU", note=f"contactless: SCardTransmit failed, {_pcsc_err(hr)} → "
                                     f"mute")
            return _Answer(ProbeFrame(frame.seq, MsgType.RAPDU,
                                      answer_payload(AnswerStatus.MUTE)))
        rapdu = bytes(resp)
        return _Answer(ProbeFrame(frame.seq, MsgType.RAPDU,
                                  answer_payload(AnswerStatus.OK, rapdu)),
                       sent=("R-APDU", rapdu, "contactless"))

    def _on_cl_power_off(self, frame: ProbeFrame) -> _Answer:
        self._disconnect_cl()
        self._event("terminal reset its contactless field")
        return _Answer(ProbeFrame(frame.seq, MsgType.ACK))

    def _disconnect_cl(self) -> None:
        with self._card_lock:
            if self._cl_hcard is not None:
                scard = _scard()
                scard.SCardDisconnect(self._cl_hcard, scard.SCARD_RESET_CARD)
                self._cl_hcard = None

    def _disconnect_card(self) -> None:
        with self._card_lock:
            if self._hcard is not None:
                scard = _scard()
                scard.SCardDisconnect(self._hcard, scard.SCARD_UNPOWER_CARD)
                self._hcard = None

    def present_code(self, code: str) -> None:
        """Show *code* (the customer's payment code, as the wallet app shows it) to the
        terminal's code scanner: the probe gets its text (SCAN) as the scanner decodes it.
        The code is not logged (masked: first 6, last 4)."""
        self.require_open("present_code")
        try:
            payload = scan_payload(code)
        except ValueError as exc:
            raise ConfigError(f"{self!r}: present_code(): {exc}") from None
        self._event(f"{SCANNED}: {mask_code(code)}")
        self._request(MsgType.SCAN, payload)


_PROBE_REQUESTS: dict[MsgType, Callable[[PcscCardBank, ProbeFrame], _Answer]] = {
    MsgType.POWER_ON: PcscCardBank._on_power_on,
    MsgType.POWER_OFF: PcscCardBank._on_power_off,
    MsgType.CAPDU: PcscCardBank._on_capdu,
    MsgType.CL_POWER_ON: PcscCardBank._on_cl_power_on,
    MsgType.CL_POWER_OFF: PcscCardBank._on_cl_power_off,
    MsgType.CL_CAPDU: PcscCardBank._on_cl_capdu,
}




def _reader_state(ctx: Any, reader: str) -> tuple[int, int, bytes]:
    """(event state, card event count, ATR) of *reader* now."""
    scard = _scard()
    hr, got = scard.SCardGetStatusChange(ctx, 0, [(reader, scard.SCARD_STATE_UNAWARE)])
    if hr != scard.SCARD_S_SUCCESS:
        return 0, 0, b""
    _reader, state, atr = got[0]
    return state, (state >> 16) & 0xFFFF, bytes(atr)


def _shows(state: int, atr: bytes, wanted: EmulatorState) -> bool:
    """Whether a reader in *state* with *atr* holds the card *wanted* describes: present, with
    its ATR, or (a card without an answer to reset) present and mute or without ATR."""
    scard = _scard()
    if not state & scard.SCARD_STATE_PRESENT:
        return False
    if wanted.mute:
        return bool(state & scard.SCARD_STATE_MUTE) or not atr
    return atr == wanted.atr


_STATE_BITS = (("EMPTY", 0x10), ("PRESENT", 0x20), ("EXCLUSIVE", 0x80), ("INUSE", 0x100),
               ("MUTE", 0x200), ("UNAVAILABLE", 0x8), ("UNKNOWN", 0x4))


def _state_text(state: int) -> str:
    names = [name for name, bit in _STATE_BITS if state & bit]
    return "|".join(names) or f"state {state & 0xFFFF:#x}"


def _track_problem(track: int, raw: str) -> str:
    """What makes *raw* no track as a head reads it (sentinels, character set, length; the LRC
    is not judged: a damaged stripe's is wrong), '' when it is one."""
    fmt = TRACKS[track]
    if not 3 <= len(raw) <= fmt.max_chars:
        return f"{len(raw)} characters; expected 3 to {fmt.max_chars} with sentinels and LRC"
    if raw[0] != fmt.start or raw[-2] != fmt.end:
        return (f"start sentinel {fmt.start!r} at character 0 and end sentinel {fmt.end!r} at "
                f"character {len(raw) - 2} expected")
    bad = next((i for i, ch in enumerate(raw)
                if not 0 <= ord(ch) - fmt.base < (1 << fmt.bits)), None)
    return "" if bad is None else f"character {bad} is not a track {track} character"


def _bad_lrc(track: int, raw: str) -> str:
    """*raw* (a track as read) with a wrong LRC character: the right one with its lowest data
    bit flipped (a bad read, whatever the stripe's own LRC was); '' stays ''."""
    if not raw:
        return raw
    base = TRACKS[track].base
    return raw[:-1] + chr(((ord(lrc(track, raw[:-1])) - base) ^ 0x01) + base)


def _cut_track2(raw: str) -> str:
    """Track 2 as a head reads it when the swipe was too fast: the data stops after the PAN
    (no separator, no expiry), closed by the end sentinel and a right LRC; '' stays ''."""
    if not raw:
        return raw
    return encode_track(2, raw[1:-2].split(TRACKS[2].separator, 1)[0])


def _transmit(scard: Any, hcard: Any, proto: int, capdu: bytes) -> bytes:
    hr, resp = scard.SCardTransmit(hcard, proto, list(capdu))
    if hr != scard.SCARD_S_SUCCESS:
        raise InstrumentError(f"SCardTransmit of {ins_name(capdu[1])} failed: {_pcsc_err(hr)}")
    return bytes(resp)


def _exchange(tx: Callable[[bytes], bytes], capdu: bytes) -> tuple[bytes, int]:
    """One command with T=0 procedure bytes resolved (61xx GET RESPONSE, 6Cxx re-send)."""
    data = b""
    for _ in range(8):
        resp = tx(capdu)
        if len(resp) < 2:
            return b"", 0x6F00
        sw = int.from_bytes(resp[-2:], "big")
        data += resp[:-2]
        if sw >> 8 == 0x61:
            capdu = bytes([0x00, 0xC0, 0x00, 0x00, sw & 0xFF])
        elif sw >> 8 == 0x6C:
            capdu = capdu[:4] + (capdu[4:-1] if len(capdu) > 5 else b"") + bytes([sw & 0xFF])
        else:
            return data, sw
    return data, 0x6F00


def _chip_tags(tx: Callable[[bytes], bytes], who: str) -> dict[int, bytes]:
    """The application's record data objects, read as a terminal would (PPSE or PSE
    directory, SELECT, GET PROCESSING OPTIONS with the PDOL zero-filled, READ RECORD).
    Errors name the step and the status word; no card data."""
    aids: list[bytes] = []
    for name in (b"2PAY.SYS.DDF01", b"1PAY.SYS.DDF01"):
        data, sw = _exchange(tx, bytes([0x00, 0xA4, 0x04, 0x00, len(name)]) + name + b"\x00")
        if sw != 0x9000:
            continue
        flat = tlv.flatten(data)
        if name.startswith(b"2"):
            aids = [n.value for n in _walk(tlv.decode(data)) if n.tag == 0x4F]
        elif 0x88 in flat:
            sfi = flat[0x88][0]
            for rec in range(1, 9):
                data, sw = _exchange(tx, bytes([0x00, 0xB2, rec, (sfi << 3) | 4, 0x00]))
                if sw != 0x9000:
                    break
                aids += [n.value for n in _walk(tlv.decode(data)) if n.tag == 0x4F]
        if aids:
            break
    for aid in aids:
        fci, sw = _exchange(tx, bytes([0x00, 0xA4, 0x04, 0x00, len(aid)]) + aid + b"\x00")
        if sw == 0x9000:
            break
    else:
        raise InstrumentError(f"{who}: no application to read the stripe image from "
                              f"({len(aids)} listed)")
    pdol = tlv.flatten(fci).get(0x9F38, b"")
    need = sum(e.length for e in tlv.parse_dol(pdol))
    gpo, sw = _exchange(tx, bytes([0x80, 0xA8, 0x00, 0x00, need + 2, 0x83, need]) + bytes(need)
                        + b"\x00")
    if sw != 0x9000:
        raise InstrumentError(f"{who}: GET PROCESSING OPTIONS answered {sw_text(sw)}")
    items = tlv.decode(gpo)
    afl = (items[0].value[2:] if items and items[0].tag == 0x80
           else tlv.flatten(gpo).get(0x94, b""))
    tags: dict[int, bytes] = {}
    for i in range(0, len(afl) - 3, 4):
        sfi, first, last = afl[i] >> 3, afl[i + 1], afl[i + 2]
        for rec in range(first, last + 1):
            data, sw = _exchange(tx, bytes([0x00, 0xB2, rec, (sfi << 3) | 4, 0x00]))
            if sw != 0x9000:
                raise InstrumentError(f"{who}: READ RECORD {sfi}.{rec} answered {sw_text(sw)}")
            for tag, value in tlv.flatten(data).items():
                tags.setdefault(tag, value)
    return tags


def _walk(items: list[tlv.Tlv]) -> list[tlv.Tlv]:
    out: list[tlv.Tlv] = []
    stack = list(items)
    while stack:
        node = stack.pop(0)
        out.append(node)
        stack.extend(node.children)
    return out


def _stripe_image(tags: Mapping[int, bytes], who: str) -> tuple[str, str]:
    """(track 1, track 2) as a head reads them, from the chip's 57 and 5F20."""
    equivalent = tags.get(0x57, b"").hex().upper().rstrip("F")
    pan, sep, rest = equivalent.partition("D")
    if not sep or len(rest) < 7 or not ascii_digits(rest):
        raise InstrumentError(f"{who}: the chip's track 2 equivalent (57) is missing or not "
                              f"PAN D YYMM service code ({len(equivalent)} characters)")
    name = tags.get(0x5F20, b"").decode("ascii", "replace").strip().upper()
    if len(name) < 2 or any(c in "^%?" or not 0x20 <= ord(c) <= 0x5F for c in name):
        name = "CARDHOLDER/TEST"   # track 1 cannot carry the chip's name as it is
    try:
        stripe = stripe_of(pan, name[:26], rest[:4], rest[4:7], discretionary=rest[7:])
    except DecodeError as exc:
        raise InstrumentError(f"{who}: no stripe image from the chip's data: {exc}") from None
    return stripe.encoded(1), stripe.encoded(2)


def _pcsc_err(hr: int) -> str:
    code = hr & 0xFFFFFFFF
    try:
        text = _scard().SCardGetErrorMessage(hr)
    except Exception:  # noqa: BLE001 - the message is best effort; the code is what counts
        text = "unknown"
    return f"PC/SC 0x{code:08X} ({text})"


__all__ = ["CardEmulator", "EmulatorState", "PcscCardBank", "SocketCardEmulator", "TraceEntry",
           "render_apdu", "hexdump"]
