"""The rig's in-line network fault injector: the driver, the bridge process it starts, and the
typed records they exchange.

Names are loaded lazily so that ``python -m rigs.network.bridge`` (the bridge process) does not
import its own module twice through this package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from protocols.faults import Direction
    from rigs.interfaces import NetworkInjector
    from rigs.network.bridge import (
        DROP,
        FORWARD,
        RULE_KINDS,
        BridgeState,
        Rule,
        RuleFactory,
        Verdict,
    )
    from rigs.network.injector import ScapyBridgeInjector
    from rigs.network.records import (
        Action,
        CapturePaths,
        DirectionStats,
        InjectorStats,
        RuleRecord,
        TcpSegment,
        Trip,
    )

_EXPORTS = {
    "DROP": "rigs.network.bridge",
    "FORWARD": "rigs.network.bridge",
    "RULE_KINDS": "rigs.network.bridge",
    "BridgeState": "rigs.network.bridge",
    "Rule": "rigs.network.bridge",
    "RuleFactory": "rigs.network.bridge",
    "Verdict": "rigs.network.bridge",
    "Direction": "protocols.faults",
    "NetworkInjector": "rigs.interfaces",
    "ScapyBridgeInjector": "rigs.network.injector",
    "Action": "rigs.network.records",
    "CapturePaths": "rigs.network.records",
    "DirectionStats": "rigs.network.records",
    "InjectorStats": "rigs.network.records",
    "RuleRecord": "rigs.network.records",
    "TcpSegment": "rigs.network.records",
    "Trip": "rigs.network.records",
}

__all__ = [
    "DROP",
    "FORWARD",
    "RULE_KINDS",
    "Action",
    "BridgeState",
    "CapturePaths",
    "Direction",
    "DirectionStats",
    "InjectorStats",
    "NetworkInjector",
    "Rule",
    "RuleFactory",
    "RuleRecord",
    "ScapyBridgeInjector",
    "TcpSegment",
    "Trip",
    "Verdict",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'rigs.network' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
