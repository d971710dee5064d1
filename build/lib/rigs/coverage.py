"""Which procedures the run proved: procedure ids (rigs/procedures.md) × the scenarios tagged
with them, and each scenario's result.

A procedure is *proven* when at least one of its scenarios passed and none failed; *failing*
when one failed; *not run* when its scenarios were all skipped; *no scenario* when none is
tagged with it.  The matrix goes to the console summary (:func:`render_text`), into the HTML
report (:func:`render_html`, attached to a result of its own) and as JSON next to the report.
"""

from __future__ import annotations

import enum
import html
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rigs.errors import RigError

PROCEDURES = Path(__file__).resolve().parent / "procedures.md"
PROCEDURE_ID = re.compile(r"^(?:OP|TS|SEC)-\d{2}$")
_PROCEDURE_ROW = re.compile(r"^\|\s*((?:OP|TS|SEC)-\d{2})\s*\|\s*([^|]+?)\s*\|")


def procedure_ids(path: Path = PROCEDURES) -> dict[str, str]:
    """Procedure id → title, from the catalogue's tables (``| OP-05 | purchase by chip … |``)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RigError(f"{path}: cannot read the procedure catalogue ({exc.strerror})") from None
    out = {}
    for line in text.splitlines():
        m = _PROCEDURE_ROW.match(line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


class Verdict(enum.StrEnum):
    PROVEN = "proven"
    FAILING = "failing"
    NOT_RUN = "not run"
    NO_SCENARIO = "no scenario"


@dataclass(frozen=True)
class Scenario:
    """One scenario's result as the matrix needs it."""

    name: str
    feature: str
    status: str  # Allure's: passed, failed, broken, skipped, unknown
    tags: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Row:
    pid: str
    title: str
    scenarios: tuple[Scenario, ...] = field(default_factory=tuple)

    def count(self, *statuses: str) -> int:
        return sum(1 for s in self.scenarios if s.status in statuses)

    @property
    def verdict(self) -> Verdict:
        if not self.scenarios:
            return Verdict.NO_SCENARIO
        if self.count("failed", "broken"):
            return Verdict.FAILING
        if self.count("passed"):
            return Verdict.PROVEN
        return Verdict.NOT_RUN


def matrix(ids: Mapping[str, str], scenarios: Iterable[Scenario]) -> list[Row]:
    """One row per procedure id of the catalogue, in its order, with the scenarios tagged with
    it; ids used as tags but missing from the catalogue get a row titled so."""
    tagged: dict[str, list[Scenario]] = {}
    for sc in scenarios:
        for tag in sc.tags:
            if PROCEDURE_ID.match(tag):
                tagged.setdefault(tag, []).append(sc)
    rows = [Row(pid, title, tuple(tagged.get(pid, ()))) for pid, title in ids.items()]
    rows += [Row(pid, "(not in the procedure catalogue)", tuple(found))
             for pid, found in sorted(tagged.items()) if pid not in ids]
    return rows


def totals(rows: Sequence[Row]) -> dict[Verdict, int]:
    out = {v: 0 for v in Verdict}
    for row in rows:
        out[row.verdict] += 1
    return out


def render_text(rows: Sequence[Row], *, width: int = 100) -> str:
    """A plain table (no control codes): id, verdict, passed/failed/skipped, title, then the
    ids without a passing scenario listed again at the end."""
    lines = [f"{'id':<7} {'verdict':<12} {'pass':>4} {'fail':>4} {'skip':>4}  procedure"]
    for row in rows:
        title = row.title if len(row.title) <= width - 38 else row.title[:width - 41] + "..."
        lines.append(f"{row.pid:<7} {row.verdict.value:<12} {row.count('passed'):>4} "
                     f"{row.count('failed', 'broken'):>4} {row.count('skipped'):>4}  {title}")
    t = totals(rows)
    lines.append(f"{t[Verdict.PROVEN]} of {len(rows)} procedures proven, {t[Verdict.FAILING]} "
                 f"failing, {t[Verdict.NOT_RUN]} not run, {t[Verdict.NO_SCENARIO]} without a "
                 f"scenario")
    gaps = [row.pid for row in rows if row.verdict is not Verdict.PROVEN]
    if gaps:
        lines.append(f"without a passing scenario: {', '.join(gaps)}")
    return "\n".join(lines)


_COLOURS = {Verdict.PROVEN: "#97cc64", Verdict.FAILING: "#fd5a3e", Verdict.NOT_RUN: "#aaaaaa",
            Verdict.NO_SCENARIO: "#ffd050"}


def render_html(rows: Sequence[Row]) -> str:
    """A self-contained HTML page (no script, no outside resource): the matrix with each id's
    verdict coloured and its scenarios listed with their results."""
    t = totals(rows)
    cells = []
    for row in rows:
        scenarios = "<br>".join(f"{html.escape(s.status)}: {html.escape(s.feature)} — "
                                f"{html.escape(s.name)}" for s in row.scenarios) or "—"
        cells.append(f"<tr><td><b>{row.pid}</b></td><td style='background:"
                     f"{_COLOURS[row.verdict]}'>{row.verdict.value}</td><td>"
                     f"{html.escape(row.title)}</td><td>{scenarios}</td></tr>")
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>Procedure coverage</title>"
            "<style>body{font-family:sans-serif;font-size:13px}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:3px 6px;vertical-align:top}</style></head><body>"
            f"<p>{t[Verdict.PROVEN]} of {len(rows)} procedures proven, {t[Verdict.FAILING]} "
            f"failing, {t[Verdict.NOT_RUN]} not run, {t[Verdict.NO_SCENARIO]} without a "
            "scenario.</p><table><tr><th>id</th><th>verdict</th><th>procedure</th>"
            f"<th>scenarios</th></tr>{''.join(cells)}</table></body></html>")


def to_json(rows: Sequence[Row]) -> list[dict[str, object]]:
    return [{"id": row.pid, "title": row.title, "verdict": row.verdict.value,
             "scenarios": [{"feature": s.feature, "name": s.name, "status": s.status}
                           for s in row.scenarios]} for row in rows]


__all__ = ["PROCEDURES", "Row", "Scenario", "Verdict", "matrix", "procedure_ids",
           "render_html", "render_text", "to_json", "totals"]
