"""The terminal firmware's acquirer client: sign-in (0800), financial requests, reversals
(0400), settlement (0500) and batch upload (0320) over TCP (docs/business-day.md).

A financial request is built from a row of the transaction table
(:mod:`protocols.transactions`: MTI, processing code, condition code, field 60.1, whether it
carries the original's data); :meth:`AcquirerClient.purchase` is the sale row.  A reversal
repeats the fields of the request it reverses (:meth:`AcquirerClient.reversal`).

Builds UnionPay-dialect messages with :mod:`protocols.iso8583` and :mod:`protocols.crypto`
(PIN block under the PIK, X9.19 MAC under the MAK), one TCP connection per transaction, every
wait bounded.  A failure to reach the host or an untrustworthy response (bad MAC, keys that do
not check, wrong STAN) is a :class:`CommsError` naming the stage; a host decline is an
:class:`AuthResult` with its response code.

Given its network interface (``netif``), the client looks at the interface's carrier before
each dial, as a terminal's firmware reads its PHY's link state: with the cable out it fails at
once (:data:`NO_LINK_TEXT`) instead of waiting out the connect timeout.
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from protocols.crypto import KeyCheckError, decode_working_keys, pin_block
from protocols.digits import ascii_digits
from protocols.errors import ProtocolError, SimError
from protocols.iso8583 import (
    Header,
    LengthFramer,
    Tpdu,
    decode_message,
    encode_message,
    encode_with_mac,
    frame,
    mac_ok,
    response_mti,
    response_text,
    unframe,
)
from protocols.masking import mask_pan
from protocols.transactions import (
    TRANSACTIONS,
    OriginalRef,
    SettlementTotals,
    TransactionTable,
    TransactionType,
    TxnType,
    UploadItem,
    upload_count_field48,
)
from sim.terminal.journal import REVERSAL_OF_STAGE, REVERSAL_OTHER
from sim.terminal.netif import CarrierReader, sysfs_carrier

logger = logging.getLogger(__name__)

Stage = Literal["connect", "send", "response"]

#: Field 53: PIN format 2 = ISO 9564 format 0 with PAN, 6 = double-length key (3DES), 0.
SECURITY_CONTROL_PIN = "2600000000000000"
REDIAL_PAUSE_S = 0.1
"""Pause before redialling after a connect that failed at once (refused, no route)."""
NO_LINK_TEXT = "网络未连接 NO NETWORK LINK"
"""What the terminal displays when its network interface has no carrier (the cable is out)."""
#: Field 60.3 network management code of 0800: 004 = double-length (3DES) working keys.
NET_CODE_3DES = "004"
#: Field 60.3 of financial requests: no network management information.
NET_CODE_NONE = "000"
#: Fields 60.4 (terminal capability 5 = contact chip) and 60.5 (0) of financial requests.
CAPABILITY_60_4_5 = "50"
#: Field 60.1 of settlement and batch upload messages.
MSG_TYPE_SETTLEMENT = "00"
#: Field 60.3: settlement / batch upload of one transaction, end of the batch upload.
NET_CODE_SETTLE = "201"
NET_CODE_UPLOAD_END = "207"


@dataclass
class WorkingKeys:
    """PIK and MAK in clear, RAM only (never logged; repr hides them)."""

    pik: bytes = field(repr=False)
    mak: bytes = field(repr=False)

    def __repr__(self) -> str:
        return f"WorkingKeys(pik=<{len(self.pik)} bytes>, mak=<{len(self.mak)} bytes>)"


@dataclass
class SignInResult:
    response_code: str
    keys: WorkingKeys | None
    batch_no: int
    host_datetime: str | None  # MMDDhhmmss from fields 13 + 12


@dataclass
class AuthResult:
    response_code: str
    approved: bool
    auth_code: str | None
    rrn: str | None
    stan: int
    host_message: str
    host_date: str | None = None  # MMDD, field 13 of the answer
    #: Field 55 of the answer (issuer authentication data 91, scripts 71/72), b"" when absent;
    #: the terminal gives 91 to the card in the second GENERATE AC.
    icc_response: bytes = field(default=b"", repr=False)


@dataclass(frozen=True)
class HostAnswer:
    """The answer to a reversal (0410) or a batch upload message (0330)."""

    response_code: str
    host_message: str

    @property
    def ok(self) -> bool:
        return self.response_code == "00"


@dataclass(frozen=True)
class SettlementResult:
    """The 0510: field 39 and the host's totals (field 48, with its reconciliation code)."""

    response_code: str
    host_totals: SettlementTotals | None
    host_message: str

    @property
    def reconciliation_code(self) -> str:
        return self.host_totals.code if self.host_totals is not None else ""


def abort_on_close(sock: socket.socket) -> None:
    """Make ``close()`` reset the connection and discard what is still queued to send.

    A terminal that gives up on an exchange must not leave its kernel retransmitting the
    abandoned request: when the network comes back the host would still receive it, late (a
    sign-in arriving after the terminal signed in again replaces the working keys the terminal
    holds, and its next request fails with A0).  SO_LINGER on with a zero time does that."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError as exc:  # already reset by the peer: nothing is queued any more
        logger.debug("abort_on_close: %s", exc)


class CommsError(SimError):
    """The exchange with the host failed at *stage* ('connect', 'send' or 'response').

    *reversal* is field 39 of the reversal a financial request that failed this way calls for
    ('' none): by default what :data:`REVERSAL_OF_STAGE` says; ``06`` for an approval whose MAC
    does not verify; '' for a decline whose MAC does not verify (nothing was booked)."""

    def __init__(self, stage: Stage, message: str, *, reversal: str | None = None,
                 display: str = "") -> None:
        super().__init__(message)
        self.stage: Stage = stage
        self.reversal: str = REVERSAL_OF_STAGE[stage] if reversal is None else reversal
        #: What the terminal displays for this failure ('' the comms error's own text).
        self.display = display


Dial = Callable[[tuple[str, int], float], socket.socket]
"""How the client opens a TCP connection: (address, timeout) -> socket
(:func:`socket.create_connection`; a test injects its own)."""


class AcquirerClient:
    """One instance per terminal; every call opens, uses and closes one TCP connection."""

    def __init__(self, host: str, port: int, *, terminal_id: str, merchant_id: str,
                 master_key: bytes, connect_timeout: float = 3.0,
                 response_timeout: float = 5.0, tpdu: Tpdu | None = None,
                 header: Header | None = None, currency: str = "156",
                 dial: Dial = socket.create_connection,
                 transactions: TransactionTable = TRANSACTIONS, netif: str | None = None,
                 carrier: CarrierReader = sysfs_carrier) -> None:
        if len(terminal_id) != 8 or len(merchant_id) != 15:
            raise ValueError(f"AcquirerClient: terminal_id must be 8 and merchant_id 15 "
                             f"characters; got {terminal_id!r}, {merchant_id!r}")
        self.host = host
        self.port = port
        self.terminal_id = terminal_id
        self.merchant_id = merchant_id
        self._master_key = master_key
        self.connect_timeout = connect_timeout
        self.response_timeout = response_timeout
        self.tpdu = tpdu or Tpdu()
        self.header = header or Header()
        self.currency = currency
        self.dial = dial
        self.transactions = transactions
        #: The network interface whose carrier is checked before each dial (None: no check).
        self.netif = netif
        self.carrier = carrier
        #: Header of the last response (processing_requirement 3 = host asks to sign in again).
        self.last_header: Header | None = None

    def __repr__(self) -> str:
        return f"AcquirerClient({self.terminal_id}@{self.host}:{self.port})"

    # -- transactions ------------------------------------------------------------------------

    def sign_in(self, *, operator: str, stan: int, batch_no: int) -> SignInResult:
        doc = {
            "t": "0800",
            "11": f"{stan:06d}",
            "41": self.terminal_id,
            "42": self.merchant_id,
            "60": f"00{batch_no:06d}{NET_CODE_3DES}",
            "63": operator[:3].ljust(3),
        }
        resp, _ = self._exchange(encode_message(doc), "0810", doc["11"])
        code = resp.get("39", "")
        keys: WorkingKeys | None = None
        if code == "00":
            if "62" not in resp:
                raise CommsError("response", f"{self!r}: sign-in approved without working keys "
                                             f"(field 62 absent)")
            try:
                pik, mak = decode_working_keys(bytes.fromhex(resp["62"]), self._master_key)
            except KeyCheckError as exc:
                raise CommsError("response", f"{self!r}: sign-in keys unusable: {exc}") from None
            keys = WorkingKeys(pik, mak)
        f60 = resp.get("60", "")
        host_batch = int(f60[2:8]) if len(f60) >= 8 and ascii_digits(f60[2:8]) else batch_no
        when = resp.get("13", "") + resp.get("12", "")
        logger.info("%r sign-in: %s %s, batch %06d", self, code, response_text(code), host_batch)
        return SignInResult(code, keys, host_batch, when if len(when) == 10 else None)

    def financial(self, txn: TransactionType | str, *, keys: WorkingKeys, stan: int,
                  batch_no: int, amount_minor: int, pan: str | None = None,
                  expiry: str | None = None, pan_seq: str | None = None,
                  track2_equivalent: str | None = None, icc_data: bytes = b"",
                  pin: str | None = None, entry_mode: str = "051",
                  original: OriginalRef | None = None) -> AuthResult:
        """One financial request of transaction type *txn* (a row, or a type looked up in this
        client's table): MTI, processing code (3), condition code (25) and field 60.1 come from
        the row; card fields (2, 14, 22, 23, 35, 55) when a card was read; PIN (26, 52, 53) when
        *pin* is given; the original (61, and 37 when its RRN is known) when the row needs one."""
        row = self._row(txn)
        doc = self._request_doc(row, "financial", stan=stan, batch_no=batch_no,
                                amount_minor=amount_minor, pan=pan, expiry=expiry,
                                pan_seq=pan_seq, track2_equivalent=track2_equivalent,
                                entry_mode=entry_mode, original=original)
        if icc_data and pan is not None:
            doc["55"] = icc_data.hex().upper()
        if pin is not None:
            if pan is None:
                raise SimError(f"{self!r}: financial({row.type}) STAN {stan:06d}: a PIN block "
                               f"needs the PAN; pan is None")
            doc["26"] = "12"
            doc["52"] = pin_block(pin, pan, keys.pik).hex().upper()
            doc["53"] = SECURITY_CONTROL_PIN
        payload = encode_with_mac(doc, keys.mak)
        resp, raw = self._exchange(payload, response_mti(row.mti), doc["11"])
        code = resp.get("39", "")
        self._check_mac(resp, raw, keys, f"{row.type} STAN {stan:06d}",
                        on_bad_approval=REVERSAL_OTHER)
        logger.info("%r %s %s STAN %06d amount %d: %s %s", self, row.type,
                    mask_pan(pan) if pan else "(no card)", stan, amount_minor, code,
                    response_text(code))
        return AuthResult(code, code == "00", resp.get("38"), resp.get("37"), stan,
                          response_text(code), resp.get("13"), self._icc_response(resp, stan))

    def reversal(self, txn: TransactionType | str, *, keys: WorkingKeys, stan: int,
                 batch_no: int, amount_minor: int, reason: str, pan: str | None = None,
                 expiry: str | None = None, pan_seq: str | None = None,
                 track2_equivalent: str | None = None, entry_mode: str | None = None,
                 original: OriginalRef | None = None) -> HostAnswer:
        """Reversal 0400 of the request of type *txn* with STAN *stan*: its fields 2, 3, 4, 11,
        14, 22, 23, 25, 35, 41, 42, 49, 60 (+ 61/37), field 39 = *reason* (98 no response, 06
        card declined after approval / other), MAC.  The host acknowledges with 0410 39 = 00."""
        row = self._row(txn)
        if not (len(reason) == 2 and reason.isalnum()):
            raise SimError(f"{self!r}: reversal({row.type}) STAN {stan:06d}: reason must be a "
                           f"2-character response code, got {reason!r}")
        doc = self._request_doc(row, "reversal", stan=stan, batch_no=batch_no,
                                amount_minor=amount_minor, pan=pan, expiry=expiry,
                                pan_seq=pan_seq, track2_equivalent=track2_equivalent,
                                entry_mode=entry_mode or "051", original=original)
        doc["t"] = "0400"
        doc["39"] = reason
        resp, raw = self._exchange(encode_with_mac(doc, keys.mak), "0410", doc["11"])
        code = resp.get("39", "")
        self._check_mac(resp, raw, keys, f"reversal of {row.type} STAN {stan:06d}",
                        on_bad_approval="")
        logger.info("%r reversal of %s STAN %06d (reason %s): %s %s", self, row.type, stan,
                    reason, code, response_text(code))
        return HostAnswer(code, response_text(code))

    def settlement(self, *, keys: WorkingKeys, stan: int, batch_no: int, operator: str,
                   totals: SettlementTotals) -> SettlementResult:
        """Settlement 0500 of batch *batch_no*: field 48 = *totals* with code 0; the 0510 has
        the host's totals and its reconciliation code (1 balanced, 2 not)."""
        doc = {
            "t": "0500",
            "11": f"{stan:06d}",
            "41": self.terminal_id,
            "42": self.merchant_id,
            "48": totals.with_code("0").field48(),
            "49": self.currency,
            "60": f"{MSG_TYPE_SETTLEMENT}{batch_no:06d}{NET_CODE_SETTLE}",
            "63": operator[:3].ljust(3),
        }
        resp, raw = self._exchange(encode_with_mac(doc, keys.mak), "0510", doc["11"])
        code = resp.get("39", "")
        self._check_mac(resp, raw, keys, f"settlement of batch {batch_no:06d}",
                        on_bad_approval="")
        host: SettlementTotals | None = None
        if "48" in resp:
            try:
                host = SettlementTotals.parse(resp["48"])
            except ProtocolError as exc:
                raise CommsError("response", f"{self!r}: settlement of batch {batch_no:06d}: "
                                             f"{exc}", reversal="") from None
        elif code == "00":
            raise CommsError("response", f"{self!r}: settlement of batch {batch_no:06d} "
                                         f"answered 00 without field 48", reversal="")
        logger.info("%r settlement of batch %06d (%s): %s %s, reconciliation %s", self,
                    batch_no, doc["48"], code, response_text(code),
                    host.code if host else "-")
        return SettlementResult(code, host, response_text(code))

    def batch_upload(self, *, keys: WorkingKeys, batch_no: int, item: UploadItem) -> HostAnswer:
        """Batch upload 0320 …201 of one approved transaction: 2 (PAN, when known), 3, 4, 11
        (the transaction's STAN), 37, 41, 42, 60, MAC."""
        doc = {
            "t": "0320",
            "3": item.proc_code,
            "4": f"{item.amount_minor:012d}",
            "11": f"{item.stan:06d}",
            "37": item.rrn.ljust(12)[:12],
            "41": self.terminal_id,
            "42": self.merchant_id,
            "60": f"{MSG_TYPE_SETTLEMENT}{batch_no:06d}{NET_CODE_SETTLE}",
        }
        if item.pan:
            doc["2"] = item.pan
        return self._upload(doc, keys, f"batch upload of STAN {item.stan:06d}")

    def batch_upload_end(self, *, keys: WorkingKeys, stan: int, batch_no: int,
                         count: int) -> HostAnswer:
        """End of the batch upload, 0320 …207: field 48 = *count* (4 digits)."""
        doc = {
            "t": "0320",
            "11": f"{stan:06d}",
            "41": self.terminal_id,
            "42": self.merchant_id,
            "48": upload_count_field48(count),
            "60": f"{MSG_TYPE_SETTLEMENT}{batch_no:06d}{NET_CODE_UPLOAD_END}",
        }
        return self._upload(doc, keys, f"batch upload end of batch {batch_no:06d} "
                                       f"({count} uploaded)")

    def _upload(self, doc: dict[str, str], keys: WorkingKeys, what: str) -> HostAnswer:
        resp, raw = self._exchange(encode_with_mac(doc, keys.mak), "0330", doc["11"])
        code = resp.get("39", "")
        self._check_mac(resp, raw, keys, what, on_bad_approval="")
        logger.info("%r %s: %s %s", self, what, code, response_text(code))
        return HostAnswer(code, response_text(code))

    # -- message building ----------------------------------------------------------------------

    def _row(self, txn: TransactionType | str) -> TransactionType:
        return txn if isinstance(txn, TransactionType) else self.transactions.get(txn)

    def _request_doc(self, row: TransactionType, op: str, *, stan: int, batch_no: int,
                     amount_minor: int, pan: str | None, expiry: str | None,
                     pan_seq: str | None, track2_equivalent: str | None, entry_mode: str,
                     original: OriginalRef | None) -> dict[str, str]:
        """The fields a financial request of *row* and its reversal share."""
        if not 0 < amount_minor < 10**12:
            raise ValueError(f"{self!r}: {op}({row.type}): amount_minor {amount_minor} "
                             f"outside 1..999999999999")
        doc: dict[str, str] = {
            "t": row.mti,
            "3": row.proc_code,
            "4": f"{amount_minor:012d}",
            "11": f"{stan:06d}",
            "25": row.condition_code,
            "41": self.terminal_id,
            "42": self.merchant_id,
            "49": self.currency,
            "60": f"{row.message_type_code}{batch_no:06d}{NET_CODE_NONE}{CAPABILITY_60_4_5}",
        }
        if pan is not None:
            doc.update(self._card_fields(pan, expiry, pan_seq, track2_equivalent, entry_mode))
        elif row.needs_card:
            raise SimError(f"{self!r}: {op}({row.type}) STAN {stan:06d}: the type needs a "
                           f"card; pan is None")
        if row.needs_original:
            if original is None:
                raise SimError(f"{self!r}: {op}({row.type}) STAN {stan:06d}: the type "
                               f"needs the original transaction; original is None")
            doc["61"] = original.field61(batch_no, with_date=row.original_date)
            if original.rrn:
                doc["37"] = original.rrn
        return doc

    def _icc_response(self, resp: dict[str, str], stan: int) -> bytes:
        value = resp.get("55", "")
        try:
            return bytes.fromhex(value)
        except ValueError:
            logger.warning("%r: STAN %06d: field 55 of the answer is not hex (%d characters); "
                           "ignored", self, stan, len(value))
            return b""

    def _check_mac(self, resp: dict[str, str], raw: bytes, keys: WorkingKeys, what: str, *,
                   on_bad_approval: str) -> None:
        """A response MAC that does not verify, or an approval without one, is not to be
        trusted: CommsError, calling for a reversal *on_bad_approval* when the answer was an
        approval ('' none), none for a decline."""
        code = resp.get("39", "")
        if "64" in resp:
            if not mac_ok(raw, keys.mak):
                raise CommsError("response", f"{self!r}: {what}: response MAC does not verify "
                                             f"(code {code})"
                                 + ("; reverse" if code == "00" and on_bad_approval else ""),
                                 reversal=on_bad_approval if code == "00" else "")
        elif code == "00":
            raise CommsError("response", f"{self!r}: {what}: approval without MAC"
                             + ("; reverse" if on_bad_approval else ""),
                             reversal=on_bad_approval)

    def purchase(self, *, keys: WorkingKeys, stan: int, batch_no: int, amount_minor: int,
                 pan: str, expiry: str, pan_seq: str | None, track2_equivalent: str,
                 icc_data: bytes, pin: str | None, entry_mode: str = "051") -> AuthResult:
        """A sale (:meth:`financial` with the table's sale row)."""
        return self.financial(TxnType.SALE, keys=keys, stan=stan, batch_no=batch_no,
                              amount_minor=amount_minor, pan=pan, expiry=expiry, pan_seq=pan_seq,
                              track2_equivalent=track2_equivalent, icc_data=icc_data, pin=pin,
                              entry_mode=entry_mode)

    @staticmethod
    def _card_fields(pan: str, expiry: str | None, pan_seq: str | None,
                     track2_equivalent: str | None, entry_mode: str) -> dict[str, str]:
        doc = {"2": pan, "22": entry_mode}
        if expiry:
            doc["14"] = expiry
        if track2_equivalent:
            doc["35"] = track2_equivalent.upper().replace("=", "D").rstrip("F")
        if pan_seq:
            doc["23"] = pan_seq.zfill(3)
        return doc

    # -- wire ----------------------------------------------------------------------------------

    def _exchange(self, payload: bytes, expect_mti: str, stan: str) -> tuple[dict[str, str],
                                                                             bytes]:
        where = f"{self.host}:{self.port}"
        sock = self._connect(where)
        answered = False
        try:
            try:
                sock.settimeout(self.response_timeout)
                sock.sendall(frame(payload, self.tpdu, self.header))
            except OSError as exc:
                raise CommsError("send", f"{self!r}: sending to {where} failed ({exc}); "
                                         f"timeout {self.response_timeout} s") from None
            body = self._read_frame(sock, where)
            answered = True
        finally:
            if not answered:
                abort_on_close(sock)
            sock.close()
        try:
            _tpdu, header, resp_payload = unframe(body)
            resp = decode_message(resp_payload)
        except ProtocolError as exc:
            raise CommsError("response", f"{self!r}: undecodable response from {where}: "
                                         f"{exc}") from None
        self.last_header = header
        if resp.get("t") != expect_mti or resp.get("11") != stan:
            raise CommsError("response", f"{self!r}: response from {where} is MTI "
                                         f"{resp.get('t')} STAN {resp.get('11')}; expected "
                                         f"MTI {expect_mti} STAN {stan}")
        return resp, resp_payload

    def _connect(self, where: str) -> socket.socket:
        """Connect, redialling after a fast failure (refused, no route: e.g. the last ARP probe
        sent while the cable was out fails just after it is back) until the connect timeout,
        as terminals do; a redial comes :data:`REDIAL_PAUSE_S` after the failure.  Before each
        dial, with no carrier on :attr:`netif`, fail at once (:data:`NO_LINK_TEXT`)."""
        deadline = time.monotonic() + self.connect_timeout
        pause = threading.Event()  # never set: a bounded pause between dials
        attempts = 0
        while True:
            self._check_link(where, attempts)
            attempts += 1
            remaining = deadline - time.monotonic()
            try:
                return self.dial((self.host, self.port), max(remaining, 0.001))
            except TimeoutError:
                raise CommsError("connect", f"{self!r}: connect to {where} timed out after "
                                            f"{self.connect_timeout} s ({attempts} dial(s))"
                                 ) from None
            except OSError as exc:
                if deadline - time.monotonic() <= REDIAL_PAUSE_S:
                    raise CommsError("connect", f"{self!r}: connect to {where} failed ({exc}) "
                                                f"after {attempts} dial(s); connect timeout "
                                                f"{self.connect_timeout} s") from None
                logger.info("%r: dial %d to %s failed (%s); redialling", self, attempts, where, exc)
                pause.wait(REDIAL_PAUSE_S)

    def _check_link(self, where: str, dials: int) -> None:
        if self.netif is None or self.carrier(self.netif):
            return
        raise CommsError("connect", f"{NO_LINK_TEXT}: {self!r}: network interface {self.netif} "
                                    f"has no carrier (link down); {where} not dialled"
                                    + (f" again after {dials} dial(s)" if dials else ""),
                         display=NO_LINK_TEXT)

    def _read_frame(self, sock: socket.socket, where: str) -> bytes:
        framer = LengthFramer()
        deadline = time.monotonic() + self.response_timeout
        received = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CommsError("response", f"{self!r}: no complete response from {where} "
                                             f"within {self.response_timeout} s "
                                             f"({received} bytes received)")
            sock.settimeout(remaining)
            try:
                data = sock.recv(4096)
            except TimeoutError:
                continue
            except OSError as exc:
                raise CommsError("response", f"{self!r}: connection to {where} failed while "
                                             f"waiting for the response ({exc}); timeout "
                                             f"{self.response_timeout} s") from None
            if not data:
                raise CommsError("response", f"{self!r}: host {where} closed the connection "
                                             f"after {received} bytes of the response "
                                             f"(timeout {self.response_timeout} s)")
            received += len(data)
            try:
                frames = framer.feed(data)
            except ProtocolError as exc:
                raise CommsError("response", f"{self!r}: bad framing from {where}: "
                                             f"{exc}") from None
            if frames:
                return frames[0]
