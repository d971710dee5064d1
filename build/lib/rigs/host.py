"""The rig's view of the acquirer host: its ledger (virtual bench) and the ISO 8583 messages
seen on the wire (any bench, from a pcap).  Evidence only: everything returned is masked.

- :class:`SqliteAcquirerLedger` reads the simulator's SQLite ledger read-only (schema in
  :mod:`protocols.ledger` and docs/iso8583.md): every request, what the host made of it (kind,
  status: booked, voided, reversed…), the original a void, refund or reversal refers to, the
  settlement's reconciliation code.  A ledger written by an older host (fewer columns) reads
  with the missing columns empty.  The rig never imports ``sim``.
- :func:`decode_pcap` reassembles the TCP streams to/from the acquirer port, unframes and decodes
  every message; bad bytes become an entry saying what failed, never an exception.
- :func:`render_messages` turns that list into text for a report attachment.
"""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocols.errors import ProtocolError, RigError
from protocols.iso8583 import LengthFramer, decode_message, describe, response_text, unframe
from protocols.ledger import COLUMNS, TABLE, LedgerRecord, Status
from protocols.masking import scrub
from rigs.sqliteledger import SqliteLedgerReader

logger = logging.getLogger(__name__)

LEDGER_TABLE = TABLE
LEDGER_COLUMNS = ("id", *COLUMNS)


@dataclass(frozen=True)
class LedgerEntry(LedgerRecord):
    """One request the host answered, with its row id (PAN masked; pan_hash for matching).
    ``status`` is what the host made of it (:class:`protocols.ledger.Status`): ``booked``,
    ``voided``, ``reversed`` for a sale, void or refund; ``netted`` / ``nothing_to_net`` for a
    reversal; ``balanced`` / ``unbalanced`` / ``forced`` for a settlement."""

    id: int = 0

    @property
    def approved(self) -> bool:
        return self.response_code == "00"

    @property
    def booked(self) -> bool:
        """An approved sale, void or refund that stands (neither voided nor reversed)."""
        return self.status == Status.BOOKED


def _entry(row: Mapping[str, Any]) -> LedgerEntry:
    """One row (the columns a file lacks are empty), PAN masked."""
    values: dict[str, Any] = dict.fromkeys(LEDGER_COLUMNS)
    values.update(row)
    if values["pan_masked"]:
        values["pan_masked"] = scrub(values["pan_masked"])
    return LedgerEntry(**values)


class SqliteAcquirerLedger(SqliteLedgerReader):
    """Read-only view of the host simulator's ledger file (URI ``mode=ro``, bounded busy wait)."""

    writer = "the host"
    started_as = "the host simulator running with --db"
    tables = (LEDGER_TABLE,)

    def __init__(self, name: str, path: str | Path, *, busy_timeout: float = 2.0) -> None:
        super().__init__(name, path, busy_timeout=busy_timeout)
        self._columns: tuple[str, ...] = LEDGER_COLUMNS

    def _opened(self, db: sqlite3.Connection) -> None:
        """The schema's columns this file has (an older host wrote fewer; none before the
        host created the table).  Read again at every open: a newer host may have migrated
        the file."""
        try:
            have = {str(r[1]) for r in db.execute(f"PRAGMA table_info({LEDGER_TABLE})")}
        except sqlite3.Error:
            have = set()
        self._columns = tuple(c for c in LEDGER_COLUMNS if c in have) if have else LEDGER_COLUMNS

    def _query(self, op: str, conditions: Iterable[tuple[str, object]] = (),
               tail: str = "ORDER BY id") -> list[LedgerEntry]:
        rows = self._rows(op, LEDGER_TABLE, self._columns, conditions, tail)
        return self._parse(op, LEDGER_TABLE, rows, _entry)

    def entries(self, since_id: int | None = None) -> list[LedgerEntry]:
        """All rows, or those after *since_id* (use ``last().id`` as a scenario's start mark)."""
        return self._query("entries", [("id > ?", since_id)])

    def find(self, *, stan: str | int | None = None, terminal_id: str | None = None,
             mti: str | None = None, kind: str | None = None,
             batch_no: str | int | None = None) -> list[LedgerEntry]:
        """Rows matching every criterion given (*kind*: a transaction type or a management
        kind of :data:`protocols.ledger.MANAGEMENT_KINDS`)."""
        return self._query("find", [
            ("stan = ?", None if stan is None else f"{int(stan):06d}"),
            ("terminal_id = ?", terminal_id),
            ("mti = ?", mti),
            ("kind = ?", None if kind is None else str(kind)),
            ("batch_no = ?", None if batch_no is None else f"{int(batch_no):06d}"),
        ])

    def last(self) -> LedgerEntry | None:
        rows = self._query("last", tail="ORDER BY id DESC LIMIT 1")
        return rows[0] if rows else None

    def mark(self) -> int:
        """Id of the newest row (0 when empty), for ``entries(since_id=mark)``."""
        last = self.last()
        return last.id if last else 0

    def text(self, since_id: int | None = None) -> str:
        """Rows as text for a report attachment (masked)."""
        lines = ["id  time                     mti  code  tid       batch  stan    amount  "
                 "kind        status          original       pan"]
        for e in self.entries(since_id):
            original = (f"{e.original_batch or '-'}/{e.original_stan or '-'}"
                        if e.original_stan or e.original_batch else "")
            extra = []
            if e.reconciliation:
                extra.append(f"reconciliation {e.reconciliation}")
            if e.reason_code:
                extra.append(f"reason {e.reason_code}")
            if e.rule_id is not None:
                extra.append(f"rule #{e.rule_id} {e.rule_action or ''}".rstrip())
            lines.append(f"{e.id:<3} {e.received_at:<24} {e.mti} {e.response_code or '--':<5}"
                         f" {e.terminal_id or '-':<9} {e.batch_no or '-':<6} {e.stan or '-':<7} "
                         f"{'' if e.amount_minor is None else e.amount_minor:>7}  "
                         f"{e.kind or '-':<11} {e.status or '-':<15} {original:<14} "
                         f"{e.pan_masked or ''}"
                         + (f"  ({'; '.join(extra)})" if extra else ""))
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# pcap decoding

_SEQ_MOD = 1 << 32


@dataclass
class _Flow:
    src: str
    dst: str
    to_host: bool
    base: int | None = None
    segments: dict[int, tuple[float, bytes]] | None = None


def _flow_entries(flow: _Flow) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    segs = sorted((flow.segments or {}).items())
    framer = LengthFramer()
    offset = 0
    direction = "terminal→host" if flow.to_host else "host→terminal"
    base = {"direction": direction, "src": flow.src, "dst": flow.dst}
    for rel, (when, data) in segs:
        if rel + len(data) <= offset:
            continue  # retransmission of bytes already taken
        if rel > offset:
            out.append({**base, "time": when, "error": f"TCP stream gap: {rel - offset} bytes "
                        f"missing at stream offset {offset}"})
            break
        new = data[offset - rel:]
        offset += len(new)
        try:
            frames = framer.feed(new)
        except ProtocolError as exc:
            out.append({**base, "time": when, "error": f"framing at stream offset "
                        f"{offset - len(new)}: {exc}"})
            break
        for fr in frames:
            out.append(_decode_frame(fr, base, when))
    if framer.pending and not (out and "error" in out[-1]):
        last_time = segs[-1][1][0] if segs else 0.0
        out.append({**base, "time": last_time,
                    "error": f"stream ends inside a frame ({framer.pending} bytes pending)"})
    return out


def _decode_frame(fr: bytes, base: dict[str, Any], when: float) -> dict[str, Any]:
    entry: dict[str, Any] = {**base, "time": when, "length": len(fr)}
    try:
        tpdu, header, payload = unframe(fr)
        entry["tpdu"] = tpdu.to_bytes().hex(" ")
        entry["header"] = header.to_bytes().hex(" ")
        doc = decode_message(payload)
    except RigError as exc:
        entry["error"] = scrub(str(exc))
        return entry
    fields = describe(doc)
    entry["mti"] = doc.get("t")
    entry["stan"] = doc.get("11")
    entry["terminal_id"] = doc.get("41")
    if "39" in doc:
        entry["response_code"] = doc["39"]
        entry["response_text"] = response_text(doc["39"])
    entry["fields"] = fields
    return entry


def decode_pcap(path: str | Path, port: int = 8583) -> list[dict[str, Any]]:
    """Every ISO 8583 message in the TCP streams to/from *port*, in time order, masked.

    Each entry: direction, src, dst, time (POSIX seconds), length, tpdu, header, mti, stan,
    terminal_id, response_code/response_text (responses), fields (``describe()`` output) — or
    ``error`` saying what failed (field, byte position, hex of non-sensitive bytes).
    """
    from scapy.error import Scapy_Exception
    from scapy.layers.inet import IP, TCP
    from scapy.layers.inet6 import IPv6
    from scapy.utils import rdpcap

    try:
        packets = rdpcap(str(path))
    except (OSError, ValueError, EOFError, Scapy_Exception) as exc:
        return [{"time": 0.0, "direction": "?", "index": 0,
                 "error": f"cannot read pcap {path}: {exc}"}]
    flows: dict[tuple[str, int, str, int], _Flow] = {}
    for pkt in packets:
        if TCP not in pkt:
            continue
        tcp = pkt[TCP]
        if port not in (tcp.sport, tcp.dport):
            continue
        ip = pkt[IP] if IP in pkt else (pkt[IPv6] if IPv6 in pkt else None)
        if ip is None:
            continue
        key = (str(ip.src), int(tcp.sport), str(ip.dst), int(tcp.dport))
        flow = flows.get(key)
        if flow is None:
            flow = flows[key] = _Flow(f"{ip.src}:{tcp.sport}", f"{ip.dst}:{tcp.dport}",
                                      to_host=tcp.dport == port, segments={})
        seq = int(tcp.seq)
        flags = int(tcp.flags)
        if flags & 0x02:  # SYN: data starts at ISN + 1
            flow.base = (seq + 1) % _SEQ_MOD
            continue
        payload = bytes(tcp.payload)
        if not payload:
            continue
        if flow.base is None:
            flow.base = seq
        rel = (seq - flow.base) % _SEQ_MOD
        assert flow.segments is not None
        if rel not in flow.segments or len(payload) > len(flow.segments[rel][1]):
            flow.segments[rel] = (float(pkt.time), payload)
    entries: list[dict[str, Any]] = []
    for flow in flows.values():
        entries.extend(_flow_entries(flow))
    entries.sort(key=lambda e: e["time"])
    for i, e in enumerate(entries):
        e["index"] = i
    return entries


def render_messages(messages: list[dict[str, Any]]) -> str:
    """Text for an Allure attachment: one block per message, fields masked."""
    lines: list[str] = []
    for m in messages:
        when = dt.datetime.fromtimestamp(float(m.get("time", 0.0))).strftime(
            "%H:%M:%S.%f")[:-3]
        head = f"#{m.get('index', '?')} {when} {m.get('direction', '?')} " \
               f"{m.get('src', '?')} → {m.get('dst', '?')}"
        if "error" in m:
            lines.append(f"{head}  UNDECODABLE: {m['error']}")
            lines.append("")
            continue
        rc = f" rc={m['response_code']} ({m['response_text']})" if "response_code" in m else ""
        lines.append(f"{head}  MTI {m.get('mti')} STAN {m.get('stan')} TID "
                     f"{m.get('terminal_id')}{rc}")
        lines.append(f"    TPDU {m.get('tpdu')}  header {m.get('header')}")
        for key, value in m.get("fields", {}).items():
            if key in ("t", "p"):
                continue
            lines.append(f"    {key:>3}: {value}")
        lines.append("")
    return "\n".join(lines)
