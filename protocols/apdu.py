"""ISO 7816-4 command and response APDUs (short length, cases 1-4) and status words."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from protocols.errors import DecodeError, ProtocolError, hexdump

# Status words (ISO 7816-4, EMV Book 3 / Book 1).
SW_OK = 0x9000
SW_SELECTED_FILE_INVALIDATED = 0x6283   # EMV: SELECT of a blocked application (FCI returned)
SW_VERIFY_FAILED = 0x63C0               # | tries left (0..15): VERIFY with a wrong PIN
SW_WRONG_LENGTH = 0x6700
SW_SECURITY_NOT_SATISFIED = 0x6982
SW_AUTH_METHOD_BLOCKED = 0x6983
SW_CONDITIONS_NOT_SATISFIED = 0x6985
SW_WRONG_DATA = 0x6A80
SW_FUNC_NOT_SUPPORTED = 0x6A81
SW_FILE_NOT_FOUND = 0x6A82
SW_RECORD_NOT_FOUND = 0x6A83
SW_INCORRECT_P1P2 = 0x6A86
SW_REF_DATA_NOT_FOUND = 0x6A88
SW_WRONG_P1P2 = 0x6B00
SW_WRONG_LE = 0x6C00                    # | the exact length available (00: 256), T=0
SW_INS_NOT_SUPPORTED = 0x6D00
SW_CLA_NOT_SUPPORTED = 0x6E00
SW_UNKNOWN = 0x6F00

SW_NAMES: dict[int, str] = {
    SW_OK: "success",
    SW_SELECTED_FILE_INVALIDATED: "selected file invalidated (application blocked)",
    SW_WRONG_LENGTH: "wrong length",
    SW_SECURITY_NOT_SATISFIED: "security status not satisfied",
    SW_AUTH_METHOD_BLOCKED: "authentication method blocked",
    SW_CONDITIONS_NOT_SATISFIED: "conditions of use not satisfied",
    SW_WRONG_DATA: "incorrect data",
    SW_FUNC_NOT_SUPPORTED: "function not supported (card blocked)",
    SW_FILE_NOT_FOUND: "file or application not found",
    SW_RECORD_NOT_FOUND: "record not found",
    SW_INCORRECT_P1P2: "incorrect P1 P2",
    SW_REF_DATA_NOT_FOUND: "referenced data not found",
    SW_WRONG_P1P2: "wrong P1/P2",
    SW_INS_NOT_SUPPORTED: "instruction not supported",
    SW_CLA_NOT_SUPPORTED: "class not supported",
    SW_UNKNOWN: "no precise diagnosis",
}

# Instructions used by EMV.
INS_SELECT = 0xA4
INS_READ_RECORD = 0xB2
INS_GET_PROCESSING_OPTIONS = 0xA8
INS_GET_DATA = 0xCA
INS_GENERATE_AC = 0xAE
INS_GET_RESPONSE = 0xC0
INS_VERIFY = 0x20
INS_INTERNAL_AUTHENTICATE = 0x88

#: Instruction byte → name, for traces and the event stream (``GENERATE AC``).
INS_NAMES: Mapping[int, str] = MappingProxyType({
    INS_SELECT: "SELECT",
    INS_READ_RECORD: "READ RECORD",
    INS_GET_PROCESSING_OPTIONS: "GET PROCESSING OPTIONS",
    INS_GET_DATA: "GET DATA",
    INS_GENERATE_AC: "GENERATE AC",
    INS_GET_RESPONSE: "GET RESPONSE",
    INS_VERIFY: "VERIFY",
    INS_INTERNAL_AUTHENTICATE: "INTERNAL AUTHENTICATE",
    0x82: "EXTERNAL AUTHENTICATE",
    0x84: "GET CHALLENGE",
    0x24: "CHANGE REFERENCE DATA",
})


def ins_name(ins: int) -> str:
    """``0xAE`` → ``'GENERATE AC'``; an instruction EMV does not name → ``'INS 5A'``."""
    return INS_NAMES.get(ins, f"INS {ins:02X}")


def sw_text(sw: int) -> str:
    """``0x6A82`` → ``'6A82 (file or application not found)'``; 61xx/6Cxx explained too."""
    if sw >> 8 == 0x61:
        name = f"{sw & 0xFF} more bytes available"
    elif sw >> 8 == 0x6C:
        name = f"wrong Le, exact length {sw & 0xFF}"
    elif sw >> 8 == 0x63 and sw & 0xF0 == 0xC0:
        name = f"verify failed, {sw & 0x0F} tries left"
    else:
        name = SW_NAMES.get(sw, "unknown")
    return f"{sw:04X} ({name})"


class StatusWordError(ProtocolError):
    """A card answered (or a card simulator must answer) with a non-9000 status word."""

    def __init__(self, sw: int, detail: str = "") -> None:
        self.sw = sw
        self.detail = detail
        super().__init__(f"SW {sw_text(sw)}" + (f": {detail}" if detail else ""))


@dataclass(frozen=True)
class CommandApdu:
    """A short command APDU.  ``le`` is None when absent; ``le == 0`` on the wire means 256."""

    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes = b""
    le: int | None = None

    def __post_init__(self) -> None:
        for name in ("cla", "ins", "p1", "p2"):
            v = getattr(self, name)
            if not 0 <= v <= 0xFF:
                raise ValueError(f"CommandApdu: {name}={v} is not a byte")
        if len(self.data) > 255:
            raise ValueError(f"CommandApdu: data of {len(self.data)} bytes exceeds short Lc 255")
        if self.le is not None and not 0 <= self.le <= 256:
            raise ValueError(f"CommandApdu: le={self.le} not in 0..256")

    @property
    def case(self) -> int:
        if not self.data:
            return 1 if self.le is None else 2
        return 3 if self.le is None else 4

    def to_bytes(self) -> bytes:
        out = bytes([self.cla, self.ins, self.p1, self.p2])
        if self.data:
            out += bytes([len(self.data)]) + self.data
        if self.le is not None:
            out += bytes([self.le & 0xFF])
        return out

    @classmethod
    def from_bytes(cls, raw: bytes) -> CommandApdu:
        """Parse cases 1-4 (short).  Errors name the byte offset."""
        if len(raw) < 4:
            raise DecodeError(
                f"C-APDU: header needs 4 bytes, got {len(raw)}: {hexdump(raw)}")
        cla, ins, p1, p2 = raw[0], raw[1], raw[2], raw[3]
        body = raw[4:]
        if not body:
            return cls(cla, ins, p1, p2)
        if len(body) == 1:
            return cls(cla, ins, p1, p2, b"", body[0] or 256)
        lc = body[0]
        if lc == 0:
            raise DecodeError(
                f"C-APDU: Lc=00 at offset 4 (extended length not supported): {hexdump(raw)}")
        if len(body) == 1 + lc:
            return cls(cla, ins, p1, p2, bytes(body[1:]))
        if len(body) == 2 + lc:
            return cls(cla, ins, p1, p2, bytes(body[1:1 + lc]), body[-1] or 256)
        raise DecodeError(
            f"C-APDU: Lc={lc} at offset 4 but {len(body) - 1} bytes follow "
            f"(expected {lc} or {lc + 1}): {hexdump(raw)}")


@dataclass(frozen=True)
class ResponseApdu:
    data: bytes
    sw: int

    @property
    def sw1(self) -> int:
        return self.sw >> 8

    @property
    def sw2(self) -> int:
        return self.sw & 0xFF

    @property
    def ok(self) -> bool:
        return self.sw == SW_OK

    def to_bytes(self) -> bytes:
        return self.data + self.sw.to_bytes(2, "big")

    @classmethod
    def from_bytes(cls, raw: bytes) -> ResponseApdu:
        if len(raw) < 2:
            raise DecodeError(f"R-APDU: needs at least SW1 SW2, got {hexdump(raw)}")
        return cls(bytes(raw[:-2]), int.from_bytes(raw[-2:], "big"))

    def check(self, what: str = "") -> bytes:
        """Return data if SW is 9000, else raise :class:`StatusWordError`."""
        if self.sw != SW_OK:
            raise StatusWordError(self.sw, what)
        return self.data
