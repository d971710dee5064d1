"""JSON lines over a byte stream: one UTF-8 JSON object per line.

The bench's process boundaries (the harness between the supervisor and the terminal firmware,
the network injector's control socket) speak this.  :class:`JsonLineBuffer` takes bytes in any
chunking and gives back whole objects; a line that is not a JSON object, or a line longer than
*max_line* bytes without a newline, is a :class:`~protocols.errors.DecodeError` naming *where*
and showing the start of the offending bytes.  :func:`encode_line` is the other direction.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from protocols.errors import DecodeError

MAX_LINE = 64 * 1024


class LineTooLong(DecodeError):
    """More than ``max_line`` bytes arrived without a newline: the stream is not trustworthy
    any more (a session should end)."""


def encode_line(obj: Mapping[str, Any]) -> bytes:
    """One object as a compact JSON line (newline included)."""
    return (json.dumps(obj, separators=(",", ":"), ensure_ascii=False) + "\n").encode("utf-8")


class JsonLineBuffer:
    """Reassembles JSON objects from a byte stream.

    *where* names the stream in errors (``"harness"``, ``"injector control socket"``).  With
    *require* given, every object must carry that key (e.g. ``"t"``, the message type).
    """

    def __init__(self, where: str, *, max_line: int = MAX_LINE, require: str | None = None) -> None:
        self.where = where
        self.max_line = max_line
        self.require = require
        self._buf = bytearray()

    @property
    def pending(self) -> int:
        """Bytes received after the last complete line."""
        return len(self._buf)

    def clear(self) -> None:
        self._buf.clear()

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        """Add *data*; return every complete object, in order.  The first bad line raises its
        :class:`DecodeError` (the lines after it in the same call are consumed and lost); a
        caller that must keep going uses :meth:`feed_each`."""
        out: list[dict[str, Any]] = []
        for item in self.feed_each(data):
            if isinstance(item, DecodeError):
                raise item
            out.append(item)
        return out

    def feed_each(self, data: bytes) -> list[dict[str, Any] | DecodeError]:
        """Add *data*; return, in order, each complete line's object or the
        :class:`DecodeError` saying why that line is not one; a bad line loses nothing around
        it.  More than *max_line* bytes without a newline ends the list with
        :class:`LineTooLong` (those bytes are dropped)."""
        self._buf += data
        out: list[dict[str, Any] | DecodeError] = []
        while True:
            end = self._buf.find(b"\n")
            if end < 0:
                break
            line = bytes(self._buf[:end])
            del self._buf[:end + 1]
            if not line.strip():
                continue
            try:
                out.append(self._decode(line))
            except DecodeError as exc:
                out.append(exc)
        if len(self._buf) > self.max_line:
            head = bytes(self._buf[:60])
            self._buf.clear()
            out.append(LineTooLong(f"{self.where}: a line longer than {self.max_line} bytes "
                                   f"without a newline (starts {head!r}); dropped"))
        return out

    def _decode(self, line: bytes) -> dict[str, Any]:
        try:
            obj = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise DecodeError(f"{self.where}: a line that is not JSON ({exc}): "
                              f"{line[:80]!r}") from None
        if not isinstance(obj, dict):
            raise DecodeError(f"{self.where}: a line is JSON {type(obj).__name__}, expected an "
                              f"object: {line[:80]!r}")
        if self.require is not None and self.require not in obj:
            raise DecodeError(f"{self.where}: an object without the key {self.require!r}: "
                              f"{line[:80]!r}")
        return obj
