"""The acquirer host simulator's state machine: ISO 8583 request in, response out, time passed in.

``AcquirerEngine.handle(tpdu, header, doc, now)`` dispatches on the MTI (``MTI_HANDLERS``: sign-in,
and every MTI of the transaction table), then a financial request on ``(MTI, processing code)``
(``PROC_HANDLERS``, built from the rows of :data:`protocols.transactions.TRANSACTIONS` and the
handler of each type in :data:`TXN_HANDLERS`): a new transaction type is a table row plus a
handler here.  A refusal is raised inside a handler as :class:`Reject` and turned into the
response in one place (:meth:`AcquirerEngine.handle`).  Handlers of types that refer to an
original look it up in the ledger (:meth:`AcquirerEngine.original_of`).  No sockets here.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

from protocols.crypto import encode_working_keys, verify_pin_block
from protocols.errors import ConfigError, DecodeError
from protocols.iso8583 import (
    UNIONPAY,
    Dialect,
    Header,
    Tpdu,
    decode_message,
    encode_message,
    encode_with_mac,
    frame,
    mac_ok,
    response_mti,
)
from protocols.masking import mask_pan
from protocols.transactions import TRANSACTIONS, TransactionTable, TxnType, parse_field61
from sim.host.config import Account, TerminalRecord, load_account, load_accounts, load_terminals
from sim.host.ledger import LedgerRecord

logger = logging.getLogger(__name__)

#: Processing requirement the host sets in the header when the terminal must sign in again.
REQ_SIGN_IN_AGAIN = 3
#: Wrong PINs in a row after which the account answers 75.
MAX_PIN_TRIES = 3
#: Card status (fixtures/cards/*.yaml issuer.status) → response code (None = usable).
STATUS_CODES: Mapping[str, str | None] = {
    "active": None, "blocked": "14", "closed": "14", "lost": "41", "stolen": "43",
}
#: Net management codes of 0800 field 60.3 → working key length in bytes.
KEY_LENGTHS: Mapping[str, int] = {"003": 8, "004": 16}
#: MTI of sign-in (network management), the one request that is not in the transaction table.
SIGN_IN_MTI = "0800"
#: Response code when the original a request names is not in the ledger.
ORIGINAL_NOT_FOUND = "25"


# --------------------------------------------------------------------------------------------
# Engine


class LedgerReader(Protocol):
    """The engine's one read of its ledger (sim.host.ledger documents the matching rule)."""

    def find_original(self, terminal_id: str, *, rrn: str | None = None,
                      stan: str | None = None, batch_no: str | None = None
                      ) -> LedgerRecord | None: ...


class LedgerSink(LedgerReader, Protocol):
    """Where the engine writes one row per request, and reads originals back."""

    def record(self, rec: LedgerRecord) -> int: ...


class Reject(Exception):
    """Raised inside a handler: answer with *code*; *mac* says whether the response gets a MAC
    (not when the terminal's keys are unknown or its MAC failed)."""

    def __init__(self, code: str, reason: str, *, mac: bool = True) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason
        self.mac = mac


@dataclass
class Session:
    pik: bytes = field(repr=False)
    mak: bytes = field(repr=False)
    batch_no: str
    signed_in_at: dt.datetime
    seen: set[tuple[str, str]] = field(default_factory=set)  # (batch, stan) of financial reqs


@dataclass
class _Context:
    """What one request accumulates for its response and its ledger row."""

    now: dt.datetime
    request: Mapping[str, str]
    terminal: TerminalRecord | None = None
    session: Session | None = None
    response: dict[str, str] = field(default_factory=dict)
    pan: str | None = None
    rrn: str | None = None
    auth_code: str | None = None
    mac: bool = False
    mac_data: bytes | None = None


Handler = Callable[["AcquirerEngine", "_Context"], None]


class AcquirerEngine:
    """UnionPay-style acquirer/issuer host as a pure state machine (no I/O except the ledger
    sink it is given)."""

    def __init__(self, terminals: Mapping[str, TerminalRecord], accounts: Mapping[str, Account],
                 *, ledger: LedgerSink | None = None,
                 key_source: Callable[[int], bytes] = os.urandom,
                 pan_salt: bytes | None = None, dialect: Dialect = UNIONPAY,
                 institution_id: str = "48020000",
                 transactions: TransactionTable = TRANSACTIONS,
                 txn_handlers: Mapping[str, Handler] | None = None) -> None:
        """*transactions* and *txn_handlers* (type → handler; default :data:`TXN_HANDLERS`)
        make the dispatch tables; every row needs a handler (ConfigError naming the type)."""
        self.terminals = dict(terminals)
        self.accounts = dict(accounts)
        self.ledger = ledger
        self.key_source = key_source
        self.pan_salt = pan_salt if pan_salt is not None else key_source(16)
        self.dialect = dialect
        self.institution_id = institution_id
        self.sessions: dict[str, Session] = {}
        self._serial = 0
        self.transactions = transactions
        self._mti_handlers = build_mti_handlers(transactions)
        self._proc_handlers = build_proc_handlers(
            transactions, TXN_HANDLERS if txn_handlers is None else txn_handlers)

    # -- public surface ---------------------------------------------------------------------

    def handle(self, tpdu: Tpdu, header: Header, doc: Mapping[str, str], now: dt.datetime,
               *, mac_data: bytes | None = None) -> dict[str, str]:
        """Answer one decoded request.  *mac_data*: the request payload as received (MAC is
        checked over it); when None the doc is re-encoded.  Returns the response doc (field 64
        holds the MAC already when the response is MACed)."""
        mti = doc.get("t", "")
        ctx = _Context(now=now, request=doc, mac_data=mac_data)
        ctx.response = {"t": response_mti(mti)}
        handler = self._mti_handlers.get(mti, AcquirerEngine._unsupported)
        try:
            handler(self, ctx)
        except Reject as rej:
            ctx.response["39"] = rej.code
            ctx.mac = ctx.mac and rej.mac
            logger.info("%s from %s: %s %s", mti, doc.get("41", "?"), rej.code, rej.reason)
        return self._finish(ctx)

    def handle_frame(self, tpdu: Tpdu, header: Header, payload: bytes,
                     now: dt.datetime) -> bytes:
        """Decode, :meth:`handle`, encode and frame the response (TPDU swapped; header asks for a
        new sign-in after a 22).  Raises DecodeError on a request it cannot decode."""
        doc = decode_message(payload, self.dialect)
        resp = self.handle(tpdu, header, doc, now, mac_data=payload)
        body = encode_message(resp, self.dialect)
        requirement = REQ_SIGN_IN_AGAIN if resp.get("39") in ("22", "A0") else 0
        return frame(body, tpdu.swapped(), header.with_requirement(requirement))

    def find_original(self, terminal_id: str, *, rrn: str | None = None,
                      stan: str | None = None, batch_no: str | None = None
                      ) -> LedgerRecord | None:
        """The newest approved financial request of *terminal_id* with this RRN and/or STAN
        (and batch), from the ledger; None if there is none or the engine has no ledger."""
        if self.ledger is None:
            return None
        return self.ledger.find_original(terminal_id, rrn=rrn, stan=stan, batch_no=batch_no)

    def original_of(self, ctx: _Context) -> LedgerRecord:
        """For handlers of types that need an original: the one the request names by field 61
        (original batch + STAN [+ date MMDD]) and/or field 37 (original RRN).  Reject 30 when
        neither names it, 25 when the ledger has no such approved request (or its date differs)."""
        req = ctx.request
        try:
            batch, stan, date = parse_field61(req["61"]) if req.get("61") else ("", "", "")
        except DecodeError as exc:
            raise Reject("30", str(exc)) from None
        rrn = req.get("37", "")
        if not rrn and not stan:
            raise Reject("30", "no original named: field 37 (RRN) or 61 (batch + STAN) needed")
        terminal_id = req.get("41", "")
        found = self.find_original(terminal_id, rrn=rrn or None, stan=stan or None,
                                   batch_no=batch or None)
        named = " ".join(f"{k} {v}" for k, v in (("RRN", rrn), ("batch", batch),
                                                  ("STAN", stan), ("date", date)) if v)
        if found is None:
            raise Reject(ORIGINAL_NOT_FOUND, f"terminal {terminal_id}: no approved original "
                                             f"with {named} in the ledger")
        when = found.received_at[5:7] + found.received_at[8:10]  # ISO 8601 → MMDD
        if date and date != when:
            raise Reject(ORIGINAL_NOT_FOUND, f"terminal {terminal_id}: original with {named} "
                                             f"was on {when}, not {date}")
        return found

    # -- plumbing -----------------------------------------------------------------------------

    def _next_serial(self) -> int:
        self._serial += 1
        return self._serial

    def _finish(self, ctx: _Context) -> dict[str, str]:
        req, resp = ctx.request, ctx.response
        for key in ("3", "4", "11", "25", "41", "42", "49", "60"):
            if key in req and key not in resp:
                resp[key] = req[key]
        resp["12"] = ctx.now.strftime("%H%M%S")
        resp["13"] = ctx.now.strftime("%m%d")
        if ctx.rrn is None:
            ctx.rrn = f"{ctx.now:%y%j}{self._next_serial():07d}"[-12:]
        resp["37"] = ctx.rrn
        if ctx.auth_code:
            resp["38"] = ctx.auth_code
        resp.setdefault("39", "96")
        resp["32"] = self.institution_id
        ordered = {k: resp[k] for k in sorted(resp, key=lambda k: (k != "t", int(k) if
                                                                    k.isdigit() else 0))}
        if ctx.mac and ctx.session is not None:
            raw = encode_with_mac(ordered, ctx.session.mak, self.dialect)
            ordered = decode_message(raw, self.dialect)
            ordered.pop("p", None)
        self._record(ctx, ordered)
        return ordered

    def _record(self, ctx: _Context, resp: Mapping[str, str]) -> None:
        if self.ledger is None:
            return
        req = ctx.request
        pan = ctx.pan
        amount = req.get("4")
        field60 = req.get("60", "")
        self.ledger.record(LedgerRecord(
            received_at=ctx.now.isoformat(timespec="milliseconds"),
            received_ts=ctx.now.timestamp(),
            mti=req.get("t", ""),
            response_mti=resp.get("t"),
            proc_code=req.get("3"),
            terminal_id=req.get("41"),
            merchant_id=req.get("42"),
            stan=req.get("11"),
            batch_no=field60[2:8] if len(field60) >= 8 else None,
            rrn=resp.get("37"),
            auth_code=resp.get("38"),
            amount_minor=int(amount) if amount and amount.isdigit() else None,
            currency=req.get("49"),
            pan_masked=mask_pan(pan) if pan else None,
            pan_hash=(hashlib.sha256(self.pan_salt + pan.encode()).hexdigest()[:16]
                      if pan else None),
            entry_mode=req.get("22"),
            response_code=resp.get("39"),
        ))

    @staticmethod
    def _need(ctx: _Context, *keys: str) -> None:
        missing = [k for k in keys if not ctx.request.get(k)]
        if missing:
            raise Reject("30", f"missing field(s) {', '.join(missing)}")

    def _terminal(self, ctx: _Context) -> TerminalRecord:
        self._need(ctx, "41", "42")
        term = self.terminals.get(ctx.request["41"])
        if term is None:
            raise Reject("97", f"terminal {ctx.request['41']} not registered", mac=False)
        if term.merchant_id != ctx.request["42"]:
            raise Reject("03", f"terminal {term.terminal_id} belongs to merchant "
                               f"{term.merchant_id}, request says {ctx.request['42']}",
                         mac=False)
        ctx.terminal = term
        return term

    # -- handlers -------------------------------------------------------------------------------

    def _unsupported(self, ctx: _Context) -> None:
        raise Reject("12", f"MTI {ctx.request.get('t')} not supported by this host", mac=False)

    def _sign_in(self, ctx: _Context) -> None:
        term = self._terminal(ctx)
        self._need(ctx, "11", "60")
        f60 = ctx.request["60"]
        if len(f60) < 11 or f60[:2] != "00":
            raise Reject("30", f"field 60 {f60!r}: expected type 00 + batch (6) + net code (3)")
        klen = KEY_LENGTHS.get(f60[8:11])
        if klen is None:
            raise Reject("30", f"field 60.3 network management code {f60[8:11]!r}; expected one "
                               f"of {sorted(KEY_LENGTHS)}")
        pik, mak = self.key_source(klen), self.key_source(klen)
        batch = f60[2:8]
        self.sessions[term.terminal_id] = Session(pik, mak, batch, ctx.now)
        ctx.response["62"] = encode_working_keys(pik, mak, term.master_key).hex().upper()
        ctx.response["39"] = "00"
        logger.info("terminal %s signed in, batch %s, %d-byte keys", term.terminal_id, batch,
                    klen)

    def _financial(self, ctx: _Context) -> None:
        mti, proc = ctx.request.get("t", ""), ctx.request.get("3", "")
        handler = self._proc_handlers.get((mti, proc))
        if handler is None:
            self._authenticate(ctx)
            raise Reject("12", f"processing code {proc!r} not supported for {mti}")
        handler(self, ctx)

    def _authenticate(self, ctx: _Context) -> Session:
        """Terminal registered, signed in with current keys, MAC right."""
        term = self._terminal(ctx)
        session = self.sessions.get(term.terminal_id)
        if session is None:
            raise Reject("22", f"terminal {term.terminal_id} is not signed in", mac=False)
        if "64" not in ctx.request:
            raise Reject("A0", "no MAC (field 64) in request", mac=False)
        mac_data = self._mac_data_for(ctx)
        if not mac_ok(mac_data, session.mak):
            raise Reject("A0", f"MAC does not verify under terminal {term.terminal_id}'s "
                               f"current MAK (signed in {session.signed_in_at:%H:%M:%S})",
                         mac=False)
        ctx.session = session
        ctx.mac = True
        return session

    def _mac_data_for(self, ctx: _Context) -> bytes:
        if ctx.mac_data is not None:
            return ctx.mac_data
        return encode_message(ctx.request, self.dialect)

    def _sale(self, ctx: _Context) -> None:
        session = self._authenticate(ctx)
        req = ctx.request
        self._need(ctx, "4", "11", "22", "49", "60")
        if not req.get("2") and not req.get("35"):
            raise Reject("30", "no PAN: neither field 2 nor field 35")
        pan = req.get("2") or req["35"].upper().split("D", 1)[0]
        ctx.pan = pan
        batch = req["60"][2:8]
        if batch != session.batch_no:
            raise Reject("77", f"batch {batch} but host batch is {session.batch_no}")
        key = (batch, req["11"])
        if key in session.seen:
            raise Reject("94", f"STAN {req['11']} already used in batch {batch}")
        session.seen.add(key)
        acct = self.accounts.get(pan)
        if acct is None:
            raise Reject("14", f"no issuer account for {mask_pan(pan)}")
        status_code = STATUS_CODES.get(acct.status)
        if status_code is not None:
            raise Reject(status_code, f"card {mask_pan(pan)} is {acct.status}")
        if acct.expiry < ctx.now.strftime("%y%m"):
            raise Reject("54", f"card {mask_pan(pan)} expired {acct.expiry}")
        if acct.pin_failures >= MAX_PIN_TRIES:
            raise Reject("75", f"card {mask_pan(pan)}: PIN tries exhausted")
        if "52" in req:
            if not verify_pin_block(bytes.fromhex(req["52"]), pan, session.pik, acct.pin):
                acct.pin_failures += 1
                code = "75" if acct.pin_failures >= MAX_PIN_TRIES else "55"
                raise Reject(code, f"card {mask_pan(pan)}: wrong PIN "
                                   f"({acct.pin_failures}/{MAX_PIN_TRIES})")
            acct.pin_failures = 0
        amount = int(req["4"])
        if amount > acct.balance_minor:
            raise Reject("51", f"card {mask_pan(pan)}: amount {amount} > balance")
        acct.balance_minor -= amount
        serial = self._next_serial()
        ctx.rrn = f"{ctx.now:%y%j}{serial:07d}"[-12:]
        ctx.auth_code = f"{(serial * 7919 + 100003) % 1000000:06d}"
        ctx.response["39"] = "00"


#: Host handler per transaction type (protocols.transactions): a new row needs one here.
TXN_HANDLERS: Mapping[str, Handler] = MappingProxyType({
    TxnType.SALE: AcquirerEngine._sale,
})


def build_mti_handlers(transactions: TransactionTable = TRANSACTIONS) -> Mapping[str, Handler]:
    """Sign-in, plus :meth:`AcquirerEngine._financial` for every MTI of the table."""
    out: dict[str, Handler] = {SIGN_IN_MTI: AcquirerEngine._sign_in}
    for row in transactions:
        if row.mti == SIGN_IN_MTI:
            raise ConfigError(f"host dispatch: transaction type {row.type} uses MTI "
                              f"{SIGN_IN_MTI}, the sign-in MTI")
        out[row.mti] = AcquirerEngine._financial
    return MappingProxyType(out)


def build_proc_handlers(transactions: TransactionTable = TRANSACTIONS,
                        handlers: Mapping[str, Handler] = TXN_HANDLERS
                        ) -> Mapping[tuple[str, str], Handler]:
    """``(MTI, processing code)`` → handler, one per row of *transactions*."""
    missing = [str(row.type) for row in transactions if row.type not in handlers]
    if missing:
        raise ConfigError(f"host dispatch: no handler for transaction type(s) "
                          f"{', '.join(missing)}; expected one per table row in TXN_HANDLERS")
    return MappingProxyType({row.iso_key: handlers[row.type] for row in transactions})


MTI_HANDLERS: Mapping[str, Handler] = build_mti_handlers()
PROC_HANDLERS: Mapping[tuple[str, str], Handler] = build_proc_handlers()

__all__ = [
    "Account",
    "AcquirerEngine",
    "LedgerReader",
    "LedgerSink",
    "MTI_HANDLERS",
    "PROC_HANDLERS",
    "Reject",
    "Session",
    "TXN_HANDLERS",
    "TerminalRecord",
    "build_mti_handlers",
    "build_proc_handlers",
    "load_account",
    "load_accounts",
    "load_terminals",
]
