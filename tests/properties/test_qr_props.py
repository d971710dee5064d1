"""Property tests of the QR platform: any body on any path, signed or not, is answered with
the platform's JSON (an error for a refusal), and a refusal changes no order, payment or
code; the body decoder refuses with DecodeError only."""

from __future__ import annotations

import functools
import json
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from protocols.errors import DecodeError
from protocols.qr import OPERATIONS, PATHS, Operation, decode_body, encode_body, signed_body
from sim.qr.config import QrTerminal, load_terminals
from sim.qr.engine import QrPlatformEngine
from sim.qr.ledger import MemoryQrLedger
from sim.qr.rules import RuleBook
from tests.qr.conftest import KEY, MID, T0, TERMINALS_YAML, TID, counting_random


@functools.cache
def _terminals() -> dict[str, QrTerminal]:
    path = Path(tempfile.mkdtemp(prefix="qrprops")) / "terminals.yaml"
    path.write_text(TERMINALS_YAML)
    return load_terminals(path)


def _engine() -> QrPlatformEngine:
    return QrPlatformEngine(_terminals(), ledger=MemoryQrLedger(), rules=RuleBook(),
                            order_ttl_s=120.0, user_paying_timeout_s=60.0, code_ttl_s=60.0,
                            random=counting_random())


SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(10**30), 10**30),
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=40),
                    st.sampled_from(["T1", "1" * 40, "\ud800", "", "CNY", "0" * 18]))
JSON = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=10)
FIELDS = ["out_trade_no", "order_id", "amount", "currency", "description", "auth_code",
          "out_refund_no", "reason"]


def _signable(value: object) -> bool:
    """What a signature can cover: no float, no lone surrogate."""
    if isinstance(value, float):
        return False
    if isinstance(value, str):
        return not any("\ud800" <= ch <= "\udfff" for ch in value)
    if isinstance(value, dict):
        return all(_signable(k) and _signable(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_signable(v) for v in value)
    return True


@st.composite
def signed_requests(draw: st.DrawFn) -> tuple[str, bytes]:
    """A request signed with the terminal's key, its fields any JSON values."""
    op = draw(st.sampled_from(Operation))
    fields = draw(st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(max_size=6)),
                                  st.one_of(SCALARS, JSON), max_size=5))
    fields = {k: v for k, v in fields.items() if _signable([k, v])}
    body = {"terminal_id": TID, "merchant_id": MID, "timestamp": int(T0),
            "nonce": draw(st.from_regex(r"\A[A-Za-z0-9]{8,32}\Z")), **fields}
    return OPERATIONS[op].path, encode_body(signed_body(body, KEY))


RAW = st.one_of(
    st.binary(max_size=200).map(lambda b: (draw_path(b), b)),
    JSON.map(lambda v: json.dumps(v).encode()).map(lambda b: ("/v1/create", b)),
    st.builds(lambda extra, sign: ("/v1/micropay", json.dumps(
        {"terminal_id": TID, "merchant_id": MID, "nonce": "abcdefgh", "timestamp": 1,
         "sign": sign, **extra}).encode()),
        st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=4), st.text(max_size=64)),
    signed_requests(),
)


def draw_path(b: bytes) -> str:
    paths = sorted(PATHS)
    return paths[b[0] % len(paths)] if b else "/" + b.hex()


def _state(engine: QrPlatformEngine) -> Any:
    return ({k: o.view() for k, o in engine.orders.items()}, dict(engine.codes))


@given(st.lists(RAW, min_size=1, max_size=4))
def test_any_request_gets_the_platforms_answer(requests: list[tuple[str, bytes]]) -> None:
    engine = _engine()
    for path, raw in requests:
        before = _state(engine)
        answer = engine.answer(path, raw, T0)
        body = json.loads(answer.body)
        assert isinstance(body, dict) and isinstance(body.get("ok"), bool)
        if not body["ok"]:
            assert isinstance(body.get("error"), str)  # business refusals are HTTP 200
            assert isinstance(body.get("message"), str) and len(body["message"]) < 1000
            assert _state(engine) == before, body


@given(st.one_of(st.binary(max_size=200), JSON.map(lambda v: json.dumps(v).encode()),
                 st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n)))
def test_body_decoder_refuses_with_decode_error(raw: bytes) -> None:
    try:
        body = decode_body(raw, "create request")
    except DecodeError as err:
        assert str(err).startswith("create request")
    else:
        assert isinstance(body, dict)
        json.dumps(body, ensure_ascii=False).encode("utf-8")
