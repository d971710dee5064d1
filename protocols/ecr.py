"""ECR / test-port protocol of the terminal (spec: docs/ecr-protocol.md).

Three layers, all pure (bytes and ``now`` in, bytes and events out), shared by the rig's driver
(:mod:`rigs.terminal`) and the terminal simulator (:mod:`sim.terminal`):

* framing — :func:`encode_frame`, :class:`FrameDecoder` (incremental, resyncs on garbage,
  reports a bad LRC with a hexdump);
* link — :class:`EcrLink`: ACK/NAK per frame, bounded retransmission, duplicate detection;
* messages — :class:`Message`, :func:`encode_message`, :func:`decode_message` against the frozen
  spec table :data:`MESSAGE_SPECS` (fixed messages plus, per row of the transaction table
  :data:`protocols.transactions.TRANSACTIONS`, its request and final response);
* vocabulary — the codes as enums (:class:`MsgCode`, :class:`Result`, :class:`EventCode`,
  :class:`Prompt`, :class:`Key`, :class:`TerminalState`, :class:`Copy`, :class:`PrintStatus`,
  :class:`FaultCode`, :class:`EntryMode`, :class:`Cvm`, :class:`Reason`); they are ``StrEnum``
  so comparisons with plain strings keep working.

Frame: ``STX(02) | LEN(2, big-endian, payload bytes) | SEQ(1) | payload | ETX(03) | LRC(1)``,
LRC = XOR of every byte after STX up to and including ETX.  ACK = ``06 SEQ``, NAK = ``15``.
"""

from __future__ import annotations

import enum
import re
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from protocols.errors import ConfigError, DecodeError, FramingError, hexdump
from protocols.masking import scrub
from protocols.transactions import TRANSACTIONS, TransactionTable, TransactionType

STX = 0x02
ETX = 0x03
ACK = 0x06
NAK = 0x15
FS = "\x1c"  # field separator inside a payload

MAX_PAYLOAD = 4096
ACK_TIMEOUT = 0.5  # s, sender waits this long for ACK before retransmitting
MAX_RETRIES = 3  # retransmissions after the first attempt (4 attempts in all)
FRAME_TIMEOUT = 0.2  # s, a started frame not completed within this is abandoned (resync)
DUP_WINDOW = (MAX_RETRIES + 1) * ACK_TIMEOUT  # s, a repeated SEQ 0 frame inside it is a duplicate

Sender = Literal["rig", "terminal"]


# --------------------------------------------------------------------------------------- framing

def lrc(data: bytes) -> int:
    """XOR of *data* (the bytes after STX up to and including ETX)."""
    value = 0
    for b in data:
        value ^= b
    return value


def encode_frame(seq: int, payload: bytes) -> bytes:
    """``STX | LEN | SEQ | payload | ETX | LRC``; payload may contain any byte."""
    if not 0 <= seq <= 0xFF:
        raise FramingError(f"ECR frame: encode() SEQ must be 0..255, got {seq}")
    if len(payload) > MAX_PAYLOAD:
        raise FramingError(
            f"ECR frame: encode() payload is {len(payload)} bytes, limit is {MAX_PAYLOAD}")
    body = len(payload).to_bytes(2, "big") + bytes([seq]) + payload + bytes([ETX])
    return bytes([STX]) + body + bytes([lrc(body)])


def encode_ack(seq: int) -> bytes:
    return bytes([ACK, seq & 0xFF])


def encode_nak() -> bytes:
    return bytes([NAK])


@dataclass(frozen=True)
class Frame:
    seq: int
    payload: bytes
    raw: bytes


@dataclass(frozen=True)
class AckIn:
    seq: int


@dataclass(frozen=True)
class NakIn:
    pass


@dataclass(frozen=True)
class Garbage:
    """Bytes outside any frame (skipped while hunting for STX)."""

    data: bytes


@dataclass(frozen=True)
class BadFrame:
    """A frame that started with STX but failed a check; *error* says which, with a hexdump."""

    raw: bytes
    error: FramingError


Decoded = Frame | AckIn | NakIn | Garbage | BadFrame


class FrameDecoder:
    """Incremental decoder: feed any chunking of the byte stream, get whole items back.

    On a bad length or a missing ETX the decoder drops the STX and rescans from the next byte
    (a frame may start inside what looked like one); on a bad LRC it drops the whole frame.
    A partial frame older than ``frame_timeout`` is abandoned by :meth:`expire`.
    """

    def __init__(self, *, max_payload: int = MAX_PAYLOAD,
                 frame_timeout: float = FRAME_TIMEOUT) -> None:
        self.max_payload = max_payload
        self.frame_timeout = frame_timeout
        self._buf = bytearray()
        self._started: float | None = None  # when the pending partial item started

    def reset(self) -> None:
        self._buf.clear()
        self._started = None

    @property
    def pending(self) -> bytes:
        return bytes(self._buf)

    def feed(self, data: bytes, now: float = 0.0) -> list[Decoded]:
        self._buf += data
        out = self._parse()
        if self._buf and self._started is None:
            self._started = now
        elif not self._buf:
            self._started = None
        return out

    def expire(self, now: float) -> list[Decoded]:
        """Abandon a partial frame started more than ``frame_timeout`` ago (resync after it)."""
        if self._started is None or now - self._started < self.frame_timeout or not self._buf:
            return []
        raw = bytes(self._buf)
        out: list[Decoded] = []
        if raw[0] == STX:
            out.append(BadFrame(raw, FramingError(
                f"ECR frame: incomplete after {self.frame_timeout:.3f} s; "
                f"got {hexdump(raw)}")))
        else:  # a lone ACK byte without its SEQ
            out.append(Garbage(raw[:1]))
        del self._buf[:1]
        out += self._parse()
        self._started = now if self._buf else None
        return out

    def _parse(self) -> list[Decoded]:
        out: list[Decoded] = []
        buf = self._buf
        while buf:
            b0 = buf[0]
            if b0 == NAK:
                out.append(NakIn())
                del buf[:1]
            elif b0 == ACK:
                if len(buf) < 2:
                    break
                out.append(AckIn(buf[1]))
                del buf[:2]
            elif b0 == STX:
                item = self._parse_frame()
                if item is None:
                    break
                out.append(item)
            else:
                n = 1
                while n < len(buf) and buf[n] not in (STX, ACK, NAK):
                    n += 1
                out.append(Garbage(bytes(buf[:n])))
                del buf[:n]
            self._started = None
        return out

    def _parse_frame(self) -> Decoded | None:
        buf = self._buf
        if len(buf) < 3:
            return None
        length = int.from_bytes(buf[1:3], "big")
        if length > self.max_payload:
            raw = bytes(buf[:3])
            del buf[:1]
            return BadFrame(raw, FramingError(
                f"ECR frame: length field says {length} bytes, limit is {self.max_payload}; "
                f"header {hexdump(raw)}"))
        total = 1 + 2 + 1 + length + 2
        if len(buf) < total:
            return None
        raw = bytes(buf[:total])
        if raw[-2] != ETX:
            del buf[:1]
            return BadFrame(raw, FramingError(
                f"ECR frame: expected ETX (03) at byte {total - 2}, got {raw[-2]:02x}; "
                f"frame {hexdump(raw)}"))
        del buf[:total]
        expected = lrc(raw[1:-1])
        if raw[-1] != expected:
            return BadFrame(raw, FramingError(
                f"ECR frame: bad LRC, expected {expected:02x}, got {raw[-1]:02x}; "
                f"frame {hexdump(raw)}"))
        return Frame(seq=raw[3], payload=raw[4:-2], raw=raw)


# ------------------------------------------------------------------------------------------ link

@dataclass(frozen=True)
class Received:
    """A new (non-duplicate) frame from the peer; it has been ACKed."""

    seq: int
    payload: bytes


@dataclass(frozen=True)
class Delivered:
    """One of our frames was acknowledged."""

    ticket: int
    seq: int


@dataclass(frozen=True)
class Failed:
    """One of our frames was not acknowledged after every attempt."""

    ticket: int
    seq: int
    error: str


@dataclass(frozen=True)
class Rejected:
    """The peer's bytes failed a framing check (we sent NAK) or were garbage."""

    raw: bytes
    error: str


LinkEvent = Received | Delivered | Failed | Rejected


@dataclass
class _Outgoing:
    ticket: int
    payload: bytes
    seq: int = -1
    attempts: int = 0
    deadline: float = 0.0


class EcrLink:
    """Stop-and-wait link for one side: at most one of our frames un-ACKed at a time.

    Pure: call :meth:`send`, :meth:`receive` and :meth:`poll` with the current time, write
    whatever :meth:`take_output` returns, and act on the returned :data:`LinkEvent` list.
    SEQ 00 marks the first frame after a (re)start; later frames count 01..FF, then 01 again.
    """

    def __init__(self, *, ack_timeout: float = ACK_TIMEOUT, max_retries: int = MAX_RETRIES,
                 frame_timeout: float = FRAME_TIMEOUT) -> None:
        self.ack_timeout = ack_timeout
        self.max_retries = max_retries
        self.decoder = FrameDecoder(frame_timeout=frame_timeout)
        self._out = bytearray()
        self._queue: deque[_Outgoing] = deque()
        self._current: _Outgoing | None = None
        self._next_seq = 0
        self._next_ticket = 1
        self._last_rx: tuple[int, bytes, float] | None = None  # seq, payload, when

    @property
    def bound(self) -> float:
        """Longest a frame can stay un-ACKed before :class:`Failed` (all attempts)."""
        return (self.max_retries + 1) * self.ack_timeout

    @property
    def busy(self) -> bool:
        return self._current is not None or bool(self._queue)

    def reset(self) -> None:
        """Forget everything (power-on): next frame is SEQ 00; nothing pending."""
        self.decoder.reset()
        self._out.clear()
        self._queue.clear()
        self._current = None
        self._next_seq = 0
        self._last_rx = None

    def send(self, payload: bytes, now: float) -> int:
        """Queue *payload*; returns the ticket that a later Delivered/Failed event names."""
        if len(payload) > MAX_PAYLOAD:
            raise FramingError(
                f"ECR link: send() payload is {len(payload)} bytes, limit is {MAX_PAYLOAD}")
        ticket = self._next_ticket
        self._next_ticket += 1
        self._queue.append(_Outgoing(ticket, payload))
        self._start_next(now)
        return ticket

    def abandon(self, ticket: int) -> None:
        """Stop trying to deliver *ticket* (the caller gave up waiting)."""
        self._queue = deque(o for o in self._queue if o.ticket != ticket)
        if self._current is not None and self._current.ticket == ticket:
            self._current = None

    def retransmit_now(self, now: float) -> None:
        """The peer just (re)started: send the un-ACKed frame again without waiting."""
        if self._current is not None and self._current.attempts <= self.max_retries:
            self._transmit(self._current, now)

    def take_output(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def next_deadline(self) -> float | None:
        times = []
        if self._current is not None:
            times.append(self._current.deadline)
        if self.decoder._started is not None:
            times.append(self.decoder._started + self.decoder.frame_timeout)
        return min(times) if times else None

    def receive(self, data: bytes, now: float) -> list[LinkEvent]:
        events: list[LinkEvent] = []
        for item in self.decoder.feed(data, now):
            events += self._handle(item, now)
        return events

    def poll(self, now: float) -> list[LinkEvent]:
        events: list[LinkEvent] = []
        for item in self.decoder.expire(now):
            events += self._handle(item, now)
        cur = self._current
        if cur is not None and now >= cur.deadline:
            if cur.attempts > self.max_retries:
                events.append(Failed(cur.ticket, cur.seq,
                                     f"no ACK for SEQ {cur.seq:02x} after {cur.attempts} attempts "
                                     f"({self.ack_timeout:.3f} s each, {self.bound:.3f} s bound)"))
                self._current = None
                self._start_next(now)
            else:
                self._transmit(cur, now)
        return events

    # internals
    def _start_next(self, now: float) -> None:
        if self._current is not None or not self._queue:
            return
        cur = self._queue.popleft()
        cur.seq = self._next_seq
        self._next_seq = 1 if self._next_seq >= 0xFF else self._next_seq + 1
        self._current = cur
        self._transmit(cur, now)

    def _transmit(self, cur: _Outgoing, now: float) -> None:
        cur.attempts += 1
        cur.deadline = now + self.ack_timeout
        self._out += encode_frame(cur.seq, cur.payload)

    def _handle(self, item: Decoded, now: float) -> list[LinkEvent]:
        if isinstance(item, Frame):
            self._out += encode_ack(item.seq)
            if self._is_duplicate(item, now):
                return []
            self._last_rx = (item.seq, item.payload, now)
            return [Received(item.seq, item.payload)]
        if isinstance(item, AckIn):
            cur = self._current
            if cur is not None and item.seq == cur.seq:
                self._current = None
                self._start_next(now)
                return [Delivered(cur.ticket, cur.seq)]
            return []  # stale or stray ACK
        if isinstance(item, NakIn):
            if self._current is not None:
                if self._current.attempts > self.max_retries:
                    self._current.deadline = now  # let poll() report the failure
                else:
                    self._transmit(self._current, now)
            return []
        if isinstance(item, BadFrame):
            self._out += encode_nak()
            return [Rejected(item.raw, str(item.error))]
        return [Rejected(item.data, f"garbage outside a frame: {hexdump(item.data)}")]

    def _is_duplicate(self, frame: Frame, now: float) -> bool:
        if self._last_rx is None:
            return False
        seq, payload, when = self._last_rx
        if frame.seq != seq:
            return False
        if frame.seq != 0:
            return True
        return payload == frame.payload and now - when <= DUP_WINDOW


# -------------------------------------------------------------------------------------- messages

class Result(enum.StrEnum):
    """Result codes of final responses (``rc`` field); stable strings the steps assert on."""

    OK = "OK"
    APPROVED = "APPROVED"
    DECLINED = "DECLINED"
    NOT_SIGNED_IN = "NOT_SIGNED_IN"
    NOT_LOGGED_IN = "NOT_LOGGED_IN"
    LOGIN_FAILED = "LOGIN_FAILED"
    COMMS_ERROR = "COMMS_ERROR"
    CARD_ERROR = "CARD_ERROR"
    PAPER_OUT = "PAPER_OUT"
    LOW_BATTERY = "LOW_BATTERY"
    BUSY = "BUSY"
    CANCELLED = "CANCELLED"
    TIMEOUT = "TIMEOUT"
    BAD_REQUEST = "BAD_REQUEST"
    INTERNAL_ERROR = "INTERNAL_ERROR"
    LOCKED = "LOCKED"  # the operator is locked (3 wrong passwords) until an admin unlocks
    NOT_AUTHORISED = "NOT_AUTHORISED"  # the logged-in operator's role may not do this
    LIMIT_EXCEEDED = "LIMIT_EXCEEDED"  # a sale above limits.txn_limit, refused offline
    DAILY_LIMIT_EXCEEDED = "DAILY_LIMIT_EXCEEDED"  # the day's sales would pass daily_limit
    UNSETTLED_BATCH = "UNSETTLED_BATCH"  # shutdown refused: the open batch holds transactions
    NOT_FOUND = "NOT_FOUND"  # no such transaction / receipt / operator in the terminal
    NO_PRINTER = "NO_PRINTER"  # the printer's presence line says no printer: nothing can print


class MsgCode(enum.StrEnum):
    """The fixed message codes (transaction request codes come from the transaction table)."""

    STATUS = "ST"
    LOGIN = "LI"
    LOGOUT = "LO"
    SIGN_IN = "SI"
    KEY = "KY"
    CANCEL = "CN"
    REPRINT = "RP"
    QUERY = "QY"
    TOTALS = "TT"
    SETTLE = "SE"
    UNLOCK = "UL"
    PARAMETER = "PM"
    SHUTDOWN = "SD"
    ERROR = "ER"
    READY = "RD"
    EVENT = "EV"
    PROGRESS = "PG"
    PRINT = "PR"


class EventCode(enum.StrEnum):
    """``code`` of EV (display events) and the rig's name of READY (RD)."""

    READY = "READY"
    PAPER_OUT = "PAPER_OUT"
    PAPER_OK = "PAPER_OK"
    LOW_BATTERY = "LOW_BATTERY"
    BATTERY_OK = "BATTERY_OK"
    CARD_INSERTED = "CARD_INSERTED"
    CARD_REMOVED = "CARD_REMOVED"
    PAPER_LOW = "PAPER_LOW"  # the near-end sensor: little paper left (a warning only)
    PAPER_LOW_OK = "PAPER_LOW_OK"
    PRINTER_MISSING = "PRINTER_MISSING"  # the printer's presence line: no printer
    PRINTER_OK = "PRINTER_OK"
    SHUTDOWN = "SHUTDOWN"  # battery empty (cut-off) or too low to start: the terminal powers off


class ShutdownReason(enum.StrEnum):
    """``reason`` of EV SHUTDOWN (and of the harness ``power_off`` notice)."""

    CUTOFF = "cutoff"  # running, the rail stayed at or below the cut-off: battery empty
    CRITICAL = "critical"  # at power-on the rail was at or below critical: too low to start


class FaultCode(enum.StrEnum):
    """Self-test fault codes (docs/terminal-behaviour.md, "Fault codes (TS-17)"): one per failing
    part, carried in READY ``faults``, in STATUS ``faults`` (the active ones, first) and in the
    ``fault`` field of the EV that reports the part failing.  Grammar: ``E`` + 2 digits
    (:data:`FAULT_CODE_PATTERN`); the first digit is the part (0 printer, 1 battery)."""

    PRINTER_MISSING = "E01"
    PAPER_OUT = "E02"
    PAPER_LOW = "E03"
    BATTERY_LOW = "E11"
    BATTERY_CRITICAL = "E12"


#: What the display shows for each fault code (the manual's table).
FAULT_TEXTS: Mapping[FaultCode, str] = MappingProxyType({
    FaultCode.PRINTER_MISSING: "E01 打印机未连接 PRINTER MISSING",
    FaultCode.PAPER_OUT: "E02 打印机缺纸 PAPER OUT",
    FaultCode.PAPER_LOW: "E03 纸将用完 PAPER LOW",
    FaultCode.BATTERY_LOW: "E11 电量低 BATTERY LOW",
    FaultCode.BATTERY_CRITICAL: "E12 电量严重不足 BATTERY CRITICAL",
})

FAULT_CODE_PATTERN = re.compile(r"^E\d{2}$")
"""An item of a ``faults`` list that is a fault code (the rest of STATUS ``faults`` are the
names of the last errors met, e.g. ``COMMS_ERROR``)."""


def parse_fault_codes(value: str, where: str) -> tuple[FaultCode, ...]:
    """The fault codes in a comma-separated field (READY ``faults``, EV ``fault``, STATUS
    ``faults``), in order.  Items that are not in the fault-code grammar (STATUS's error
    history) are skipped; one in the grammar that is no :class:`FaultCode` is a DecodeError
    naming *where* (e.g. ``ECR message ST: field faults``)."""
    out: list[FaultCode] = []
    for item in value.split(","):
        item = item.strip()
        if not FAULT_CODE_PATTERN.match(item):
            continue
        try:
            out.append(FaultCode(item))
        except ValueError:
            raise DecodeError(f"{where}: unknown fault code {item!r}; known: "
                              f"{', '.join(FaultCode)}") from None
    return tuple(out)


class Prompt(enum.StrEnum):
    """``code`` of PG (transaction progress / what the display asks for)."""

    INSERT_CARD = "INSERT_CARD"  # waiting for a card: inserted, swiped or tapped
    READING_CARD = "READING_CARD"
    ENTER_PIN = "ENTER_PIN"
    PROCESSING = "PROCESSING"
    CONNECTING = "CONNECTING"
    PRINTING = "PRINTING"
    RETRY_CHIP = "RETRY_CHIP"  # the chip could not be read: take the card out, insert it again
    SWIPE_CARD = "SWIPE_CARD"  # the chip failed often enough: swipe the card (fallback)
    INSERT_CHIP = "INSERT_CHIP"  # a chip card was swiped without fallback: insert it
    SWIPE_AGAIN = "SWIPE_AGAIN"  # the stripe read badly (bad LRC): swipe again
    ONE_CARD_ONLY = "ONE_CARD_ONLY"  # more than one card in the contactless field
    WRONG_PIN = "WRONG_PIN"  # the card said the offline PIN is wrong; ``tries`` = tries left
    PIN_BLOCKED = "PIN_BLOCKED"  # the card's PIN try counter is exhausted
    SIGNATURE = "SIGNATURE"  # sign on the pad: KY ENTER = signed, KY CANCEL = not signed
    SHOW_QR = "SHOW_QR"  # merchant-presented QR: ``code`` = the order's code URL to scan
    SCAN_CODE = "SCAN_CODE"  # customer-presented QR: show the wallet's payment code to the scanner
    WAIT_PASSWORD = "WAIT_PASSWORD"  # the wallet asks the customer for the payment password


class Cvm(enum.StrEnum):
    """``cvm`` of a transaction's final response: how the cardholder was verified."""

    ONLINE_PIN = "online_pin"  # PIN block to the issuer (fields 52/53)
    OFFLINE_PIN = "offline_pin"  # plaintext PIN checked by the card (VERIFY)
    SIGNATURE = "signature"  # signature on the pad / the merchant copy
    NO_CVM = "no_cvm"  # none (contactless under the CVM limit, or the card's list says so)


class Reason(enum.StrEnum):
    """``reason`` of a final response (besides ``sw xxxx``: the status word a card answered)."""

    MUTE = "mute"  # the card did not answer
    ABSENT = "absent"  # no card (the slot or the field is empty)
    REMOVED = "removed"  # the card left before it took the approval (reversed)
    UNSUPPORTED = "unsupported"  # the card's data is unusable / no supported application
    BAD_ATR = "bad_atr"  # the chip's answer to reset breaks ISO/IEC 7816-3
    UNREADABLE = "unreadable"  # the stripe read badly swipe_tries times in a row
    COLLISION = "collision"  # more than one card in the contactless field
    CARD_DECLINED = "card_declined"  # the card declined (AAC), offline or after an approval
    PIN_BLOCKED = "pin_blocked"  # the card's offline PIN is blocked
    SHUTDOWN = "shutdown"  # dropped as the battery cut-off shut the terminal down
    QR_REFUSED = "qr_refused"  # the QR platform refused the payment (``qrc`` = its code)


class Key(enum.StrEnum):
    """KEY (``k``) values that are not PIN digits."""

    ENTER = "ENTER"
    CANCEL = "CANCEL"
    CLEAR = "CLEAR"


class TerminalState(enum.StrEnum):
    """``state`` of the STATUS response."""

    BOOTING = "BOOTING"
    IDLE = "IDLE"
    SIGNING_IN = "SIGNING_IN"
    WAIT_CARD = "WAIT_CARD"
    READING_CARD = "READING_CARD"
    PIN_ENTRY = "PIN_ENTRY"
    PROCESSING = "PROCESSING"
    SIGNATURE = "SIGNATURE"  # approved, waiting for the cardholder's signature on the pad
    WAIT_QR = "WAIT_QR"  # QR payment: the code shown / a code to scan / the wallet's password
    PRINTING = "PRINTING"


class Copy(enum.StrEnum):
    """``copy`` of PR (which receipt copy was printed)."""

    MERCHANT = "merchant"
    CUSTOMER = "customer"


class PrintStatus(enum.StrEnum):
    """``print`` of a transaction's final response."""

    OK = "OK"
    INCOMPLETE = "INCOMPLETE"  # the paper ran out while printing


class EntryMode(enum.StrEnum):
    """How the card was read (the ``entry`` hint of a transaction request; the TOTALS keys
    ``<mode>_n`` / ``<mode>_amt``).  MANUAL: no card read (a void or refund by reference)."""

    CHIP = "chip"
    SWIPE = "swipe"
    TAP = "tap"
    QR = "qr"
    MANUAL = "manual"


class QrMode(enum.StrEnum):
    """``qr`` of a transaction request with ``entry=qr``: who presents the code."""

    MERCHANT = "merchant"  # the terminal shows the order's code, the customer's wallet scans it
    CUSTOMER = "customer"  # the terminal scans the payment code the customer's wallet shows


class TxnStatus(enum.StrEnum):
    """``status`` of a QUERY response: what became of the transaction."""

    APPROVED = "approved"
    DECLINED = "declined"  # declined by the host, or refused by the terminal (limit, comms)
    VOIDED = "voided"  # an approved sale an approved void took back
    REVERSED = "reversed"  # reversed (0400 acknowledged)
    REFUNDED = "refunded"  # an approved sale with approved refunds against it
    PENDING = "pending"  # no answer yet, or a reversal not yet acknowledged


class Parameter(enum.StrEnum):
    """``name`` of a PARAMETER request (admin only)."""

    CLOCK = "clock"  # value YYYYMMDDhhmmss: the terminal's own clock
    TXN_LIMIT = "txn_limit"  # minor units; empty value: back to the profile's
    DAILY_LIMIT = "daily_limit"
    REFUND_LIMIT = "refund_limit"


class Anomaly(enum.StrEnum):
    """Prefixes of the TOTALS ``anomalies`` list (comma separated)."""

    DECLINES = "declines"  # declines:<masked PAN>: one card declined N times or more
    REFUND_BURST = "refund_burst"  # N refunds or more within the window
    LIMIT = "limit"  # limit:<stan>: a sale refused for a limit


#: Clock format of STATUS ``clock``, PARAMETER clock and QUERY ``time``.
CLOCK_FORMAT = "%Y%m%d%H%M%S"


class Kind(enum.StrEnum):
    REQUEST = "request"
    RESPONSE = "response"
    EVENT = "event"


@dataclass(frozen=True)
class MessageSpec:
    code: str
    name: str
    sender: Sender
    kind: Kind
    required: tuple[str, ...] = ()
    secret: tuple[str, ...] = ()  # fields shown as '*' in transcripts
    doc: str = ""


SpecTable = Mapping[tuple[Sender, str], MessageSpec]

#: Required fields of every transaction request (docs/ecr-protocol.md section 4).
TXN_REQUIRED = ("amt", "cur")

_FIXED_SPECS: tuple[MessageSpec, ...] = (
    # rig → terminal requests
    MessageSpec(MsgCode.STATUS, "STATUS", "rig", Kind.REQUEST, doc="terminal state query"),
    MessageSpec(MsgCode.LOGIN, "LOGIN", "rig", Kind.REQUEST, ("op", "pw"), secret=("pw",),
                doc="operator login"),
    MessageSpec(MsgCode.LOGOUT, "LOGOUT", "rig", Kind.REQUEST, doc="operator logout"),
    MessageSpec(MsgCode.SIGN_IN, "SIGN_IN", "rig", Kind.REQUEST, doc="sign-in with the acquirer"),
    MessageSpec(MsgCode.KEY, "KEY", "rig", Kind.REQUEST, ("k",), secret=("k",),
                doc="one keypad press: 0-9, ENTER, CANCEL, CLEAR; no response"),
    MessageSpec(MsgCode.CANCEL, "CANCEL", "rig", Kind.REQUEST,
                doc="cancel the pending transaction"),
    MessageSpec(MsgCode.REPRINT, "REPRINT", "rig", Kind.REQUEST,
                doc="print the last receipt again, marked 重打印 REPRINT"),
    MessageSpec(MsgCode.QUERY, "QUERY", "rig", Kind.REQUEST, ("stan",),
                doc="look a transaction up by trace (stan, optional batch)"),
    MessageSpec(MsgCode.TOTALS, "TOTALS", "rig", Kind.REQUEST,
                doc="totals of the open batch by type and entry mode, with anomalies"),
    MessageSpec(MsgCode.SETTLE, "SETTLE", "rig", Kind.REQUEST,
                doc="settle the open batch with the acquirer (admin)"),
    MessageSpec(MsgCode.UNLOCK, "UNLOCK", "rig", Kind.REQUEST, ("op",),
                doc="unlock a locked operator (admin)"),
    MessageSpec(MsgCode.PARAMETER, "PARAMETER", "rig", Kind.REQUEST, ("name", "value"),
                doc="set a parameter: clock, txn_limit, daily_limit, refund_limit (admin)"),
    MessageSpec(MsgCode.SHUTDOWN, "SHUTDOWN", "rig", Kind.REQUEST,
                doc="ask to shut down; refused while the open batch is not settled"),
    # terminal → rig final responses (same code as the request)
    MessageSpec(MsgCode.STATUS, "STATUS", "terminal", Kind.RESPONSE, ("rc", "state")),
    MessageSpec(MsgCode.LOGIN, "LOGIN", "terminal", Kind.RESPONSE, ("rc",)),
    MessageSpec(MsgCode.LOGOUT, "LOGOUT", "terminal", Kind.RESPONSE, ("rc",)),
    MessageSpec(MsgCode.SIGN_IN, "SIGN_IN", "terminal", Kind.RESPONSE, ("rc",)),
    MessageSpec(MsgCode.CANCEL, "CANCEL", "terminal", Kind.RESPONSE, ("rc",)),
    MessageSpec(MsgCode.REPRINT, "REPRINT", "terminal", Kind.RESPONSE, ("rc",)),
    MessageSpec(MsgCode.QUERY, "QUERY", "terminal", Kind.RESPONSE, ("rc",)),
    MessageSpec(MsgCode.TOTALS, "TOTALS", "terminal", Kind.RESPONSE, ("rc",)),
    MessageSpec(MsgCode.SETTLE, "SETTLE", "terminal", Kind.RESPONSE, ("rc",)),
    MessageSpec(MsgCode.UNLOCK, "UNLOCK", "terminal", Kind.RESPONSE, ("rc",)),
    MessageSpec(MsgCode.PARAMETER, "PARAMETER", "terminal", Kind.RESPONSE, ("rc",)),
    MessageSpec(MsgCode.SHUTDOWN, "SHUTDOWN", "terminal", Kind.RESPONSE, ("rc",)),
    MessageSpec(MsgCode.ERROR, "ERROR", "terminal", Kind.RESPONSE, ("rc",),
                doc="answer to a request the terminal could not decode"),
    # terminal → rig unsolicited
    MessageSpec(MsgCode.READY, "READY", "terminal", Kind.EVENT,
                doc="boot complete; faults = the self-test's fault codes"),
    MessageSpec(MsgCode.EVENT, "EVENT", "terminal", Kind.EVENT, ("code",),
                doc="display event; fault = the fault code of a part that failed"),
    MessageSpec(MsgCode.PROGRESS, "PROGRESS", "terminal", Kind.EVENT, ("code",),
                doc="transaction progress"),
    MessageSpec(MsgCode.PRINT, "PRINT", "terminal", Kind.EVENT, ("copy", "text"),
                doc="receipt printed"),
)


def txn_required(row: TransactionType) -> tuple[str, ...]:
    """Required request fields of a transaction type: ``amt`` and ``cur``, none for a type whose
    amount is the original's (a void: ``amt`` optional, checked against the original)."""
    return () if row.amount_from_original else TXN_REQUIRED


def transaction_specs(row: TransactionType) -> tuple[MessageSpec, MessageSpec]:
    """The request and final-response specs of one transaction type (same code both ways)."""
    return (MessageSpec(row.ecr_code, row.ecr_name, "rig", Kind.REQUEST, txn_required(row),
                        doc=f"start a {row.type}: {row.description}; final response comes "
                            f"when it ends"),
            MessageSpec(row.ecr_code, row.ecr_name, "terminal", Kind.RESPONSE, ("rc",)))


def message_specs(transactions: TransactionTable = TRANSACTIONS) -> SpecTable:
    """The frozen spec table: the fixed messages plus each transaction type's request and
    response.  A transaction code that clashes with a fixed code is a ConfigError."""
    fixed = {s.code for s in _FIXED_SPECS}
    specs: dict[tuple[Sender, str], MessageSpec] = {(s.sender, s.code): s for s in _FIXED_SPECS}
    for row in transactions:
        if row.ecr_code in fixed:
            raise ConfigError(f"ECR message specs: transaction type {row.type} uses code "
                              f"{row.ecr_code}, a fixed message code")
        for spec in transaction_specs(row):
            specs[(spec.sender, spec.code)] = spec
    return MappingProxyType(specs)


MESSAGE_SPECS: SpecTable = message_specs()

KEY_NAMES = frozenset(Key)  # KEY values that are not PIN digits

REQUEST_CODES: Mapping[str, str] = MappingProxyType({
    spec.name: spec.code for (sender, _), spec in MESSAGE_SPECS.items()
    if sender == "rig" and spec.kind is Kind.REQUEST})


@dataclass(frozen=True)
class Message:
    code: str
    fields: Mapping[str, str] = field(default_factory=dict)

    def get(self, key: str, default: str = "") -> str:
        return self.fields.get(key, default)

    def describe(self, sender: Sender, specs: SpecTable = MESSAGE_SPECS) -> str:
        """Masked one-line rendering for transcripts and logs: ``PU(PURCHASE) amt=100 cur=156``."""
        spec = specs.get((sender, self.code))
        name = spec.name if spec else "?"
        secret = spec.secret if spec else ()
        parts = [f"{self.code}({name})"]
        for k, v in self.fields.items():
            hidden = k in secret and not (self.code == MsgCode.KEY and v in KEY_NAMES)
            shown = "*" * max(1, len(v)) if hidden else v
            parts.append(f"{k}={shown!r}" if ("\n" in shown or " " in shown) else f"{k}={shown}")
        return scrub(" ".join(parts))


#: Longest field name (characters); a field name is printable ASCII (20-7E) without ``=``
#: (docs/ecr-protocol.md section 4).
MAX_FIELD_NAME = 16


def field_name_problem(key: str, where: str = "") -> str | None:
    """Why *key* cannot be an ECR field name (None: it can): the one rule of
    :func:`encode_message`, :func:`decode_message` and :func:`request_problem` — 1 to
    :data:`MAX_FIELD_NAME` printable ASCII characters, no ``=`` (so no separator either).
    The text shows at most the first :data:`MAX_FIELD_NAME` characters of *key*, then
    *where* (``" at byte 3"``)."""
    if (not key or len(key) > MAX_FIELD_NAME or not key.isascii() or not key.isprintable()
            or "=" in key):
        return (f"field name {key[:MAX_FIELD_NAME]!r}{where} is not 1-{MAX_FIELD_NAME} printable "
                f"ASCII characters without '='")
    return None


def encode_message(msg: Message) -> bytes:
    """``CODE (FS key=value)*`` in UTF-8."""
    if len(msg.code) != 2 or not msg.code.isascii() or not msg.code.isalpha():
        raise DecodeError(f"ECR message: encode() code must be 2 ASCII letters, got {msg.code!r}")
    parts = [msg.code]
    for key, value in msg.fields.items():
        problem = field_name_problem(key)
        if problem is not None:
            raise DecodeError(f"ECR message {msg.code}: encode() {problem}")
        if FS in value:
            raise DecodeError(
                f"ECR message {msg.code}: encode() field {key!r} contains the separator 1c")
        parts.append(f"{key}={value}")
    return FS.join(parts).encode("utf-8")


def decode_message(payload: bytes, sender: Sender | None = None,
                   specs: SpecTable = MESSAGE_SPECS) -> Message:
    """Parse a payload; with *sender*, also check the code is known (in *specs*) and required
    fields exist."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(
            f"ECR message: invalid UTF-8 at byte {exc.start}; payload {hexdump(payload)}") from exc
    parts = text.split(FS)
    code = parts[0]
    if len(code) != 2 or not code.isascii() or not code.isalpha():
        raise DecodeError(
            f"ECR message: code at byte 0 must be 2 ASCII letters, got {code!r}; "
            f"payload {hexdump(payload)}")
    fields: dict[str, str] = {}
    pos = len(code.encode())
    for part in parts[1:]:
        pos += 1  # the separator
        key, eq, value = part.partition("=")
        if not eq or not key:
            raise DecodeError(
                f"ECR message {code}: field at byte {pos} is not key=value: {part[:40]!r}")
        problem = field_name_problem(key, f" at byte {pos}")
        if problem is not None:
            raise DecodeError(f"ECR message {code}: {problem}")
        if key in fields:
            raise DecodeError(f"ECR message {code}: field {key!r} repeated at byte {pos}")
        fields[key] = value
        pos += len(part.encode())
    msg = Message(code, fields)
    if sender is not None:
        spec = specs.get((sender, code))
        if spec is None:
            raise DecodeError(f"ECR message: unknown code {code!r} from {sender} at byte 0")
        missing = [k for k in spec.required if k not in fields]
        if missing:
            raise DecodeError(
                f"ECR message {code}({spec.name}) from {sender}: missing field(s) "
                f"{', '.join(missing)}")
    return msg


#: Longest value of a request field the terminal reads (characters).  The longest real one is an
#: operator's password or a QR payment code; anything longer is BAD_REQUEST, so no answer that
#: names a request's value can outgrow a frame.
MAX_REQUEST_VALUE = 128


def request_problem(msg: Message, specs: SpecTable = MESSAGE_SPECS) -> str | None:
    """Why request *msg* is malformed before any of its values is looked at (None: it is not):
    an unknown code, a missing required field, a field name :func:`field_name_problem` refuses, a value longer
    than :data:`MAX_REQUEST_VALUE` or holding a control character.  The text names the code
    and the field, and shows no value (a password may be in it)."""
    spec = specs.get(("rig", msg.code))
    if spec is None or spec.kind is not Kind.REQUEST:
        return f"unknown request {msg.code[:2]!r}"
    missing = [k for k in spec.required if k not in msg.fields]
    if missing:
        return f"{msg.code}({spec.name}): missing field(s) {', '.join(missing)}"
    for key, value in msg.fields.items():
        name_problem = field_name_problem(key)
        if name_problem is not None:
            return f"{msg.code}({spec.name}): {name_problem}"
        if len(value) > MAX_REQUEST_VALUE:
            return (f"{msg.code}({spec.name}): field {key} of {len(value)} characters, at most "
                    f"{MAX_REQUEST_VALUE}")
        if not value.isprintable():
            bad = next(i for i, ch in enumerate(value) if not ch.isprintable())
            return (f"{msg.code}({spec.name}): field {key} holds a control character at "
                    f"position {bad}")
    return None


def response_code(request: str, specs: SpecTable = MESSAGE_SPECS) -> str:
    """The code of the terminal's answer to request code *request*: the request's own code when
    the spec table has both the request and a terminal response of that code, else
    :attr:`MsgCode.ERROR` (a request without a response, such as KEY, or an unknown code).
    A refusal of such a request is still an answer the rig's decoder takes."""
    request_spec = specs.get(("rig", request))
    answer = specs.get(("terminal", request))
    if (request_spec is not None and request_spec.kind is Kind.REQUEST
            and answer is not None and answer.kind is Kind.RESPONSE):
        return request
    return MsgCode.ERROR.value


def describe_stream(data: bytes, sender: Sender, specs: SpecTable = MESSAGE_SPECS) -> list[str]:
    """Decode a whole captured byte stream into masked lines (frames that fail shown as hex)."""
    lines: list[str] = []
    for item in FrameDecoder().feed(data):
        lines.append(describe_item(item, sender, specs))
    return lines


def describe_item(item: Decoded, sender: Sender, specs: SpecTable = MESSAGE_SPECS) -> str:
    if isinstance(item, Frame):
        try:
            msg = decode_message(item.payload, sender, specs)
        except DecodeError as exc:
            return f"[{item.seq:02x}] undecodable: {exc}"
        return f"[{item.seq:02x}] {msg.describe(sender, specs)}"
    if isinstance(item, AckIn):
        return f"ACK {item.seq:02x}"
    if isinstance(item, NakIn):
        return "NAK"
    if isinstance(item, BadFrame):
        return f"bad frame: {item.error}"
    return f"garbage {hexdump(item.data)}"
