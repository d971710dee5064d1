"""The supply's voltage and current over a scenario, as a picture for the report.

:func:`power_figure` draws one scenario's event stream (:mod:`rigs.events`) on one clock, in
seconds from the scenario's first event: the supply samples (``power``/``sample``/``supply``,
``data`` volts and amps) as voltage (upper axes) and current (lower axes, same time axis), the
voltage and current-limit setpoints as dashed steps, every fault's window shaded on both axes
(one colour per fault, labelled with its kind), and the protocol moments that matter for power
as thin vertical lines with short labels: ISO 8583 messages by MTI, the terminal's READY,
PRINTING, PRINT, battery events, SHUTDOWN and its responses, the card's GENERATE AC, the
supply's output switched off and on.  :func:`power_png` renders it to PNG bytes (None when the
stream holds no supply sample).

A fault's window, from its ``fired`` / ``cleared`` events (:mod:`rigs.faults`):

* it starts at its first ``fired``.  A fault the bench applies at once (the power and printer
  kinds, and the injector kinds of ``rigs.bench.ACTS_AT_ONCE``) is recorded fired as it is
  applied, so that is also when it was armed.  A fault armed first and fired later (a rule that
  waits for traffic, a fault armed on a trigger) has its arming moment drawn as a thin dotted
  line, and any later firing as a thin dashed one;
* a one-shot power or printer fault (a brown-out dip, a power cycle) is recorded fired when it
  is already over (and cleared at once): its window starts at the first command the supply or
  relay unit received after it was armed (its ``set`` / ``relay`` event), or at its arming;
* it ends at its ``cleared``, or at the scenario's last event if it was never cleared;
* a fault armed but never fired gets no window: only its arming line and a legend entry
  saying so.

Everything is drawn on a private :class:`~matplotlib.figure.Figure` with the Agg canvas (no
pyplot, no global backend switch), in ASCII only, at a fixed size (:data:`WIDTH_PX` x
:data:`HEIGHT_PX`).  Labels sit above the voltage axes: at most :data:`MAX_LABELS` moments get
one (the most telling first: shutdown, battery events, responses, output off / on, then READY
and printing, then ISO 8583 messages and GENERATE AC), none
closer than ``LABEL_GAP_PX / STAGGER`` pixels to another; labels that would overlap are then
spread :data:`LABEL_GAP_PX` apart, each tied to its line by a short leader.  The legend and the
title say how many moments have no label.
"""

from __future__ import annotations

import bisect
import datetime as dt
import io
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from protocols.errors import ConfigError
from protocols.faults import FAULT_KINDS, FaultKind, Target
from rigs.events import Event, Source

WIDTH_PX = 1200
HEIGHT_PX = 700
DPI = 100
MAX_LABELS = 40
"""At most this many moments get a text label (all of them get their line)."""
LABEL_GAP_PX = 12
"""Two labels are never closer than this on the time axis (rotated 7 pt text is ~10 px wide)."""
LABEL_CHARS = 14
LEGEND_CHARS = 33
MAX_LEGEND_FAULTS = 12
"""Faults past this many are shaded but only counted in the legend (it has to fit)."""
STAGGER = 3
"""Labels are chosen at least LABEL_GAP_PX / STAGGER apart, then spread LABEL_GAP_PX apart."""
ONE_SHOT_S = 0.05
"""A fault cleared within this of its last firing was over when applied (a dip, a cycle)."""

# Axes placement (figure fractions): fixed, so no layout engine runs and labels have room above.
_LEFT, _RIGHT, _BOTTOM, _TOP, _HSPACE = 0.065, 0.815, 0.08, 0.80, 0.06
_AXES_WIDTH_PX = (_RIGHT - _LEFT) * WIDTH_PX

_VOLTS_COLOUR = "#1a1a6e"
_AMPS_COLOUR = "#7a1020"
_FAULT_COLOURS = ("#ff7f0e", "#d62728", "#bcbd22", "#17becf", "#e377c2", "#8c564b",
                  "#ffbb00", "#7f7f7f", "#2ca02c", "#9467bd")
_THRESHOLD_COLOURS = ("#b8860b", "#b22222", "#556b2f", "#4b0082")

# Moment categories: legend text, line colour.
_CATEGORIES: Mapping[str, tuple[str, str]] = {
    "terminal": ("terminal moment", "#2e7d32"),
    "power": ("supply output off / on", "#000000"),
    "rig": ("rig recovery", "#555555"),
    "iso": ("ISO 8583 message (MTI)", "#1f77b4"),
    "card": ("card GENERATE AC", "#9467bd"),
}
_TERMINAL_EVENTS = frozenset({"LOW_BATTERY", "BATTERY_OK", "SHUTDOWN"})
_TERMINAL_PROGRESS = frozenset({"PRINTING"})
_STATUS_RESPONSES = frozenset({"ST"})  # status polls: not a moment of the scenario
_RC_RE = re.compile(r"\brc=([A-Za-z0-9_]+)")
_NOT_ASCII = re.compile(r"[^\x20-\x7e]+")


def ascii_text(text: str, limit: int | None = None) -> str:
    """*text* as printable ASCII (each run of anything else one ``?``), cut to *limit*."""
    out = _NOT_ASCII.sub("?", text.replace("\n", " ")).strip()
    if limit is not None and len(out) > limit:
        out = out[:max(1, limit - 1)] + "~"
    return out


@dataclass(frozen=True)
class Moment:
    """A protocol moment drawn as a vertical line: seconds from the start, category, label."""

    x: float
    category: str
    label: str
    priority: int = 1
    """Labels go to priority 0 first (shutdown, battery, responses, output off), then 1 …"""


@dataclass
class FaultWindow:
    """One fault as drawn: kind, id, when armed, its fired times, when cleared (absolute)."""

    key: str
    kind: str
    armed: float | None = None
    fired: list[float] = field(default_factory=list)
    cleared: float | None = None

    def acts_at_once(self) -> bool:
        """A power or printer fault: the bench applies it itself, at once."""
        try:
            target = FAULT_KINDS[FaultKind(self.kind)].target
        except (ValueError, KeyError):
            return False
        return target in (Target.POWER, Target.SWITCH)

    def span(self, instrument_times: Sequence[float], end: float) -> tuple[float, float] | None:
        """(start, end) of the shaded window, absolute; None if it never fired.
        *instrument_times*: sorted times of the supply's and relay unit's commands."""
        if not self.fired:
            return None
        fired = sorted(self.fired)
        start = fired[0]
        if (self.acts_at_once() and self.cleared is not None and self.armed is not None
                and self.cleared - fired[-1] <= ONE_SHOT_S and fired[0] > self.armed):
            i = bisect.bisect_left(instrument_times, self.armed)
            acted = instrument_times[i] if i < len(instrument_times) else None
            start = acted if acted is not None and acted <= fired[0] else self.armed
        stop = self.cleared if self.cleared is not None else end
        return start, max(start, stop)


@dataclass
class _Series:
    t: list[float] = field(default_factory=list)
    volts: list[float] = field(default_factory=list)
    amps: list[float] = field(default_factory=list)


def _number(value: object) -> float:
    """A sample's value as a float (NaN when it is missing or not a number)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return math.nan
    try:
        return float(value)
    except ValueError:
        return math.nan


def _finite_t(ev: Event) -> bool:
    return isinstance(ev.t, int | float) and math.isfinite(ev.t)


def _moment_of(ev: Event, t0: float) -> Moment | None:
    """The moment *ev* marks on the plot, or None if it is not one."""
    x = ev.t - t0
    if ev.source == Source.NETWORK and ev.kind == "iso8583":
        return Moment(x, "iso", ascii_text(ev.name, LABEL_CHARS) or "?", 2)
    if ev.source == Source.CARDS and ev.kind == "c-apdu" and ev.name == "GENERATE AC":
        return Moment(x, "card", "GEN AC", 2)
    if ev.source == Source.TERMINAL:
        if ev.kind == "ready" or ev.name == "READY":
            return Moment(x, "terminal", "READY")
        if ev.kind == "print":
            return Moment(x, "terminal", "PRINT")
        if ev.kind == "progress" and ev.name in _TERMINAL_PROGRESS:
            return Moment(x, "terminal", ev.name)
        if ev.kind == "event" and (ev.name in _TERMINAL_EVENTS or "BATTERY" in ev.name):
            return Moment(x, "terminal", ascii_text(ev.name, LABEL_CHARS), 0)
        if ev.kind == "response" and ev.name not in _STATUS_RESPONSES:
            rc = _RC_RE.search(ev.detail)
            label = f"{ev.name} {rc.group(1)}" if rc else f"{ev.name} resp"
            return Moment(x, "terminal", ascii_text(label, LABEL_CHARS), 0)
        return None
    if ev.source == Source.POWER and ev.kind == "set" and ev.name == "output":
        on = _number(ev.data.get("output"))
        return Moment(x, "power", "OUT ON" if on == 1.0 else "OUT OFF", 0)
    if ev.source == Source.RIG and ev.kind == "recovery":
        return Moment(x, "rig", ascii_text(f"RECOVERY {ev.name}", LABEL_CHARS), 0)
    return None


def choose_labels(moments: Sequence[Moment], min_gap: float,
                  limit: int = MAX_LABELS) -> list[Moment]:
    """The moments that get a text label: the most telling first (priority), then in time order,
    each at least *min_gap* (seconds) from every label already chosen, at most *limit*."""
    ranked = sorted(moments, key=lambda m: (m.priority, m.x))
    taken: list[float] = []
    chosen: list[Moment] = []
    for m in ranked:
        if len(chosen) >= limit:
            break
        i = bisect.bisect_left(taken, m.x)
        if i > 0 and m.x - taken[i - 1] < min_gap:
            continue
        if i < len(taken) and taken[i] - m.x < min_gap:
            continue
        taken.insert(i, m.x)
        chosen.append(m)
    return sorted(chosen, key=lambda m: m.x)


@dataclass
class _Cluster:
    first: float
    count: int
    total: float


def spread(xs: Sequence[float], gap: float, lo: float, hi: float) -> list[float]:
    """Where to put labels for the sorted positions *xs* so that two are at least *gap* apart:
    labels too close form a run centred on their mean position, kept within [lo, hi]."""
    runs: list[_Cluster] = []
    for x in xs:
        runs.append(_Cluster(x, 1, x))
        while True:
            run = runs[-1]
            first = run.total / run.count - gap * (run.count - 1) / 2
            run.first = max(lo, min(first, hi - gap * (run.count - 1)))
            if len(runs) > 1 and runs[-2].first + gap * runs[-2].count > run.first:
                before = runs[-2]
                before.count += run.count
                before.total += run.total
                runs.pop()
                continue
            break
    return [run.first + gap * k for run in runs for k in range(run.count)]


def _check_thresholds(thresholds: Mapping[str, float] | None) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    for name, value in (thresholds or {}).items():
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"power_figure(): thresholds: a name must be non-empty text, "
                              f"got {name!r}")
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not math.isfinite(value):
            raise ConfigError(f"power_figure(): thresholds[{name!r}] must be a finite number of "
                              f"volts, got {value!r}")
        out.append((ascii_text(name, 40), float(value)))
    return out


def power_figure(events: Sequence[Event], *, title: str,
                 thresholds: Mapping[str, float] | None = None) -> Figure:
    """The scenario's supply voltage (upper axes) and current (lower axes) against seconds from
    its first event, with fault windows, protocol moments and *thresholds* (name → volts,
    horizontal lines on the voltage axes).  *events* may be in any order.  The figure has an
    Agg canvas and belongs to the caller (nothing global is touched)."""
    if not isinstance(title, str):
        raise ConfigError(f"power_figure(): title must be text, got {type(title).__name__}")
    limits = _check_thresholds(thresholds)
    evs = sorted((ev for ev in events if _finite_t(ev)), key=lambda e: (e.t, e.seq))

    fig = Figure(figsize=(WIDTH_PX / DPI, HEIGHT_PX / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=_LEFT, right=_RIGHT, bottom=_BOTTOM, top=_TOP, hspace=_HSPACE)
    ax_v, ax_a = fig.subplots(2, 1, sharex=True)
    ax_v.set_ylabel("supply voltage (V)")
    ax_a.set_ylabel("supply current (A)")
    for ax in (ax_v, ax_a):
        ax.grid(True, color="#dddddd", linewidth=0.6)
        ax.set_axisbelow(True)
    ax_v.tick_params(labelbottom=False)

    shown_title = ascii_text(title, 110) or "power"
    if not evs:
        ax_v.text(0.5, 0.5, "no events", transform=ax_v.transAxes, ha="center", va="center",
                  parse_math=False)
        fig.suptitle(shown_title, x=_LEFT, ha="left", fontsize=11, parse_math=False)
        return fig

    t0, t_end = evs[0].t, evs[-1].t
    span = t_end - t0
    if span > 0:
        pad = span * 0.01
        ax_a.set_xlim(-pad, span + pad)
    else:
        ax_a.set_xlim(-0.5, 0.5)
    x_lo, x_hi = ax_a.get_xlim()
    min_gap = LABEL_GAP_PX * (x_hi - x_lo) / _AXES_WIDTH_PX
    try:
        since = f" ({dt.datetime.fromtimestamp(t0).strftime('%Y-%m-%d %H:%M:%S')} local time)"
    except (OverflowError, OSError, ValueError):
        since = ""
    ax_a.set_xlabel(f"seconds from the scenario's first event{since}")

    samples = _Series()
    setpoints: dict[str, list[tuple[float, float]]] = {"voltage": [], "current_limit": []}
    faults: dict[str, FaultWindow] = {}
    instrument_times: list[float] = []
    moments: list[Moment] = []
    for ev in evs:
        if ev.source == Source.POWER and ev.kind == "sample":
            samples.t.append(ev.t - t0)
            samples.volts.append(_number(ev.data.get("volts")))
            samples.amps.append(_number(ev.data.get("amps")))
        elif ev.source == Source.FAULT and ev.kind in ("armed", "fired", "cleared"):
            fid = ev.data.get("fault_id")
            key = f"#{fid}" if fid is not None else ev.name
            fw = faults.setdefault(key, FaultWindow(key, ev.name))
            if ev.kind == "armed":
                fw.armed = ev.t if fw.armed is None else fw.armed
            elif ev.kind == "fired":
                fw.fired.append(ev.t)
            elif fw.cleared is None:
                fw.cleared = ev.t
        if (ev.source == Source.POWER and ev.kind == "set") or ev.source == Source.SWITCH:
            instrument_times.append(ev.t)
        if ev.source == Source.POWER and ev.kind == "set" and ev.name in setpoints:
            value = _number(ev.data.get(ev.name))
            if math.isfinite(value):
                setpoints[ev.name].append((ev.t - t0, value))
        moment = _moment_of(ev, t0)
        if moment is not None:
            moments.append(moment)

    legend: list[Artist] = []
    _draw_samples(ax_v, ax_a, samples, setpoints, span, legend)
    fault_legend = _draw_faults(ax_v, ax_a, list(faults.values()), instrument_times, t0, t_end)
    _draw_thresholds(ax_v, limits, samples, setpoints["voltage"], legend)
    unlabelled = _draw_moments(ax_v, ax_a, moments, min_gap, legend)
    legend += fault_legend
    if unlabelled:
        more = f"+{unlabelled} more moment{'s' if unlabelled > 1 else ''} not labelled"
        legend.append(Patch(facecolor="none", edgecolor="none", label=more))
        shown_title += f"  [{more}]"
    if not samples.t:
        ax_v.text(0.5, 0.5, "no supply samples", transform=ax_v.transAxes, ha="center",
                  va="center", parse_math=False)
    fig.suptitle(shown_title, x=_LEFT, y=0.985, ha="left", va="top", fontsize=11,
                 parse_math=False)
    fig.legend(handles=legend, loc="upper left", bbox_to_anchor=(_RIGHT + 0.01, _TOP),
               fontsize=7, frameon=False, borderaxespad=0.0)
    return fig


def _draw_samples(ax_v: Axes, ax_a: Axes, samples: _Series,
                  setpoints: Mapping[str, list[tuple[float, float]]], span: float,
                  legend: list[Artist]) -> None:
    marker = "." if len(samples.t) <= 60 else None
    if samples.t:
        (line_v,) = ax_v.plot(samples.t, samples.volts, color=_VOLTS_COLOUR, linewidth=1.0,
                              marker=marker, markersize=4, label="supply voltage (V)",
                              gid="volts")
        (line_a,) = ax_a.plot(samples.t, samples.amps, color=_AMPS_COLOUR, linewidth=1.0,
                              marker=marker, markersize=4, label="supply current (A)",
                              gid="amps")
        legend += [line_v, line_a]
    for name, ax, colour, label in (("voltage", ax_v, _VOLTS_COLOUR, "voltage setpoint"),
                                    ("current_limit", ax_a, _AMPS_COLOUR, "current limit")):
        points = setpoints[name]
        if not points:
            continue
        xs = [x for x, _ in points] + [max(span, points[-1][0])]
        ys = [y for _, y in points] + [points[-1][1]]
        (step,) = ax.plot(xs, ys, drawstyle="steps-post", color=colour, linewidth=0.8,
                          linestyle="--", alpha=0.6, label=label, gid=f"setpoint-{name}")
        legend.append(step)
    finite = [a for a in samples.amps if math.isfinite(a)]
    if setpoints["current_limit"] and finite:
        # a current limit far above the draw must not squash the current trace
        lo, hi = min(finite), max(finite)
        margin = max((hi - lo) * 0.15, 0.02)
        ax_a.set_ylim(min(lo, 0.0) - margin, hi + margin * 3)


def _draw_faults(ax_v: Axes, ax_a: Axes, windows: list[FaultWindow],
                 instrument_times: Sequence[float], t0: float, t_end: float) -> list[Artist]:
    legend: list[Artist] = []
    for i, fw in enumerate(windows):
        colour = _FAULT_COLOURS[i % len(_FAULT_COLOURS)]
        kind = ascii_text(fw.kind, 30) or "fault"
        window = fw.span(instrument_times, t_end)
        if window is None:
            note = "armed, never fired"
        elif fw.cleared is None:
            note = "never cleared"
        else:
            note = f"{window[1] - window[0]:.2f} s"
        label = f"{fw.key} {kind} ({note})"
        if len(label) > LEGEND_CHARS:  # a second line rather than a label cut short
            label = f"{ascii_text(f'{fw.key} {kind}', LEGEND_CHARS)}\n({note})"
        if i < MAX_LEGEND_FAULTS:
            legend.append(Patch(facecolor=colour if window else "none", edgecolor=colour,
                                alpha=0.35 if window else 1.0, linestyle="-" if window else ":",
                                label=label))
        elif i == len(windows) - 1:
            legend.append(Patch(facecolor="none", edgecolor="none",
                                label=f"+{len(windows) - MAX_LEGEND_FAULTS} more faults"))
        if window is not None:
            x0, x1 = window[0] - t0, window[1] - t0
            for ax in (ax_v, ax_a):
                ax.axvspan(x0, x1, facecolor=colour, alpha=0.22, edgecolor=colour,
                           linewidth=0.8, label=kind, gid=f"fault-{fw.key}", zorder=0.5)
            ax_v.text(x0, 0.985 - 0.07 * (i % 4), f" {kind}", transform=ax_v.get_xaxis_transform(),
                      ha="left", va="top", fontsize=7, color=colour, clip_on=True,
                      parse_math=False, gid="fault-label",
                      bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.6, "pad": 0.5})
        start = window[0] if window is not None else None
        if fw.armed is not None and (start is None or start - fw.armed > 1e-3):
            for ax in (ax_v, ax_a):
                ax.axvline(fw.armed - t0, color=colour, linewidth=0.9, linestyle=":",
                           label=f"{kind} armed", gid=f"armed-{fw.key}")
        later = sorted(fw.fired)[1:]
        if later:
            for ax in (ax_v, ax_a):
                ax.vlines([t - t0 for t in later], 0.0, 1.0, transform=ax.get_xaxis_transform(),
                          colors=colour, linewidth=0.6, linestyles="--",
                          label=f"{kind} fired again", gid=f"refired-{fw.key}")
    return legend


def _draw_thresholds(ax_v: Axes, limits: Sequence[tuple[str, float]], samples: _Series,
                     setpoints: Sequence[tuple[float, float]], legend: list[Artist]) -> None:
    if not limits:
        return
    for i, (name, volts) in enumerate(limits):
        colour = _THRESHOLD_COLOURS[i % len(_THRESHOLD_COLOURS)]
        line = ax_v.axhline(volts, color=colour, linewidth=0.9, linestyle="-.", label=name,
                            gid="threshold")
        ax_v.text(0.995, volts, name, transform=ax_v.get_yaxis_transform(), ha="right",
                  va="bottom", fontsize=7, color=colour, parse_math=False, clip_on=True)
        legend.append(line)
    values = ([v for _, v in limits] + [v for v in samples.volts if math.isfinite(v)]
              + [v for _, v in setpoints])
    lo, hi = min(values), max(values)
    margin = max((hi - lo) * 0.08, 0.05)
    ax_v.set_ylim(lo - margin, hi + margin)


def _draw_moments(ax_v: Axes, ax_a: Axes, moments: Sequence[Moment], min_gap: float,
                  legend: list[Artist]) -> int:
    """Lines for every moment, labels for some; returns how many have no label."""
    for category, (text, colour) in _CATEGORIES.items():
        xs = [m.x for m in moments if m.category == category]
        if not xs:
            continue
        for ax in (ax_v, ax_a):
            ax.vlines(xs, 0.0, 1.0, transform=ax.get_xaxis_transform(), colors=colour,
                      linewidth=0.6, alpha=0.7, label=text, gid=f"moments-{category}",
                      zorder=1.5)
        legend.append(Line2D([], [], color=colour, linewidth=0.8, label=f"{text}: {len(xs)}"))
    chosen = choose_labels(moments, min_gap / STAGGER)
    x_lo, x_hi = ax_v.get_xlim()
    at = spread([m.x for m in chosen], min_gap, x_lo, x_hi)
    to_axes = ax_v.get_xaxis_transform()
    for m, x in zip(chosen, at, strict=True):
        colour = _CATEGORIES[m.category][1]
        if abs(x - m.x) > min_gap / 20:  # moved aside: a leader from the label to its line
            ax_v.add_line(Line2D([m.x, m.x, x], [1.0, 1.008, 1.03], transform=to_axes,
                                 color=colour, linewidth=0.5, clip_on=False, gid="label-leader"))
        ax_v.text(x, 1.035, m.label, transform=to_axes, rotation=90, ha="center", va="bottom",
                  fontsize=7, color=colour, clip_on=False, parse_math=False, gid="moment-label")
    return len(moments) - len(chosen)


def power_png(events: Sequence[Event], *, title: str,
              thresholds: Mapping[str, float] | None = None) -> bytes | None:
    """:func:`power_figure` as PNG bytes (:data:`WIDTH_PX` x :data:`HEIGHT_PX`), or None when
    *events* hold no supply sample.  The figure is freed once rendered."""
    if not any(ev.source == Source.POWER and ev.kind == "sample" for ev in events):
        return None
    fig = power_figure(events, title=title, thresholds=thresholds)
    try:
        out = io.BytesIO()
        fig.savefig(out, format="png", dpi=DPI, metadata={"Software": None})
        return out.getvalue()
    finally:
        fig.clear()

