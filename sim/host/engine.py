"""The acquirer host simulator's state machine: ISO 8583 request in, response out, time passed in.

``AcquirerEngine.answer(tpdu, header, doc, now)`` dispatches on the MTI (``MTI_HANDLERS``:
sign-in, reversal, batch upload, settlement, and every MTI of the transaction table), then a
financial request on ``(MTI, processing code)`` (``PROC_HANDLERS``, built from the rows of
:data:`protocols.transactions.TRANSACTIONS` and the handler of each type in
:data:`TXN_HANDLERS`): a new transaction type is a table row plus a handler here.  A batch upload
dispatches on field 60.3 (``UPLOAD_HANDLERS``).  A refusal is raised inside a handler as
:class:`Reject` and turned into the response in one place (:meth:`AcquirerEngine.answer`).

The business day (docs/business-day.md): sales are booked; a void marks its sale voided, a
refund is checked against what is left of its sale, a reversal (0400) nets its original (and
answers 00 when there is nothing to net), a batch upload (0320) gives the host the terminal's
detail as its view of the batch, a settlement (0500) compares the host's totals
(:func:`protocols.ledger.batch_view` over the ledger) with field 48.  What was booked lives in
the ledger; handlers read it back (:meth:`AcquirerEngine.original_of`) and mark originals.

Host rules (:mod:`sim.host.rules`) may force a response code, a delay or a drop; the engine only
decides, the server carries out the delay or the drop (:class:`Answer`).  No sockets here.

The issuer's decision on a sale, in this order (docs/terminal-behaviour.md, "Host response
codes"): unknown PAN 14; issuer fault 91 / 96 (card profile ``issuer.fault``); account status
14 / 41 / 43 / 62; expired 54; a chip cryptogram in field 55 that does not verify 05
(:mod:`sim.host.issuer`); PIN tries exhausted 75, wrong PIN 55; above the card's
per-transaction limit 61; above the balance 51; else 00.  Every answer to a request whose ARQC
verified carries the ARPC (field 55, tag 91, ARC = field 39).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

from protocols.crypto import encode_working_keys, verify_pin_block
from protocols.digits import ascii_digits
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
    validate_message,
)
from protocols.ledger import (
    KIND_REVERSAL,
    KIND_SETTLEMENT,
    KIND_SIGN_IN,
    KIND_UPLOAD,
    KIND_UPLOAD_END,
    BatchView,
    Status,
    Totals,
    batch_view,
    book_of,
    refunded_amount,
)
from protocols.masking import mask_pan
from protocols.tlv import TlvError
from protocols.transactions import (
    RECONCILE_BALANCED,
    RECONCILE_UNBALANCED,
    SALE,
    TRANSACTIONS,
    Book,
    TransactionTable,
    TxnType,
    parse_field61,
)
from sim.host.config import Account, TerminalRecord, load_account, load_accounts, load_terminals
from sim.host.issuer import ArqcCheck, check_arqc, has_cryptogram, icc_tags
from sim.host.ledger import LedgerRecord
from sim.host.rules import HostRule, RequestFacts, RuleBook
from sim.rules import ActiveRule

logger = logging.getLogger(__name__)

#: Processing requirement the host sets in the header when the terminal must sign in again.
REQ_SIGN_IN_AGAIN = 3
#: Wrong PINs in a row after which the account answers 75.
MAX_PIN_TRIES = 3
#: Card status (fixtures/cards/*.yaml issuer.status) → response code (None = usable).
STATUS_CODES: Mapping[str, str | None] = {
    "active": None, "blocked": "14", "closed": "14", "lost": "41", "stolen": "43",
    "restricted": "62",
}
#: Issuer fault (fixtures/cards/*.yaml issuer.fault) → response code.
FAULT_CODES: Mapping[str, str] = {"unreachable": "91", "malfunction": "96"}
#: Response code when the card's cryptogram does not verify.
CRYPTOGRAM_FAILED = "05"
#: Response code above the card's per-transaction limit.
ABOVE_CARD_LIMIT = "61"
#: Net management codes of 0800 field 60.3 → working key length in bytes.
KEY_LENGTHS: Mapping[str, int] = {"003": 8, "004": 16}
#: MTI of sign-in (network management), not in the transaction table.
SIGN_IN_MTI = "0800"
#: Management MTIs of the business day (docs/business-day.md), not in the transaction table.
REVERSAL_MTI = "0400"
UPLOAD_MTI = "0320"
SETTLEMENT_MTI = "0500"
#: Field 60.3 of a batch upload: one transaction, the end of the upload.
UPLOAD_DETAIL = "201"
UPLOAD_END = "207"
#: Response code when the original a request names is not in the ledger.
ORIGINAL_NOT_FOUND = "25"
#: Response codes of the business day.
INVALID_TRANSACTION = "12"
ABOVE_WHAT_IS_LEFT = "61"
AMOUNT_DIFFERS = "64"


# --------------------------------------------------------------------------------------------
# Engine


class LedgerReader(Protocol):
    """The engine's reads of its ledger (sim.host.ledger documents them)."""

    def find_original(self, terminal_id: str, *, rrn: str | None = None,
                      stan: str | None = None, batch_no: str | None = None
                      ) -> LedgerRecord | None: ...


class LedgerSink(LedgerReader, Protocol):
    """Where the engine writes one row per request, reads originals and batches back, and marks
    originals (voided, reversed)."""

    def record(self, rec: LedgerRecord) -> int: ...

    def batch_records(self, terminal_id: str, batch_no: str) -> list[LedgerRecord]: ...

    def referring(self, original_id: int) -> list[LedgerRecord]: ...

    def set_status(self, row_id: int, status: str) -> None: ...


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
    kind: str | None = None
    status: str | None = None
    original: LedgerRecord | None = None  # the row a void/refund/reversal refers to
    named: tuple[str, str, str] = ("", "", "")  # (STAN, batch, RRN) the request names
    card: LedgerRecord | None = None  # a row whose masked PAN / hash this row copies
    reason_code: str | None = None
    reconciliation: str | None = None
    rule: ActiveRule[HostRule] | None = None
    arqc: ArqcCheck | None = None  # the chip cryptogram's check, when the request had one


@dataclass(frozen=True)
class Answer:
    """The engine's decision on one request: the response, and what a rule asks of the server
    (answer *delay_s* late, or never: *drop*)."""

    response: dict[str, str]
    delay_s: float = 0.0
    drop: bool = False
    rule_id: int | None = None


@dataclass(frozen=True)
class FrameAnswer:
    """:class:`Answer` for a framed request: *frame* is the framed response (also when the rule
    drops it: the server then sends nothing)."""

    frame: bytes
    delay_s: float = 0.0
    drop: bool = False
    rule_id: int | None = None


Handler = Callable[["AcquirerEngine", "_Context"], None]


def _next_batch(batch_no: str) -> str:
    n = (int(batch_no) + 1) % 1_000_000
    return f"{n or 1:06d}"


class AcquirerEngine:
    """UnionPay-style acquirer/issuer host as a pure state machine (no I/O except the ledger
    sink it is given)."""

    def __init__(self, terminals: Mapping[str, TerminalRecord], accounts: Mapping[str, Account],
                 *, ledger: LedgerSink | None = None,
                 key_source: Callable[[int], bytes] = os.urandom,
                 pan_salt: bytes | None = None, dialect: Dialect = UNIONPAY,
                 institution_id: str = "48020000",
                 transactions: TransactionTable = TRANSACTIONS,
                 txn_handlers: Mapping[str, Handler] | None = None,
                 rules: RuleBook | None = None) -> None:
        """*transactions* and *txn_handlers* (type → handler; default :data:`TXN_HANDLERS`)
        make the dispatch tables; every row needs a handler (ConfigError naming the type).
        *rules*: the response rules in force (default none)."""
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
        self.rules = rules if rules is not None else RuleBook()
        #: Terminal id → settlements still to answer 2 whatever the totals (disagree_next).
        self.disagreements: Counter[str] = Counter()
        self._mti_handlers = build_mti_handlers(transactions)
        self._proc_handlers = build_proc_handlers(
            transactions, TXN_HANDLERS if txn_handlers is None else txn_handlers)
        self._by_hash = {self._pan_hash(pan): pan for pan in self.accounts}

    # -- public surface ---------------------------------------------------------------------

    def answer(self, tpdu: Tpdu, header: Header, doc: Mapping[str, str], now: dt.datetime,
               *, mac_data: bytes | None = None) -> Answer:
        """Decide on one decoded request.  *mac_data*: the request payload as received (MAC is
        checked over it); when None the doc is re-encoded.  The response doc holds its MAC in
        field 64 already when it is MACed.  A rule that matches may force the response code
        (after the terminal, sign-in, MAC and PIN checks), a delay or a drop."""
        mti = doc.get("t", "")
        ctx = _Context(now=now, request=doc, mac_data=mac_data)
        ctx.response = {"t": response_mti(mti)}
        ctx.kind = self._kind_of(doc)
        problem = self._format_problem(doc)
        # a malformed request takes no rule: it changes nothing (see _malformed)
        ctx.rule = None if problem is not None else self.rules.take(RequestFacts.of(doc))
        forced = ctx.rule.rule.answer.response_code if ctx.rule is not None else None
        handler = self._mti_handlers.get(mti, AcquirerEngine._unsupported)
        try:
            if problem is not None:
                self._malformed(ctx, problem)
            elif forced is not None:
                self._forced(ctx, forced)
            else:
                handler(self, ctx)
        except Reject as rej:
            ctx.response["39"] = rej.code
            ctx.mac = ctx.mac and rej.mac
            logger.info("%s from %s: %s %s", mti, doc.get("41", "?"), rej.code, rej.reason)
        response = self._finish(ctx)
        if ctx.rule is None:
            return Answer(response)
        what = ctx.rule.rule.answer
        logger.info("%s from %s: rule #%d (%s)", mti, doc.get("41", "?"), ctx.rule.id,
                    what.describe())
        return Answer(response, delay_s=what.delay_s or 0.0, drop=what.drop,
                      rule_id=ctx.rule.id)

    def handle(self, tpdu: Tpdu, header: Header, doc: Mapping[str, str], now: dt.datetime,
               *, mac_data: bytes | None = None) -> dict[str, str]:
        """The response doc of :meth:`answer` (what a rule asks of the server is not carried
        out here)."""
        return self.answer(tpdu, header, doc, now, mac_data=mac_data).response

    def answer_frame(self, tpdu: Tpdu, header: Header, payload: bytes,
                     now: dt.datetime) -> FrameAnswer:
        """Decode, :meth:`answer`, encode and frame the response (TPDU swapped; header asks for
        a new sign-in after 22 or A0).  Raises DecodeError on a request it cannot decode."""
        doc = decode_message(payload, self.dialect)
        ans = self.answer(tpdu, header, doc, now, mac_data=payload)
        body = encode_message(ans.response, self.dialect)
        requirement = REQ_SIGN_IN_AGAIN if ans.response.get("39") in ("22", "A0") else 0
        return FrameAnswer(frame(body, tpdu.swapped(), header.with_requirement(requirement)),
                           ans.delay_s, ans.drop, ans.rule_id)

    def handle_frame(self, tpdu: Tpdu, header: Header, payload: bytes,
                     now: dt.datetime) -> bytes:
        """The framed response of :meth:`answer_frame`."""
        return self.answer_frame(tpdu, header, payload, now).frame

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
        ctx.named = (stan, batch, rrn)
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

    # -- control (the virtual bench's control socket, sim.host.control) ------------------------

    def add_rule(self, rule: HostRule) -> int:
        """Add *rule* after the rules in force; returns its id."""
        rule_id = self.rules.add(rule)
        logger.info("rule #%d added: %s", rule_id, rule.answer.describe())
        return rule_id

    def clear_rules(self) -> list[int]:
        """Remove the rules added over the control socket (the rules file's stay)."""
        return self.rules.clear_added()

    def disagree_next(self, terminal_id: str) -> int:
        """The next settlement of *terminal_id* answers 2 whatever the totals; returns how many
        settlements of it are now to disagree."""
        if terminal_id not in self.terminals:
            raise ConfigError(f"disagree_next(): terminal {terminal_id!r} is not registered; "
                              f"known: {', '.join(sorted(self.terminals))}")
        self.disagreements[terminal_id] += 1
        return self.disagreements[terminal_id]

    def clear_disagreements(self) -> list[str]:
        """Forget every pending disagree_next; returns the terminals that had one."""
        gone = sorted(t for t, n in self.disagreements.items() if n > 0)
        self.disagreements.clear()
        return gone

    def reset_pin_tries(self) -> list[str]:
        """The issuer resets every card's wrong-PIN count to its profile's (a bench back to
        nominal); returns the masked PANs whose count changed."""
        had = sorted(mask_pan(a.pan) for a in self.accounts.values()
                     if a.pin_failures != a.initial_pin_failures)
        for acct in self.accounts.values():
            acct.pin_failures = acct.initial_pin_failures
        return had

    def batch_view(self, terminal_id: str, batch_no: str) -> BatchView:
        """The host's view (totals, settled) of one terminal's batch, from the ledger."""
        records = [] if self.ledger is None else self.ledger.batch_records(terminal_id, batch_no)
        return batch_view(records, terminal_id, batch_no, self.transactions)

    # -- plumbing -----------------------------------------------------------------------------

    def _next_serial(self) -> int:
        self._serial += 1
        return self._serial

    def _pan_hash(self, pan: str) -> str:
        return hashlib.sha256(self.pan_salt + pan.encode()).hexdigest()[:16]

    def _kind_of(self, doc: Mapping[str, str]) -> str | None:
        mti = doc.get("t", "")
        if mti == UPLOAD_MTI:
            code = doc.get("60", "")[8:11]
            return {UPLOAD_DETAIL: KIND_UPLOAD, UPLOAD_END: KIND_UPLOAD_END}.get(code)
        kind = MANAGEMENT_KINDS_BY_MTI.get(mti)
        if kind is not None:
            return kind
        row = self.transactions.for_iso(mti, doc.get("3", ""))
        return None if row is None else str(row.type)

    def _finish(self, ctx: _Context) -> dict[str, str]:
        req, resp = ctx.request, ctx.response
        for key in ("3", "4", "11", "25", "41", "42", "49", "60"):
            if key in req and key not in resp:
                if key in self.dialect.numeric and not ascii_digits(str(req[key])):
                    # a request damaged on the way (its MAC already failed): the answer must
                    # still encode, so the damaged value is not echoed
                    logger.info("%s from %s: field %s is not digits; not echoed", req.get("t"),
                                req.get("41", "?"), key)
                    continue
                resp[key] = req[key]
        resp["12"] = ctx.now.strftime("%H%M%S")
        resp["13"] = ctx.now.strftime("%m%d")
        if ctx.rrn is None:
            ctx.rrn = f"{ctx.now:%y%j}{self._next_serial():07d}"[-12:]
        resp["37"] = ctx.rrn
        if ctx.auth_code:
            resp["38"] = ctx.auth_code
        resp.setdefault("39", "96")
        if ctx.arqc is not None and ctx.arqc.verified:
            resp["55"] = ctx.arqc.issuer_auth_tlv(resp["39"]).hex().upper()
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
        orig = ctx.original
        stan, batch, rrn = ctx.named
        card = ctx.card or orig
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
            amount_minor=int(amount) if amount and ascii_digits(amount) else None,
            currency=req.get("49"),
            pan_masked=mask_pan(pan) if pan else (card.pan_masked if card else None),
            pan_hash=self._pan_hash(pan) if pan else (card.pan_hash if card else None),
            entry_mode=req.get("22"),
            response_code=resp.get("39"),
            kind=ctx.kind,
            status=None if ctx.status is None else str(ctx.status),
            original_id=orig.id if orig is not None else None,
            original_stan=(orig.stan if orig is not None else stan) or None,
            original_batch=(orig.batch_no if orig is not None else batch) or None,
            original_rrn=(orig.rrn if orig is not None else rrn) or None,
            reason_code=ctx.reason_code,
            reconciliation=ctx.reconciliation,
            field48_request=req.get("48"),
            field48_response=resp.get("48"),
            rule_id=ctx.rule.id if ctx.rule is not None else None,
            rule_action=ctx.rule.rule.answer.describe() if ctx.rule is not None else None,
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

    def _request_pan(self, ctx: _Context) -> str | None:
        req = ctx.request
        return req.get("2") or (req["35"].upper().split("D", 1)[0] if req.get("35") else None)

    def _open_batch(self, ctx: _Context, session: Session) -> str:
        """A financial request is in the session's batch (77) and its STAN is new there (94);
        returns the batch."""
        req = ctx.request
        batch = req["60"][2:8]
        if batch != session.batch_no:
            raise Reject("77", f"batch {batch} but host batch is {session.batch_no}")
        key = (batch, req["11"])
        if key in session.seen:
            raise Reject("94", f"STAN {req['11']} already used in batch {batch}")
        session.seen.add(key)
        return batch

    def _verify_pin(self, ctx: _Context, session: Session, acct: Account) -> None:
        """PIN tries left (75) and the PIN block verifies (55; the 3rd wrong in a row 75)."""
        pan, req = acct.pan, ctx.request
        if acct.pin_failures >= MAX_PIN_TRIES:
            raise Reject("75", f"card {mask_pan(pan)}: PIN tries exhausted")
        if "52" in req:
            if not verify_pin_block(bytes.fromhex(req["52"]), pan, session.pik, acct.pin):
                acct.pin_failures += 1
                code = "75" if acct.pin_failures >= MAX_PIN_TRIES else "55"
                raise Reject(code, f"card {mask_pan(pan)}: wrong PIN "
                                   f"({acct.pin_failures}/{MAX_PIN_TRIES})")
            acct.pin_failures = 0

    def _approve(self, ctx: _Context) -> None:
        serial = self._next_serial()
        ctx.rrn = f"{ctx.now:%y%j}{serial:07d}"[-12:]
        ctx.auth_code = f"{(serial * 7919 + 100003) % 1000000:06d}"
        ctx.status = Status.BOOKED
        ctx.response["39"] = "00"

    def _account_of(self, rec: LedgerRecord) -> Account | None:
        """The issuer account of the card of ledger row *rec* (by its salted PAN hash: rows of
        an earlier host run have another salt and find none)."""
        pan = self._by_hash.get(rec.pan_hash or "")
        return None if pan is None else self.accounts.get(pan)

    def _move_funds(self, rec: LedgerRecord, amount: int, why: str) -> None:
        """Credit (*amount* > 0) or debit the account of *rec*'s card."""
        acct = self._account_of(rec)
        if acct is None:
            logger.info("%s: no issuer account for %s in this host run; balance unchanged", why,
                        rec.pan_masked)
            return
        acct.balance_minor += amount

    def _mark(self, rec: LedgerRecord, status: Status) -> None:
        if self.ledger is not None:
            self.ledger.set_status(rec.id, status)

    def _book_of(self, rec: LedgerRecord) -> Book | None:
        """How *rec* counts (its type's book in the table); a row of an older host without a
        kind is a sale when its MTI and processing code are the sale's."""
        if rec.kind is None and (rec.mti, rec.proc_code) == SALE.iso_key:
            return Book.DEBIT
        return book_of(rec, self.transactions)

    def _sale_original(self, ctx: _Context, what: str) -> LedgerRecord:
        """The sale a void or refund names: 25 unknown (or reversed), 12 not a sale (a type
        booked as a debit) or voided."""
        original = self.original_of(ctx)
        ctx.original = original
        tid = ctx.request.get("41", "")
        if self._book_of(original) is not Book.DEBIT:
            raise Reject(INVALID_TRANSACTION, f"terminal {tid}: the original STAN "
                                              f"{original.stan} is a {original.kind or '?'}; "
                                              f"a {what} needs a sale")
        if original.status == Status.REVERSED:
            raise Reject(ORIGINAL_NOT_FOUND, f"terminal {tid}: the original STAN "
                                             f"{original.stan} was reversed")
        if original.status == Status.VOIDED:
            raise Reject(INVALID_TRANSACTION, f"terminal {tid}: the original STAN "
                                              f"{original.stan} is already voided")
        return original

    # -- handlers -------------------------------------------------------------------------------

    def _unsupported(self, ctx: _Context) -> None:
        raise Reject("12", f"MTI {ctx.request.get('t')} not supported by this host", mac=False)

    def _preconditions(self, ctx: _Context) -> Session | None:
        """The checks that come before any decision on a request, in the handlers' order: MTI
        supported (12), terminal registered and its merchant (97, 03), and but for a sign-in
        the session and the MAC (22, A0).  Returns the session (None for a sign-in).  Changes
        nothing but *ctx*."""
        mti = ctx.request.get("t", "")
        if mti not in self._mti_handlers:
            self._unsupported(ctx)
        if mti == SIGN_IN_MTI:
            self._terminal(ctx)
            return None
        return self._authenticate(ctx)

    def _format_problem(self, doc: Mapping[str, str]) -> str | None:
        """What makes a decoded request unfit to act on, or None: a field that does not hold
        what the dialect says (a non-decimal nibble in a numeric field: field, nibble and byte
        named by :func:`protocols.iso8583.validate_message`), field 55 that is not BER-TLV,
        field 61 that is not batch + STAN [+ date].  Checked before anything is decided, so
        that no handler meets such a value after it has changed state (a trace number taken,
        a balance moved)."""
        try:
            validate_message(doc, self.dialect)
            if doc.get("61"):
                parse_field61(doc["61"])
        except DecodeError as exc:
            return str(exc)
        if doc.get("55"):
            try:
                icc_tags(doc["55"])
            except TlvError as exc:  # its problem, not its data: field 55 is card data
                return f"field 55 (ICC data) is not BER-TLV: {exc.problem}"
            except DecodeError as exc:
                return str(exc)
        return None

    def _malformed(self, ctx: _Context, problem: str) -> None:
        """A request that decoded but is malformed (:meth:`_format_problem`): the usual checks
        first (:meth:`_preconditions`: a request damaged on its way fails its MAC, A0), then
        30 (format error).  No rule is taken and nothing changes: no trace number recorded, no
        session, balance, PIN try count or original touched, so the corrected request (same
        STAN) is answered as if this one had never come.  The ledger gets its row, as every
        request does, with code 30 and nothing booked."""
        session = self._preconditions(ctx)
        raise Reject("30", problem, mac=session is not None)

    def _forced(self, ctx: _Context, code: str) -> None:
        """A rule's response code: the terminal, sign-in, MAC and PIN block are checked as
        usual, then the code is answered and nothing is booked."""
        assert ctx.rule is not None
        why = f"rule #{ctx.rule.id} answers {code}"
        session = self._preconditions(ctx)
        if session is None:
            raise Reject(code, why, mac=False)
        pan = self._request_pan(ctx)
        ctx.pan = pan
        acct = self.accounts.get(pan) if pan else None
        if acct is not None and ctx.kind in {str(row.type) for row in self.transactions}:
            self._verify_pin(ctx, session, acct)
        raise Reject(code, why)

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

    def _sale(self, ctx: _Context) -> None:
        session = self._authenticate(ctx)
        req = ctx.request
        self._need(ctx, "4", "11", "22", "49", "60")
        pan = self._request_pan(ctx)
        if not pan:
            raise Reject("30", "no PAN: neither field 2 nor field 35")
        ctx.pan = pan
        self._open_batch(ctx, session)
        acct = self.accounts.get(pan)
        if acct is None:
            raise Reject("14", f"no issuer account for {mask_pan(pan)}")
        if acct.fault is not None:
            raise Reject(FAULT_CODES[acct.fault], f"card {mask_pan(pan)}: its issuer is "
                                                  f"{acct.fault}")
        status_code = STATUS_CODES.get(acct.status)
        if status_code is not None:
            raise Reject(status_code, f"card {mask_pan(pan)} is {acct.status}")
        if acct.expiry < ctx.now.strftime("%y%m"):
            raise Reject("54", f"card {mask_pan(pan)} expired {acct.expiry}")
        self._check_cryptogram(ctx, acct)
        self._verify_pin(ctx, session, acct)
        amount = int(req["4"])
        limit = acct.per_txn_limit_minor
        if limit is not None and amount > limit:
            raise Reject(ABOVE_CARD_LIMIT, f"card {mask_pan(pan)}: amount {amount} > its "
                                           f"per-transaction limit {limit}")
        if amount > acct.balance_minor:
            raise Reject("51", f"card {mask_pan(pan)}: amount {amount} > balance")
        acct.balance_minor -= amount
        self._approve(ctx)

    def _check_cryptogram(self, ctx: _Context, acct: Account) -> None:
        """A chip request (field 55 with 9F26) must carry an ARQC that verifies (05); the check
        is kept for the ARPC of the answer.  A request without a cryptogram (swipe, fallback)
        is not checked."""
        if not ctx.request.get("55"):
            return
        icc = icc_tags(ctx.request["55"])  # it decodes: checked by _format_problem
        if not has_cryptogram(icc):
            return
        ctx.arqc = check_arqc(acct, icc)
        if not ctx.arqc.verified:
            raise Reject(CRYPTOGRAM_FAILED, f"card {mask_pan(acct.pan)}: {ctx.arqc.why}")

    def _void(self, ctx: _Context) -> None:
        """Cancels a sale of the open batch: amount = the original's (64), batch neither settled
        nor another (12); the sale is marked voided and the card credited."""
        session = self._authenticate(ctx)
        req = ctx.request
        self._need(ctx, "4", "11", "60")
        batch = self._open_batch(ctx, session)
        tid = req["41"]
        try:
            original = self._sale_original(ctx, "void")
        except Reject as rej:
            self._settled_elsewhere(ctx, rej)
            raise
        if original.batch_no != batch or self.batch_view(tid, batch).settled:
            raise Reject(INVALID_TRANSACTION, f"terminal {tid}: the sale STAN {original.stan} "
                                              f"is in batch {original.batch_no}, which is "
                                              f"settled or not the open batch {batch}")
        amount = int(req["4"])
        if amount != original.amount_minor:
            raise Reject(AMOUNT_DIFFERS, f"terminal {tid}: void of {amount}, the sale STAN "
                                         f"{original.stan} was {original.amount_minor}")
        self._mark(original, Status.VOIDED)
        self._move_funds(original, amount, f"void of STAN {original.stan}")
        self._approve(ctx)

    def _settled_elsewhere(self, ctx: _Context, rej: Reject) -> None:
        """A void naming by trace a sale that is not in the batch it says (25) but is in a
        settled batch of the terminal: 12, the sale can no longer be voided."""
        stan, batch, _ = ctx.named
        if rej.code != ORIGINAL_NOT_FOUND or not stan:
            return
        tid = ctx.request["41"]
        sale = self.find_original(tid, stan=stan)
        if sale is None or sale.batch_no is None or sale.batch_no == batch:
            return
        if self.batch_view(tid, sale.batch_no).settled:
            ctx.original = sale
            raise Reject(INVALID_TRANSACTION, f"terminal {tid}: the sale STAN {stan} is in "
                                              f"batch {sale.batch_no}, already settled")

    def _refund(self, ctx: _Context) -> None:
        """Gives back up to what is left of a sale (61 above it), in any batch."""
        session = self._authenticate(ctx)
        req = ctx.request
        self._need(ctx, "4", "11", "60")
        self._open_batch(ctx, session)
        original = self._sale_original(ctx, "refund")
        amount = int(req["4"])
        if amount <= 0:
            raise Reject("30", f"refund amount {amount}: must be above 0")
        refunded = (refunded_amount(self.ledger.referring(original.id), self.transactions)
                    if self.ledger is not None else 0)
        left = (original.amount_minor or 0) - refunded
        if amount > left:
            raise Reject(ABOVE_WHAT_IS_LEFT, f"terminal {req['41']}: refund of {amount}, "
                                             f"{left} left of sale STAN {original.stan} "
                                             f"({original.amount_minor}, {refunded} refunded)")
        self._move_funds(original, amount, f"refund against STAN {original.stan}")
        self._approve(ctx)

    def _reversal(self, ctx: _Context) -> None:
        """0400: nets the original it names (the original's STAN in field 11, its batch in 60,
        its processing code in 3) and answers 00, also when there is nothing to net."""
        req = ctx.request
        proc = req.get("3", "")
        if not any(row.proc_code == proc for row in self.transactions):
            raise Reject("12", f"reversal of processing code {proc!r}: no transaction type has "
                               f"it", mac=False)
        self._authenticate(ctx)
        self._need(ctx, "11", "60")
        tid, stan, batch = req["41"], req["11"], req["60"][2:8]
        ctx.reason_code = req.get("39")
        ctx.named = (stan, batch, req.get("37", ""))
        ctx.pan = self._request_pan(ctx)
        ctx.rrn = req.get("37") or None
        ctx.response["39"] = "00"
        original = self.find_original(tid, stan=stan, batch_no=batch)
        if original is None or original.proc_code != proc or original.status != Status.BOOKED:
            ctx.status = Status.NOTHING_TO_NET
            logger.info("reversal from %s of STAN %s batch %s: nothing to net (%s)", tid, stan,
                        batch, "not booked" if original is None else original.status)
            return
        ctx.original = original
        ctx.rrn = original.rrn
        self._mark(original, Status.REVERSED)
        amount = original.amount_minor or 0
        book = self._book_of(original)
        what = f"reversal of {original.kind or 'transaction'} STAN {stan}"
        if book is Book.CANCEL:  # a void: its sale stands again
            sale = (self.find_original(tid, stan=original.original_stan,
                                       batch_no=original.original_batch)
                    if original.original_stan else None)
            if sale is not None and sale.status == Status.VOIDED:
                self._mark(sale, Status.BOOKED)
            self._move_funds(original, -amount, what)
        elif book is Book.CREDIT:
            self._move_funds(original, -amount, what)
        else:
            self._move_funds(original, amount, what)
        ctx.status = Status.NETTED

    def _upload(self, ctx: _Context) -> None:
        """0320: dispatch on field 60.3 (``UPLOAD_HANDLERS``)."""
        session = self._authenticate(ctx)
        self._need(ctx, "11", "60")
        f60 = ctx.request["60"]
        handler = UPLOAD_HANDLERS.get(f60[8:11])
        if handler is None:
            raise Reject("30", f"batch upload field 60 {f60!r}: 60.3 must be one of "
                               f"{', '.join(UPLOAD_HANDLERS)}")
        if f60[2:8] != session.batch_no:
            raise Reject("77", f"batch upload of batch {f60[2:8]} but host batch is "
                               f"{session.batch_no}")
        handler(self, ctx)

    def _upload_detail(self, ctx: _Context) -> None:
        """0320 …201: one approved transaction of the batch as the terminal holds it."""
        self._need(ctx, "3", "4")
        ctx.pan = self._request_pan(ctx)
        ctx.rrn = ctx.request.get("37") or None
        ctx.status = Status.UPLOADED
        ctx.response["39"] = "00"

    def _upload_end(self, ctx: _Context) -> None:
        """0320 …207: field 48 = how many were uploaded; the host adopts the detail."""
        self._need(ctx, "48")
        count = ctx.request["48"]
        if len(count) != 4 or not ascii_digits(count):
            raise Reject("30", f"batch upload end field 48 {count!r}: expected a count of 4 "
                               f"digits")
        ctx.status = Status.ADOPTED
        ctx.response["39"] = "00"
        logger.info("terminal %s ended a batch upload of %d transaction(s)",
                    ctx.request["41"], int(count))

    def _settlement(self, ctx: _Context) -> None:
        """0500: the host's totals of that terminal and batch against field 48; answers 00 with
        its totals and reconciliation code 1 (equal) or 2.  A balanced settlement closes the
        batch: the session's batch moves on to the next, as the terminal's does."""
        session = self._authenticate(ctx)
        self._need(ctx, "11", "48", "60")
        req = ctx.request
        tid, batch = req["41"], req["60"][2:8]
        try:
            theirs, _ = Totals.from_field48(req["48"])
        except DecodeError as exc:
            raise Reject("30", str(exc)) from None
        view = self.batch_view(tid, batch)
        if batch != session.batch_no and not view.settled:
            raise Reject("77", f"settlement of batch {batch} but host batch is "
                               f"{session.batch_no}")
        forced = self.disagreements[tid] > 0
        balanced = view.totals == theirs and not forced
        if forced:
            self.disagreements[tid] -= 1
        code = RECONCILE_BALANCED if balanced else RECONCILE_UNBALANCED
        try:
            ctx.response["48"] = view.totals.field48(code)
        except DecodeError as exc:
            raise Reject("96", str(exc)) from None
        ctx.response["39"] = "00"
        ctx.reconciliation = code
        ctx.status = (Status.BALANCED if balanced else
                      Status.FORCED if forced else Status.UNBALANCED)
        logger.info("settlement of %s batch %s (%s totals): terminal %s, host %s: %s", tid,
                    batch, view.source, theirs, view.totals, ctx.status)
        if balanced and batch == session.batch_no:
            session.batch_no = _next_batch(batch)


#: Host handler per transaction type (protocols.transactions): a new row needs one here.
TXN_HANDLERS: Mapping[str, Handler] = MappingProxyType({
    TxnType.SALE: AcquirerEngine._sale,
    TxnType.VOID: AcquirerEngine._void,
    TxnType.REFUND: AcquirerEngine._refund,
})

#: Handlers of the management messages that are not table rows.
MANAGEMENT_HANDLERS: Mapping[str, Handler] = MappingProxyType({
    SIGN_IN_MTI: AcquirerEngine._sign_in,
    REVERSAL_MTI: AcquirerEngine._reversal,
    UPLOAD_MTI: AcquirerEngine._upload,
    SETTLEMENT_MTI: AcquirerEngine._settlement,
})
MANAGEMENT_KINDS_BY_MTI: Mapping[str, str] = MappingProxyType({
    SIGN_IN_MTI: KIND_SIGN_IN, REVERSAL_MTI: KIND_REVERSAL, SETTLEMENT_MTI: KIND_SETTLEMENT,
})

#: Batch upload (0320) handlers by field 60.3.
UPLOAD_HANDLERS: Mapping[str, Handler] = MappingProxyType({
    UPLOAD_DETAIL: AcquirerEngine._upload_detail,
    UPLOAD_END: AcquirerEngine._upload_end,
})


def build_mti_handlers(transactions: TransactionTable = TRANSACTIONS) -> Mapping[str, Handler]:
    """The management messages, plus :meth:`AcquirerEngine._financial` for every MTI of the
    table."""
    out: dict[str, Handler] = dict(MANAGEMENT_HANDLERS)
    for row in transactions:
        if row.mti in MANAGEMENT_HANDLERS:
            raise ConfigError(f"host dispatch: transaction type {row.type} uses MTI "
                              f"{row.mti}, a management MTI ({', '.join(MANAGEMENT_HANDLERS)})")
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
    "Answer",
    "FrameAnswer",
    "LedgerReader",
    "LedgerSink",
    "MANAGEMENT_HANDLERS",
    "MTI_HANDLERS",
    "PROC_HANDLERS",
    "Reject",
    "Session",
    "TXN_HANDLERS",
    "TerminalRecord",
    "UPLOAD_HANDLERS",
    "build_mti_handlers",
    "build_proc_handlers",
    "load_account",
    "load_accounts",
    "load_terminals",
]
