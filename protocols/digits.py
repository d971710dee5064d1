"""Digits as the wire and the card mean them: ASCII 0-9 only.

``str.isdigit()`` also accepts superscripts (``²``), fullwidth and other scripts' digits, which
``int()`` then reads or rejects unpredictably; every check of a PAN, a PIN, an amount or a
numeric field goes through :func:`ascii_digits` instead.
"""

from __future__ import annotations


def ascii_digits(text: str) -> bool:
    """True when *text* is one or more of the ASCII digits 0-9 and nothing else."""
    return text.isascii() and text.isdigit()


__all__ = ["ascii_digits"]
