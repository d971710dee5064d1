"""The terminal's non-volatile memory: counters that survive a power cycle.

Working keys are NOT here (RAM only: after power loss the terminal must sign in again).
Writes are atomic (temp file, fsync, rename), so a SIGKILL at any instant leaves either the old
or the new content.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from protocols.errors import SimError

NVRAM_FILE = "terminal-nvram.json"


@dataclass(frozen=True)
class NvramData:
    stan: int = 1  # next system trace audit number to use (1..999999)
    batch_no: int = 1
    boot_count: int = 0


class NvramStore(Protocol):
    def load(self) -> NvramData: ...

    def save(self, data: NvramData) -> None: ...


class FileNvram:
    """NVRAM as a JSON file in the terminal's state directory."""

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.path = Path(state_dir) / NVRAM_FILE

    def load(self) -> NvramData:
        if not self.path.exists():
            return NvramData()
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            return NvramData(stan=int(raw["stan"]), batch_no=int(raw["batch_no"]),
                             boot_count=int(raw.get("boot_count", 0)))
        except (ValueError, KeyError, TypeError) as exc:
            raise SimError(f"FileNvram({self.path}): load() found a corrupt file: {exc}") from exc

    def save(self, data: NvramData) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".nvram-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(asdict(data), fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


class MemoryNvram:
    """In-memory store for tests."""

    def __init__(self, data: NvramData | None = None) -> None:
        self.data = data or NvramData()
        self.saves = 0

    def load(self) -> NvramData:
        return self.data

    def save(self, data: NvramData) -> None:
        self.data = data
        self.saves += 1
