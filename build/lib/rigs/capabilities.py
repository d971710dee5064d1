"""What a scenario needs of a bench, and how a bench says what it lacks.

A capability is a part of the bench a step relies on: the card bank, the supply, the relay wired
to the paper sensor, the in-line network injector, the view of what crossed the wire, the
acquirer's ledger (usually only the virtual bench has it), the QR payment platform's wallet and
ledger (``@qr``, ``@qr_ledger``), or real hardware.  Scenarios name
theirs by tag (``@card``, ``@ledger``, …); steps name theirs with :func:`needs`, so the plugin
can skip a scenario at setup, with the reason, when one of its steps needs something the bench
lacks — a scenario is never failed or errored mid-way for a part the bench does not have.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TypeVar


class Capability(enum.StrEnum):
    CARDS = "cards"
    POWER = "power"
    PAPER_SENSOR = "paper_sensor"
    NETWORK = "network"
    WIRE = "wire"
    LEDGER = "ledger"
    HOST_CONTROL = "host_control"
    QR = "qr"
    QR_LEDGER = "qr_ledger"
    LAB = "lab"


#: Scenario tag → the capability it declares.
CAPABILITY_OF_TAG: Mapping[str, Capability] = MappingProxyType({
    "card": Capability.CARDS,
    "power": Capability.POWER,
    "printer": Capability.PAPER_SENSOR,
    "network": Capability.NETWORK,
    "wire": Capability.WIRE,
    "ledger": Capability.LEDGER,
    "host_control": Capability.HOST_CONTROL,
    "qr": Capability.QR,
    "qr_ledger": Capability.QR_LEDGER,
    "hw_only": Capability.LAB,
})

#: What the bench file must have for each capability (the text of a skip reason).
REQUIREMENT: Mapping[Capability, str] = MappingProxyType({
    Capability.CARDS: "a 'cards' section in the bench file (card bank and slot probe)",
    Capability.POWER: "a 'power' section in the bench file (programmable supply)",
    Capability.PAPER_SENSOR: "switch.channels.paper_sensor in the bench file (a relay across "
                             "the printer's paper sensor)",
    Capability.NETWORK: "a 'network' section in the bench file (in-line network injector)",
    Capability.WIRE: "a 'network' section (in-line injector) and a 'host' section (acquirer "
                     "address) in the bench file, to see what crossed the wire",
    Capability.LEDGER: "host.ledger in the bench file (the acquirer host's ledger; usually only "
                       "the virtual bench has one)",
    Capability.HOST_CONTROL: "host.control in the bench file (the acquirer host simulator's "
                             "control socket, to set its answers; usually only the virtual "
                             "bench has one)",
    Capability.QR: "qr.control in the bench file (the QR payment platform simulator's control "
                   "socket, through which the rig plays the customer's wallet; usually only "
                   "the virtual bench has one)",
    Capability.QR_LEDGER: "qr.ledger in the bench file (the QR payment platform's ledger; "
                          "usually only the virtual bench has one)",
    Capability.LAB: "a lab bench (bench.kind: lab)",
})


def reason(who: str, capability: Capability) -> str:
    """The skip reason: ``@power needs a 'power' section in the bench file (…)``."""
    if capability is Capability.LAB:
        return f"{who} scenarios need a lab bench (bench.kind: lab)"
    return f"{who} needs {REQUIREMENT[capability]}"


F = TypeVar("F", bound=Callable[..., object])

_NEEDS_ATTR = "__posrig_needs__"


def needs(*capabilities: Capability) -> Callable[[F], F]:
    """Mark a step function with the capabilities it uses (put it above the step decorators)."""
    def mark(func: F) -> F:
        had: frozenset[Capability] = getattr(func, _NEEDS_ATTR, frozenset())
        setattr(func, _NEEDS_ATTR, had | frozenset(capabilities))
        return func
    return mark


def needs_of(func: object) -> frozenset[Capability]:
    """The capabilities a step function was marked with (empty if none)."""
    found: object = getattr(func, _NEEDS_ATTR, frozenset())
    return found if isinstance(found, frozenset) else frozenset()
