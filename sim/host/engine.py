"""The acquirer host simulator's state machine: ISO 8583 request in, response out, time passed in.

``AcquirerEngine.handle(tpdu, header, doc, now)`` dispatches on the MTI (``MTI_HANDLERS``), and
a sale on the processing code.  A refusal is raised inside a handler as :class:`Reject` and
turned into the response in one place (:meth:`AcquirerEngine.handle`).  No sockets here.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from protocols.crypto import encode_working_keys, verify_pin_block
from protocols.errors import ConfigError
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


# --------------------------------------------------------------------------------------------
# Configuration: terminals and issuer accounts


@dataclass(frozen=True)
class TerminalRecord:
    terminal_id: str
    merchant_id: str
    master_key: bytes = field(repr=False)
    name: str = ""


@dataclass
class Account:
    pan: str = field(repr=False)
    expiry: str
    pin: str = field(repr=False)
    balance_minor: int
    status: str
    source: str = ""
    pin_failures: int = 0

    def __repr__(self) -> str:
        return (f"Account({mask_pan(self.pan)}, expiry={self.expiry}, status={self.status}, "
                f"balance_minor={self.balance_minor}, source={self.source})")


def _load_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None


def _get(data: Mapping[str, Any], path: Path, dotted: str) -> Any:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise ConfigError(f"{path}: missing key {dotted!r}")
        node = node[part]
    return node


def load_terminals(path: str | Path) -> dict[str, TerminalRecord]:
    """fixtures/host/terminals.yaml: ``terminals: [{terminal_id, merchant_id, master_key,
    name}]``."""
    p = Path(path)
    data = _load_yaml(p)
    if not isinstance(data, Mapping) or not isinstance(data.get("terminals"), list):
        raise ConfigError(f"{p}: expected a mapping with a list under key 'terminals'")
    out: dict[str, TerminalRecord] = {}
    for i, entry in enumerate(data["terminals"]):
        where = f"terminals[{i}]"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{p}: {where} must be a mapping")
        tid = str(_get(entry, p, "terminal_id"))
        mid = str(_get(entry, p, "merchant_id"))
        key_hex = str(_get(entry, p, "master_key"))
        if len(tid) != 8:
            raise ConfigError(f"{p}: {where}.terminal_id must be 8 characters; got {tid!r}")
        if len(mid) != 15:
            raise ConfigError(f"{p}: {where}.merchant_id must be 15 characters; got {mid!r}")
        try:
            key = bytes.fromhex(key_hex)
        except ValueError:
            raise ConfigError(f"{p}: {where}.master_key must be hex") from None
        if len(key) not in (16, 24):
            raise ConfigError(f"{p}: {where}.master_key must be 16 or 24 bytes of hex; got "
                              f"{len(key)} bytes")
        if tid in out:
            raise ConfigError(f"{p}: {where}.terminal_id {tid} is listed twice")
        out[tid] = TerminalRecord(tid, mid, key, str(entry.get("name", "")))
    return out


def load_account(path: str | Path) -> Account:
    """One card profile; only pan, expiry, pin, issuer.balance_minor, issuer.status are read."""
    p = Path(path)
    data = _load_yaml(p)
    if not isinstance(data, Mapping):
        raise ConfigError(f"{p}: expected a mapping at top level")
    pan = str(_get(data, p, "pan"))
    expiry = str(_get(data, p, "expiry")).zfill(4)
    pin = str(_get(data, p, "pin"))
    balance = _get(data, p, "issuer.balance_minor")
    status = str(_get(data, p, "issuer.status"))
    if not pan.isdigit() or not 13 <= len(pan) <= 19:
        raise ConfigError(f"{p}: key 'pan' must be 13..19 digits")
    if not expiry.isdigit() or len(expiry) != 4 or not 1 <= int(expiry[2:]) <= 12:
        raise ConfigError(f"{p}: key 'expiry' must be YYMM; got {expiry!r}")
    if not pin.isdigit() or not 4 <= len(pin) <= 12:
        raise ConfigError(f"{p}: key 'pin' must be 4..12 digits (quote it in YAML)")
    if not isinstance(balance, int) or isinstance(balance, bool):
        raise ConfigError(f"{p}: key 'issuer.balance_minor' must be an integer; got {balance!r}")
    if status not in STATUS_CODES:
        raise ConfigError(f"{p}: key 'issuer.status' is {status!r}; expected one of "
                          f"{sorted(STATUS_CODES)}")
    return Account(pan, expiry, pin, balance, status, source=p.name)


def load_accounts(cards_dir: str | Path) -> dict[str, Account]:
    d = Path(cards_dir)
    if not d.is_dir():
        raise ConfigError(f"{d}: cards directory does not exist")
    out: dict[str, Account] = {}
    for path in sorted(d.glob("*.yaml")):
        acct = load_account(path)
        if acct.pan in out:
            raise ConfigError(f"{path}: PAN {mask_pan(acct.pan)} already defined in "
                              f"{out[acct.pan].source}")
        out[acct.pan] = acct
    return out


# --------------------------------------------------------------------------------------------
# Engine


class LedgerSink(Protocol):
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
                 institution_id: str = "48020000") -> None:
        self.terminals = dict(terminals)
        self.accounts = dict(accounts)
        self.ledger = ledger
        self.key_source = key_source
        self.pan_salt = pan_salt if pan_salt is not None else key_source(16)
        self.dialect = dialect
        self.institution_id = institution_id
        self.sessions: dict[str, Session] = {}
        self._serial = 0

    # -- public surface ---------------------------------------------------------------------

    def handle(self, tpdu: Tpdu, header: Header, doc: Mapping[str, str], now: dt.datetime,
               *, mac_data: bytes | None = None) -> dict[str, str]:
        """Answer one decoded request.  *mac_data*: the request payload as received (MAC is
        checked over it); when None the doc is re-encoded.  Returns the response doc (field 64
        holds the MAC already when the response is MACed)."""
        mti = doc.get("t", "")
        ctx = _Context(now=now, request=doc, mac_data=mac_data)
        ctx.response = {"t": response_mti(mti)}
        handler = MTI_HANDLERS.get(mti, AcquirerEngine._unsupported)
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
        proc = ctx.request.get("3", "")
        handler = PROC_HANDLERS.get(proc)
        if handler is None:
            self._authenticate(ctx)
            raise Reject("12", f"processing code {proc!r} not supported for 0200")
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


MTI_HANDLERS: Mapping[str, Handler] = {
    "0800": AcquirerEngine._sign_in,
    "0200": AcquirerEngine._financial,
}
PROC_HANDLERS: Mapping[str, Handler] = {
    "000000": AcquirerEngine._sale,
}

__all__ = [
    "Account",
    "AcquirerEngine",
    "LedgerSink",
    "MTI_HANDLERS",
    "Reject",
    "Session",
    "TerminalRecord",
    "load_account",
    "load_accounts",
    "load_terminals",
]
