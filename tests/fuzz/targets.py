"""The fuzz targets: one per public parser and per simulator message handler.

A target is a function taking bytes and the project's errors it may raise (:class:`Target`).
Its contract: the input parses (or is answered), or the target raises one of those errors;
any other exception, or an answer that breaks the protocol's limits (a
:class:`ContractViolation`), is a finding.  Checks that must hold on an input that parsed run
through :func:`clean`, so that an expected error type raised where none may be raised (a
re-encoding, a masked rendering) is a finding too.

Stateful handlers (the terminal firmware, the card, the acquirer, the QR platform, the SCPI
instruments) are built fresh for every input and driven with time passed in explicitly; their
input is a sequence of records (:func:`records`: an op byte, a 2-byte length, the body).

Every target here is deterministic: the same input gives the same outcome, so a crash input
replays in ``tests/fuzz/test_corpus.py`` without atheris.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from protocols import apdu as apdu_mod
from protocols import concert, ecr, iso8583, jsonlines, magstripe, probe, qr, tlv
from protocols.atr import atr_problem, parse_atr
from protocols.crypto import mac_x919
from protocols.errors import ConfigError, DecodeError, FramingError, ProtocolError, RigError
from protocols.faults import parse_spec
from protocols.masking import render_tlv

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures"
CORPUS = FIXTURES / "fuzz"

#: Most records a stateful target reads from one input (bounds the time of one execution).
MAX_RECORDS = 48

T = TypeVar("T")


class ContractViolation(AssertionError):
    """An input was accepted but answered in a way the protocol does not allow (a reply over a
    limit, a round trip that changes the bytes, a renderer that raised)."""


def violation(ok: bool, what: str) -> None:
    if not ok:
        raise ContractViolation(what)


def clean(what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args)``, where no exception at all is allowed (any is a finding, chained)."""
    try:
        return fn(*args, **kwargs)
    except ContractViolation:
        raise
    except Exception as exc:
        raise ContractViolation(f"{what} raised {type(exc).__name__}: {exc}") from exc


@dataclass(frozen=True)
class Target:
    """One fuzz target: *run* takes the input; *expected* are the errors it may raise."""

    name: str
    run: Callable[[bytes], None]
    expected: tuple[type[BaseException], ...]
    doc: str
    #: libFuzzer's -max_len for this target (text protocols whose limits lie further get more).
    max_len: int = 4096

    def check(self, data: bytes) -> None:
        """Run the target; an expected error is the input being refused, anything else raises."""
        try:
            self.run(data)
        except self.expected:
            pass


# -- input shapes --------------------------------------------------------------------------------

def records(data: bytes) -> Iterator[tuple[int, bytes]]:
    """``OP(1) | LEN(2, big endian) | BODY`` repeated; a short last body is taken as it is."""
    pos = 0
    for _ in range(MAX_RECORDS):
        if pos >= len(data):
            return
        op = data[pos]
        n = int.from_bytes(data[pos + 1:pos + 3], "big")
        yield op, bytes(data[pos + 3:pos + 3 + n])
        pos += 3 + n


def record(op: int, body: bytes) -> bytes:
    """One record of :func:`records` (the seed generator writes them)."""
    return bytes([op]) + len(body).to_bytes(2, "big") + body


def chunked(data: bytes) -> Iterator[bytes]:
    """A byte stream cut the way its first byte says (1..16 bytes a chunk), for the
    incremental decoders; the first byte is not part of the stream."""
    if not data:
        return
    size = data[0] % 16 + 1
    stream = data[1:]
    for i in range(0, len(stream), size):
        yield stream[i:i + size]


# -- ISO 8583 ------------------------------------------------------------------------------------

def iso8583_message(data: bytes) -> None:
    """MTI + bitmap + fields with the UnionPay dialect; the evidence rendering of what decoded."""
    doc = iso8583.decode_message(data, iso8583.UNIONPAY)
    violation(all(isinstance(k, str) and isinstance(v, str) for k, v in doc.items()),
              f"decode_message() returned a non-text key or value: {sorted(doc)}")
    clean("describe(decoded doc)", iso8583.describe, doc)


def iso8583_framing(data: bytes) -> None:
    """Length prefix + TPDU + header, reassembled from a TCP stream by LengthFramer."""
    framer = iso8583.LengthFramer()
    for chunk in chunked(data):
        for whole in framer.feed(chunk):
            body = len(whole) - iso8583.LENGTH_PREFIX
            violation(iso8583.MIN_BODY <= body <= iso8583.MAX_BODY,
                      f"LengthFramer gave a frame body of {body} bytes")
            tpdu, header, payload = iso8583.unframe(whole)
            again = clean("frame(unframe(frame))", iso8583.frame, payload, tpdu, header)
            violation(again == whole, "frame(unframe(x)) != x")
    iso8583.unframe(data[1:])


# -- BER-TLV, APDU, ATR, stripe --------------------------------------------------------------------

def _check_tlv_items(items: list[tlv.Tlv] | tuple[tlv.Tlv, ...], size: int) -> None:
    for item in items:
        violation(0 <= item.offset < item.end <= size,
                  f"tag {item.tag:X}: offset {item.offset}, end {item.end} outside 0..{size}")
        _check_tlv_items(item.children, size)


def tlv_decode(data: bytes) -> None:
    """BER-TLV: the masked renderer never raises; decode, flatten and find agree."""
    clean("render_tlv(style='apdu')", render_tlv, data, style="apdu")
    clean("render_tlv(style='fields')", render_tlv, data, style="fields")
    items = tlv.decode(data)
    _check_tlv_items(items, len(data))
    clean("flatten() of decodable TLV", tlv.flatten, data)
    if items:
        clean("find() of decodable TLV", tlv.find, data, items[0].tag)


def tlv_dol(data: bytes) -> None:
    """A Data Object List (PDOL, CDOL1): build_dol and split_dol agree on what parse_dol gave."""
    dol = tlv.parse_dol(data)
    built = clean("build_dol()", tlv.build_dol, dol, {})
    violation(len(built) == sum(e.length for e in dol), "build_dol() length")
    clean("split_dol(build_dol())", tlv.split_dol, dol, built)


def apdu(data: bytes) -> None:
    """Command and response APDUs (ISO 7816-4 short cases): what parses encodes back the same."""
    if len(data) >= 2:
        resp = clean("ResponseApdu.from_bytes()", apdu_mod.ResponseApdu.from_bytes, data)
        violation(resp.to_bytes() == data, "ResponseApdu round trip")
        clean("sw_text()", apdu_mod.sw_text, resp.sw)
    cmd = apdu_mod.CommandApdu.from_bytes(data)
    violation(clean("CommandApdu.to_bytes()", cmd.to_bytes) == data, "CommandApdu round trip")


def atr(data: bytes) -> None:
    """ISO 7816-3 ATR: parse_atr and atr_problem agree; the parts add up to the bytes."""
    problem = clean("atr_problem()", atr_problem, data)
    try:
        parsed = parse_atr(data)
    except DecodeError:
        violation(problem is not None, "parse_atr() raised but atr_problem() says None")
        raise
    violation(problem is None, "parse_atr() passed but atr_problem() names a problem")
    violation(parsed.raw == data and len(parsed.historical) == data[1] & 0x0F,
              "ATR parts do not match its bytes")


def magstripe_track(data: bytes) -> None:
    """A swiped track (first byte: track 1 or 2): sentinels and LRC; decode then encode is
    the same track."""
    if not data:
        return
    track = 1 if data[0] & 1 else 2
    raw = data[1:].decode("latin-1")
    body = magstripe.decode_track(track, raw)
    violation(clean("encode_track(decode_track())", magstripe.encode_track, track, body) == raw,
              "decode_track() then encode_track() changed the track")


# -- ECR -----------------------------------------------------------------------------------------

def _check_ecr_output(out: bytes, what: str) -> None:
    """What a receiving link writes: only ACKs and NAKs."""
    for item in ecr.FrameDecoder().feed(out):
        violation(isinstance(item, ecr.AckIn | ecr.NakIn),
                  f"{what} wrote {type(item).__name__} while only receiving")


def ecr_frames(data: bytes) -> None:
    """The ECR framing layer and link (any chunking, time passing): never raises; frames
    encode back to their bytes; the link answers with ACK/NAK only."""
    decoder = ecr.FrameDecoder()
    link = ecr.EcrLink()
    now = 0.0
    for chunk in chunked(data):
        now += 0.03
        items = decoder.feed(chunk, now) + decoder.expire(now)
        for item in items:
            if isinstance(item, ecr.Frame):
                violation(ecr.encode_frame(item.seq, item.payload) == item.raw,
                          "encode_frame() of a decoded frame differs")
            for sender in ("rig", "terminal"):
                ecr.describe_item(item, sender)  # type: ignore[arg-type]
        link.receive(chunk, now)
        link.poll(now)
        _check_ecr_output(link.take_output(), "EcrLink")
    for sender in ("rig", "terminal"):
        ecr.describe_stream(data, sender)  # type: ignore[arg-type]


def ecr_message(data: bytes) -> None:
    """An ECR payload: ``CODE (FS key=value)*``; what decodes encodes back to the same bytes."""
    msg = ecr.decode_message(data)
    again = clean("encode_message(decode_message())", ecr.encode_message, msg)
    violation(again == data, "decode_message() then encode_message() changed the payload")
    for sender in ("rig", "terminal"):
        clean("Message.describe()", msg.describe, sender)
        try:
            ecr.decode_message(data, sender)  # type: ignore[arg-type]
        except DecodeError:
            pass


# -- Concert -------------------------------------------------------------------------------------

def _check_concert_output(out: bytes, what: str) -> None:
    items, rest = concert.split_stream(out)
    violation(not rest, f"{what} wrote an incomplete frame")
    for item in items:
        violation(len(item) == 1 and item[0] in concert.CONTROL_NAMES,
                  f"{what} wrote {item!r} while only receiving (expected control characters)")


def concert_stream(data: bytes) -> None:
    """The Concert line (either side) and stream splitting: never raise; the split keeps every
    byte; a receiving line only answers with control characters; one whole frame decodes."""
    for side in ("register", "terminal"):
        concert.describe_stream(data, side)  # type: ignore[arg-type]
    items, rest = concert.split_stream(data)
    violation(b"".join(items) + rest == data, "split_stream() lost or added bytes")
    lines = (concert.ConcertLine("terminal", check=concert.ConcertRequest.decode),
             concert.ConcertLine("register", check=concert.ConcertAnswer.decode))
    now = 0.0
    for chunk in chunked(data):
        now += 0.05
        for line in lines:
            line.receive(chunk, now)
            line.poll(now)
            _check_concert_output(line.take_output(), repr(line))
    payload = concert.decode_frame(data)
    violation(clean("encode_frame(decode_frame())", concert.encode_frame, payload) == data,
              "decode_frame() then encode_frame() changed the frame")


def concert_message(data: bytes) -> None:
    """A Concert request (E 26 / E+ 34 bytes) or answer (25 / 80): what decodes encodes back."""
    try:
        req = concert.ConcertRequest.decode(data)
    except DecodeError:
        pass
    else:
        violation(clean("ConcertRequest.encode()", req.encode) == data, "request round trip")
        clean("ConcertRequest.describe()", req.describe)
    ans = concert.ConcertAnswer.decode(data)
    violation(clean("ConcertAnswer.encode()", ans.encode) == data, "answer round trip")
    clean("ConcertAnswer.describe()", ans.describe)


# -- probe link ----------------------------------------------------------------------------------

_PROBE_PARSERS: Mapping[probe.MsgType, Callable[[probe.ProbeFrame], object]] = {
    probe.MsgType.ATR: probe.parse_answer, probe.MsgType.RAPDU: probe.parse_answer,
    probe.MsgType.STATUS: probe.parse_status, probe.MsgType.SWIPE: probe.parse_swipe,
    probe.MsgType.TAP: probe.parse_tap, probe.MsgType.SCAN: probe.parse_scan,
}


def probe_frames(data: bytes) -> None:
    """Probe link frames: the decoder reports damage as items (never raises); every frame
    encodes back; each payload parser raises DecodeError only."""
    decoder = probe.FrameDecoder()
    for chunk in chunked(data):
        for item in decoder.feed(chunk):
            if not isinstance(item, probe.ProbeFrame):
                violation(isinstance(item, FramingError | DecodeError),
                          f"FrameDecoder gave {type(item).__name__}")
                continue
            again = clean("decode_frame(encode_frame())", probe.decode_frame,
                          probe.encode_frame(item))
            violation(again == item, "probe frame round trip")
            parser = _PROBE_PARSERS.get(item.type)
            if parser is not None:
                try:
                    parser(item)
                except DecodeError:
                    pass
    probe.decode_frame(data[1:])


# -- QR platform, JSON lines, faults -------------------------------------------------------------

QR_KEY = bytes.fromhex("A9312D8AFCD6EEC4B5AEAC497416A8C8E53019F07592B83EDA1BE5DB79CC827B")


def qr_answer(data: bytes) -> None:
    """The platform's answer as the terminal parses it (HTTP 200, the fixture terminal's key)."""
    answer = qr.parse_answer(200, data, QR_KEY)
    if answer.order is not None:
        again = clean("QrOrder.from_json(to_json())", qr.QrOrder.from_json,
                      answer.order.to_json())
        violation(again == answer.order, "QrOrder JSON round trip")


def jsonlines_stream(data: bytes) -> None:
    """JSON lines in any chunking: feed_each never raises; every item is an object or the
    DecodeError of its line; feed raises DecodeError only."""
    buf = jsonlines.JsonLineBuffer("fuzz", max_line=1024, require="t")
    for chunk in chunked(data):
        for item in buf.feed_each(chunk):
            violation(isinstance(item, dict | DecodeError),
                      f"feed_each() gave {type(item).__name__}")
            if isinstance(item, dict):
                clean("encode_line()", jsonlines.encode_line, item)
    jsonlines.JsonLineBuffer("fuzz").feed(data[1:])


def fault_spec(data: bytes) -> None:
    """A fault as JSON (``{"kind": ..., "params": {...}}``): parse_spec gives a spec within its
    declared limits (numbers finite) that survives its own JSON, or a ConfigError."""
    try:
        raw = json.loads(data)
    except (ValueError, RecursionError):
        return  # not JSON: json's business, not the fault parser's
    spec = parse_spec(raw)
    for name, value in spec.params.items():
        if isinstance(value, float):
            violation(math.isfinite(value),
                      f"parse_spec() accepted {spec.kind.value}.{name} = {value!r} "
                      f"(not a finite number)")
    again = clean("parse_spec(spec.to_json())", parse_spec, spec.to_json())
    violation(again == spec, "FaultSpec JSON round trip")
    clean("FaultSpec.describe()", spec.describe)


# -- SCPI instruments ----------------------------------------------------------------------------

_QUEUE_ENTRY = re.compile(r'[+-]\d+,"[^"]*"')
MAX_SCPI_LINES = 64


def _scpi(device: Any, data: bytes) -> None:
    """Lines as ScpiTcpServer reads them (ASCII, undecodable replaced, stripped, empty skipped)
    into ``handle(line, now)``: it never raises; a response is one line; the error queue reads
    back well-formed entries."""
    now = 0.0
    for raw in data.split(b"\n")[:MAX_SCPI_LINES]:
        line = raw.decode("ascii", "replace").strip()
        if not line:
            continue
        now += 0.01
        response = device.handle(line, now)
        if response is not None:
            violation(isinstance(response, str) and "\n" not in response and "\r" not in response,
                      f"response to {line[:60]!r} is not one line: {response!r:.80}")
    for _ in range(3):
        entry = device.handle("SYST:ERR?", now)
        violation(isinstance(entry, str) and _QUEUE_ENTRY.fullmatch(entry) is not None,
                  f"SYST:ERR? answered {entry!r:.80}")


def scpi_psu(data: bytes) -> None:
    from sim.psu import SimPowerSupply

    _scpi(SimPowerSupply(), data)


def scpi_relay(data: bytes) -> None:
    from sim.relay import SimRelayUnit

    _scpi(SimRelayUnit(), data)


# -- terminal firmware ---------------------------------------------------------------------------

#: Record ops of the firmware target.
FW_ECR, FW_TICK, FW_HARNESS, FW_OUTCOME = 0, 1, 2, 3


def _fw_harness(body: bytes, nominal: float) -> dict[str, Any]:
    """A harness message from the bench (trusted, so chosen from a menu), except the swiped
    tracks and the scanned code, which come from outside as printable ASCII."""
    sel = body[0] if body else 0
    text = "".join(chr(b) for b in body[1:] if 0x20 <= b <= 0x7E)
    menu: list[dict[str, Any]] = [
        {"t": "card", "present": True}, {"t": "card", "present": False},
        {"t": "field", "cards": 1}, {"t": "field", "cards": 0}, {"t": "field", "cards": 2},
        {"t": "paper", "present": False}, {"t": "paper", "present": True},
        {"t": "paper_low", "low": True}, {"t": "paper_low", "low": False},
        {"t": "printer", "present": False}, {"t": "printer", "present": True},
        {"t": "rail", "volts": nominal}, {"t": "rail", "volts": nominal * 0.9},
        {"t": "rail", "volts": nominal * 0.8}, {"t": "rail", "volts": 0.0},
    ]
    if sel < len(menu):
        return menu[sel]
    if sel % 2:
        track1, _, track2 = text.partition("|")
        return {"t": "swipe", "track1": track1, "track2": track2}
    return {"t": "scan", "code": text[:255]}


def _check_ecr_reply(msg: ecr.Message, specs: ecr.SpecTable) -> None:
    payload = clean(f"encode_message({msg.code} reply)", ecr.encode_message, msg)
    violation(len(payload) <= ecr.MAX_PAYLOAD,
              f"{msg.code} reply of {len(payload)} bytes exceeds {ecr.MAX_PAYLOAD}")
    again = clean(f"decode_message({msg.code} reply, 'terminal')", ecr.decode_message,
                  payload, "terminal", specs)
    violation(again == msg, f"{msg.code} reply does not decode back to itself")


@functools.cache
def _terminal_profile() -> Any:
    from tests.terminal.fakes import fast_profile

    return fast_profile(fallback_after=1)


def terminal_firmware(data: bytes) -> None:
    """TerminalFirmware driven by records: an ECR request payload (decoded as the runner does:
    undecodable → on_bad_request), time passing, a harness message, how the next jobs end.
    Jobs are carried out at once by the test fakes.  Nothing may raise; every ECR reply
    encodes within the payload limit and decodes as a terminal message."""
    from sim.terminal.firmware import Freeze, PowerOff, SendEcr, StartJob, TerminalFirmware, perform
    from sim.terminal.nvram import MemoryNvram
    from tests.terminal.fakes import (
        NOW,
        FakeAuthResult,
        FakeCardError,
        FakeCommsError,
        FakeServices,
    )

    profile = _terminal_profile()
    fw = TerminalFirmware(profile, MemoryNvram(), clock=lambda: NOW, rng=lambda n: bytes(n))
    services = FakeServices()
    specs = ecr.MESSAGE_SPECS
    stopped = False

    def act(actions: list[Any], now: float) -> None:
        nonlocal stopped
        queue = list(actions)
        for _ in range(200):
            if not queue:
                return
            action = queue.pop(0)
            if isinstance(action, SendEcr):
                _check_ecr_reply(action.msg, specs)
            elif isinstance(action, StartJob):
                queue += fw.on_job(perform(action.job, services), now)  # type: ignore[arg-type]
            elif isinstance(action, Freeze | PowerOff):
                stopped = True
                return

    now = 0.0
    act(fw.start(now), now)
    now += profile.boot_s + 0.01
    act(fw.tick(now), now)
    for op, body in records(data):
        if stopped:
            break
        op %= 4
        if op == FW_ECR:
            try:
                msg = ecr.decode_message(body, "rig", specs)
            except DecodeError as exc:
                act(fw.on_bad_request(str(exc)), now)
            else:
                act(fw.on_ecr(msg, now), now)
        elif op == FW_TICK:
            now += (body[0] if body else 1) * 0.02
            act(fw.tick(now), now)
        elif op == FW_HARNESS:
            act(fw.on_harness(_fw_harness(body, profile.nominal_volts), now), now)
        else:
            sel = body[0] % 4 if body else 0
            services.auth_result = (FakeAuthResult(), FakeAuthResult("51", approved=False),
                                    FakeCommsError("send", "fuzz: no answer"),
                                    FakeCardError("removed"))[sel]
    if not stopped:
        act(fw.tick(now + 3600.0), now + 3600.0)


# -- card emulator -------------------------------------------------------------------------------

CARD_PROFILES = ("good.yaml", "offline_pin.yaml", "contactless.yaml", "blocked.yaml",
                 "credit.yaml")
CARD_APDU, CARD_POWER_ON, CARD_POWER_OFF = 0, 1, 2


@functools.cache
def _card_profile(name: str) -> Any:
    from sim.card.profile import load_profile

    return load_profile(FIXTURES / "cards" / name)


def card_emv(data: bytes) -> None:
    """SimEmvCard (first byte: which fixture card) driven by records: a C-APDU, power on, power
    off.  Every answer of a powered card is an R-APDU of at most 256 data bytes and a status
    word ISO 7816-4 allows (61xx-6Fxx, 9xxx); an error status carries no data; the data fit
    the Le the command gave."""
    from sim.card.emv import SimEmvCard

    if not data:
        return
    card = SimEmvCard(_card_profile(CARD_PROFILES[data[0] % len(CARD_PROFILES)]))
    card.power_on()
    for op, body in records(data[1:]):
        op %= 3
        if op == CARD_POWER_ON:
            card.power_on()
            continue
        if op == CARD_POWER_OFF:
            card.power_off()
            continue
        powered = card.powered and card.profile.answers_reset
        reply = card.apdu(body)
        if not powered:
            violation(reply == b"", f"an unpowered card answered {reply.hex()}")
            continue
        violation(2 <= len(reply) <= 258, f"R-APDU of {len(reply)} bytes to {body.hex()}")
        sw1, data_len = reply[-2], len(reply) - 2
        violation(0x61 <= sw1 <= 0x6F or 0x90 <= sw1 <= 0x9F,
                  f"status word {reply[-2:].hex()} to {body.hex()}")
        violation(not (0x64 <= sw1 <= 0x6F and data_len),
                  f"error status {reply[-2:].hex()} with {data_len} data bytes to {body.hex()}")
        try:
            cmd = apdu_mod.CommandApdu.from_bytes(body)
        except DecodeError:
            continue
        if cmd.le is not None:
            violation(data_len <= cmd.le, f"{data_len} data bytes for Le={cmd.le} "
                                          f"({apdu_mod.ins_name(cmd.ins)}, {body.hex()})")


# -- acquirer host -------------------------------------------------------------------------------

HOST_NOW = dt.datetime(2026, 3, 14, 15, 9, 26)


@functools.cache
def _host_config() -> tuple[Any, Any]:
    from sim.host.engine import load_accounts, load_terminals

    return (load_terminals(FIXTURES / "host" / "terminals.yaml"),
            load_accounts(FIXTURES / "cards"))


def new_acquirer() -> Any:
    """A fresh engine over the fixture terminals and cards; its key source is the host tests'
    deterministic one, so a fresh engine hands out the same session keys every time and seeds
    can carry valid MACs and PIN blocks."""
    from sim.host.engine import AcquirerEngine
    from sim.host.ledger import MemoryLedger
    from tests.host.conftest import counting_keys

    terminals, accounts = _host_config()
    return AcquirerEngine(terminals, accounts, ledger=MemoryLedger(), key_source=counting_keys(),
                          pan_salt=b"fuzz")


#: Op bit of a host record: put the right MAC in field 64 (session MAK of field 41's terminal).
HOST_FIX_MAC = 0x01


def _fix_mac(engine: Any, payload: bytes) -> bytes:
    try:
        doc = iso8583.decode_message(payload)
    except DecodeError:
        return payload
    session = engine.sessions.get(doc.get("41", ""))
    if "64" not in doc or session is None or len(payload) <= iso8583.MAC_LEN:
        return payload
    mab = payload[:-iso8583.MAC_LEN]
    return mab + mac_x919(session.mak, mab)


def acquirer_engine(data: bytes) -> None:
    """AcquirerEngine driven by records, each a whole frame as the host server reads it
    (op bit 0: put the session's MAC in field 64 first).  A frame it cannot read may raise a
    ProtocolError (the server drops it), and the next frame goes on; any other exception is a
    finding.  Every answer is a frame that unframes and decodes with the dialect, within
    MAX_BODY, with the response MTI of the request, field 39 and the TPDU swapped."""
    engine = new_acquirer()
    now = HOST_NOW
    for op, body in records(data):
        now += dt.timedelta(seconds=1)
        try:
            tpdu, header, payload = iso8583.unframe(body)
        except FramingError:
            continue
        if op & HOST_FIX_MAC:
            payload = _fix_mac(engine, payload)
        try:
            answer = engine.answer_frame(tpdu, header, payload, now)
        except ProtocolError:
            continue
        rtpdu, _, rpayload = clean("unframe(answer)", iso8583.unframe, answer.frame)
        violation(len(answer.frame) - iso8583.LENGTH_PREFIX <= iso8583.MAX_BODY,
                  "answer frame over MAX_BODY")
        violation(rtpdu == tpdu.swapped(), "answer TPDU is not the request's, swapped")
        resp = clean("decode_message(answer)", iso8583.decode_message, rpayload)
        mti = iso8583.decode_message(payload)["t"]
        violation(resp.get("t") == iso8583.response_mti(mti),
                  f"answer MTI {resp.get('t')} to a {mti}")
        violation("39" in resp, f"answer {resp.get('t')} without field 39")


# -- QR platform ---------------------------------------------------------------------------------

QR_T0 = 1_790_000_000.0
QR_PATHS = (*sorted(qr.PATHS), "/v1/", "/v1/unknown", "")
#: Op bit of a QR record: sign the body again (a JSON object naming a known terminal).
QR_RESIGN = 0x80


@functools.cache
def _qr_terminals() -> Any:
    from sim.qr.config import load_terminals

    return load_terminals(FIXTURES / "qr" / "terminals.yaml")


def _qr_key_of(terminals: Mapping[str, Any], body: bytes) -> tuple[bytes | None, Any]:
    """The terminal key the body names (None: not a JSON object naming a known terminal)."""
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError):
        return None, None
    if not isinstance(obj, dict):
        return None, None
    tid = obj.get("terminal_id")
    term = terminals.get(tid) if isinstance(tid, str) else None
    return (term.sign_key if term is not None else None), obj


#: Op bit of a QR record: a wallet action instead of a request (op & 3: issue a payment code,
#: scan the last order's code, confirm with the wallet password, nothing but time passing).
QR_WALLET = 0x40
#: Placeholder in a request body for the last payment code issued (before re-signing).
QR_CODE_SLOT = b"@CODE@"


def qr_engine(data: bytes) -> None:
    """QrPlatformEngine driven by records: op picks the path (bit 7: sign the body again under
    the terminal's key; bit 6: a wallet action instead), the body is the request; time passes
    1 s a record.  answer() never raises, and its answer is one the terminal's parse_answer()
    accepts."""
    from sim.qr.engine import QrPlatformEngine, Refusal
    from sim.qr.ledger import MemoryQrLedger
    from tests.qr.conftest import counting_random

    terminals = _qr_terminals()
    engine = QrPlatformEngine(terminals, ledger=MemoryQrLedger(), random=counting_random())
    now = QR_T0
    code, code_url = b"", ""
    for op, body in records(data):
        now += 1.0
        if op & QR_WALLET:
            try:
                if op & 3 == 0:
                    code = engine.issue_code(qr.Wallet.WECHAT, now,
                                             password=bool(body[:1] and body[0] & 1)
                                             ).code.encode()
                elif op & 3 == 1:
                    engine.scan(code_url, now, wallet=qr.Wallet.ALIPAY)
                elif op & 3 == 2:
                    engine.confirm(now)
                else:
                    engine.tick(now)
            except Refusal:
                pass
            continue
        path = QR_PATHS[(op & 0x3F) % len(QR_PATHS)]
        body = body.replace(QR_CODE_SLOT, code)
        key, obj = _qr_key_of(terminals, body)
        if op & QR_RESIGN and key is not None:
            try:
                body = qr.encode_body(qr.signed_body(obj, key))
            except ProtocolError:
                pass
        answer = engine.answer(path, body, now)
        violation(100 <= answer.http_status <= 599, f"HTTP status {answer.http_status}")
        parsed = clean(f"parse_answer() of the platform's answer to {path}", qr.parse_answer,
                       answer.http_status, answer.body, key)
        if parsed.order is not None and parsed.order.code_url:
            code_url = parsed.order.code_url


# -- bench YAML ----------------------------------------------------------------------------------

@functools.cache
def _scratch() -> Path:
    fd, name = tempfile.mkstemp(prefix="fuzz-bench-", suffix=".yaml")
    os.close(fd)
    return Path(name)


def bench_yaml(data: bytes) -> None:
    """A bench YAML file as a user writes it: load_bench() gives a BenchConfig or a
    ConfigError naming the key."""
    from rigs.config import load_bench

    path = _scratch()
    path.write_bytes(data)
    load_bench(path)


# -- the registry --------------------------------------------------------------------------------

_ALL: tuple[Target, ...] = (
    Target("iso8583_message", iso8583_message, (DecodeError,),
           "ISO 8583 decode_message with the UnionPay dialect, describe()"),
    Target("iso8583_framing", iso8583_framing, (FramingError,),
           "ISO 8583 length/TPDU/header framing: LengthFramer, unframe, frame"),
    Target("tlv", tlv_decode, (DecodeError,), "BER-TLV decode/flatten/find, render_tlv"),
    Target("tlv_dol", tlv_dol, (DecodeError,), "DOL parse_dol, build_dol, split_dol"),
    Target("apdu", apdu, (DecodeError,), "CommandApdu / ResponseApdu from_bytes"),
    Target("atr", atr, (DecodeError,), "parse_atr, atr_problem"),
    Target("magstripe", magstripe_track, (DecodeError,), "decode_track / encode_track"),
    Target("ecr_frames", ecr_frames, (),
           "ECR FrameDecoder, EcrLink, describe_stream (never raise)"),
    Target("ecr_message", ecr_message, (DecodeError,), "ECR decode_message / encode_message"),
    Target("concert_stream", concert_stream, (FramingError,),
           "Concert split_stream, describe_stream, ConcertLine, decode_frame"),
    Target("concert_message", concert_message, (DecodeError,),
           "ConcertRequest / ConcertAnswer decode and encode"),
    Target("probe", probe_frames, (FramingError, DecodeError),
           "probe link FrameDecoder, decode_frame, payload parsers"),
    Target("qr_answer", qr_answer, (ProtocolError,),
           "QR platform answer as the terminal parses it (parse_answer)", max_len=8192),
    Target("jsonlines", jsonlines_stream, (DecodeError,), "JsonLineBuffer feed_each / feed",
           max_len=8192),
    Target("faults", fault_spec, (ConfigError,), "fault spec parse_spec from JSON"),
    Target("scpi_psu", scpi_psu, (), "SimPowerSupply.handle, line by line", max_len=8192),
    Target("scpi_relay", scpi_relay, (), "SimRelayUnit.handle, line by line", max_len=8192),
    Target("terminal_firmware", terminal_firmware, (),
           "TerminalFirmware: ECR requests, time, harness events, job outcomes"),
    Target("card_emv", card_emv, (), "SimEmvCard.apdu with power on/off"),
    Target("acquirer_engine", acquirer_engine, (),
           "AcquirerEngine.answer_frame on framed requests (MAC fixed up on demand)"),
    Target("qr_engine", qr_engine, (), "QrPlatformEngine.answer (re-signed on demand)",
           max_len=8192),
    Target("bench_yaml", bench_yaml, (ConfigError,), "rigs.config.load_bench of a file",
           max_len=8192),
)

TARGETS: Mapping[str, Target] = {t.name: t for t in _ALL}

#: Errors no target may ever let through as "expected" (sanity of the registry).
assert all(issubclass(e, RigError) for t in _ALL for e in t.expected)
