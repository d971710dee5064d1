"""The one exception hierarchy of the project.

Everything the rig, the virtual bench or the shared protocol code raises on purpose derives
from :class:`RigError`.  Messages name the object, the operation, the state, and expected
versus actual (bytes as hex), so a failed scenario says what went wrong without a debugger.
"""

from __future__ import annotations


def hexdump(data: bytes, limit: int = 64) -> str:
    """Render wire bytes for an error message: ``'02 41 03 (3 bytes)'``, truncated at *limit*."""
    shown = data[:limit].hex(" ")
    more = f" … (+{len(data) - limit} more)" if len(data) > limit else ""
    return f"{shown}{more} ({len(data)} bytes)"


class RigError(Exception):
    """Root of every error raised on purpose by rigs/, sim/ and protocols/."""


class ConfigError(RigError):
    """A bench YAML, card profile or host rule file is wrong; the message names the key."""


class ProtocolError(RigError):
    """Bytes on a wire do not follow the protocol."""


class FramingError(ProtocolError):
    """A frame's envelope is wrong (STX/ETX, LRC, length header, TPDU)."""


class DecodeError(ProtocolError):
    """A frame's content is wrong (field, tag, byte position named in the message)."""


class TransportError(RigError):
    """A transport (serial port, socket, VISA session, PC/SC reader) failed or is not open."""


class NoResponse(RigError, TimeoutError):
    """A bounded wait expired.  The message names what was awaited and the bound."""


class DeviceStateError(RigError):
    """An operation needs a state the device (or driver) is not in."""


class LimitError(RigError):
    """A setpoint would exceed a safety limit from the bench YAML."""


class SimError(RigError):
    """Raised by the virtual bench (sim/) about itself, not about the device it simulates."""
