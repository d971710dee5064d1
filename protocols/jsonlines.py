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
        """Add *data*; return every complete object, in order.

        On a bad line the lines before it are lost with the error only if they came in the same
        call: callers that must keep going catch :class:`DecodeError` per call and carry on (the
        bad line is consumed).
        """
        self._buf += data
        out: list[dict[str, Any]] = []
        while True:
            end = self._buf.find(b"\n")
            if end < 0:
                break
            line = bytes(self._buf[:end])
            del self._buf[:end + 1]
            if not line.strip():
                continue
            out.append(self._decode(line))
        if len(self._buf) > self.max_line:
            head = bytes(self._buf[:60])
            self._buf.clear()
            raise DecodeError(f"{self.where}: a line longer than "
                              f"{self.max_line} bytes without a newline (starts {head!r}); "
                              f"dropped")
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
