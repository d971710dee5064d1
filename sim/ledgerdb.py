"""The simulators' ledger files (the acquirer's, the QR platform's): one way to open them.

WAL with ``synchronous=NORMAL``: a commit survives the simulator's process dying (not the
machine losing power) without a sync per request under the engine's lock, and the rig reading
a ledger never holds a write up.  With the default journal, a loaded machine once held a
sign-in's answer 7 s, past the terminal's response time-out.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from protocols.errors import SimError

logger = logging.getLogger(__name__)


def open_ledger(who: str, path: Path, schemas: Iterable[str],
                busy_timeout: float) -> sqlite3.Connection:
    """*path* opened for one writer shared by threads, in WAL mode, its *schemas* created; a
    failure is a SimError naming *who* and the file."""
    try:
        db = sqlite3.connect(str(path), timeout=busy_timeout, check_same_thread=False,
                             isolation_level=None)
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()
        db.execute("PRAGMA synchronous=NORMAL")
        for schema in schemas:
            db.execute(schema)
    except sqlite3.Error as exc:
        raise SimError(f"{who}({path}): cannot open the ledger ({exc})") from exc
    if not mode or str(mode[0]).lower() != "wal":
        logger.warning("%s(%s): journal mode is %s, not WAL", who, path, mode)
    return db
