"""The probe in the terminal's card slot, simulated: a pure state machine between the probe link
(bytes to/from the rig's card bank, docs/probe-link.md) and the terminal's harness messages
(docs/internals.md: ``card`` / ``atr`` / ``rapdu`` to the terminal; ``card_power`` / ``capdu``
from it).  Time is passed in; :meth:`SimProbe.poll` drives retries and the answer bound.

It also stands in for the terminal's other two readers: the stripe reader (the rig's ``SWIPE``
becomes ``{"t":"swipe","track1":…,"track2":…}``, the tracks as the head read them) and the
contactless field (``TAP`` becomes ``{"t":"field","cards":n}``; the code scanner: ``SCAN``
becomes ``{"t":"scan","code":…}``; the terminal's ``cl_power`` /
``cl_capdu`` become ``CL_POWER_ON`` / ``CL_CAPDU`` answered by ``cl_atr`` / ``cl_rapdu``).  The
probe answers an activation itself when the field is empty (``absent``) or holds more than one
card (``collision``), as the reader's anticollision would.

The probe is powered by the rig, so the card-detect state survives terminal power cycles: call
:meth:`SimProbe.harness_connected` when a firmware process connects (it is told the card state)
and :meth:`SimProbe.harness_disconnected` when it goes away (the card loses power).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from protocols.errors import DecodeError, FramingError, ProtocolError
from protocols.probe import (
    MAX_RETRIES,
    RETRY_INTERVAL,
    AnswerStatus,
    FrameDecoder,
    MsgType,
    ProbeFrame,
    SeqCounter,
    StatusFlag,
    encode_frame,
    parse_answer,
    parse_scan,
    parse_swipe,
    parse_tap,
)

log = logging.getLogger(__name__)

Harness = dict[str, Any]


@dataclass
class ProbeOutput:
    link_out: bytes = b""
    harness_out: list[Harness] = field(default_factory=list)

    def extend(self, other: ProbeOutput) -> None:
        self.link_out += other.link_out
        self.harness_out.extend(other.harness_out)


@dataclass
class _Request:
    frame: ProbeFrame
    wire: bytes
    answer_kind: str | None      # harness type to answer on give-up ("atr"/"rapdu"), or None
    sent_at: float | None = None
    retries: int = 0

    @property
    def contactless(self) -> bool:
        return self.frame.type in CL_REQUESTS


#: The probe's requests on the contactless channel.
CL_REQUESTS = frozenset({MsgType.CL_POWER_ON, MsgType.CL_POWER_OFF, MsgType.CL_CAPDU})
#: The answer each of the probe's requests expects.
EXPECTED_ANSWER = {MsgType.POWER_ON: MsgType.ATR, MsgType.CAPDU: MsgType.RAPDU,
                   MsgType.POWER_OFF: MsgType.ACK, MsgType.CL_POWER_ON: MsgType.ATR,
                   MsgType.CL_CAPDU: MsgType.RAPDU, MsgType.CL_POWER_OFF: MsgType.ACK}
#: The rig's requests, each answered by STATUS.
RIG_REQUESTS = frozenset({MsgType.INSERT, MsgType.REMOVE, MsgType.SWIPE, MsgType.TAP,
                          MsgType.SCAN})


class SimProbe:
    """See module doc.  ``retry_interval`` × (``max_retries`` + 1) bounds every terminal request."""

    def __init__(self, *, retry_interval: float = RETRY_INTERVAL,
                 max_retries: int = MAX_RETRIES) -> None:
        self.retry_interval = retry_interval
        self.max_retries = max_retries
        self.card_present = False
        self.card_powered = False
        self.terminal_up = False
        self.field_cards = 0        # cards in the contactless field (TAP)
        self.field_powered = False  # the terminal's contactless reader activated the card
        self._seq = SeqCounter()
        self._decoder = FrameDecoder()
        self._queue: deque[_Request] = deque()
        self._last_rig_request: tuple[int, MsgType] | None = None
        self._last_rig_answer = b""
        self.link_errors = 0

    # -- helpers --------------------------------------------------------------------------
    @property
    def flags(self) -> StatusFlag:
        f = StatusFlag(0)
        if self.card_present:
            f |= StatusFlag.CARD_PRESENT
        if self.card_powered:
            f |= StatusFlag.CARD_POWERED
        if self.terminal_up:
            f |= StatusFlag.TERMINAL_UP
        if self.field_cards:
            f |= StatusFlag.FIELD_CARD
        if self.field_cards > 1:
            f |= StatusFlag.FIELD_COLLISION
        if self.field_powered:
            f |= StatusFlag.FIELD_POWERED
        return f

    @property
    def busy(self) -> bool:
        return bool(self._queue)

    def next_deadline(self) -> float | None:
        """When :meth:`poll` next has something to do (for the host's select timeout)."""
        if self._queue and self._queue[0].sent_at is not None:
            return self._queue[0].sent_at + self.retry_interval
        return None

    def _enqueue(self, mtype: MsgType, payload: bytes, answer_kind: str | None,
                 now: float) -> bytes:
        frame = ProbeFrame(self._seq.next(), mtype, payload)
        self._queue.append(_Request(frame, encode_frame(frame), answer_kind))
        return self._send_head(now) if len(self._queue) == 1 else b""

    def _send_head(self, now: float) -> bytes:
        if not self._queue:
            return b""
        head = self._queue[0]
        head.sent_at = now
        return head.wire

    def _drop_terminal_requests(self, *, contactless: bool | None = None) -> None:
        """The terminal no longer waits for answers (powered off, or it powered that card off):
        forget its requests (of one channel only when *contactless* says which)."""
        kept = deque(r for r in self._queue if r.answer_kind is None or (
            contactless is not None and r.contactless != contactless))
        if self._queue and kept and kept[0] is not self._queue[0]:
            kept[0].sent_at = None       # the request in flight was dropped: send the next
        self._queue = kept

    # -- harness side ---------------------------------------------------------------------
    def harness_connected(self, now: float) -> ProbeOutput:
        self.terminal_up = True
        out = ProbeOutput(harness_out=[{"t": "card", "present": self.card_present}])
        if self.field_cards:
            out.harness_out.append({"t": "field", "cards": self.field_cards})
        return out

    def harness_disconnected(self, now: float) -> ProbeOutput:
        self.terminal_up = False
        self._drop_terminal_requests()
        out = ProbeOutput()
        if self.card_powered:
            self.card_powered = False
            out.link_out = self._enqueue(MsgType.POWER_OFF, b"", None, now)
        if self.field_powered:
            self.field_powered = False
            out.link_out += self._enqueue(MsgType.CL_POWER_OFF, b"", None, now)
        if self._queue and self._queue[0].sent_at is None:
            out.link_out += self._send_head(now)
        return out

    def feed_harness(self, msg: Mapping[str, Any], now: float) -> ProbeOutput:
        handler = self._HARNESS.get(str(msg.get("t")))
        if handler is None:
            return ProbeOutput()        # not a card-slot message (load, …): not ours
        return handler(self, msg, now)

    def _on_card_power(self, msg: Mapping[str, Any], now: float) -> ProbeOutput:
        on = msg.get("on")
        if not isinstance(on, bool):
            raise DecodeError(f"SimProbe: card_power needs a boolean 'on', got {msg!r}")
        if not on:
            self._drop_terminal_requests(contactless=False)
            was = self.card_powered
            self.card_powered = False
            out = ProbeOutput()
            if was or self.card_present:
                out.link_out = self._enqueue(MsgType.POWER_OFF, b"", None, now)
            return out
        if not self.card_present:
            return ProbeOutput(harness_out=[{"t": "atr", "error": "absent"}])
        return ProbeOutput(link_out=self._enqueue(MsgType.POWER_ON, b"", "atr", now))

    def _on_capdu(self, msg: Mapping[str, Any], now: float) -> ProbeOutput:
        capdu = self._capdu_bytes(msg, "capdu")
        if not self.card_present:
            return ProbeOutput(harness_out=[{"t": "rapdu", "error": "absent"}])
        if not self.card_powered:
            return ProbeOutput(harness_out=[{"t": "rapdu", "error": "mute"}])
        return ProbeOutput(link_out=self._enqueue(MsgType.CAPDU, capdu, "rapdu", now))

    def _on_cl_power(self, msg: Mapping[str, Any], now: float) -> ProbeOutput:
        """The contactless reader activates (``on``) or resets its field."""
        on = msg.get("on")
        if not isinstance(on, bool):
            raise DecodeError(f"SimProbe: cl_power needs a boolean 'on', got {msg!r}")
        if not on:
            self._drop_terminal_requests(contactless=True)
            was = self.field_powered
            self.field_powered = False
            out = ProbeOutput()
            if was or self.field_cards:
                out.link_out = self._enqueue(MsgType.CL_POWER_OFF, b"", None, now)
            return out
        if not self.field_cards:
            return ProbeOutput(harness_out=[{"t": "cl_atr", "error": "absent"}])
        if self.field_cards > 1:
            return ProbeOutput(harness_out=[{"t": "cl_atr", "error": "collision"}])
        return ProbeOutput(link_out=self._enqueue(MsgType.CL_POWER_ON, b"", "cl_atr", now))

    def _on_cl_capdu(self, msg: Mapping[str, Any], now: float) -> ProbeOutput:
        capdu = self._capdu_bytes(msg, "cl_capdu")
        if not self.field_cards:
            return ProbeOutput(harness_out=[{"t": "cl_rapdu", "error": "absent"}])
        if not self.field_powered:
            return ProbeOutput(harness_out=[{"t": "cl_rapdu", "error": "mute"}])
        return ProbeOutput(link_out=self._enqueue(MsgType.CL_CAPDU, capdu, "cl_rapdu", now))

    @staticmethod
    def _capdu_bytes(msg: Mapping[str, Any], kind: str) -> bytes:
        data = msg.get("data")
        try:
            capdu = bytes.fromhex(data) if isinstance(data, str) else b""
        except ValueError:
            capdu = b""
        if len(capdu) < 4:
            raise DecodeError(f"SimProbe: {kind} needs hex 'data' of at least 4 bytes, got "
                              f"{str(data)[:16]!r}")
        return capdu

    _HARNESS: Mapping[str, Callable[[SimProbe, Mapping[str, Any], float], ProbeOutput]] = {
        "card_power": _on_card_power,
        "capdu": _on_capdu,
        "cl_power": _on_cl_power,
        "cl_capdu": _on_cl_capdu,
    }

    # -- link side ------------------------------------------------------------------------
    def feed_link(self, data: bytes, now: float) -> ProbeOutput:
        out = ProbeOutput()
        for item in self._decoder.feed(data):
            if isinstance(item, (FramingError, DecodeError)):
                self.link_errors += 1
                log.warning("SimProbe: damaged frame from the rig: %s", item)
                out.link_out += encode_frame(ProbeFrame(0, MsgType.NAK))
                continue
            out.extend(self._on_frame(item, now))
        return out

    def _on_frame(self, frame: ProbeFrame, now: float) -> ProbeOutput:
        if frame.type in RIG_REQUESTS:
            try:
                return self._on_rig_request(frame)
            except DecodeError as exc:   # an intact frame whose payload is malformed
                self.link_errors += 1
                log.warning("SimProbe: %s", exc)
                return ProbeOutput(link_out=encode_frame(ProbeFrame(0, MsgType.NAK)))
        if frame.type is MsgType.NAK:
            if self._queue:
                head = self._queue[0]
                head.retries += 1
                return ProbeOutput(link_out=self._send_head(now))
            return ProbeOutput()
        if frame.type in (MsgType.ATR, MsgType.RAPDU, MsgType.ACK):
            return self._on_answer(frame, now)
        log.warning("SimProbe: unexpected %r from the rig, ignored", frame)
        return ProbeOutput()

    def _on_rig_request(self, frame: ProbeFrame) -> ProbeOutput:
        key = (frame.seq, frame.type)
        if key == self._last_rig_request:      # a retry: answer again, do not act again
            return ProbeOutput(link_out=self._last_rig_answer)
        out = ProbeOutput()
        if frame.type is MsgType.SWIPE:
            swipe = parse_swipe(frame)
            if self.terminal_up:   # an unpowered terminal's reader reads nothing
                out.harness_out.append({"t": "swipe", "track1": swipe.track1,
                                        "track2": swipe.track2})
        elif frame.type is MsgType.TAP:
            out.harness_out += self._field_changed(parse_tap(frame))
        elif frame.type is MsgType.SCAN:
            code = parse_scan(frame)
            if self.terminal_up:   # an unpowered terminal's scanner reads nothing
                out.harness_out.append({"t": "scan", "code": code})
        else:
            out.harness_out += self._slot_changed(frame.type is MsgType.INSERT)
        answer = encode_frame(ProbeFrame(frame.seq, MsgType.STATUS, bytes([self.flags])))
        self._last_rig_request, self._last_rig_answer = key, answer
        out.link_out = answer
        return out

    def _slot_changed(self, present: bool) -> list[Harness]:
        """INSERT / REMOVE: the card-detect switch; a removed card's pending requests are
        answered ``absent``."""
        out: list[Harness] = []
        changed = present != self.card_present
        self.card_present = present
        if not present:
            self.card_powered = False
            for req in self._queue:
                if req.answer_kind is not None and not req.contactless:
                    out.append({"t": req.answer_kind, "error": "absent"})
            self._drop_terminal_requests(contactless=False)
        if changed and self.terminal_up:
            out.append({"t": "card", "present": present})
        return out

    def _field_changed(self, cards: int) -> list[Harness]:
        """TAP: the cards in the field now.  An emptied field loses the activated card: its
        pending requests are answered ``absent``."""
        out: list[Harness] = []
        changed = cards != self.field_cards
        self.field_cards = cards
        if not cards:
            self.field_powered = False
            for req in self._queue:
                if req.answer_kind is not None and req.contactless:
                    out.append({"t": req.answer_kind, "error": "absent"})
            self._drop_terminal_requests(contactless=True)
        if changed and self.terminal_up:
            out.append({"t": "field", "cards": cards})
        return out

    def _on_answer(self, frame: ProbeFrame, now: float) -> ProbeOutput:
        if not self._queue or self._queue[0].frame.seq != frame.seq:
            log.debug("SimProbe: stale or unexpected %r ignored", frame)
            return ProbeOutput()
        head = self._queue[0]
        expected = EXPECTED_ANSWER[head.frame.type]
        if frame.type is not expected:
            raise ProtocolError(
                f"SimProbe: rig answered {head.frame.type.name} seq {frame.seq} with "
                f"{frame.type.name}, expected {expected.name}")
        if head.answer_kind is not None:
            try:
                status, data = parse_answer(frame)
            except DecodeError as exc:  # an intact frame whose payload is malformed: NAK it,
                self.link_errors += 1  # the request stays at the head for the rig's retry
                log.warning("SimProbe: %s", exc)
                return ProbeOutput(link_out=encode_frame(ProbeFrame(0, MsgType.NAK)))
        self._queue.popleft()
        out = ProbeOutput()
        if head.answer_kind is not None:
            if status is AnswerStatus.OK:
                key = "atr" if frame.type is MsgType.ATR else "data"
                out.harness_out.append({"t": head.answer_kind, key: data.hex()})
            else:
                out.harness_out.append({"t": head.answer_kind, "error": status.name.lower()})
            if frame.type is MsgType.ATR:
                self._set_powered(head, status is AnswerStatus.OK)
        out.link_out = self._send_head(now)
        return out

    def poll(self, now: float) -> ProbeOutput:
        """Re-send an unanswered request, or give up on it after the bound."""
        out = ProbeOutput()
        while self._queue:
            head = self._queue[0]
            if head.sent_at is None:
                out.link_out += self._send_head(now)
                break
            if now < head.sent_at + self.retry_interval:
                break
            if head.retries < self.max_retries:
                head.retries += 1
                out.link_out += self._send_head(now)
                break
            self._queue.popleft()
            bound = self.retry_interval * (self.max_retries + 1)
            log.warning("SimProbe: no answer to %r from the rig within %.2f s (%d tries)",
                        head.frame, bound, head.retries + 1)
            if head.answer_kind is not None:
                out.harness_out.append({"t": head.answer_kind, "error": "mute"})
                if head.frame.type in (MsgType.POWER_ON, MsgType.CL_POWER_ON):
                    self._set_powered(head, False)
        return out

    def _set_powered(self, request: _Request, powered: bool) -> None:
        if request.contactless:
            self.field_powered = powered
        else:
            self.card_powered = powered
