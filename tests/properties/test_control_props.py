"""Property tests of the simulators' control sockets (the acquirer's and the QR platform's
JSON-lines ops): any decoded request, of a known op with parameters of any JSON type or none,
gets one answer, ``ok`` or an error naming what is wrong; nothing escapes the handler (an
exception there would end the control session the rig drives the simulator through)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sim.host import control as host_control
from sim.host.engine import AcquirerEngine, load_accounts, load_terminals
from sim.host.ledger import MemoryLedger
from sim.qr import control as qr_control
from sim.qr.config import load_terminals as load_qr_terminals
from sim.qr.engine import QrPlatformEngine
from sim.qr.ledger import MemoryQrLedger
from sim.qr.rules import RuleBook
from tests.host.conftest import PAN, TERMINALS_YAML, card_yaml, counting_keys
from tests.qr.conftest import T0, counting_random
from tests.qr.conftest import TERMINALS_YAML as QR_TERMINALS_YAML

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12)
KEYS = ["match", "answer", "times", "terminal_id", "batch_no", "mti", "proc_code", "wallet",
        "code", "code_url", "order_id", "out_trade_no", "buyer_id", "password", "seq",
        "amount", "delay_s", "rule", "kind"]


def requests(ops: list[str]) -> st.SearchStrategy[object]:
    known = st.fixed_dictionaries({"op": st.sampled_from(ops)},
                                  optional={k: JSON for k in KEYS})
    return st.one_of(known, JSON, st.dictionaries(st.text(max_size=6), JSON, max_size=3))


def _is_answer(answer: Any) -> None:
    assert isinstance(answer, dict) and isinstance(answer.get("ok"), bool), answer
    if not answer["ok"]:
        assert isinstance(answer.get("error"), str) and answer["error"], answer


@pytest.fixture(scope="module")
def host_config(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    root: Path = tmp_path_factory.mktemp("host")
    (root / "terminals.yaml").write_text(TERMINALS_YAML)
    (root / "cards").mkdir()
    (root / "cards/good.yaml").write_text(card_yaml(PAN))
    return dict(load_terminals(root / "terminals.yaml")), load_accounts(root / "cards")


@pytest.fixture(scope="module")
def qr_terminals(tmp_path_factory: pytest.TempPathFactory) -> Any:
    path = tmp_path_factory.mktemp("qr") / "terminals.yaml"
    path.write_text(QR_TERMINALS_YAML)
    return load_qr_terminals(path)


@given(request=requests(sorted(host_control.CONTROL_OPS)))
def test_the_acquirers_control_answers_every_request(host_config: tuple[Any, Any],
                                                     request: object) -> None:
    terminals, accounts = host_config
    engine = AcquirerEngine(terminals, copy.deepcopy(accounts), ledger=MemoryLedger(),
                            key_source=counting_keys(), pan_salt=b"salt")
    _is_answer(host_control.handle_control(engine, request))


@given(request=requests(sorted(qr_control.CONTROL_OPS)))
def test_the_qr_platforms_control_answers_every_request(qr_terminals: Any,
                                                        request: object) -> None:
    engine = QrPlatformEngine(qr_terminals, ledger=MemoryQrLedger(), rules=RuleBook(),
                              order_ttl_s=120.0, user_paying_timeout_s=60.0, code_ttl_s=60.0,
                              random=counting_random())
    _is_answer(qr_control.handle_control(engine, request, T0))
