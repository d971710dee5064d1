"""The terminal's non-volatile memory: counters and settings that survive a power cycle.

STAN, batch number and boot count; the clock's offset from the machine's (the terminal's RTC);
the limits an admin set with PARAMETER; operators' wrong-password counts and locks.  Working
keys are NOT here (RAM only: after power loss the terminal must sign in again); transactions
are in the journal (:mod:`sim.terminal.journal`).  Writes are atomic (temp file, fsync, rename),
so a SIGKILL at any instant leaves either the old or the new content.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Protocol

from protocols.errors import SimError

NVRAM_FILE = "terminal-nvram.json"


@dataclass(frozen=True)
class NvramData:
    stan: int = 1  # next system trace audit number to use (1..999999)
    batch_no: int = 1
    boot_count: int = 0
    clock_offset_s: float = 0.0  # the terminal's clock minus the machine's
    limits: tuple[tuple[str, int], ...] = ()  # PARAMETER overrides of the profile's limits
    login_failures: tuple[tuple[str, int], ...] = ()  # operator → wrong passwords in a row
    locked: tuple[str, ...] = ()  # locked operators (until an admin unlocks)

    @property
    def limit_overrides(self) -> Mapping[str, int]:
        return dict(self.limits)

    @property
    def failures(self) -> Mapping[str, int]:
        return dict(self.login_failures)

    def with_limit(self, name: str, value: int | None) -> NvramData:
        """*name* set to *value*, or back to the profile's (None)."""
        limits = {k: v for k, v in self.limits if k != name}
        if value is not None:
            limits[name] = value
        return replace(self, limits=tuple(sorted(limits.items())))

    def with_failures(self, operator: str, count: int) -> NvramData:
        failures = {k: v for k, v in self.login_failures if k != operator}
        if count:
            failures[operator] = count
        return replace(self, login_failures=tuple(sorted(failures.items())))

    def with_lock(self, operator: str, locked: bool) -> NvramData:
        names = set(self.locked) - {operator} | ({operator} if locked else set())
        return replace(self, locked=tuple(sorted(names)))


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
            return NvramData(
                stan=int(raw["stan"]), batch_no=int(raw["batch_no"]),
                boot_count=int(raw.get("boot_count", 0)),
                clock_offset_s=float(raw.get("clock_offset_s", 0.0)),
                limits=tuple((str(k), int(v)) for k, v in raw.get("limits", ())),
                login_failures=tuple((str(k), int(v)) for k, v in raw.get("login_failures", ())),
                locked=tuple(str(k) for k in raw.get("locked", ())))
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
