"""Message builders of the business day (docs/business-day.md) and a signed-in test terminal
that talks to an :class:`AcquirerEngine` directly (no sockets)."""

from __future__ import annotations

import datetime as dt
import socket

from protocols.crypto import decode_working_keys, pin_block
from protocols.iso8583 import (
    Header,
    LengthFramer,
    Tpdu,
    decode_message,
    encode_message,
    encode_with_mac,
    frame,
    mac_ok,
    unframe,
)
from protocols.ledger import Totals
from sim.host.engine import AcquirerEngine, Answer

from .conftest import MID, NOW, PAN, PIN, TID, TMK


def b6(batch: int) -> str:
    return f"{batch:06d}"


def sign_in_doc(*, stan: int = 1, batch: int = 1, tid: str = TID) -> dict[str, str]:
    return {"t": "0800", "11": f"{stan:06d}", "41": tid, "42": MID,
            "60": f"00{b6(batch)}004", "63": "01 "}


def sale_doc(pik: bytes, *, stan: int, amount: int, batch: int = 1, pan: str = PAN,
             pin: str | None = PIN, tid: str = TID) -> dict[str, str]:
    doc = {"t": "0200", "2": pan, "3": "000000", "4": f"{amount:012d}", "11": f"{stan:06d}",
           "14": "3012", "22": "051", "23": "001", "25": "00",
           "35": f"{pan}D3012220000000000", "41": tid, "42": MID, "49": "156",
           "60": f"22{b6(batch)}00050"}
    if pin is not None:
        doc["52"] = pin_block(pin, pan, pik).hex().upper()
        doc["53"] = "2600000000000000"
    return doc


def void_doc(*, stan: int, amount: int, ostan: int, obatch: int | None = None, batch: int = 1,
             orrn: str | None = None, tid: str = TID) -> dict[str, str]:
    doc = {"t": "0200", "3": "200000", "4": f"{amount:012d}", "11": f"{stan:06d}", "25": "00",
           "41": tid, "42": MID, "49": "156", "60": f"23{b6(batch)}00050",
           "61": f"{b6(batch if obatch is None else obatch)}{ostan:06d}"}
    if orrn:
        doc["37"] = orrn
    return doc


def refund_doc(*, stan: int, amount: int, orrn: str | None = None, odate: str = "",
               ostan: int | None = None, obatch: int | None = None, batch: int = 1,
               tid: str = TID) -> dict[str, str]:
    f61 = (f"{b6(obatch or batch)}{ostan:06d}" if ostan is not None else "000000000000") \
        + (odate or "0000")
    doc = {"t": "0220", "3": "200000", "4": f"{amount:012d}", "11": f"{stan:06d}", "25": "00",
           "41": tid, "42": MID, "49": "156", "60": f"25{b6(batch)}00050", "61": f61}
    if orrn:
        doc["37"] = orrn
    return doc


def reversal_doc(original: dict[str, str], reason: str = "98") -> dict[str, str]:
    """0400 of *original*: its fields but PIN data and MAC, with the reason in field 39."""
    keep = ("2", "3", "4", "11", "14", "22", "23", "25", "35", "37", "41", "42", "49", "60",
            "61")
    return {"t": "0400", **{k: original[k] for k in keep if k in original}, "39": reason}


def settlement_doc(totals: Totals, *, stan: int, batch: int = 1,
                   tid: str = TID) -> dict[str, str]:
    return {"t": "0500", "11": f"{stan:06d}", "41": tid, "42": MID, "48": totals.field48("0"),
            "49": "156", "60": f"00{b6(batch)}201", "63": "01 "}


def upload_doc(*, stan: int, amount: int, proc: str = "000000", rrn: str = "",
               batch: int = 1, pan: str = PAN, tid: str = TID) -> dict[str, str]:
    doc = {"t": "0320", "2": pan, "3": proc, "4": f"{amount:012d}", "11": f"{stan:06d}",
           "41": tid, "42": MID, "60": f"00{b6(batch)}201"}
    if rrn:
        doc["37"] = rrn
    return doc


def upload_end_doc(*, stan: int, count: int, batch: int = 1, tid: str = TID) -> dict[str, str]:
    return {"t": "0320", "11": f"{stan:06d}", "41": tid, "42": MID, "48": f"{count:04d}",
            "60": f"00{b6(batch)}207"}


class Terminal:
    """A terminal's side of the business day: signs in, numbers its requests, MACs them with
    the current MAK and keeps what it sent (by STAN) for reversals.  :meth:`exchange` is the
    transport."""

    def __init__(self, *, batch: int = 1, tid: str = TID) -> None:
        self.batch = batch
        self.tid = tid
        self.stan = 1
        self.pik = self.mak = b""
        self.sent: dict[int, dict[str, str]] = {}

    def exchange(self, doc: dict[str, str], *, mac: bool) -> dict[str, str]:
        raise NotImplementedError

    def sign_in(self) -> dict[str, str]:
        resp = self.exchange(sign_in_doc(stan=self.next_stan(), batch=self.batch, tid=self.tid),
                             mac=False)
        assert resp["39"] == "00", resp
        self.pik, self.mak = decode_working_keys(bytes.fromhex(resp["62"]), TMK)
        return resp

    def next_stan(self) -> int:
        self.stan += 1
        return self.stan

    def send(self, doc: dict[str, str]) -> dict[str, str]:
        resp = self.exchange(doc, mac=True)
        if "64" in resp:  # every MACed answer verifies under the session's MAK
            assert mac_ok(encode_message(resp), self.mak), resp
        return resp

    def sale(self, amount: int = 1000, **kw: object) -> dict[str, str]:
        stan = self.next_stan()
        doc = sale_doc(self.pik, stan=stan, amount=amount, batch=self.batch,
                       tid=self.tid, **kw)  # type: ignore[arg-type]
        self.sent[stan] = doc
        return self.send(doc)

    def void(self, ostan: int, amount: int = 1000, **kw: object) -> dict[str, str]:
        stan = self.next_stan()
        doc = void_doc(stan=stan, amount=amount, ostan=ostan, batch=self.batch, tid=self.tid,
                       **kw)  # type: ignore[arg-type]
        self.sent[stan] = doc
        return self.send(doc)

    def refund(self, amount: int, **kw: object) -> dict[str, str]:
        stan = self.next_stan()
        doc = refund_doc(stan=stan, amount=amount, batch=self.batch, tid=self.tid,
                         **kw)  # type: ignore[arg-type]
        self.sent[stan] = doc
        return self.send(doc)

    def reverse(self, stan: int, reason: str = "98") -> dict[str, str]:
        return self.send(reversal_doc(self.sent[stan], reason))

    def settle(self, totals: Totals) -> dict[str, str]:
        return self.send(settlement_doc(totals, stan=self.next_stan(), batch=self.batch,
                                        tid=self.tid))

    def upload(self, stan: int, amount: int, proc: str = "000000", rrn: str = ""
               ) -> dict[str, str]:
        return self.send(upload_doc(stan=stan, amount=amount, proc=proc, rrn=rrn,
                                    batch=self.batch, tid=self.tid))

    def upload_end(self, count: int) -> dict[str, str]:
        return self.send(upload_end_doc(stan=self.next_stan(), count=count, batch=self.batch,
                                        tid=self.tid))


class Term(Terminal):
    """A signed-in terminal talking to *engine* directly."""

    def __init__(self, engine: AcquirerEngine, *, batch: int = 1, now: dt.datetime = NOW,
                 tid: str = TID) -> None:
        super().__init__(batch=batch, tid=tid)
        self.engine = engine
        self.now = now
        self.sign_in()

    def answer(self, doc: dict[str, str]) -> Answer:
        raw = encode_with_mac(doc, self.mak)
        return self.engine.answer(Tpdu(), Header(), decode_message(raw), self.now, mac_data=raw)

    def exchange(self, doc: dict[str, str], *, mac: bool) -> dict[str, str]:
        if not mac:
            return self.engine.handle(Tpdu(), Header(), doc, self.now)
        return self.answer(doc).response


class Wire(Terminal):
    """A terminal talking to a host server over TCP, one connection per message (bounded)."""

    def __init__(self, address: tuple[str, int], *, batch: int = 1, tid: str = TID,
                 timeout: float = 3.0) -> None:
        super().__init__(batch=batch, tid=tid)
        self.address = address
        self.timeout = timeout

    def exchange(self, doc: dict[str, str], *, mac: bool) -> dict[str, str]:
        raw = encode_with_mac(doc, self.mak) if mac else encode_message(doc)
        return roundtrip(self.address, raw, self.timeout)


def roundtrip(address: tuple[str, int], payload: bytes, timeout: float = 3.0
              ) -> dict[str, str]:
    """Send one framed message on a new connection, return the decoded answer; TimeoutError
    when none comes within *timeout*."""
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(frame(payload, Tpdu(), Header()))
        framer, frames = LengthFramer(), list[bytes]()
        while not frames:
            data = sock.recv(4096)
            assert data, "the host closed the connection without an answer"
            frames = framer.feed(data)
    return decode_message(unframe(frames[0])[2])


__all__ = ["Term", "Terminal", "Wire", "b6", "refund_doc", "reversal_doc", "roundtrip",
           "sale_doc", "settlement_doc", "sign_in_doc", "upload_doc", "upload_end_doc",
           "void_doc"]
