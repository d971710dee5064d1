"""The rig's QR drivers (rigs.qr) against a platform served on loopback: the wallet, the rules,
the ledger; the bench file's ``qr`` section, the registry builders, the capabilities and the
view the façade hands the steps.  No namespaces, no bench."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from protocols.qr import ErrorCode, OrderStatus, Wallet, wallet_of
from protocols.qrclient import HttpTransport, QrPlatformClient, QrRefused
from rigs import interfaces, registry
from rigs.capabilities import CAPABILITY_OF_TAG, REQUIREMENT, Capability, reason
from rigs.config import parse_bench
from rigs.driver import Driver
from rigs.errors import (
    CapabilityMissing,
    ConfigError,
    DeviceStateError,
    InstrumentError,
    TransportError,
)
from rigs.events import Source
from rigs.qr import (
    QrPlatformView,
    SocketQrPlatformControl,
    SocketQrWallet,
    SqliteQrPlatformLedger,
    WalletRefused,
)
from sim import netns
from sim.bench import TERMINAL_PROFILE, BenchPaths, bench_document, qr_section
from sim.qr.server import QrPlatformServer
from sim.terminal.profile import load_profile
from tests.fakes import FakeEventSink

from .conftest import KEY, MID, TID

D = TypeVar("D", bound=Driver)


def _opened(driver: D) -> Iterator[D]:
    """*driver* open (its events kept) for the test, closed after it."""
    driver.event_sink = FakeEventSink()
    driver.open()
    try:
        yield driver
    finally:
        driver.close()


@pytest.fixture
def client(platform: QrPlatformServer) -> QrPlatformClient:
    return QrPlatformClient(HttpTransport(*platform.address, timeout=2.0), terminal_id=TID,
                            merchant_id=MID, key=KEY)


@pytest.fixture
def wallet(platform: QrPlatformServer) -> Iterator[SocketQrWallet]:
    assert platform.control is not None
    yield from _opened(SocketQrWallet("qr-wallet", platform.control.path))


@pytest.fixture
def control(platform: QrPlatformServer) -> Iterator[SocketQrPlatformControl]:
    assert platform.control is not None
    yield from _opened(SocketQrPlatformControl("qr-control", platform.control.path))


@pytest.fixture
def ledger(platform: QrPlatformServer) -> Iterator[SqliteQrPlatformLedger]:
    path = platform.engine.ledger.path  # type: ignore[union-attr]
    yield from _opened(SqliteQrPlatformLedger("qr-ledger", path))


def test_the_wallet_pays_what_the_terminal_shows(client: QrPlatformClient,
                                                 wallet: SocketQrWallet,
                                                 ledger: SqliteQrPlatformLedger) -> None:
    mark = ledger.mark()
    order = client.create_order("W1", 1200, "coffee")
    paid = wallet.pay_order(str(order.code_url), wallet=Wallet.ALIPAY, buyer_id="dave")
    assert paid.status is OrderStatus.SUCCESS and paid.order_id == order.order_id
    assert client.query(out_trade_no="W1").status is OrderStatus.SUCCESS
    (booked,) = ledger.orders(mark)
    assert booked.status is OrderStatus.SUCCESS and booked.buyer_id == "dave"
    assert wallet.order(out_trade_no="W1") == booked
    with pytest.raises(WalletRefused, match="ORDER_PAID") as err:
        wallet.pay_order(str(order.code_url))
    assert err.value.code is ErrorCode.ORDER_PAID and err.value.order == booked
    events = wallet.event_sink.seen  # type: ignore[attr-defined]
    assert events[0][:3] == (Source.QR, "wallet", "paid")


def test_the_wallet_password(client: QrPlatformClient, wallet: SocketQrWallet) -> None:
    order = client.create_order("W2", 500)
    waiting = wallet.pay_order(str(order.code_url), password=True)
    assert waiting.status is OrderStatus.USERPAYING
    assert wallet.confirm().status is OrderStatus.SUCCESS
    code = wallet.new_payment_code(Wallet.WECHAT, password=True)
    assert wallet_of(code.auth_code) is Wallet.WECHAT and code.password
    assert code.auth_code not in repr(code)
    assert client.micropay("W3", 300, code.auth_code).status is OrderStatus.USERPAYING
    assert wallet.refuse(out_trade_no="W3").status is OrderStatus.PAYERROR
    with pytest.raises(WalletRefused) as err:
        wallet.confirm(out_trade_no="W3")
    assert err.value.code is ErrorCode.ORDER_CLOSED


def test_a_code_with_a_short_balance(client: QrPlatformClient, wallet: SocketQrWallet) -> None:
    code = wallet.new_payment_code("alipay", balance_minor=100)
    with pytest.raises(QrRefused) as err:
        client.micropay("W4", 101, code.auth_code)
    assert err.value.code is ErrorCode.NOT_ENOUGH
    assert err.value.order is not None and err.value.order.status is OrderStatus.PAYERROR


def test_an_unknown_wallet_is_named(wallet: SocketQrWallet) -> None:
    with pytest.raises(ConfigError, match=r"new_payment_code\(\): wallet 'paypal' is not one of "
                                          r"wechat, alipay, unionpay"):
        wallet.new_payment_code("paypal")
    with pytest.raises(ConfigError, match=r"pay_order\(\): wallet 'x'"):
        wallet.pay_order("qrsim://pay/00", wallet="x")


def test_wallet_nominal_is_no_open_code(wallet: SocketQrWallet) -> None:
    assert wallet.is_nominal()
    wallet.new_payment_code()
    assert not wallet.is_nominal()
    wallet.restore_nominal()
    assert wallet.is_nominal()
    wallet.new_payment_code()
    assert wallet.forget_codes() == 1


def test_rules_from_the_rig(client: QrPlatformClient,
                            control: SocketQrPlatformControl) -> None:
    rule_id = control.add_rule({"operation": "create"}, {"error": "TRADE_ERROR"}, times=1)
    with pytest.raises(QrRefused, match=f"TRADE_ERROR: rule #{rule_id} answers TRADE_ERROR"):
        client.create_order("R1", 1)
    assert client.create_order("R1", 1).status is OrderStatus.NOTPAY
    assert control.is_nominal()  # spent: not in force any more
    control.add_rule({}, {"delay_s": 0.1})
    assert not control.is_nominal()
    control.restore_nominal()
    assert control.is_nominal()
    kinds = [(e[1], e[2]) for e in control.event_sink.seen]  # type: ignore[attr-defined]
    assert kinds == [("rule", "armed"), ("rule", "armed"), ("rule", "cleared"),
                     ("rule", "cleared")]  # the spent one is removed too
    with pytest.raises(ConfigError, match="(?s)the platform refused the rule: .*answer.error"):
        control.add_rule({}, {"error": "SIGN_ERROR"})
    with pytest.raises(ConfigError, match="times=.*integer >= 1"):
        control.add_rule({}, {"drop": True}, times=0)


def test_drivers_say_what_they_need(platform: QrPlatformServer, short_dir: Path) -> None:
    missing = SocketQrWallet("qr-wallet", short_dir / "none.ctl")
    with pytest.raises(TransportError, match=r"none.ctl does not exist \(is the QR platform "
                                             r"running with --control"):
        missing.open()
    with pytest.raises(DeviceStateError, match=r"SocketQrWallet\(qr-wallet\): pay_order\(\) "
                                               r"needs an open session; state is CLOSED"):
        missing.pay_order("qrsim://pay/x")
    assert not missing.is_nominal()


def test_restore_reconnects_after_a_broken_connection(platform: QrPlatformServer,
                                                      wallet: SocketQrWallet) -> None:
    wallet._control.detach()  # the platform went away and came back
    wallet.restore_nominal()
    assert wallet.is_nominal()


def test_refusal_without_a_code_is_an_instrument_error(wallet: SocketQrWallet) -> None:
    with pytest.raises(InstrumentError, match="give 'order_id' or 'out_trade_no'") as err:
        wallet._request("order", {"op": "order"})
    assert not isinstance(err.value, WalletRefused)


# -- the bench file, the registry, the capabilities -------------------------------------------

QR = {"address": "198.18.0.20:8600", "ledger": "/tmp/qr.sqlite", "control": "/tmp/qr.ctl"}


def _bench(qr: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"bench": {"name": "b", "kind": "virtual"},
                           "terminal": {"port": "/dev/ttyUSB0"}, **extra}
    if qr is not None:
        doc["qr"] = qr
    return doc


def test_the_qr_section_is_validated() -> None:
    config = parse_bench(_bench(QR))
    assert config.qr is not None and config.qr.port == 8600
    assert config.qr.control == "/tmp/qr.ctl" and config.qr.ledger == "/tmp/qr.sqlite"
    assert parse_bench(_bench()).qr is None
    with pytest.raises(ConfigError, match=r"qr.address: '198.18.0.20' is not host:port"):
        parse_bench(_bench({"address": "198.18.0.20"}))
    with pytest.raises(ConfigError, match=r"qr.wallet: unknown key"):
        parse_bench(_bench({**QR, "wallet": "x"}))


def test_the_registry_builds_each_part(tmp_path: Path) -> None:
    config = parse_bench(_bench(QR))
    ctx = registry.BuildContext(config, tmp_path)
    assert config.qr is not None
    built = {slot: registry.build(slot, config.qr, ctx)
             for slot in ("qr_ledger", "qr_wallet", "qr_control")}
    assert isinstance(built["qr_ledger"], SqliteQrPlatformLedger)
    assert isinstance(built["qr_wallet"], SocketQrWallet)
    assert isinstance(built["qr_control"], SocketQrPlatformControl)
    assert built["qr_wallet"].path == Path("/tmp/qr.ctl")
    for slot, part in built.items():
        registry.check_conforms(part, getattr(interfaces, registry.SLOTS[slot].interface),
                                f"qr.{slot}")


class Hollow:
    """A lab's wallet that implements nothing."""


def hollow_wallet(section: Any, ctx: Any) -> Hollow:
    return Hollow()


def test_a_labs_own_wallet_is_checked_against_the_interface(tmp_path: Path) -> None:
    config = parse_bench(_bench({**QR, "wallet_driver": f"{__name__}:hollow_wallet"}))
    assert config.qr is not None
    ctx = registry.BuildContext(config, tmp_path)
    with pytest.raises(ConfigError, match=r"qr.wallet_driver: the driver built Hollow, which "
                                          r"lacks .*confirm.*new_payment_code.*pay_order"):
        registry.build("qr_wallet", config.qr, ctx)
    bad = parse_bench(_bench({**QR, "ledger_driver": "nope"}))
    assert bad.qr is not None
    with pytest.raises(ConfigError, match=r"qr.ledger_driver: 'nope' is not a known driver; "
                                          r"expected one of \['sqlite'\]"):
        registry.build("qr_ledger", bad.qr, ctx)


def test_capabilities_and_tags() -> None:
    assert CAPABILITY_OF_TAG["qr"] is Capability.QR
    assert CAPABILITY_OF_TAG["qr_ledger"] is Capability.QR_LEDGER
    assert "qr.control" in REQUIREMENT[Capability.QR]
    assert reason("@qr_ledger", Capability.QR_LEDGER).startswith("@qr_ledger needs qr.ledger")


def test_the_view_skips_what_the_bench_lacks() -> None:
    view = QrPlatformView("lab1", address=None)
    with pytest.raises(CapabilityMissing, match=r"bench lab1: the customer's wallet needs "
                                                r"qr.control in the bench file"):
        _ = view.wallet
    with pytest.raises(CapabilityMissing, match="needs qr.ledger"):
        _ = view.ledger
    with pytest.raises(CapabilityMissing, match="QR platform's answers needs qr.control"):
        _ = view.control
    with pytest.raises(CapabilityMissing, match="'qr' section"):
        _ = view.address
    assert view.instruments() == [] and view.evidence_text() is None
    view.begin_scenario()
    assert view.scenario_mark is None


def test_the_view_marks_the_scenario(client: QrPlatformClient, wallet: SocketQrWallet,
                                     ledger: SqliteQrPlatformLedger) -> None:
    client.create_order("V0", 1)
    view = QrPlatformView("virtual", address="127.0.0.1:8600", ledger=ledger, wallet=wallet)
    assert view.port == 8600 and view.instruments() == [ledger, wallet]
    view.begin_scenario()
    order = client.create_order("V1", 2)
    view.wallet.pay_order(str(order.code_url))
    assert [o.out_trade_no for o in view.orders()] == ["V1"]
    text = view.evidence_text()
    assert text is not None and "V1" in text and "V0" not in text


def test_the_virtual_bench_publishes_the_qr_section(tmp_path: Path) -> None:
    paths = BenchPaths(tmp_path)
    section = qr_section("198.18.0.20:8600", paths.qr_ledger, paths.qr_control)
    args: dict[str, Any] = dict(
        profile=load_profile(TERMINAL_PROFILE), ecr_path="/dev/pts/7", probe_path="/dev/pts/8",
        pcsc_socket=None, readers={"good": "Virtual PCD 00 00"}, psu_port=40001,
        relay_port=40002, topo=netns.Topology.default(), host_addr="198.18.0.20:8583",
        ledger=paths.ledger)
    assert "qr" not in bench_document(**args)  # unchanged unless given
    doc = bench_document(**args, qr=section)
    assert doc["qr"] == {"address": "198.18.0.20:8600", "ledger": str(paths.qr_ledger),
                         "control": str(paths.qr_control)}
    assert list(doc)[-1] == "qr" and paths.qr_control.is_absolute()
    config = parse_bench(doc)
    assert config.qr is not None and config.qr.ledger == str(paths.qr_ledger)
    lab_like = bench_document(**args, qr=section, without=("ledger",))
    assert lab_like["qr"] == {"address": "198.18.0.20:8600", "control": str(paths.qr_control)}
