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
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from protocols.apdu import ins_name, sw_text
from protocols.errors import DecodeError, FramingError
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
from rigs.driver import Driver, SessionState
from rigs.errors import ConfigError, InstrumentError, NoResponse, TransportError, hexdump
from rigs.events import Source
from rigs.transport import ByteTransport

log = logging.getLogger(__name__)

# PCSCLITE_CSOCK_NAME is read once per process by libpcsclite (at the first context).
_process_socket: str | None = None
_process_lock = threading.Lock()

PIN_INS = frozenset({0x20, 0x24})    # VERIFY, CHANGE REFERENCE DATA: data is PIN material


def _scard() -> Any:
    from smartcard import scard  # imported late: PCSCLITE_CSOCK_NAME must be set first

    return scard


@dataclass(frozen=True)
class TraceEntry:
    t: float            # seconds since the bank was opened
    kind: str           # "C-APDU", "R-APDU", "ATR", "event"
    data: bytes = b""
    note: str = ""


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
    """Card bank + probe relay.  See the module doc."""

    def __init__(self, name: str, probe: ByteTransport, readers: dict[str, str],
                 pcsc_socket: str | None = None, *, retry_interval: float = RETRY_INTERVAL,
                 max_retries: int = MAX_RETRIES) -> None:
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
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._relay, name=f"{self!r} relay", daemon=True)
        super().open()
        self._thread.start()

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
            self._thread.join(timeout=2.0)
            self._thread = None
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
        return (self.state is SessionState.OPEN and self._inserted is None
                and self._thread is not None and self._thread.is_alive())

    def restore_nominal(self) -> None:
        self.require_open("restore_nominal")
        if self._thread is None or not self._thread.is_alive():
            raise InstrumentError(f"{self!r}: restore_nominal(): relay thread is dead "
                                  f"({self.relay_error!r})")
        if self._inserted is not None or self.probe_flags & StatusFlag.CARD_PRESENT:
            self.remove()

    def trace(self) -> list[TraceEntry]:
        with self._trace_lock:
            return list(self._trace)

    def clear_trace(self) -> None:
        with self._trace_lock:
            self._trace.clear()

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

    def _send(self, frame: ProbeFrame) -> None:
        wire = encode_frame(frame)
        with self._write_lock:
            self.probe.write(wire)
            if frame.type is not MsgType.NAK:
                self._last_sent = wire

    def _request(self, mtype: MsgType) -> None:
        """Send INSERT/REMOVE and wait for STATUS, re-sending; bounded."""
        frame = ProbeFrame(self._seq.next(), mtype)
        bound = self.retry_interval * (self.max_retries + 1)
        with self._cond:
            self._pending, self._pending_answer = (frame.seq, MsgType.STATUS), None
        try:
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
            log.exception("%r: relay thread died", self)
            self.relay_error = exc
            with self._cond:
                self._cond.notify_all()

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
                self.probe.write(self._last_probe_answer)
            return
        with self._card_lock:
            answer = handler(self, frame)
        wire = encode_frame(answer)
        with self._write_lock:
            self.probe.write(wire)
            self._last_sent = wire
        self._last_probe_request, self._last_probe_answer = key, wire

    # -- PC/SC ---------------------------------------------------------------------------
    def _on_power_on(self, frame: ProbeFrame) -> ProbeFrame:
        name = self._inserted
        if name is None:
            self._add("ATR", note="no card inserted: absent")
            return ProbeFrame(frame.seq, MsgType.ATR, answer_payload(AnswerStatus.ABSENT))
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
            return ProbeFrame(frame.seq, MsgType.ATR, answer_payload(AnswerStatus.MUTE))
        self._protocol = proto
        hr, _reader, _state, _proto, atr = scard.SCardStatus(self._hcard)
        if hr != scard.SCARD_S_SUCCESS or not atr:
            self._add("ATR", note=f"{name}: SCardStatus failed, {_pcsc_err(hr)} → mute")
            return ProbeFrame(frame.seq, MsgType.ATR, answer_payload(AnswerStatus.MUTE))
        atr_b = bytes(atr)
        self._add("ATR", atr_b, note=f"{name}, T={0 if proto == scard.SCARD_PROTOCOL_T0 else 1}")
        return ProbeFrame(frame.seq, MsgType.ATR, answer_payload(AnswerStatus.OK, atr_b))

    def _on_power_off(self, frame: ProbeFrame) -> ProbeFrame:
        self._disconnect_card()
        self._event("terminal powered the card off")
        return ProbeFrame(frame.seq, MsgType.ACK)

    def _on_capdu(self, frame: ProbeFrame) -> ProbeFrame:
        capdu = frame.payload
        self._add("C-APDU", capdu)
        if self._inserted is None:
            self._add("R-APDU", note="no card inserted: absent")
            return ProbeFrame(frame.seq, MsgType.RAPDU, answer_payload(AnswerStatus.ABSENT))
        if self._hcard is None:
            self._add("R-APDU", note="card not powered: mute")
            return ProbeFrame(frame.seq, MsgType.RAPDU, answer_payload(AnswerStatus.MUTE))
        scard = _scard()
        hr, resp = scard.SCardTransmit(self._hcard, self._protocol, list(capdu))
        if hr != scard.SCARD_S_SUCCESS or len(resp) < 2:
            status = (AnswerStatus.ABSENT if hr == scard.SCARD_W_REMOVED_CARD
                      else AnswerStatus.MUTE)
            self._add("R-APDU", note=f"SCardTransmit failed, {_pcsc_err(hr)} → "
                                     f"{status.name.lower()}")
            return ProbeFrame(frame.seq, MsgType.RAPDU, answer_payload(status))
        rapdu = bytes(resp)
        self._add("R-APDU", rapdu)
        return ProbeFrame(frame.seq, MsgType.RAPDU, answer_payload(AnswerStatus.OK, rapdu))

    def _disconnect_card(self) -> None:
        with self._card_lock:
            if self._hcard is not None:
                scard = _scard()
                scard.SCardDisconnect(self._hcard, scard.SCARD_UNPOWER_CARD)
                self._hcard = None


_PROBE_REQUESTS = {
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
