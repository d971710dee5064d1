"""SCPI numbers: the one grammar of IEEE 488.2 decimal numeric data (NR1 ``5``, NR2 ``7.40``,
NR3 ``+7.40000000E+00``), shared by the simulated instruments (the program data they are sent,
:mod:`sim.scpi`) and the rig's drivers (the response data they read, :mod:`rigs.scpi`).

Python's ``float()`` and ``int()`` are not that grammar: they take ``1_0``, ``nan``, ``inf``,
``infinity``, fullwidth and other scripts' digits and surrounding whitespace, and ``int()``
refuses more than 4300 digits with a ValueError.  :func:`split_number` reads exactly

    number   ::= mantissa [ ("E" | "e") exponent ]
    mantissa ::= [ "+" | "-" ] ( digits [ "." [ digits ] ] | "." digits )
    exponent ::= [ "+" | "-" ] digits            digits ::= one or more of ASCII 0-9

and returns what follows it (a unit suffix such as ``mV``, for the caller to judge).  Every
refusal is a :class:`NumberError`: a :class:`~protocols.errors.DecodeError` that names the
text and the byte position, and carries the SCPI-99 error (code and text) an instrument puts
in its error queue for it.
"""

from __future__ import annotations

import re

from protocols.digits import ascii_digits
from protocols.errors import DecodeError

#: IEEE 488.2 7.7.2.4.1: an instrument may refuse a mantissa of more than 255 digits (leading
#: zeros not counted) and an exponent outside -32000..32000.
MAX_MANTISSA_DIGITS = 255
MAX_EXPONENT = 32000

_MANTISSA_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
_EXPONENT_RE = re.compile(r"[eE]([+-]?)([0-9]+)")
_SUFFIX_RE = re.compile(r"[ \t]*([A-Za-z]*)[ \t]*")


class NumberError(DecodeError):
    """A text that is not an IEEE 488.2 decimal number; ``code`` and ``scpi_text`` are the
    SCPI-99 error an instrument reports for it (``-121, "Invalid character in number"``)."""

    def __init__(self, code: int, scpi_text: str, message: str, position: int) -> None:
        self.code = code
        self.scpi_text = scpi_text
        self.position = position
        super().__init__(message)


def _shown(text: str) -> str:
    return repr(text[:40] + ("…" if len(text) > 40 else ""))


def split_number(text: str, where: str) -> tuple[float, str]:
    """``'7.4'`` → ``(7.4, '')``; ``'500 mV'`` → ``(500.0, 'mV')``.  *where* names the field in
    messages (``'VOLT'``, ``"answer to 'MEAS:VOLT?'"``).  The value may be ±inf when the
    exponent takes it beyond a float (the caller's range check refuses it); never NaN."""
    m = _MANTISSA_RE.match(text)
    if m is None:
        if not text or not (text[0] in "+-." or ascii_digits(text[0])):
            raise NumberError(-104, "Data type error",
                              f"{where}: {_shown(text)} is not a number (byte 0 is "
                              f"{text[:1]!r}; expected a digit, a sign or '.')", 0)
        raise NumberError(-121, "Invalid character in number",
                          f"{where}: {_shown(text)}: no digit in the mantissa at byte "
                          f"{len(text[:1])}", len(text[:1]))
    mantissa = m.group(0)
    digits = mantissa.lstrip("+-").replace(".", "").lstrip("0")
    if len(digits) > MAX_MANTISSA_DIGITS:
        raise NumberError(-124, "Too many digits",
                          f"{where}: {_shown(text)}: mantissa of {len(digits)} digits, at most "
                          f"{MAX_MANTISSA_DIGITS}", 0)
    pos = m.end()
    exponent = 0
    if pos < len(text) and text[pos] in "eE":
        e = _EXPONENT_RE.match(text, pos)
        if e is None:
            raise NumberError(-121, "Invalid character in number",
                              f"{where}: {_shown(text)}: exponent at byte {pos} needs digits "
                              f"after {text[pos:pos + 2]!r}", pos)
        magnitude = e.group(2).lstrip("0")
        if len(magnitude) > len(str(MAX_EXPONENT)) or int(magnitude or "0") > MAX_EXPONENT:
            raise NumberError(-123, "Exponent too large",
                              f"{where}: {_shown(text)}: exponent at byte {pos} outside "
                              f"-{MAX_EXPONENT}..{MAX_EXPONENT}", pos)
        exponent = int(e.group(1) + (magnitude or "0"))
        pos = e.end()
    s = _SUFFIX_RE.match(text, pos)
    assert s is not None  # every part of the pattern may be empty
    if s.end() != len(text):
        bad = s.end()
        raise NumberError(-121, "Invalid character in number",
                          f"{where}: {_shown(text)}: byte {bad} is {text[bad]!r}, not part of a "
                          f"number", bad)
    return float(f"{mantissa}e{exponent}"), s.group(1)


def parse_number(text: str, where: str) -> float:
    """A finite response number (NR1/NR2/NR3, nothing after it but blanks): what a driver reads
    from ``MEAS:VOLT?``.  A :class:`NumberError` names *where* and the byte position."""
    value, suffix = split_number(text.strip(" \t\r\n"), where)
    if suffix:
        raise NumberError(-138, "Suffix not allowed",
                          f"{where}: {_shown(text)}: unit {suffix!r} after the number", 0)
    if value in (float("inf"), float("-inf")):
        raise NumberError(-123, "Exponent too large",
                          f"{where}: {_shown(text)} is beyond a float", 0)
    return value


__all__ = ["MAX_EXPONENT", "MAX_MANTISSA_DIGITS", "NumberError", "parse_number",
           "split_number"]
