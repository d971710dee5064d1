"""The terminal's card readers over the bench harness (implement ``sim.terminal.emv.Slot``).

The kernel runs in the runner's worker thread and calls :meth:`HarnessSlot.power_on` /
:meth:`transmit`; those send ``card_power`` / ``capdu`` on the harness and wait (bounded) for the
``atr`` / ``rapdu`` that the runner's I/O loop hands to :meth:`deliver`.  The contactless reader
is the same class with the contactless messages (:data:`CONTACTLESS`: ``cl_power`` /
``cl_capdu`` answered by ``cl_atr`` / ``cl_rapdu``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from protocols.errors import DecodeError, SimError


def _card_error(reason: str, detail: str) -> Exception:
    """A ``sim.terminal.emv.CardError`` (imported where used: the kernel is a separate module)."""
    try:
        from sim.terminal.emv import CardError
    except ImportError:  # kernel not installed: still a typed error of the hierarchy
        return SlotError(reason, detail)
    return CardError(reason, detail)


class SlotError(SimError):
    """Stand-in for emv.CardError when the kernel module is absent."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        super().__init__(f"card {reason}" + (f": {detail}" if detail else ""))


@dataclass(frozen=True)
class SlotMessages:
    """The harness message types of one card reader (docs/internals.md)."""

    power: str
    capdu: str
    atr: str
    rapdu: str


CONTACT = SlotMessages("card_power", "capdu", "atr", "rapdu")
CONTACTLESS = SlotMessages("cl_power", "cl_capdu", "cl_atr", "cl_rapdu")


class HarnessSlot:
    """Slot whose contacts are the harness messages of docs/internals.md (*messages*: the
    contact slot's, or :data:`CONTACTLESS` for the contactless reader)."""

    def __init__(self, send: Callable[[Mapping[str, Any]], None], *,
                 make_error: Callable[[str, str], Exception] = _card_error,
                 messages: SlotMessages = CONTACT,
                 contactless: HarnessSlot | None = None) -> None:
        self._send = send
        self._make_error = make_error
        self.messages = messages
        #: The contactless reader next to this slot (the terminal's reader unit), if any.
        self.contactless = contactless
        self._cond = threading.Condition()
        self._answer: Mapping[str, Any] | None = None
        self._expect: str | None = None
        self.powered = False

    # called by the runner's I/O thread
    def deliver(self, obj: Mapping[str, Any]) -> None:
        with self._cond:
            if obj.get("t") != self._expect:
                return  # late answer to an exchange that already timed out
            self._answer = obj
            self._cond.notify_all()

    def abort(self) -> None:
        """Wake a waiting exchange (shutdown); it fails as 'mute'."""
        with self._cond:
            self._answer = {"t": self._expect, "error": "mute", "aborted": True}
            self._cond.notify_all()

    def _exchange(self, request: Mapping[str, Any], answer: str, timeout: float,
                  what: str) -> Mapping[str, Any]:
        with self._cond:
            self._expect = answer
            self._answer = None
        self._send(request)
        with self._cond:
            got = self._cond.wait_for(lambda: self._answer is not None, timeout=timeout)
            obj = self._answer
            self._expect = None
            self._answer = None
        if not got or obj is None:
            raise self._make_error("mute", f"no {answer} for {what} within {timeout:.3f} s")
        if obj.get("error"):
            raise self._make_error(str(obj["error"]), f"{what}: slot reports {obj['error']}")
        return obj

    # Slot protocol
    def power_on(self, timeout: float) -> bytes:
        m = self.messages
        obj = self._exchange({"t": m.power, "on": True}, m.atr, timeout, "power on")
        try:
            atr = bytes.fromhex(str(obj.get("atr", "")))
        except ValueError as exc:
            raise DecodeError(
                f"HarnessSlot: power_on() atr is not hex: {obj.get('atr')!r}") from exc
        self.powered = True
        return atr

    def transmit(self, capdu: bytes, timeout: float) -> bytes:
        m = self.messages
        obj = self._exchange({"t": m.capdu, "data": capdu.hex()}, m.rapdu, timeout,
                             f"C-APDU {capdu[:4].hex()}")
        try:
            data = bytes.fromhex(str(obj.get("data", "")))
        except ValueError as exc:
            raise DecodeError(
                f"HarnessSlot: transmit() rapdu is not hex: {str(obj.get('data'))[:40]!r}") from exc
        if len(data) < 2:
            raise self._make_error("mute", f"R-APDU of {len(data)} bytes (no status word)")
        return data

    def power_off(self) -> None:
        self.powered = False
        self._send({"t": self.messages.power, "on": False})
