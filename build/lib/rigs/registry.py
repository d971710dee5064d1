"""Which implementation drives each part of a bench: chosen by the bench YAML, not by the façade.

Each section of a bench file may name its implementation with ``driver:`` (a section that
holds several parts names each with its own key: ``qr.ledger_driver``, ``qr.wallet_driver``,
``qr.control_driver``); without it the part's default is used.  A name is either one of the
rig's own (:data:`BUILTIN`) or a lab's own factory as ``package.module:function``.  A factory
takes the section and a :class:`BuildContext` and returns an object that satisfies the
section's interface (:mod:`rigs.interfaces`); a lab's object is checked for every method of
that interface before the bench opens anything, and what is missing is named with the YAML
key.

The rig's own factories import their driver modules lazily, so a bench without a network
section never imports scapy.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from rigs.config import BenchConfig
from rigs.errors import ConfigError


@dataclass(frozen=True)
class BuildContext:
    """What a factory may need besides its own section."""

    config: BenchConfig
    workdir: Path


Factory = Callable[[Any, BuildContext], Any]


# -- the rig's own factories ---------------------------------------------------------------------

def serial_terminal(section: Any, ctx: BuildContext) -> Any:
    from rigs.terminal import SerialTerminalLink
    from rigs.transport import serial_transport

    return SerialTerminalLink(
        "terminal", serial_transport(section.port, baudrate=section.baudrate,
                                     where="terminal.port"),
        boot_timeout=section.boot_timeout)


def concert_terminal(section: Any, ctx: BuildContext) -> Any:
    """The terminal's Concert cash-register port (docs/ecr-concert.md); with ``port`` also set
    (the virtual bench keeps its test port), what Concert cannot do goes through it."""
    from rigs.concert import ConcertTerminalLink
    from rigs.terminal import SerialTerminalLink
    from rigs.transport import serial_transport

    test_port = None
    if section.port is not None:
        test_port = SerialTerminalLink(
            "terminal-test-port", serial_transport(section.port, baudrate=section.baudrate,
                                                   where="terminal.port"),
            boot_timeout=section.boot_timeout)
    return ConcertTerminalLink(
        "terminal", serial_transport(section.concert_port, baudrate=section.concert_baudrate,
                                     where="terminal.concert_port"),
        pos_number=section.concert_pos, test_port=test_port)


def pcsc_cards(section: Any, ctx: BuildContext) -> Any:
    from rigs.cards import PcscCardBank, SocketCardEmulator
    from rigs.transport import serial_transport

    emulator = None
    if section.emulator is not None:
        emulator = SocketCardEmulator("card-emulator", section.emulator.control,
                                      section.emulator.reader,
                                      load_timeout=section.emulator.load_timeout)
    return PcscCardBank("cards", serial_transport(section.probe, where="cards.probe"),
                        {name: card.reader for name, card in section.bank.items()
                         if card.reader is not None},
                        section.pcsc_socket, emulator=emulator,
                        emulated={name: card.emulator for name, card in section.bank.items()
                                  if card.emulator is not None})


def scpi_power(section: Any, ctx: BuildContext) -> Any:
    from rigs.power import ScpiPowerSupply
    from rigs.scpi import VisaScpiTransport

    return ScpiPowerSupply("psu", VisaScpiTransport(section.resource, where="power.resource"),
                           max_volts=section.limits.max_volts, max_amps=section.limits.max_amps,
                           dialect=section.dialect, channel=section.channel,
                           nominal_volts=ctx.config.terminal.nominal_volts)


def scpi_switch(section: Any, ctx: BuildContext) -> Any:
    from rigs.scpi import VisaScpiTransport
    from rigs.switch import ScpiRelayUnit

    return ScpiRelayUnit("relay", VisaScpiTransport(section.resource, where="switch.resource"))


def scapy_network(section: Any, ctx: BuildContext) -> Any:
    from rigs.network import ScapyBridgeInjector

    return ScapyBridgeInjector("network", section.terminal_if, section.host_if, section.netns,
                               ctx.workdir / "network")


def sqlite_ledger(section: Any, ctx: BuildContext) -> Any:
    from rigs.host import SqliteAcquirerLedger

    return SqliteAcquirerLedger("ledger", Path(section.ledger))


def socket_host_control(section: Any, ctx: BuildContext) -> Any:
    from rigs.hostctl import SocketAcquirerControl

    return SocketAcquirerControl("hostctl", Path(section.control))


def sqlite_qr_ledger(section: Any, ctx: BuildContext) -> Any:
    from rigs.qr import SqliteQrPlatformLedger

    return SqliteQrPlatformLedger("qr-ledger", Path(section.ledger))


def socket_qr_wallet(section: Any, ctx: BuildContext) -> Any:
    from rigs.qr import SocketQrWallet

    return SocketQrWallet("qr-wallet", Path(section.control))


def socket_qr_control(section: Any, ctx: BuildContext) -> Any:
    from rigs.qr import SocketQrPlatformControl

    return SocketQrPlatformControl("qr-control", Path(section.control))


@dataclass(frozen=True)
class Slot:
    """One replaceable part of the bench: its YAML section, interface name and default, and
    the key of the section that names its implementation (``driver`` unless a section holds
    several parts)."""

    section: str
    interface: str
    default: str
    key: str = "driver"


SLOTS: Mapping[str, Slot] = MappingProxyType({
    "terminal": Slot("terminal", "TerminalLink", "serial"),
    "cards": Slot("cards", "CardBank", "pcsc"),
    "power": Slot("power", "PowerSupply", "scpi"),
    "switch": Slot("switch", "SwitchUnit", "scpi"),
    "network": Slot("network", "NetworkInjector", "scapy-bridge"),
    "ledger": Slot("host", "AcquirerLedger", "sqlite"),
    "control": Slot("host", "AcquirerControl", "socket"),
    "qr_ledger": Slot("qr", "QrPlatformLedger", "sqlite", key="ledger_driver"),
    "qr_wallet": Slot("qr", "QrWallet", "socket", key="wallet_driver"),
    "qr_control": Slot("qr", "QrPlatformControl", "socket", key="control_driver"),
})

BUILTIN: Mapping[tuple[str, str], Factory] = MappingProxyType({
    ("terminal", "serial"): serial_terminal,
    ("terminal", "concert"): concert_terminal,
    ("cards", "pcsc"): pcsc_cards,
    ("power", "scpi"): scpi_power,
    ("switch", "scpi"): scpi_switch,
    ("network", "scapy-bridge"): scapy_network,
    ("ledger", "sqlite"): sqlite_ledger,
    ("control", "socket"): socket_host_control,
    ("qr_ledger", "sqlite"): sqlite_qr_ledger,
    ("qr_wallet", "socket"): socket_qr_wallet,
    ("qr_control", "socket"): socket_qr_control,
})


def _load_factory(slot: str, name: str, key: str) -> Factory:
    builtin = BUILTIN.get((slot, name))
    if builtin is not None:
        return builtin
    mine = sorted(n for s, n in BUILTIN if s == slot)
    module_name, sep, attr = name.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"{key}: {name!r} is not a known driver; expected one of {mine} or a "
                          f"factory of your own as 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{key}: cannot import {module_name!r} for driver {name!r}: "
                          f"{exc}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ConfigError(f"{key}: {module_name} has no callable {attr!r} (driver {name!r})")
    return factory  # type: ignore[no-any-return]


def check_conforms(obj: object, interface: type, key: str) -> None:
    """Every method and attribute *interface* declares exists on *obj*, or ConfigError naming
    *key* and what is missing (a static check cannot see a lab's own driver).  Looked up
    statically: a property is not read, so nothing is asked of the instrument."""
    wanted: list[str] = []
    for klass in interface.__mro__:
        if klass is object or klass.__name__ in ("Protocol", "Generic"):
            continue
        wanted += [n for n in vars(klass) if not n.startswith("_")]
        wanted += [n for n in getattr(klass, "__annotations__", {}) if not n.startswith("_")]
    absent = object()
    missing = sorted({n for n in wanted if inspect.getattr_static(obj, n, absent) is absent})
    if missing:
        raise ConfigError(f"{key}: the driver built {type(obj).__name__}, which lacks "
                          f"{', '.join(missing)} of the {interface.__name__} interface")


def build(slot_name: str, section: Any, ctx: BuildContext) -> Any:
    """Build the implementation the bench file names for *slot_name* from *section*."""
    from rigs import interfaces

    slot = SLOTS[slot_name]
    name = getattr(section, slot.key, None) or slot.default
    key = f"{slot.section}.{slot.key}"
    factory = _load_factory(slot_name, name, key)
    try:
        obj = factory(section, ctx)
    except ConfigError:
        raise
    except TypeError as exc:
        where = inspect.getsourcefile(factory) or "?"
        raise ConfigError(f"{key}: driver {name!r} ({where}) could not be built from the "
                          f"'{slot.section}' section: {exc}") from exc
    check_conforms(obj, getattr(interfaces, slot.interface), key)
    return obj
