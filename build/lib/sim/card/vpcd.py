"""Host virtual cards on vsmartcard-vpcd readers (the card is the TCP client of pcscd's vpcd).

Wire (BENCH-FACTS): each message is a 2-byte big-endian length + payload.  A 1-byte payload is
a control code (0 power off, 1 power on, 2 reset, 4 get ATR); anything else is a C-APDU and
gets one R-APDU back.  Only get-ATR and C-APDUs are answered.  ``TCP_QUICKACK`` is set again
before every recv (vpcd writes length and payload separately: without it each APDU waits for
the delayed ACK, ~44 ms).

One :class:`VpcdHost` hosts several cards, one socket each, in one select loop.  It holds no
card logic: control codes map to card methods through :data:`CONTROL`, APDUs go to
``card.apdu()``.

Mute card (the card state machine answers ``b""`` = no answer).  vpcd waits for a card's answer
with a blocking recv and no timeout, so a card that really stays silent would hang pcscd (and
every client) for good.  The host therefore encodes "no answer" in the way a real reader reports
a card whose chip does not answer a reset: the get-ATR answer is :data:`NO_ATR` (34 bytes, longer
than any ATR; vpcd refuses it with IFD_COMMUNICATION_ERROR without dropping the connection),
so pcscd keeps the card *present* but cannot power it, and pyscard's connect fails at once with
``SCARD_W_UNRESPONSIVE_CARD`` (0x80100066, "The smart card is not responding to a reset").
An unanswered C-APDU (only possible on a card that went mute after its ATR) gets ``6F00``.

Removal and insertion are the card's connection: closing it is a removal pcscd reports (it
notices the dead connection at its next poll, 0-400 ms), reconnecting an insertion.  A card
whose profile says ``pull_at`` raises :class:`~sim.card.emv.CardRemoved` at that instruction:
the host closes its connection without answering (pcscd's SCardTransmit then returns no
R-APDU and the reader reports the card gone); the slot stays empty until the card is inserted
again.

Card emulator (:mod:`sim.card.emulator`, :class:`EmulatorBinding`): one slot's card is the
emulator's.  The host listens on the emulator's control socket (a unix socket, JSON lines) in
the same select loop; a ``load`` closes that slot's connection and connects the new card at
once, so pcscd sees a removal then an insertion (the old connection is found dead at one poll,
the new one accepted at the next).  The answer goes out once the new card is connected.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, MappingProxyType
from typing import Any

from protocols.controlserver import ControlClients, ControlSession, listen_unix
from protocols.errors import NoResponse, RigError, SimError, TransportError, hexdump
from sim.card.emulator import CardEmulator, handle_emulator_control
from sim.card.emv import CardRemoved, SimEmvCard

log = logging.getLogger(__name__)

CTRL_OFF, CTRL_ON, CTRL_RESET, CTRL_ATR = 0, 1, 2, 4
NO_ATR = bytes(34)                 # "no answer to reset": over vpcd's MAX_ATR_SIZE (33)
NO_RAPDU = bytes.fromhex("6F00")   # "no precise diagnosis" for an unanswered C-APDU
REMOVED = object()
"""What :meth:`VpcdSlot.handle` returns when the card left the reader at that command."""
#: Bound of connecting a card again (a load into the emulator).
REINSERT_TIMEOUT_S = 2.0
#: Bound of sending one control answer to a client that does not read.
CONTROL_SEND_TIMEOUT_S = 2.0
#: Longest control request line.
CONTROL_MAX_LINE = 4096


def _ctrl_off(card: SimEmvCard) -> bytes | None:
    card.power_off()
    return None


def _ctrl_on(card: SimEmvCard) -> bytes | None:
    card.power_on()
    return None


def _ctrl_reset(card: SimEmvCard) -> bytes | None:
    card.reset()
    return None


def _ctrl_atr(card: SimEmvCard) -> bytes | None:
    return card.profile.reset_answer


# control code → action; a returned bytes value is sent back (b"" = the card gives no answer)
CONTROL: Mapping[int, Callable[[SimEmvCard], bytes | None]] = MappingProxyType({
    CTRL_OFF: _ctrl_off,
    CTRL_ON: _ctrl_on,
    CTRL_RESET: _ctrl_reset,
    CTRL_ATR: _ctrl_atr,
})


@dataclass
class VpcdSlot:
    """One card on one vpcd port."""

    card: SimEmvCard
    host: str
    port: int
    sock: socket.socket | None = None
    rx: bytearray = field(default_factory=bytearray)
    apdus: int = 0
    out: bool = False
    """The card left the reader (pulled); it stays out until it is connected again."""

    def __repr__(self) -> str:
        return f"VpcdSlot({self.card.profile.name} → {self.host}:{self.port})"

    def handle(self, payload: bytes) -> bytes | object | None:
        """Map one vpcd message to the card; returns the answer payload, None (no answer) or
        :data:`REMOVED` (the card left the reader at this command)."""
        if len(payload) == 1:
            action = CONTROL.get(payload[0])
            if action is None:
                log.warning("%r: unknown vpcd control code %02X ignored", self, payload[0])
                return None
            answer = action(self.card)
            if answer is not None and not answer:
                return NO_ATR
            return answer
        self.apdus += 1
        try:
            rapdu = self.card.apdu(payload)
        except CardRemoved as exc:
            log.info("%r: %s", self, exc)
            return REMOVED
        return rapdu if rapdu else NO_RAPDU


@dataclass
class EmulatorBinding:
    """The card emulator, the slot whose card it is, and its control socket's path."""

    emulator: CardEmulator
    slot: VpcdSlot
    control_path: str


class VpcdHost:
    """Connect every slot to its vpcd port (bounded retry), then serve until stopped; with an
    :class:`EmulatorBinding`, also serve the emulator's control socket."""

    def __init__(self, slots: list[VpcdSlot], emulator: EmulatorBinding | None = None) -> None:
        if not slots:
            raise SimError("VpcdHost: needs at least one card")
        if emulator is not None and emulator.slot not in slots:
            raise SimError("VpcdHost: the emulator's slot must be one of the slots")
        self.slots = slots
        self.emulator = emulator
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stopping = False
        self._clients: ControlClients | None = None

    def connect(self, timeout: float = 10.0) -> None:
        """Connect every slot, retrying until pcscd's vpcd ports listen; bounded by *timeout*.
        Then listen on the emulator's control socket, if any."""
        deadline = time.monotonic() + timeout
        for slot in self.slots:
            if slot.sock is None:
                self._connect_slot(slot, deadline, timeout)
        if self.emulator is not None:
            self.emulator.emulator.inserted()
            self._listen(self.emulator.control_path)

    def _connect_slot(self, slot: VpcdSlot, deadline: float, bound: float) -> None:
        pause = threading.Event()
        last = ""
        while slot.sock is None:
            try:
                s = socket.create_connection((slot.host, slot.port), timeout=1.0)
            except OSError as exc:
                last = exc.strerror or str(exc)
                if time.monotonic() >= deadline or self._stopping:
                    raise NoResponse(f"{slot!r}: vpcd port did not accept a connection "
                                     f"within {bound:.1f} s (last: {last})") from exc
                pause.wait(0.05)      # bounded retry while pcscd starts
                continue
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.settimeout(None)
            slot.sock, slot.out = s, False
            slot.rx.clear()
            log.info("%r connected", slot)

    def _listen(self, path: str) -> None:
        listener = listen_unix(Path(path), "VpcdHost: the emulator control socket", backlog=4)
        self._clients = ControlClients(
            listener, lambda: ControlSession(self._control_request, "card emulator control socket",
                                             max_line=CONTROL_MAX_LINE),
            where="card emulator control socket", send_timeout_s=CONTROL_SEND_TIMEOUT_S)
        log.info("card emulator control socket %s", path)

    def stop(self) -> None:
        """Thread- and signal-safe: wakes the loop, which then closes every socket."""
        self._stopping = True
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    def install_signal_handlers(self) -> None:
        def handler(signum: int, frame: FrameType | None) -> None:
            self.stop()
        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def serve(self) -> None:
        """Answer vpcd (and the emulator's control socket) until :meth:`stop`; a connection
        vpcd closes is an error (pcscd died)."""
        if any(slot.sock is None and not slot.out for slot in self.slots):
            raise SimError("VpcdHost: serve() needs connect() first")
        try:
            while not self._stopping:
                by_sock = {slot.sock: slot for slot in self.slots if slot.sock is not None}
                clients = self._clients
                watched: list[socket.socket] = [self._wake_r, *by_sock]
                if clients is not None:
                    watched += [clients.listener, *clients]
                ready, _, _ = select.select(watched, [], [], 1.0)
                for sock in ready:
                    if sock is self._wake_r:
                        continue
                    if clients is not None and sock is clients.listener:
                        clients.accept()
                    elif clients is not None and sock in clients:
                        clients.serve(sock)
                    elif sock in by_sock and by_sock[sock].sock is sock:
                        self._service(by_sock[sock])
        finally:
            self.close()

    def _service(self, slot: VpcdSlot) -> None:
        assert slot.sock is not None
        slot.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        chunk = slot.sock.recv(65538)
        if not chunk:
            raise TransportError(f"{slot!r}: vpcd closed the connection (pcscd stopped?); "
                                 f"{len(slot.rx)} bytes were pending")
        slot.rx += chunk
        while slot.sock is not None and len(slot.rx) >= 2:
            size = int.from_bytes(slot.rx[:2], "big")
            if len(slot.rx) < 2 + size:
                break
            payload = bytes(slot.rx[2:2 + size])
            del slot.rx[:2 + size]
            answer = slot.handle(payload)
            if answer is REMOVED:
                self._remove(slot, f"pulled at {hexdump(payload[:5])}")
            elif isinstance(answer, bytes):
                slot.sock.sendall(len(answer).to_bytes(2, "big") + answer)
                log.debug("%r: %s → %d bytes", slot, hexdump(payload[:5]), len(answer))

    def _remove(self, slot: VpcdSlot, why: str) -> None:
        """The card leaves the reader: its connection closes (pcscd sees a removal)."""
        if slot.sock is not None:
            slot.sock.close()
        slot.sock, slot.out = None, True
        slot.rx.clear()
        if self.emulator is not None and slot is self.emulator.slot:
            self.emulator.emulator.card_left()
        log.info("%r: card removed from the reader (%s)", slot, why)

    def _reinsert(self, slot: VpcdSlot, card: SimEmvCard) -> None:
        """Swap *slot*'s card: remove the old one (close), insert *card* (connect), bounded."""
        if slot.sock is not None:
            self._remove(slot, "swapped by the card emulator")
        slot.card = card
        self._connect_slot(slot, time.monotonic() + REINSERT_TIMEOUT_S, REINSERT_TIMEOUT_S)

    # -- the emulator's control socket ------------------------------------------------------
    def _control_request(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.emulator is not None
        binding = self.emulator
        answer = handle_emulator_control(binding.emulator, request)
        if binding.emulator.take_insertion():
            try:
                self._reinsert(binding.slot, binding.emulator.card)
            except RigError as exc:
                answer = {"ok": False, "error": f"load: the card did not go back into the "
                                                f"reader: {exc}"}
                if "seq" in request:
                    answer["seq"] = request["seq"]
                return answer
            binding.emulator.inserted()
            answer.update(binding.emulator.state())
        return answer

    def close(self) -> None:
        for slot in self.slots:
            if slot.sock is not None:
                try:
                    slot.sock.close()
                finally:
                    slot.sock = None
        if self._clients is not None:
            self._clients.close()
            self._clients.listener.close()
            self._clients = None
            if self.emulator is not None:
                try:
                    os.unlink(self.emulator.control_path)
                except OSError:
                    pass
        self._wake_r.close()
        self._wake_w.close()
