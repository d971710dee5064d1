"""The rig's view of the one exception hierarchy (defined in :mod:`protocols.errors`)."""

from __future__ import annotations

from protocols.errors import (
    ConfigError,
    DecodeError,
    DeviceStateError,
    FramingError,
    LimitError,
    NoResponse,
    ProtocolError,
    RigError,
    TransportError,
    hexdump,
)


class InstrumentError(RigError):
    """An instrument reported an error itself (SCPI error queue, PC/SC status, NAK after retries)."""


class BenchNotNominal(RigError):
    """After a scenario the bench could not be returned to nominal; later scenarios would lie."""


class RampError(InstrumentError):
    """A supply ramp stopped on an error (its cause); raised by ``stop_ramp`` / ``wait_ramp``."""


class TriggerError(RigError):
    """A fault armed on a trigger could not be fired (its cause is in the message)."""


class CapabilityMissing(RigError):
    """The bench has no instrument for what a scenario needs (the scenario is skipped, not failed)."""


__all__ = [
    "BenchNotNominal",
    "CapabilityMissing",
    "ConfigError",
    "DecodeError",
    "DeviceStateError",
    "FramingError",
    "InstrumentError",
    "LimitError",
    "NoResponse",
    "ProtocolError",
    "RampError",
    "RigError",
    "TransportError",
    "TriggerError",
    "hexdump",
]
