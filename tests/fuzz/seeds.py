"""Write the seed corpus of every fuzz target again: ``python -m tests.fuzz.seeds``.

Every seed is a VALID input built with the project's own encoders from its fixtures (the
UnionPay dialect, the fixture cards' profiles and the card emulator's answers, the ECR and
Concert encoders, the QR platform's signed requests and answers, the bench YAML of fixtures/).
The output is deterministic; each target's files are replaced (its ``regressions/`` folder, the
crash inputs kept as tests, is left alone).  Card data: only the fixture test cards' PANs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Callable
from pathlib import Path

from protocols import concert, ecr, iso8583, jsonlines, probe, qr, tlv
from protocols.apdu import CommandApdu
from protocols.crypto import decode_working_keys, pin_block
from protocols.ecr import Message, MsgCode
from protocols.faults import FaultSpec
from protocols.transactions import SALE
from tests.fuzz.targets import (
    CARD_APDU,
    CARD_POWER_OFF,
    CARD_POWER_ON,
    CARD_PROFILES,
    CORPUS,
    FIXTURES,
    FW_ECR,
    FW_HARNESS,
    FW_OUTCOME,
    FW_TICK,
    HOST_FIX_MAC,
    HOST_NOW,
    QR_CODE_SLOT,
    QR_PATHS,
    QR_RESIGN,
    QR_T0,
    QR_WALLET,
    TARGETS,
    _card_profile,
    _qr_terminals,
    new_acquirer,
    record,
)

Seeds = dict[str, bytes]
REGRESSIONS = "regressions"

# The fixture cards the seeds use (test cards: fixtures/cards/good.yaml, magstripe.yaml).
GOOD = "good.yaml"
SWIPE_CARD = "magstripe.yaml"
TID, MID = "10000001", "898100012340001"
TMK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")  # fixtures/host/terminals.yaml
PIN = "123456"  # fixtures/cards/good.yaml


def _good_pan() -> str:
    return str(_card_profile(GOOD).pan)


# -- card dialogue (the answers of the emulated fixture card) ----------------------------------

SELECT_PSE = CommandApdu(0x00, 0xA4, 0x04, 0x00, b"1PAY.SYS.DDF01", 0x100)
READ_DIR = CommandApdu(0x00, 0xB2, 0x01, 0x0C, b"", 0x100)


def card_dialogue(profile_name: str = GOOD) -> list[tuple[bytes, bytes]]:
    """The commands a terminal kernel sends to a fixture card and the card's answers: SELECT
    PSE, READ RECORD of the directory, SELECT of the application, GPO (PDOL filled with
    zeros), READ RECORD of the AFL, GENERATE AC (CDOL1 filled with zeros)."""
    from sim.card.emv import SimEmvCard

    card = SimEmvCard(_card_profile(profile_name))
    card.power_on()
    out: list[tuple[bytes, bytes]] = []

    def send(cmd: CommandApdu) -> bytes:
        raw = cmd.to_bytes()
        reply = card.apdu(raw)
        out.append((raw, reply))
        return reply[:-2]

    send(SELECT_PSE)
    directory = send(READ_DIR)
    aid = tlv.find(directory, 0x4F) or bytes.fromhex("A000000333010101")
    fci = send(CommandApdu(0x00, 0xA4, 0x04, 0x00, aid, 0x100))
    pdol = tlv.parse_dol(tlv.find(fci, 0x9F38) or b"")
    pdol_data = tlv.build_dol(pdol, {})
    gpo = send(CommandApdu(0x80, 0xA8, 0x00, 0x00, tlv.encode(0x83, pdol_data), 0x100))
    afl = tlv.find(gpo, 0x94) or b""
    cdol1 = b""
    for i in range(0, len(afl) - 3, 4):
        sfi = afl[i] >> 3
        for rec in range(afl[i + 1], afl[i + 2] + 1):
            data = send(CommandApdu(0x00, 0xB2, rec, (sfi << 3) | 4, b"", 0x100))
            cdol1 = tlv.find(data, 0x8C) or cdol1
    ac_data = tlv.build_dol(tlv.parse_dol(cdol1), {0x9F02: bytes.fromhex("000000001000")})
    send(CommandApdu(0x80, 0xAE, 0x80, 0x00, ac_data, 0x100))
    return out


def _card_tlvs() -> list[bytes]:
    return [reply[:-2] for _, reply in card_dialogue() if len(reply) > 2]


# -- per target ---------------------------------------------------------------------------------

def _sign_in_doc(stan: int = 1) -> dict[str, str]:
    return {"t": "0800", "11": f"{stan:06d}", "41": TID, "42": MID, "60": "00000001004",
            "63": "01 "}


def _sale_doc(pik: bytes, stan: int = 2, amount: int = 1000) -> dict[str, str]:
    pan = _good_pan()
    return {"t": SALE.mti, "2": pan, "3": SALE.proc_code, "4": f"{amount:012d}",
            "11": f"{stan:06d}", "14": "3012", "22": iso8583.PosEntry.CHIP.value, "23": "001",
            "25": "00", "35": f"{pan}D30122010000000000", "41": TID, "42": MID, "49": "156",
            "52": pin_block(PIN, pan, pik).hex().upper(), "53": "2600000000000000",
            "60": "22000001000500"}


def _session_keys() -> tuple[bytes, bytes]:
    """PIK and MAK of the first sign-in to a fresh (deterministic) acquirer."""
    engine = new_acquirer()
    resp = engine.handle(iso8583.Tpdu(), iso8583.Header(), _sign_in_doc(), HOST_NOW)
    return decode_working_keys(bytes.fromhex(resp["62"]), TMK)


def _iso_payloads() -> Seeds:
    pik, mak = _session_keys()
    sale = _sale_doc(pik)
    response = {"t": "0210", "3": "000000", "4": "000000001000", "11": "000002",
                "12": "150926", "13": "0314", "37": "000000001234", "38": "123456", "39": "00",
                "41": TID, "42": MID, "49": "156"}
    totals = "001000000001000" + "000000000000000" + "1"  # 1 debit of 10.00, no credit, code 1
    settle = {"t": "0500", "11": "000003", "41": TID, "42": MID, "48": totals, "49": "156",
              "60": "00000001201", "63": "01 "}
    return {
        "sign_in_0800": iso8583.encode_message(_sign_in_doc()),
        "sale_0200": iso8583.encode_with_mac(sale, mak),
        "sale_response_0210": iso8583.encode_with_mac(response, mak),
        "settlement_0500": iso8583.encode_with_mac(settle, mak),
        "reversal_0400": iso8583.encode_with_mac(
            {k: v for k, v in sale.items() if k not in ("52", "53")} | {"t": "0400",
                                                                              "39": "98"}, mak),
    }


def _framed(payload: bytes) -> bytes:
    return iso8583.frame(payload, iso8583.Tpdu(), iso8583.Header())


def iso8583_message() -> Seeds:
    return _iso_payloads()


def iso8583_framing() -> Seeds:
    payloads = _iso_payloads()
    frames = {f"{k}_chunk{n}": bytes([n]) + _framed(v) for n, (k, v) in
              zip((15, 3, 0, 7, 1), payloads.items(), strict=True)}
    frames["two_frames"] = bytes([5]) + b"".join(_framed(v) for v in list(payloads.values())[:2])
    return frames


def tlv_seeds() -> Seeds:
    return {f"card_answer_{i}": data for i, data in enumerate(_card_tlvs())}


def tlv_dol() -> Seeds:
    from sim.card.emv import CDOL1, CDOL2, PDOL

    return {"pdol": PDOL, "cdol1": CDOL1, "cdol2": CDOL2}


def apdu() -> Seeds:
    out: Seeds = {}
    for i, (cmd, reply) in enumerate(card_dialogue()):
        out[f"command_{i}"] = cmd
        out[f"response_{i}"] = reply
    out["case1"] = CommandApdu(0x00, 0x84, 0x00, 0x00).to_bytes()
    out["case3_verify"] = CommandApdu(0x00, 0x20, 0x00, 0x80, bytes(8)).to_bytes()
    return out


def atr() -> Seeds:
    out: Seeds = {}
    for name in ("good.yaml", "contactless.yaml", "offline_pin.yaml", "garbage_atr.yaml"):
        data = _card_profile(name).reset_answer
        if data:
            out[name.removesuffix(".yaml")] = data
    out["t1_with_tck"] = bytes.fromhex("3B8F8001804F0CA000000306030001000000006A")
    return out


def magstripe() -> Seeds:
    stripe = _card_profile(SWIPE_CARD).stripe_data
    assert stripe is not None
    return {"track1": b"\x01" + stripe.encoded(1).encode("ascii"),
            "track2": b"\x00" + stripe.encoded(2).encode("ascii")}


def _ecr_requests() -> list[Message]:
    return [Message(MsgCode.STATUS), Message(MsgCode.LOGIN, {"op": "01", "pw": "0000"}),
            Message(MsgCode.SIGN_IN), Message(SALE.ecr_code, {"amt": "1000", "cur": "156"}),
            Message(MsgCode.KEY, {"k": "1"}), Message(MsgCode.KEY, {"k": "ENTER"}),
            Message(MsgCode.QUERY, {"stan": "000002"}), Message(MsgCode.TOTALS),
            Message(MsgCode.PARAMETER, {"name": "txn_limit", "value": "500000"})]


def _ecr_answers() -> list[Message]:
    return [Message(MsgCode.STATUS, {"rc": "OK", "state": "IDLE"}),
            Message(SALE.ecr_code, {"rc": "APPROVED", "amt": "1000", "stan": "000002"}),
            Message(MsgCode.EVENT, {"code": "PAPER_OUT"}),
            Message(MsgCode.PRINT, {"copy": "merchant", "text": "销售 SALE\n621483******0017"})]


def ecr_message() -> Seeds:
    msgs = _ecr_requests() + _ecr_answers()
    return {f"{m.code}_{i}": ecr.encode_message(m) for i, m in enumerate(msgs)}


def ecr_frames() -> Seeds:
    out: Seeds = {}
    for i, msg in enumerate(_ecr_requests()[:4] + _ecr_answers()[:2]):
        out[f"frame_{msg.code}_{i}"] = bytes([i * 3]) + ecr.encode_frame(i,
                                                                          ecr.encode_message(msg))
    out["ack_nak"] = b"\x02" + ecr.encode_ack(1) + ecr.encode_nak()
    transcript = FIXTURES / "transcripts" / "ecr-login-status.jsonl"
    stream = b"".join(bytes.fromhex(json.loads(line)["hex"])
                      for line in transcript.read_text().splitlines() if line.strip())
    out["transcript"] = b"\x07" + stream
    return out


def _concert_records() -> dict[str, bytes]:
    plus = concert.ConcertRequest(amount_minor=1000)
    plain = concert.ConcertRequest(amount_minor=250, delay=None, authorization=None,
                                   private=concert.trace_private("000002"))
    short = concert.ConcertAnswer("01", concert.Status("0"), 1000, concert.PaymentMode("1"),
                                  "978")
    rep = (_card_profile(GOOD).masked_pan).ljust(concert.CARD_DATA.size)
    long = concert.ConcertAnswer("01", concert.Status("0"), 1000, concert.PaymentMode("1"),
                                 "978", card_data=rep)
    return {"request_e_plus": plus.encode(), "request_e": plain.encode(),
            "answer_short": short.encode(), "answer_rep": long.encode()}


def concert_message() -> Seeds:
    return _concert_records()


def concert_stream() -> Seeds:
    out: Seeds = {}
    enq, ack, eot = bytes([concert.ENQ]), bytes([concert.ACK]), bytes([concert.EOT])
    for i, (name, payload) in enumerate(_concert_records().items()):
        out[f"session_{name}"] = bytes([i + 2]) + enq + concert.encode_frame(payload) + eot
        out[f"frame_{name}"] = concert.encode_frame(payload)
    out["control"] = bytes([0]) + ack + bytes([concert.NAK]) + eot
    return out


def probe_seeds() -> Seeds:
    stripe = _card_profile(SWIPE_CARD).stripe_data
    assert stripe is not None
    frames = [
        probe.ProbeFrame(1, probe.MsgType.INSERT),
        probe.ProbeFrame(2, probe.MsgType.SWIPE,
                         probe.swipe_payload(stripe.encoded(1), stripe.encoded(2))),
        probe.ProbeFrame(3, probe.MsgType.TAP, probe.tap_payload(1)),
        probe.ProbeFrame(4, probe.MsgType.SCAN, probe.scan_payload("134567890123456789")),
        probe.ProbeFrame(5, probe.MsgType.ATR, probe.answer_payload(
            probe.AnswerStatus.OK, _card_profile(GOOD).reset_answer)),
        probe.ProbeFrame(6, probe.MsgType.RAPDU, probe.answer_payload(
            probe.AnswerStatus.OK, bytes.fromhex("9000"))),
        probe.ProbeFrame(7, probe.MsgType.STATUS, b"\x01"),
        probe.ProbeFrame(8, probe.MsgType.CAPDU, SELECT_PSE.to_bytes()),
    ]
    out = {f"{f.type.name.lower()}": bytes([i]) + probe.encode_frame(f)
           for i, f in enumerate(frames)}
    out["stream"] = bytes([4]) + b"".join(probe.encode_frame(f) for f in frames)
    return out


def _qr_requests() -> list[tuple[str, bytes]]:
    term = _qr_terminals()[TID]
    ops: list[tuple[qr.Operation, dict[str, object]]] = [
        (qr.Operation.CREATE, {"out_trade_no": "T000002", "amount": 1000,
                               "description": "fuzz seed"}),
        (qr.Operation.QUERY, {"out_trade_no": "T000002"}),
        (qr.Operation.MICROPAY, {"out_trade_no": "T000003", "amount": 500,
                                 "auth_code": QR_CODE_SLOT.decode()}),
        (qr.Operation.REFUND, {"out_trade_no": "T000003", "out_refund_no": "R000001",
                               "amount": 500}),
        (qr.Operation.CLOSE, {"out_trade_no": "T000002"}),
        (qr.Operation.CANCEL, {"out_trade_no": "T000002"}),
    ]
    return [qr.build_request(op, fields, merchant_id=term.merchant_id, terminal_id=TID,
                             key=term.sign_key, nonce=f"fuzzseed{i:04d}",
                             timestamp=int(QR_T0) + i)
            for i, (op, fields) in enumerate(ops)]


def qr_engine() -> Seeds:
    out: Seeds = {}
    requests = _qr_requests()
    for i, (path, body) in enumerate(requests):
        out[f"request_{i}"] = record(QR_PATHS.index(path), body)
    create, query, micropay, refund, close, cancel = (
        record(QR_PATHS.index(p) | QR_RESIGN, b) for p, b in requests)
    scan, issue = record(QR_WALLET | 1, b""), record(QR_WALLET, b"\x00")
    out["sequence"] = create + scan + query + issue + micropay + refund + close + cancel
    out["password"] = record(QR_WALLET, b"\x01") + micropay + record(QR_WALLET | 2, b"") + query
    return out


def qr_answer() -> Seeds:
    from sim.qr.engine import QrPlatformEngine
    from sim.qr.ledger import MemoryQrLedger

    engine = QrPlatformEngine(_qr_terminals(), ledger=MemoryQrLedger(),
                              random=lambda n: bytes(range(1, n + 1)))
    key = _qr_terminals()[TID].sign_key
    code = engine.issue_code(qr.Wallet.WECHAT, QR_T0).code.encode()
    out: Seeds = {}
    for i, (path, body) in enumerate(_qr_requests()):
        if QR_CODE_SLOT in body:
            body = qr.encode_body(qr.signed_body(json.loads(body.replace(QR_CODE_SLOT, code)),
                                                 key))
        answer = engine.answer(path, body, QR_T0 + i)
        out[f"answer_{i}_{answer.http_status}"] = answer.body
    return out


def jsonlines_seeds() -> Seeds:
    lines: list[dict[str, object]] = [{"t": "card", "present": True}, {"t": "rail", "volts": 7.4},
             {"t": "load", "state": "idle"}, {"t": "swipe", "track1": "", "track2": ""}]
    return {"harness_lines": bytes([9]) + b"".join(jsonlines.encode_line(o) for o in lines),
            "one_line": bytes([0]) + jsonlines.encode_line({"t": "ping", "id": 1})}


def faults() -> Seeds:
    specs = [FaultSpec.of("cable_pull"), FaultSpec.of("delay", ms=200, jitter_ms=20),
             FaultSpec.of("drop_message", mti="0210", times=1),
             FaultSpec.of("card_status_word", ins="GENERATE AC", sw="6985"),
             FaultSpec.of("supply_sag", volts=3.45), FaultSpec.of("flap", down_ms=50, up_ms=200),
             FaultSpec.of("drop_qr", operation="micropay"),
             FaultSpec.of("corrupt_byte", mti="0200", offset=20)]
    return {s.kind.value: json.dumps(s.to_json(), sort_keys=True).encode() for s in specs}


def scpi_psu() -> Seeds:
    return {"idn": b"*IDN?\n",
            "setup": b"*RST\nVOLT 12.0\nCURR 1.5\nOUTP ON\nMEAS:VOLT?\nMEAS:CURR?\nSYST:ERR?\n",
            "long_forms": b":SOURce:VOLTage:LEVel:IMMediate:AMPLitude 7.4;:OUTPut:STATe ON\n"
                          b"MEASure:SCALar:CURRent:DC?\nVOLT? MAX\n",
            "errors": b"VOLT 99\nFOO\n*CLS\nSYST:ERR?\n"}


def scpi_relay() -> Seeds:
    return {"idn": b"*IDN?\n",
            "close_open": b"ROUT:CLOS (@1)\nROUT:CLOS? (@1:4)\nROUT:OPEN (@1,3)\n"
                          b"ROUT:OPEN? (@1)\nROUT:OPEN:ALL\nSYST:ERR?\n",
            "errors": b"ROUT:CLOS (@9)\nROUT:CLOS\n*RST;*OPC?\n"}


def _fw(op: int, body: bytes = b"") -> bytes:
    return record(op, body)


def _ecr(msg: Message) -> bytes:
    return _fw(FW_ECR, ecr.encode_message(msg))


def terminal_firmware() -> Seeds:
    login = _ecr(Message(MsgCode.LOGIN, {"op": "01", "pw": "0000"}))
    sign_in = _ecr(Message(MsgCode.SIGN_IN))
    sale = _ecr(Message(SALE.ecr_code, {"amt": "1000", "cur": "156"}))
    pin = b"".join(_ecr(Message(MsgCode.KEY, {"k": k})) for k in ("1", "2", "3", "4", "ENTER"))
    card_in, card_out = _fw(FW_HARNESS, b"\x00"), _fw(FW_HARNESS, b"\x01")
    tick = _fw(FW_TICK, b"\x0a")
    stripe = _card_profile(SWIPE_CARD).stripe_data
    assert stripe is not None
    swipe = _fw(FW_HARNESS, bytes([15]) + f"{stripe.encoded(1)}|{stripe.encoded(2)}".encode())
    status = _ecr(Message(MsgCode.STATUS))
    return {
        "status": status,
        "login_sign_in": login + sign_in + status,
        "chip_sale": login + sign_in + sale + card_in + pin + tick * 5 + card_out + status,
        "swipe_sale": login + sign_in + sale + swipe + pin + tick * 5,
        "declined_sale": login + sign_in + _fw(FW_OUTCOME, b"\x01") + sale + card_in + pin
        + tick * 5 + card_out,
        "totals_settle": login + sign_in + sale + card_in + pin + tick * 5 + card_out
        + _ecr(Message(MsgCode.TOTALS)) + _ecr(Message(MsgCode.LOGIN, {"op": "00",
                                                                        "pw": "123456"}))
        + _ecr(Message(MsgCode.SETTLE)) + tick * 5,
        "bad_request_and_paper": _fw(FW_ECR, b"??garbage") + _fw(FW_HARNESS, b"\x05") + status
        + _fw(FW_HARNESS, b"\x06"),
    }


def card_emv() -> Seeds:
    out: Seeds = {}
    for i, name in enumerate(CARD_PROFILES):
        dialogue = card_dialogue(name)
        body = b"".join(record(CARD_APDU, cmd) for cmd, _ in dialogue)
        out[name.removesuffix(".yaml")] = bytes([i]) + body
    out["power_cycle"] = bytes([0]) + record(CARD_POWER_OFF, b"") + record(
        CARD_APDU, SELECT_PSE.to_bytes()) + record(CARD_POWER_ON, b"") + record(
        CARD_APDU, SELECT_PSE.to_bytes())
    return out


def acquirer_engine() -> Seeds:
    pik, mak = _session_keys()
    sign_in = record(0, _framed(iso8583.encode_message(_sign_in_doc())))
    sale = record(HOST_FIX_MAC, _framed(iso8583.encode_with_mac(_sale_doc(pik), mak)))
    payloads = _iso_payloads()
    return {
        "sign_in": sign_in,
        "sign_in_sale": sign_in + sale,
        "sign_in_sale_reversal": sign_in + sale + record(
            HOST_FIX_MAC, _framed(payloads["reversal_0400"])),
        "sign_in_settle": sign_in + record(HOST_FIX_MAC, _framed(payloads["settlement_0500"])),
        "sale_without_sign_in": sale,
    }


def bench_yaml() -> Seeds:
    minimal = (b"bench:\n  name: fuzz\n  kind: virtual\nterminal:\n  port: /dev/ttyUSB0\n"
               b"  terminal_id: \"10000001\"\n  merchant_id: \"898100012340001\"\n")
    return {"example_lab": (FIXTURES / "benches" / "example-lab.yaml").read_bytes(),
            "minimal": minimal}


GENERATORS: dict[str, Callable[[], Seeds]] = {
    "iso8583_message": iso8583_message, "iso8583_framing": iso8583_framing,
    "tlv": tlv_seeds, "tlv_dol": tlv_dol, "apdu": apdu, "atr": atr, "magstripe": magstripe,
    "ecr_frames": ecr_frames, "ecr_message": ecr_message, "concert_stream": concert_stream,
    "concert_message": concert_message, "probe": probe_seeds, "qr_answer": qr_answer,
    "jsonlines": jsonlines_seeds, "faults": faults, "scpi_psu": scpi_psu,
    "scpi_relay": scpi_relay, "terminal_firmware": terminal_firmware, "card_emv": card_emv,
    "acquirer_engine": acquirer_engine, "qr_engine": qr_engine, "bench_yaml": bench_yaml,
}


def write(target: str, seeds: Seeds, corpus: Path = CORPUS) -> list[Path]:
    """Replace *target*'s seed files (not its regressions/) with *seeds*, named
    ``<name>-<sha1 prefix>``."""
    folder = corpus / target
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        if old.is_file():
            old.unlink()
    written = []
    for name, data in sorted(seeds.items()):
        path = folder / f"{name}-{hashlib.sha1(data).hexdigest()[:10]}"
        path.write_bytes(data)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz.seeds", description=__doc__)
    parser.add_argument("--target", action="append", choices=sorted(GENERATORS),
                        help="only this target (repeatable)")
    args = parser.parse_args(argv)
    missing = set(TARGETS) - set(GENERATORS)
    if missing:
        print(f"no seed generator for {sorted(missing)}", file=sys.stderr)
        return 2
    for name in args.target or sorted(GENERATORS):
        seeds = GENERATORS[name]()
        for data in seeds.values():
            TARGETS[name].check(data)  # a seed is a valid input: no finding on it
        print(f"{name}: {len(write(name, seeds))} seeds")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
