"""The rig's in-line network fault injector: the driver, and the bridge process it starts.

Names are loaded lazily so that ``python -m rigs.network.bridge`` (the bridge process) does not
import its own module twice through this package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rigs.network.bridge import (
        DROP,
        FORWARD,
        Action,
        BridgeState,
        Direction,
        Mode,
        Rule,
        Verdict,
    )
    from rigs.network.injector import NetworkInjector, ScapyBridgeInjector

_EXPORTS = {
    "DROP": "rigs.network.bridge",
    "FORWARD": "rigs.network.bridge",
    "Action": "rigs.network.bridge",
    "BridgeState": "rigs.network.bridge",
    "Direction": "rigs.network.bridge",
    "Mode": "rigs.network.bridge",
    "Rule": "rigs.network.bridge",
    "Verdict": "rigs.network.bridge",
    "NetworkInjector": "rigs.network.injector",
    "ScapyBridgeInjector": "rigs.network.injector",
}

__all__ = [
    "DROP",
    "FORWARD",
    "Action",
    "BridgeState",
    "Direction",
    "Mode",
    "NetworkInjector",
    "Rule",
    "ScapyBridgeInjector",
    "Verdict",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'rigs.network' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
