"""Ingenico "Concert" cash-register protocol ("Caisse Concert"), protocols E and E+ on a serial
line (spec: docs/ecr-concert.md).

This is the protocol French cash-register software speaks to a payment terminal's cash
connection (Ingenico Telium Manager, Sagem, Verifone): the register asks for one payment, the
terminal runs it with the cardholder and answers with its status.  Covered here: the request of
protocol E (26 characters) and E+ (34), the short answer (25) and the answer with the card-data
field REP (80).  Not covered: Concert V3 (tag-length-value messages, also over TCP/IP) and the
TLV answer (answer flag ``2``) some terminals offer.

Four layers, all pure (bytes and ``now`` in, bytes and events out), shared by the rig's driver
(:mod:`rigs.concert`) and the simulated terminal's Concert port (:mod:`sim.terminal.concert`):

* vocabulary — the one-character codes as enums (:class:`AnswerFlag`, :class:`PaymentMode`,
  :class:`TransactionKind`, :class:`Delay`, :class:`Authorization`, :class:`Status`);
* messages — fixed-length fields declared as data (:data:`REQUEST_E`, :data:`REQUEST_E_PLUS`,
  :data:`ANSWER_SHORT`, :data:`ANSWER_LONG`, frozen), the records :class:`ConcertRequest` and
  :class:`ConcertAnswer` whose ``encode``/``decode`` validate every field; a DecodeError names
  the field and its byte positions, with a hex dump in which card data is blanked;
* framing — ``STX | payload | ETX | LRC``, LRC = XOR of every byte after STX up to and
  including ETX (:func:`encode_frame`, :func:`decode_frame`);
* line discipline — :class:`ConcertLine`, one state machine for either side: ``ENQ`` → ``ACK``,
  the frame → ``ACK`` (or ``NAK`` and the frame again, bounded), ``EOT``.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from protocols.digits import ascii_digits
from protocols.errors import ConfigError, DecodeError, FramingError, hexdump
from protocols.masking import scrub
from protocols.transactions import TxnType

STX = 0x02
ETX = 0x03
EOT = 0x04
ENQ = 0x05
ACK = 0x06
NAK = 0x15

CONTROL_NAMES: Mapping[int, str] = MappingProxyType({
    STX: "STX", ETX: "ETX", EOT: "EOT", ENQ: "ENQ", ACK: "ACK", NAK: "NAK"})

Side = Literal["register", "terminal"]


# ------------------------------------------------------------------------------------ vocabulary

class AnswerFlag(enum.StrEnum):
    """IND of the request: which answer the register wants."""

    SHORT = "0"  # the 25-character answer, no card data
    WITH_CARD_DATA = "1"  # the 80-character answer with REP (55 characters: the card number…)


class PaymentMode(enum.StrEnum):
    """Payment means of request and answer (the terminal application that takes the payment).
    ``1`` (card) and ``C`` (cheque) are in every source; the issuer codes come from the
    constants of pyTeliumManager only."""

    CARD = "1"
    AMEX = "2"
    CETELEM = "3"
    COFINOGA = "5"
    DINERS = "6"
    FRANFINANCE = "8"
    JCB = "9"
    ACCORD_FINANCE = "A"
    CHEQUE = "C"
    FINTRAX_EMV = "F"
    MONEO = "O"
    CUP = "U"
    OTHER = "0"


class TransactionKind(enum.StrEnum):
    """TYPE of the request."""

    DEBIT = "0"  # a purchase
    CREDIT = "1"  # a refund
    CANCEL = "2"  # cancellation (annulation) of an earlier transaction
    PRE_AUTHORISATION = "4"


class Delay(enum.StrEnum):
    """DELAI of an E+ request (wire ``A01x``): when the terminal answers."""

    END_OF_TRANSACTION = "0"  # once the transaction is over, with its status
    IMMEDIATE = "1"  # at once, without the transaction's status (status 9)


class Authorization(enum.StrEnum):
    """AUTO of an E+ request (wire ``B01x``)."""

    TERMINAL_DECIDES = "0"
    FORCED = "1"  # force an authorisation request to the acquirer
    OTHER_2 = "2"  # listed as allowed ("B01x, x in 0, 1, 2"), meaning not documented publicly


class Status(enum.StrEnum):
    """STAT of the answer."""

    ACCEPTED = "0"  # transaction accepted
    REFUSED = "7"  # transaction not accepted (declined, card error, cancelled, impossible)
    HANDLED = "9"  # request handled, no transaction result (the answer to Delay.IMMEDIATE)


#: The rig's transaction types as Concert types: the one mapping the rig and the simulated
#: terminal both use.  Pre-authorisation has no row in the transaction table.
TXN_OF_KIND: Mapping[TransactionKind, TxnType] = MappingProxyType({
    TransactionKind.DEBIT: TxnType.SALE,
    TransactionKind.CREDIT: TxnType.REFUND,
    TransactionKind.CANCEL: TxnType.VOID,
})
KIND_OF_TXN: Mapping[TxnType, TransactionKind] = MappingProxyType(
    {txn: kind for kind, txn in TXN_OF_KIND.items()})


# ---------------------------------------------------------------------------------- field specs

FieldKind = Literal["digits", "text", "code"]


@dataclass(frozen=True)
class FieldSpec:
    """One fixed-length field: *size* value characters after a fixed *prefix* (E+ writes the
    delay as ``A01`` + one character)."""

    name: str
    size: int
    kind: FieldKind
    doc: str
    prefix: str = ""
    codes: tuple[str, ...] = ()  # the allowed values of a code field
    secret: bool = False  # card data: never shown in an error, blanked in dumps

    @property
    def width(self) -> int:
        return len(self.prefix) + self.size


@dataclass(frozen=True)
class Layout:
    """A message's fields in wire order; ``size`` is the payload length."""

    name: str
    fields: tuple[FieldSpec, ...]

    @property
    def size(self) -> int:
        return sum(f.width for f in self.fields)

    def spans(self) -> tuple[tuple[FieldSpec, int], ...]:
        """Each field with its first byte in the payload."""
        out: list[tuple[FieldSpec, int]] = []
        pos = 0
        for spec in self.fields:
            out.append((spec, pos))
            pos += spec.width
        return tuple(out)


def _codes(vocabulary: type[enum.StrEnum]) -> tuple[str, ...]:
    return tuple(str(m.value) for m in vocabulary)


POS_NUMBER = FieldSpec("pos_number", 2, "digits", "cash register (POS) number, 01 to 99")
AMOUNT = FieldSpec("amount", 8, "digits", "amount in minor units (cents), zero-padded")
ANSWER_FLAG = FieldSpec("answer_flag", 1, "code", "IND: 0 short answer, 1 answer with REP",
                        codes=_codes(AnswerFlag))
PAYMENT_MODE = FieldSpec("payment_mode", 1, "code", "EMETTEUR: payment means",
                         codes=_codes(PaymentMode))
TRANSACTION = FieldSpec("transaction_type", 1, "code", "TYPE: debit, credit, cancel…",
                        codes=_codes(TransactionKind))
CURRENCY = FieldSpec("currency", 3, "digits", "DEV: ISO 4217 numeric currency code")
PRIVATE = FieldSpec("private", 10, "text", "PRIV: private data, returned in the answer")
DELAY = FieldSpec("delay", 1, "code", "DELAI: A010 answer at the end, A011 at once",
                  prefix="A01", codes=_codes(Delay))
AUTHORIZATION = FieldSpec("authorization", 1, "code", "AUTO: B010 terminal decides, "
                          "B011 forced authorisation", prefix="B01",
                          codes=_codes(Authorization))
STATUS = FieldSpec("status", 1, "code", "STAT: 0 accepted, 7 refused, 9 handled",
                   codes=_codes(Status))
CARD_DATA = FieldSpec("rep", 55, "text", "REP: card data (card number …), when IND is 1",
                      secret=True)

REQUEST_E = Layout("request (protocol E)", (POS_NUMBER, AMOUNT, ANSWER_FLAG, PAYMENT_MODE,
                                           TRANSACTION, CURRENCY, PRIVATE))
REQUEST_E_PLUS = Layout("request (protocol E+)", (*REQUEST_E.fields, DELAY, AUTHORIZATION))
ANSWER_SHORT = Layout("answer", (POS_NUMBER, STATUS, AMOUNT, PAYMENT_MODE, CURRENCY, PRIVATE))
ANSWER_LONG = Layout("answer with card data", (POS_NUMBER, STATUS, AMOUNT, PAYMENT_MODE,
                                               CARD_DATA, CURRENCY, PRIVATE))
REQUEST_LAYOUTS: Mapping[int, Layout] = MappingProxyType(
    {REQUEST_E.size: REQUEST_E, REQUEST_E_PLUS.size: REQUEST_E_PLUS})
ANSWER_LAYOUTS: Mapping[int, Layout] = MappingProxyType(
    {ANSWER_SHORT.size: ANSWER_SHORT, ANSWER_LONG.size: ANSWER_LONG})
MAX_PAYLOAD = max(*REQUEST_LAYOUTS, *ANSWER_LAYOUTS)
MAX_FRAME = 1 + MAX_PAYLOAD + 2

BLANK_PRIVATE = " " * PRIVATE.size
AMOUNT_MAX = 10 ** AMOUNT.size - 1


def _printable(b: int) -> bool:
    return 0x20 <= b <= 0x7E


def redacted(payload: bytes) -> bytes:
    """*payload* as it may be shown: the secret fields of the layout its length matches blanked
    with ``*``; a payload of no known length has anything PAN-like masked (first 6, last 4)."""
    layout = ANSWER_LAYOUTS.get(len(payload)) or REQUEST_LAYOUTS.get(len(payload))
    if layout is None:
        return scrub(payload.decode("latin-1")).encode("latin-1")
    out = bytearray(payload)
    for spec, start in layout.spans():
        if spec.secret:
            out[start:start + spec.width] = b"*" * spec.width
    return bytes(out)


def shown(payload: bytes) -> str:
    """Hex dump of a payload for an error message, card data blanked (:func:`redacted`)."""
    return hexdump(redacted(payload))


def shown_frame(frame: bytes) -> str:
    """Hex dump of a whole frame (``STX … ETX LRC``) with its payload redacted."""
    if len(frame) >= 3 and frame[0] == STX:
        return hexdump(frame[:1] + redacted(frame[1:-2]) + frame[-2:])
    return hexdump(redacted(frame))


def _expected(spec: FieldSpec) -> str:
    if spec.kind == "digits":
        return f"{spec.size} digits"
    if spec.kind == "code":
        return f"one of {', '.join(repr(c) for c in spec.codes)}"
    return f"{spec.size} printable ASCII characters"


def _check(spec: FieldSpec, value: str, where: str, start: int) -> None:
    """*value* (the field without its prefix) fits *spec*, or DecodeError naming the field and
    its payload bytes (a secret field's value is not shown)."""
    end = start + spec.width - 1
    ok = len(value) == spec.size and all(_printable(ord(c)) for c in value)
    if ok and spec.kind == "digits":
        ok = ascii_digits(value)
    elif ok and spec.kind == "code":
        ok = value in spec.codes
    if not ok:
        got = f"<{len(value)} characters, not shown>" if spec.secret else repr(value)
        raise DecodeError(f"{where}: field {spec.name} (payload bytes {start}-{end}) must be "
                          f"{_expected(spec)}, got {got}")


def _split(layout: Layout, payload: bytes, where: str) -> dict[str, str]:
    """The fields of *payload* (of *layout*'s size), each checked; DecodeError naming the first
    wrong one, with the payload dumped (card data blanked)."""
    for pos, b in enumerate(payload):
        if not _printable(b):
            name = next(s.name for s, start in layout.spans() if start <= pos < start + s.width)
            raise DecodeError(f"{where}: byte {pos} (field {name}) is {b:02x}, not printable "
                              f"ASCII; payload {shown(payload)}")
    text = payload.decode("ascii")
    values: dict[str, str] = {}
    for spec, start in layout.spans():
        raw = text[start:start + spec.width]
        if spec.prefix and not raw.startswith(spec.prefix):
            raise DecodeError(f"{where}: field {spec.name} (payload bytes {start}-"
                              f"{start + spec.width - 1}) must start with {spec.prefix!r}, got "
                              f"{raw[:len(spec.prefix)]!r}; payload {shown(payload)}")
        value = raw[len(spec.prefix):]
        try:
            _check(spec, value, where, start)
        except DecodeError as exc:
            raise DecodeError(f"{exc}; payload {shown(payload)}") from None
        values[spec.name] = value
    return values


def _join(layout: Layout, values: Mapping[str, str], where: str) -> bytes:
    """Encode *values* in *layout* order, each checked first."""
    parts: list[str] = []
    for spec, start in layout.spans():
        value = values[spec.name]
        _check(spec, value, where, start)
        parts.append(spec.prefix + value)
    return "".join(parts).encode("ascii")


def _amount_text(amount_minor: int, where: str) -> str:
    if isinstance(amount_minor, bool) or not isinstance(amount_minor, int) or not (
            0 <= amount_minor <= AMOUNT_MAX):
        raise DecodeError(f"{where}: field amount must be 0..{AMOUNT_MAX} minor units "
                          f"({AMOUNT.size} digits), got {amount_minor!r}")
    return f"{amount_minor:0{AMOUNT.size}d}"


def _enum(vocabulary: type[enum.StrEnum], value: object, name: str, where: str) -> enum.StrEnum:
    if isinstance(value, str):
        try:
            return vocabulary(value)
        except ValueError:
            pass
    raise DecodeError(f"{where}: field {name} must be one of "
                      f"{', '.join(repr(str(m.value)) for m in vocabulary)}, got {value!r}")


# ------------------------------------------------------------------------------------- records

@dataclass(frozen=True)
class ConcertRequest:
    """The register's request.  Protocol E+ when ``delay`` and ``authorization`` are set,
    protocol E when both are None.  Construction checks every field (DecodeError naming it);
    plain strings are turned into the enums."""

    amount_minor: int
    currency: str = "978"
    pos_number: str = "01"
    transaction: TransactionKind = TransactionKind.DEBIT
    payment_mode: PaymentMode = PaymentMode.CARD
    answer_flag: AnswerFlag = AnswerFlag.SHORT
    private: str = BLANK_PRIVATE
    delay: Delay | None = Delay.END_OF_TRANSACTION
    authorization: Authorization | None = Authorization.TERMINAL_DECIDES

    def __post_init__(self) -> None:
        where = "Concert request"
        for name, vocabulary in (("transaction", TransactionKind), ("payment_mode", PaymentMode),
                                 ("answer_flag", AnswerFlag)):
            object.__setattr__(self, name, _enum(vocabulary, getattr(self, name), name, where))
        if (self.delay is None) != (self.authorization is None):
            raise DecodeError(f"{where}: delay and authorization go together (protocol E+) or "
                              f"are both absent (protocol E); got delay={self.delay!r}, "
                              f"authorization={self.authorization!r}")
        if self.delay is not None:
            object.__setattr__(self, "delay", _enum(Delay, self.delay, "delay", where))
            object.__setattr__(self, "authorization", _enum(
                Authorization, self.authorization, "authorization", where))
        self.encode()  # checks every field

    @property
    def layout(self) -> Layout:
        return REQUEST_E if self.delay is None else REQUEST_E_PLUS

    @property
    def version(self) -> str:
        return "E" if self.delay is None else "E+"

    def _values(self) -> dict[str, str]:
        values = {
            "pos_number": self.pos_number,
            "amount": _amount_text(self.amount_minor, "Concert request"),
            "answer_flag": str(self.answer_flag), "payment_mode": str(self.payment_mode),
            "transaction_type": str(self.transaction), "currency": self.currency,
            "private": self.private,
        }
        if self.delay is not None:
            values.update(delay=str(self.delay), authorization=str(self.authorization))
        return values

    def encode(self) -> bytes:
        """The payload (what goes between STX and ETX)."""
        return _join(self.layout, self._values(), f"Concert {self.layout.name}")

    @classmethod
    def decode(cls, payload: bytes) -> ConcertRequest:
        """A request payload of protocol E (26 bytes) or E+ (34 bytes)."""
        layout = REQUEST_LAYOUTS.get(len(payload))
        if layout is None:
            raise DecodeError(
                f"Concert request: payload is {len(payload)} bytes; expected "
                f"{REQUEST_E.size} (protocol E) or {REQUEST_E_PLUS.size} (protocol E+); "
                f"payload {shown(payload)}")
        v = _split(layout, payload, f"Concert {layout.name}")
        plus = layout is REQUEST_E_PLUS
        return cls(amount_minor=int(v["amount"]), currency=v["currency"],
                   pos_number=v["pos_number"], transaction=TransactionKind(v["transaction_type"]),
                   payment_mode=PaymentMode(v["payment_mode"]),
                   answer_flag=AnswerFlag(v["answer_flag"]), private=v["private"],
                   delay=Delay(v["delay"]) if plus else None,
                   authorization=Authorization(v["authorization"]) if plus else None)

    def describe(self) -> str:
        """One line for transcripts: ``E+ POS 01 DEBIT 1000 978 CARD answer SHORT at
        END_OF_TRANSACTION auth TERMINAL_DECIDES private '          '``."""
        when = ""
        if self.delay is not None and self.authorization is not None:
            when = f" at {self.delay.name} auth {self.authorization.name}"
        return scrub(f"{self.version} POS {self.pos_number} {self.transaction.name} "
                     f"{self.amount_minor} {self.currency} {self.payment_mode.name} answer "
                     f"{self.answer_flag.name}{when} private {self.private!r}")


@dataclass(frozen=True)
class ConcertAnswer:
    """The terminal's answer.  ``card_data`` (REP, 55 characters) is None in the short answer;
    it is card data: not in ``repr``, shown masked by :attr:`masked_card_data`."""

    pos_number: str
    status: Status
    amount_minor: int
    payment_mode: PaymentMode
    currency: str
    private: str = BLANK_PRIVATE
    card_data: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        where = "Concert answer"
        object.__setattr__(self, "status", _enum(Status, self.status, "status", where))
        object.__setattr__(self, "payment_mode", _enum(PaymentMode, self.payment_mode,
                                                       "payment_mode", where))
        self.encode()  # checks every field

    @property
    def layout(self) -> Layout:
        return ANSWER_SHORT if self.card_data is None else ANSWER_LONG

    @property
    def masked_card_data(self) -> str:
        """REP without trailing blanks, anything PAN-like masked (first 6, last 4)."""
        return "" if self.card_data is None else scrub(self.card_data.rstrip())

    def encode(self) -> bytes:
        values = {"pos_number": self.pos_number, "status": str(self.status),
                  "amount": _amount_text(self.amount_minor, "Concert answer"),
                  "payment_mode": str(self.payment_mode), "currency": self.currency,
                  "private": self.private}
        if self.card_data is not None:
            values["rep"] = self.card_data
        return _join(self.layout, values, f"Concert {self.layout.name}")

    @classmethod
    def decode(cls, payload: bytes) -> ConcertAnswer:
        """An answer payload: 25 bytes, or 80 with REP."""
        layout = ANSWER_LAYOUTS.get(len(payload))
        if layout is None:
            raise DecodeError(
                f"Concert answer: payload is {len(payload)} bytes; expected {ANSWER_SHORT.size} "
                f"or {ANSWER_LONG.size} (with REP); payload {shown(payload)}")
        v = _split(layout, payload, f"Concert {layout.name}")
        return cls(pos_number=v["pos_number"], status=Status(v["status"]),
                   amount_minor=int(v["amount"]), payment_mode=PaymentMode(v["payment_mode"]),
                   currency=v["currency"], private=v["private"], card_data=v.get("rep"))

    def describe(self) -> str:
        rep = f" REP {self.masked_card_data!r}" if self.card_data is not None else ""
        return scrub(f"POS {self.pos_number} {self.status.name} {self.amount_minor} "
                     f"{self.currency} {self.payment_mode.name}{rep} private {self.private!r}")


def trace_private(stan: str) -> str:
    """The private field naming a transaction by trace: its 6-digit STAN, blank-padded.  The
    simulated terminal returns the trace of what it ran there, and reads the original of a
    credit or a cancellation from it (docs/ecr-concert.md, "Private data")."""
    if not (len(stan) == 6 and ascii_digits(stan)):
        raise DecodeError(f"Concert private data: a trace is 6 digits, got {stan!r}")
    return stan.ljust(PRIVATE.size)


def private_trace(private: str) -> str | None:
    """The STAN a private field names (:func:`trace_private`), or None."""
    stan, rest = private[:6], private[6:]
    if len(private) == PRIVATE.size and ascii_digits(stan) and not rest.strip():
        return stan
    return None


# ------------------------------------------------------------------------------------- framing

def lrc(data: bytes) -> int:
    """XOR of *data* (every byte after STX up to and including ETX)."""
    value = 0
    for b in data:
        value ^= b
    return value


def encode_frame(payload: bytes) -> bytes:
    """``STX | payload | ETX | LRC``; the payload is printable ASCII (7 bits, as the line may
    be 7E1), so neither STX nor ETX can occur in it."""
    for pos, b in enumerate(payload):
        if not _printable(b):
            raise FramingError(f"Concert frame: encode() payload byte {pos} is {b:02x}, not "
                               f"printable ASCII; payload {shown(payload)}")
    if len(payload) > MAX_PAYLOAD:
        raise FramingError(f"Concert frame: encode() payload is {len(payload)} bytes, limit "
                           f"is {MAX_PAYLOAD}")
    body = payload + bytes([ETX])
    return bytes([STX]) + body + bytes([lrc(body)])


def decode_frame(frame: bytes) -> bytes:
    """The payload of a whole frame; FramingError naming the byte (frame dumped redacted)."""
    if len(frame) < 3 or frame[0] != STX:
        raise FramingError(f"Concert frame: expected STX (02) at byte 0; frame "
                           f"{shown_frame(frame)}")
    if frame[-2] != ETX:
        raise FramingError(f"Concert frame: expected ETX (03) at byte {len(frame) - 2}, got "
                           f"{frame[-2]:02x}; frame {shown_frame(frame)}")
    payload = frame[1:-2]
    if len(payload) > MAX_PAYLOAD:  # the limit encode_frame() keeps: one rule both ways
        raise FramingError(f"Concert frame: payload of {len(payload)} bytes from byte 1, "
                           f"limit is {MAX_PAYLOAD}; frame {shown_frame(frame)}")
    for pos, b in enumerate(payload, 1):
        if not _printable(b):
            raise FramingError(f"Concert frame: byte {pos} is {b:02x}, not printable ASCII; "
                               f"frame {shown_frame(frame)}")
    expected = lrc(frame[1:-1])
    if frame[-1] != expected:
        raise FramingError(f"Concert frame: bad LRC at byte {len(frame) - 1}, expected "
                           f"{expected:02x}, got {frame[-1]:02x}; frame {shown_frame(frame)}")
    return payload


def split_stream(data: bytes) -> tuple[list[bytes], bytes]:
    """Cut one direction's captured bytes into items — a control character, a whole frame
    (``STX … ETX LRC``), a run of other bytes — and the incomplete frame left at the end (to
    put before the next chunk)."""
    items: list[bytes] = []
    i = 0
    while i < len(data):
        b = data[i]
        if b == STX:
            end = data.find(bytes([ETX]), i + 1)
            if end < 0 or end + 1 >= len(data):
                if len(data) - i > MAX_FRAME:  # no ETX where one must be: not a frame
                    items.append(data[i:i + 1])
                    i += 1
                    continue
                return items, data[i:]
            items.append(data[i:end + 2])
            i = end + 2
        elif b in CONTROL_NAMES:
            items.append(data[i:i + 1])
            i += 1
        else:
            j = i + 1
            while j < len(data) and data[j] not in CONTROL_NAMES:
                j += 1
            items.append(data[i:j])
            i = j
    return items, b""


def describe_item(item: bytes, sender: Side) -> str:
    """One item of :func:`split_stream` as text: a control character by name, a frame decoded
    as a request (*sender* ``register``) or an answer (``terminal``), card data masked."""
    if len(item) == 1 and item[0] in CONTROL_NAMES:
        return CONTROL_NAMES[item[0]]
    if item[:1] == bytes([STX]):
        try:
            payload = decode_frame(item)
            record = (ConcertRequest.decode(payload) if sender == "register"
                      else ConcertAnswer.decode(payload))
        except (FramingError, DecodeError) as exc:
            return f"bad frame: {exc}"
        return f"frame {record.describe()}"
    return f"garbage {shown(item)}"


def describe_stream(data: bytes, sender: Side) -> list[str]:
    """A captured byte stream of one direction as lines (:func:`describe_item`)."""
    items, rest = split_stream(data)
    lines = [describe_item(item, sender) for item in items]
    if rest:
        lines.append(f"incomplete frame {shown_frame(rest)}")
    return lines


# ------------------------------------------------------------------------------ line discipline

@dataclass(frozen=True)
class LineTimers:
    """Bounds of the line discipline (docs/ecr-concert.md, "Line discipline").  The defaults are
    what public implementations use (no public copy of the specification gives them): up to
    3 s for an ACK, 3 tries of the ENQ, a frame sent at most 3 times."""

    ack_timeout: float = 3.0  # s, for the ACK of our ENQ or of our frame
    enq_attempts: int = 3  # ENQs sent before giving up a session
    frame_attempts: int = 3  # times one frame is sent (NAK or no ACK: again)
    receive_timeout: float = 3.0  # s, after we ACKed: for the peer's frame, then its EOT

    def __post_init__(self) -> None:
        if self.ack_timeout <= 0 or self.receive_timeout <= 0:
            raise ConfigError(f"Concert line: ack_timeout and receive_timeout must be > 0, got "
                              f"{self.ack_timeout}, {self.receive_timeout}")
        if self.enq_attempts < 1 or self.frame_attempts < 1:
            raise ConfigError(f"Concert line: enq_attempts and frame_attempts must be >= 1, got "
                              f"{self.enq_attempts}, {self.frame_attempts}")

    @property
    def enq_bound(self) -> float:
        return self.enq_attempts * self.ack_timeout

    @property
    def frame_bound(self) -> float:
        return self.frame_attempts * self.ack_timeout

    @property
    def send_bound(self) -> float:
        """Longest a send can take before :class:`Delivered` or :class:`Failed`."""
        return self.enq_bound + self.frame_bound


class LineState(enum.StrEnum):
    IDLE = "idle"
    ENQ_SENT = "enq_sent"  # our ENQ is out, its ACK awaited
    FRAME_SENT = "frame_sent"  # our frame is out, its ACK (or NAK) awaited
    RECEIVING = "receiving"  # we ACKed the peer's ENQ: its frame, then its EOT, awaited


@dataclass(frozen=True)
class Received:
    """A frame from the peer arrived intact and passed the check: it was ACKed."""

    payload: bytes


@dataclass(frozen=True)
class Delivered:
    """Our frame was ACKed (EOT sent after it)."""

    ticket: int


@dataclass(frozen=True)
class Failed:
    """Our frame could not be delivered (EOT sent); *error* says why, with the bound."""

    ticket: int
    error: str


@dataclass(frozen=True)
class Rejected:
    """Bytes from the peer that were refused (NAK) or ignored; *error* says why."""

    raw: bytes
    error: str


LineEvent = Received | Delivered | Failed | Rejected


@dataclass
class _Outgoing:
    ticket: int
    frame: bytes


class ConcertLine:
    """The line discipline of one side, either side: one session at a time.

    Sending: ``ENQ`` → the peer's ``ACK`` → our frame → ``ACK`` → ``EOT``.  No ACK to the ENQ
    within ``ack_timeout`` (a NAK to it waits the same): ENQ again, ``enq_attempts`` in all,
    then ``EOT`` and :class:`Failed`.  A NAK to the frame, or no answer within
    ``ack_timeout``: the frame again, ``frame_attempts`` times in all, then ``EOT`` and
    :class:`Failed`.

    Receiving: ``ENQ`` → ``ACK``; a frame whose envelope and *check* (e.g. the record's
    decode) pass → ``ACK`` and :class:`Received` (a repeat of it in the same session is ACKed,
    not delivered again); a bad one → ``NAK`` and :class:`Rejected`; ``EOT`` ends the session.
    Nothing for ``receive_timeout`` (after our ACK) abandons it.  A repeated ENQ is ACKed again
    (our ACK was lost).  An ENQ that crosses our own ENQ is ignored: the peer tries again.

    Pure: call :meth:`send`, :meth:`receive`, :meth:`poll` with the time, write what
    :meth:`take_output` returns, act on the events.
    """

    def __init__(self, name: str, *, timers: LineTimers | None = None,
                 check: Callable[[bytes], object] | None = None) -> None:
        self.name = name
        self.timers = timers or LineTimers()
        self.check = check
        self._out = bytearray()
        self._queue: deque[_Outgoing] = deque()
        self._current: _Outgoing | None = None
        self._state = LineState.IDLE
        self._deadline: float | None = None
        self._attempts = 0
        self._rx = bytearray()  # a frame being received (from its STX)
        self._accepted: bytes | None = None  # the frame accepted in this session
        self._next_ticket = 1

    def __repr__(self) -> str:
        return f"ConcertLine({self.name})"

    @property
    def state(self) -> LineState:
        return self._state

    @property
    def busy(self) -> bool:
        return self._state is not LineState.IDLE or bool(self._queue)

    def reset(self) -> None:
        """Forget everything (power-on, driver open)."""
        self._out.clear()
        self._queue.clear()
        self._current = None
        self._state = LineState.IDLE
        self._deadline = None
        self._attempts = 0
        self._rx.clear()
        self._accepted = None

    def take_output(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def next_deadline(self) -> float | None:
        return self._deadline

    def send(self, payload: bytes, now: float) -> int:
        """Queue *payload* (framed here); returns the ticket a later Delivered/Failed names."""
        frame = encode_frame(payload)
        ticket = self._next_ticket
        self._next_ticket += 1
        self._queue.append(_Outgoing(ticket, frame))
        self._start_next(now)
        return ticket

    def abandon(self, ticket: int) -> None:
        """Stop trying to deliver *ticket* (the caller gave up): EOT if its session is open."""
        self._queue = deque(o for o in self._queue if o.ticket != ticket)
        if self._current is not None and self._current.ticket == ticket:
            self._write(EOT)
            self._to_idle()

    # -- input
    def receive(self, data: bytes, now: float) -> list[LineEvent]:
        events: list[LineEvent] = []
        garbage = bytearray()
        for b in data:
            if self._rx:
                self._frame_byte(b, now, events)
                continue
            handled = self._control(b, now, events)
            if not handled:
                garbage.append(b)
        if garbage:
            events.append(Rejected(bytes(garbage), (
                f"{self.name}: ignored {len(garbage)} byte(s) in state {self._state.value}: "
                f"{shown(bytes(garbage))}")))
        return events

    def poll(self, now: float) -> list[LineEvent]:
        if self._deadline is None or now < self._deadline:
            return []
        events: list[LineEvent] = []
        t = self.timers
        if self._state is LineState.ENQ_SENT:
            if self._attempts < t.enq_attempts:
                self._attempts += 1
                self._write(ENQ)
                self._deadline = now + t.ack_timeout
            else:
                events.append(self._fail(
                    f"no ACK to ENQ after {t.enq_attempts} attempts ({t.ack_timeout:.3f} s "
                    f"each, {t.enq_bound:.3f} s bound)", now))
        elif self._state is LineState.FRAME_SENT:
            events += self._frame_again(
                now, f"no ACK to the frame after {t.frame_attempts} attempts "
                     f"({t.ack_timeout:.3f} s each, {t.frame_bound:.3f} s bound)")
        elif self._state is LineState.RECEIVING:
            what = "EOT" if self._accepted is not None else "frame"
            raw = bytes(self._rx)
            self._rx.clear()
            events.append(Rejected(raw, (
                f"{self.name}: session abandoned: no {what} within {t.receive_timeout:.3f} s "
                f"of our ACK")))
            self._to_idle()
            self._start_next(now)
        return events

    # -- internals
    def _write(self, *items: int | bytes) -> None:
        for item in items:
            self._out += bytes([item]) if isinstance(item, int) else item

    def _control(self, b: int, now: float, events: list[LineEvent]) -> bool:
        """One byte outside a frame; False: not meaningful here (garbage)."""
        state = self._state
        if b == ENQ:
            if state is LineState.IDLE:
                self._write(ACK)
                self._state = LineState.RECEIVING
                self._accepted = None
                self._deadline = now + self.timers.receive_timeout
            elif state is LineState.RECEIVING and self._accepted is None:
                self._write(ACK)  # the peer did not get our ACK: it asks again
                self._deadline = now + self.timers.receive_timeout
            elif state is LineState.ENQ_SENT:
                events.append(Rejected(bytes([b]), (
                    f"{self.name}: ENQ from the peer crossed ours: ignored, the peer tries "
                    f"again")))
            else:
                return False
            return True
        if b == STX and state is LineState.RECEIVING:
            self._rx.append(b)
            return True
        if b == EOT:
            if state is LineState.RECEIVING:
                if self._accepted is None:
                    events.append(Rejected(bytes([b]), (
                        f"{self.name}: the peer closed its session (EOT) with no frame "
                        f"accepted")))
                self._to_idle()
                self._start_next(now)
            return True  # a stray EOT outside a session is harmless
        if b == ACK:
            if state is LineState.ENQ_SENT:
                assert self._current is not None
                self._write(self._current.frame)
                self._state = LineState.FRAME_SENT
                self._attempts = 1
                self._deadline = now + self.timers.ack_timeout
            elif state is LineState.FRAME_SENT:
                assert self._current is not None
                self._write(EOT)
                events.append(Delivered(self._current.ticket))
                self._to_idle()
                self._start_next(now)
            return True  # else a late ACK: harmless
        if b == NAK:
            if state is LineState.FRAME_SENT:
                t = self.timers
                events += self._frame_again(now, f"frame refused (NAK) {t.frame_attempts} times")
            # a NAK to our ENQ: the peer is not ready; the ENQ is tried again at the deadline
            return True
        return False

    def _frame_byte(self, b: int, now: float, events: list[LineEvent]) -> None:
        self._rx.append(b)
        if len(self._rx) >= 3 and self._rx[-2] == ETX:
            raw = bytes(self._rx)
            self._rx.clear()
            self._deadline = now + self.timers.receive_timeout
            try:
                payload = decode_frame(raw)
                if self.check is not None:
                    self.check(payload)
            except (FramingError, DecodeError) as exc:
                self._write(NAK)
                events.append(Rejected(raw, f"{self.name}: NAK: {exc}"))
                return
            self._write(ACK)
            if payload != self._accepted:
                self._accepted = payload
                events.append(Received(payload))
        elif len(self._rx) > MAX_FRAME:
            raw = bytes(self._rx)
            self._rx.clear()
            self._write(NAK)
            events.append(Rejected(raw, (
                f"{self.name}: NAK: no ETX within {MAX_FRAME - 1} bytes of STX; got "
                f"{shown_frame(raw)}")))

    def _frame_again(self, now: float, give_up: str) -> list[LineEvent]:
        assert self._current is not None
        if self._attempts < self.timers.frame_attempts:
            self._attempts += 1
            self._write(self._current.frame)
            self._deadline = now + self.timers.ack_timeout
            return []
        return [self._fail(give_up, now)]

    def _fail(self, why: str, now: float) -> Failed:
        assert self._current is not None
        ticket = self._current.ticket
        self._write(EOT)
        self._to_idle()
        self._start_next(now)
        return Failed(ticket, f"{self.name}: {why}; sent EOT")

    def _to_idle(self) -> None:
        self._state = LineState.IDLE
        self._current = None
        self._deadline = None
        self._attempts = 0
        self._rx.clear()

    def _start_next(self, now: float) -> None:
        if self._state is not LineState.IDLE or not self._queue:
            return
        self._current = self._queue.popleft()
        self._write(ENQ)
        self._state = LineState.ENQ_SENT
        self._attempts = 1
        self._deadline = now + self.timers.ack_timeout
