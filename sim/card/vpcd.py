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
"""

from __future__ import annotations

import logging
import select
import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import FrameType, MappingProxyType

from protocols.errors import NoResponse, SimError, TransportError, hexdump
from sim.card.emv import SimEmvCard

log = logging.getLogger(__name__)

CTRL_OFF, CTRL_ON, CTRL_RESET, CTRL_ATR = 0, 1, 2, 4
NO_ATR = bytes(34)                 # "no answer to reset": over vpcd's MAX_ATR_SIZE (33)
NO_RAPDU = bytes.fromhex("6F00")   # "no precise diagnosis" for an unanswered C-APDU


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
    return card.profile.atr if not card.profile.mute else b""


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

    def __repr__(self) -> str:
        return f"VpcdSlot({self.card.profile.name} → {self.host}:{self.port})"

    def handle(self, payload: bytes) -> bytes | None:
        """Map one vpcd message to the card; returns the answer payload or None."""
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
        rapdu = self.card.apdu(payload)
        return rapdu if rapdu else NO_RAPDU


class VpcdHost:
    """Connect every slot to its vpcd port (bounded retry), then serve until stopped."""

    def __init__(self, slots: list[VpcdSlot]) -> None:
        if not slots:
            raise SimError("VpcdHost: needs at least one card")
        self.slots = slots
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stopping = False

    def connect(self, timeout: float = 10.0) -> None:
        """Connect every slot, retrying until pcscd's vpcd ports listen; bounded by *timeout*."""
        deadline = time.monotonic() + timeout
        pause = threading.Event()
        for slot in self.slots:
            last = ""
            while slot.sock is None:
                try:
                    s = socket.create_connection((slot.host, slot.port), timeout=1.0)
                except OSError as exc:
                    last = exc.strerror or str(exc)
                    if time.monotonic() >= deadline or self._stopping:
                        raise NoResponse(f"{slot!r}: vpcd port did not accept a connection "
                                         f"within {timeout:.1f} s (last: {last})") from exc
                    pause.wait(0.05)      # bounded retry while pcscd starts
                    continue
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                s.settimeout(None)
                slot.sock = s
                log.info("%r connected", slot)

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
        """Answer vpcd until :meth:`stop`; a closed vpcd connection is an error (pcscd died)."""
        by_sock = {slot.sock: slot for slot in self.slots if slot.sock is not None}
        if len(by_sock) != len(self.slots):
            raise SimError("VpcdHost: serve() needs connect() first")
        try:
            while not self._stopping:
                ready, _, _ = select.select([self._wake_r, *by_sock], [], [], 1.0)
                for sock in ready:
                    if sock is not self._wake_r:
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
        while len(slot.rx) >= 2:
            size = int.from_bytes(slot.rx[:2], "big")
            if len(slot.rx) < 2 + size:
                break
            payload = bytes(slot.rx[2:2 + size])
            del slot.rx[:2 + size]
            answer = slot.handle(payload)
            if answer is not None:
                slot.sock.sendall(len(answer).to_bytes(2, "big") + answer)
                log.debug("%r: %s → %d bytes", slot, hexdump(payload[:5]), len(answer))

    def close(self) -> None:
        for slot in self.slots:
            if slot.sock is not None:
                try:
                    slot.sock.close()
                finally:
                    slot.sock = None
        self._wake_r.close()
        self._wake_w.close()
