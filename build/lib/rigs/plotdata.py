"""A supply plot's data, kept apart from its drawing: the scenario's events as JSON
(:func:`plot_data`), drawn into a PNG later (:func:`png_from_data`, :mod:`rigs.plots`).

Drawing a plot takes about a quarter of a second (matplotlib's text layout dominates); a run
through ``python -m rigs.report`` attaches the data and draws every plot after the suite,
several at a time, so no scenario waits for it.  Importing this module does not import
matplotlib.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from protocols.errors import ConfigError
from rigs.events import Event, Source

PLOT_DATA_NAME = "supply plot data (rendered after the run)"
"""The attachment the plot's data travels in when plots are drawn after the run."""
PLOT_NAME = "supply voltage and current, faults shaded"
"""The plot's attachment name (the report's checks look for it)."""


def plot_data(events: Sequence[Event], *, title: str,
              thresholds: Mapping[str, float] | None = None) -> str | None:
    """What :func:`power_png` needs, as JSON (None when the supply was never sampled): the
    scenario's events (masked texts, as the timeline has them), the title and thresholds."""
    if not any(e.source is Source.POWER and e.kind == "sample" for e in events):
        return None
    return json.dumps({"title": title, "thresholds": dict(thresholds or {}),
                       "events": [{"t": e.t, "source": e.source.value, "kind": e.kind,
                                   "name": e.name, "detail": e.detail,
                                   "data": {k: v for k, v in e.data.items()
                                            if isinstance(v, str | int | float | bool)
                                            or v is None}}
                                  for e in events]})


def png_from_data(text: str, where: str = "plot data") -> bytes | None:
    """:func:`power_png` of a :func:`plot_data` document; ConfigError naming *where* when it is
    not one."""
    try:
        doc = json.loads(text)
        events = [Event(float(e["t"]), Source(e["source"]), str(e["kind"]), str(e["name"]),
                        str(e.get("detail", "")), dict(e.get("data") or {}))
                  for e in doc["events"]]
        title = str(doc["title"])
        thresholds = {str(k): float(v) for k, v in dict(doc.get("thresholds") or {}).items()}
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{where}: not a supply plot document ({type(exc).__name__}: "
                          f"{exc})") from None
    from rigs.plots import power_png  # matplotlib: only where a plot is drawn

    return power_png(events, title=title, thresholds=thresholds)
