"""The power plot (rigs/plots.py): pure, no bench; the figure's artists are inspected."""

from __future__ import annotations

import math
import random
import struct
from collections.abc import Iterable

import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from rigs.errors import RigError
from rigs.events import Event, EventStream, Source
from rigs.plots import (
    HEIGHT_PX,
    LABEL_GAP_PX,
    MAX_LABELS,
    WIDTH_PX,
    power_figure,
    power_png,
    spread,
)

T0 = 1_700_000_000.0
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
THRESHOLDS = {"low battery 6.80 V": 6.80, "cut-off 6.40 V": 6.40}


def samples(start: float, stop: float, period: float = 0.1, volts: float = 7.4,
            amps: float = 0.3) -> list[Event]:
    n = int(round((stop - start) / period))
    return [Event(T0 + start + i * period, Source.POWER, "sample", "supply",
                  data={"volts": volts, "amps": amps}) for i in range(n + 1)]


def fault(kind: str, fid: int, *, armed: float, fired: Iterable[float] = (),
          cleared: float | None = None) -> list[Event]:
    out = [Event(T0 + armed, Source.FAULT, "armed", kind, data={"fault_id": fid})]
    out += [Event(T0 + t, Source.FAULT, "fired", kind, data={"fault_id": fid}) for t in fired]
    if cleared is not None:
        out.append(Event(T0 + cleared, Source.FAULT, "cleared", kind, data={"fault_id": fid}))
    return out


def ev(at: float, source: Source, kind: str, name: str, detail: str = "",
       **data: object) -> Event:
    return Event(T0 + at, source, kind, name, detail, data)


def axes(fig: Figure) -> tuple[Axes, Axes]:
    ax_v, ax_a = fig.axes
    return ax_v, ax_a


def spans(ax: Axes) -> dict[str, tuple[str, float, float]]:
    """gid → (label, start, end) of the shaded fault windows."""
    out = {}
    for p in ax.patches:
        gid = p.get_gid()
        if gid and gid.startswith("fault-"):
            assert isinstance(p, Rectangle)
            out[gid] = (str(p.get_label()), p.get_x(), p.get_x() + p.get_width())
    return out


def moment_xs(ax: Axes, category: str) -> list[float]:
    found = [c for c in ax.collections if c.get_gid() == f"moments-{category}"]
    assert len(found) == 1, f"one line collection for {category}"
    coll = found[0]
    assert isinstance(coll, LineCollection)
    return sorted(float(seg[0][0]) for seg in coll.get_segments())


def labels(fig: Figure) -> list[tuple[float, str]]:
    ax_v, _ = axes(fig)
    return sorted((float(t.get_position()[0]), t.get_text()) for t in ax_v.texts
                  if t.get_gid() == "moment-label")


def title(fig: Figure) -> str:
    return fig.get_suptitle()


def legend_texts(fig: Figure) -> list[str]:
    return [t.get_text() for t in fig.legends[0].get_texts()]


def test_png_has_the_signature_and_the_fixed_size() -> None:
    events = [ev(0, Source.RIG, "scenario", "begin")] + samples(0.5, 20)
    png = power_png(events, title="sale on a healthy battery", thresholds=THRESHOLDS)
    assert png is not None
    assert png.startswith(PNG_SIGNATURE)
    assert png[12:16] == b"IHDR"
    assert struct.unpack(">II", png[16:24]) == (WIDTH_PX, HEIGHT_PX) == (1200, 700)


def test_no_supply_samples_gives_none() -> None:
    assert power_png([], title="empty") is None
    others = [ev(0, Source.RIG, "scenario", "begin"), ev(1, Source.NETWORK, "iso8583", "0200"),
              ev(2, Source.POWER, "set", "voltage", "7.4 V", voltage=7.4)]
    assert power_png(others, title="no samples") is None


def test_time_axis_is_seconds_from_the_first_event_of_any_source() -> None:
    events = [ev(-5.0, Source.RIG, "scenario", "begin")] + samples(0, 1)
    ax_v, ax_a = axes(power_figure(events, title="t0"))
    (volts,) = [line for line in ax_v.lines if line.get_gid() == "volts"]
    assert volts.get_xdata()[0] == pytest.approx(5.0)  # type: ignore[index]
    assert ax_a.get_shared_x_axes().joined(ax_v, ax_a)


def test_fault_windows_are_shaded_on_both_axes_with_kind_and_times() -> None:
    events = ([ev(0, Source.RIG, "scenario", "begin")] + samples(0, 30)
              # applied at once: armed and fired together
              + fault("supply_sag", 1, armed=5.0, fired=[5.0], cleared=12.0)
              # armed, fired later by traffic (twice), cleared
              + fault("drop_message", 2, armed=2.0, fired=[8.0, 9.5], cleared=15.0)
              # never cleared: shaded to the end of the scenario
              + fault("power_cut", 3, armed=20.0, fired=[20.0])
              + [ev(31.0, Source.RIG, "scenario", "end")])
    fig = power_figure(events, title="faults")
    expected = {"fault-#1": ("supply_sag", 5.0, 12.0),
                "fault-#2": ("drop_message", 8.0, 15.0),
                "fault-#3": ("power_cut", 20.0, 31.0)}
    for ax in axes(fig):
        got = spans(ax)
        assert set(got) == set(expected)
        for gid, (kind, start, end) in expected.items():
            assert got[gid][0] == kind
            assert got[gid][1:] == pytest.approx((start, end), abs=1e-6)
        # the arming moment of the one fired later is a thin line; none for the one at once
        armed = {line.get_gid(): line.get_xdata()[0] for line in ax.lines  # type: ignore[index]
                 if str(line.get_gid()).startswith("armed-")}
        assert armed == {"armed-#2": pytest.approx(2.0)}
        refired = [c for c in ax.collections if c.get_gid() == "refired-#2"]
        assert len(refired) == 1
    colours = {p.get_facecolor()[:3] for p in axes(fig)[0].patches
               if str(p.get_gid()).startswith("fault-")}
    assert len(colours) == 3
    assert any("power_cut (never cleared)" in t for t in legend_texts(fig))


def test_a_fault_armed_but_never_fired_gets_no_window_only_its_arming_line() -> None:
    events = samples(0, 10) + fault("paper_out", 7, armed=4.0, cleared=9.0) \
        + fault("drop_message", 8, armed=6.0)
    fig = power_figure(events, title="never fired")
    for ax in axes(fig):
        assert spans(ax) == {}
        armed = sorted((str(line.get_gid()), line.get_xdata()[0])  # type: ignore[index]
                       for line in ax.lines if str(line.get_gid()).startswith("armed-"))
        assert armed == [("armed-#7", pytest.approx(4.0)), ("armed-#8", pytest.approx(6.0))]
    texts = legend_texts(fig)
    assert any("paper_out (armed, never fired)" in t for t in texts)
    assert power_png(events, title="never fired") is not None


def test_a_one_shot_dip_is_shaded_from_the_supply_command_not_from_its_late_firing() -> None:
    # the bench records a brown-out dip fired once it is over, and clears it at once
    events = (samples(0, 5, period=0.05)
              + fault("brownout_dip", 1, armed=2.0, fired=[2.62], cleared=2.62)
              + [ev(2.1, Source.POWER, "set", "voltage", "5 V", voltage=5.0),
                 ev(2.6, Source.POWER, "set", "voltage", "7.4 V", voltage=7.4)])
    ax_v, _ = axes(power_figure(events, title="dip"))
    assert spans(ax_v)["fault-#1"] == ("brownout_dip", pytest.approx(2.1), pytest.approx(2.62))


def test_iso8583_messages_and_terminal_moments_are_vertical_lines_at_their_times() -> None:
    events = (samples(0, 20)
              + [ev(3.0, Source.NETWORK, "iso8583", "0200", "sent 0200 stan=000123"),
                 ev(9.0, Source.NETWORK, "iso8583", "0210"),
                 ev(2.5, Source.CARDS, "c-apdu", "GENERATE AC"),
                 ev(2.6, Source.CARDS, "c-apdu", "READ RECORD"),
                 ev(0.4, Source.TERMINAL, "ready", "READY"),
                 ev(11.0, Source.TERMINAL, "progress", "PRINTING"),
                 ev(11.5, Source.TERMINAL, "progress", "ENTER_PIN"),
                 ev(12.0, Source.TERMINAL, "response", "PU", "PU(PURCHASE) rc=APPROVED amt=100"),
                 ev(13.0, Source.TERMINAL, "response", "ST", "ST(STATUS) rc=OK"),
                 ev(14.0, Source.POWER, "set", "output", "off", output=0.0)])
    fig = power_figure(events, title="moments")
    for ax in axes(fig):
        assert moment_xs(ax, "iso") == pytest.approx([3.0, 9.0])
        assert moment_xs(ax, "card") == pytest.approx([2.5])
        assert moment_xs(ax, "terminal") == pytest.approx([0.4, 11.0, 12.0])
        assert moment_xs(ax, "power") == pytest.approx([14.0])
    assert labels(fig) == [(pytest.approx(0.4), "READY"), (pytest.approx(2.5), "GEN AC"),
                           (pytest.approx(3.0), "0200"), (pytest.approx(9.0), "0210"),
                           (pytest.approx(11.0), "PRINTING"), (pytest.approx(12.0), "PU APPROVED"),
                           (pytest.approx(14.0), "OUT OFF")]
    assert "more" not in title(fig)


def test_threshold_lines_on_the_voltage_axes() -> None:
    fig = power_figure(samples(0, 5), title="thresholds", thresholds=THRESHOLDS)
    ax_v, ax_a = axes(fig)
    lines = {str(line.get_label()): line.get_ydata() for line in ax_v.lines
             if line.get_gid() == "threshold"}
    assert set(lines) == set(THRESHOLDS)
    for name, volts in THRESHOLDS.items():
        assert list(lines[name]) == pytest.approx([volts, volts])  # type: ignore[arg-type]
    lo, hi = ax_v.get_ylim()
    assert lo < 6.40 and hi > 7.4
    assert not [line for line in ax_a.lines if line.get_gid() == "threshold"]


@pytest.mark.parametrize("bad", [{"cut-off": math.nan}, {"": 6.4}, {"cut-off": "6.4"}])
def test_a_bad_threshold_is_refused_naming_it(bad: dict[str, object]) -> None:
    with pytest.raises(RigError, match="thresholds"):
        power_figure(samples(0, 1), title="bad", thresholds=bad)  # type: ignore[arg-type]


def test_two_hundred_close_moments_are_thinned_and_counted() -> None:
    events = samples(0, 60)
    events += [ev(30.0 + i * 0.01, Source.NETWORK, "iso8583", "0200" if i % 2 else "0210")
               for i in range(200)]
    fig = power_figure(events, title="soak")
    ax_v, ax_a = axes(fig)
    for ax in (ax_v, ax_a):
        assert len(moment_xs(ax, "iso")) == 200  # every line drawn
    shown = labels(fig)
    assert 1 <= len(shown) <= MAX_LABELS
    assert len(shown) < 20  # 2 s of a 60 s plot: a handful
    unlabelled = 200 - len(shown)
    assert f"+{unlabelled} more moments not labelled" in title(fig)
    assert f"+{unlabelled} more moments not labelled" in legend_texts(fig)
    # the labels never overlap: at least LABEL_GAP_PX apart on screen
    lo, hi = ax_v.get_xlim()
    width_px = ax_v.get_position().width * WIDTH_PX
    xs = [x for x, _ in shown]
    gaps_px = [(b - a) * width_px / (hi - lo) for a, b in zip(xs, xs[1:], strict=False)]
    assert min(gaps_px) >= LABEL_GAP_PX - 0.01


def test_the_cap_on_labels_holds_when_moments_are_spread_out() -> None:
    events = samples(0, 100) + [ev(i * 0.5, Source.NETWORK, "iso8583", "0800")
                                for i in range(200)]
    fig = power_figure(events, title="spread")
    assert len(labels(fig)) == MAX_LABELS
    assert f"+{200 - MAX_LABELS} more moments not labelled" in title(fig)


def test_a_shutdown_wins_the_label_over_a_close_print_moment() -> None:
    events = samples(0, 60) + [ev(10.0, Source.TERMINAL, "progress", "PRINTING"),
                               ev(10.02, Source.TERMINAL, "event", "SHUTDOWN")]
    assert [text for _, text in labels(power_figure(events, title="x"))] == ["SHUTDOWN"]


def test_out_of_order_events_nan_values_and_one_sample() -> None:
    events = samples(0, 10)
    events[30] = Event(events[30].t, Source.POWER, "sample", "supply",
                       data={"volts": math.nan, "amps": None})
    shuffled = list(events)
    random.Random(7).shuffle(shuffled)
    ax_v, ax_a = axes(power_figure(shuffled, title="shuffled"))
    (volts,) = [line for line in ax_v.lines if line.get_gid() == "volts"]
    (amps,) = [line for line in ax_a.lines if line.get_gid() == "amps"]
    xs = list(np.asarray(volts.get_xdata(), dtype=float))
    assert xs == sorted(xs) and len(xs) == 101
    assert math.isnan(np.asarray(volts.get_ydata(), dtype=float)[30])
    assert math.isnan(np.asarray(amps.get_ydata(), dtype=float)[30])
    png = power_png(shuffled, title="shuffled")
    assert png is not None and png.startswith(PNG_SIGNATURE)

    one = power_png(samples(0, 0), title="one sample")
    assert one is not None and struct.unpack(">II", one[16:24]) == (WIDTH_PX, HEIGHT_PX)


def test_events_from_a_real_stream_and_ascii_only_text() -> None:
    stream = EventStream(clock=lambda: T0)
    stream.publish(Source.RIG, "scenario", "begin", "sale", t=T0)
    for i in range(50):
        stream.publish(Source.POWER, "sample", "supply", t=T0 + 0.1 * i,
                       data={"volts": 7.4 - i * 0.01, "amps": 0.3})
    stream.publish(Source.TERMINAL, "event", "LOW_BATTERY", "电量低 请充电 LOW BATTERY", t=T0 + 3)
    fig = power_figure(stream.events(), title="低电量 sale at 6.9 V")
    texts = [title(fig)] + legend_texts(fig) + [t for _, t in labels(fig)]
    assert all(t.isascii() for t in texts)
    assert title(fig).endswith("sale at 6.9 V")
    assert "LOW_BATTERY" in [t for _, t in labels(fig)]


def test_spread_keeps_labels_apart_near_their_lines_and_inside() -> None:
    assert spread([1.0, 5.0], 1.0, 0.0, 10.0) == [1.0, 5.0]
    assert spread([5.0, 5.0, 5.0], 1.0, 0.0, 10.0) == pytest.approx([4.0, 5.0, 6.0])
    assert spread([0.0, 0.0], 1.0, 0.0, 10.0) == pytest.approx([0.0, 1.0])
    assert spread([10.0, 10.0], 1.0, 0.0, 10.0) == pytest.approx([9.0, 10.0])
    out = spread([3.0, 3.2, 3.4, 4.0, 9.0], 1.0, 0.0, 10.0)
    assert all(b - a >= 1.0 - 1e-9 for a, b in zip(out, out[1:], strict=False))


def test_power_png_leaves_no_global_matplotlib_state() -> None:
    import matplotlib

    backend = matplotlib.get_backend()
    assert power_png(samples(0, 1), title="state") is not None
    assert matplotlib.get_backend() == backend


def test_a_line_for_each_moment_category_in_the_legend() -> None:
    events = samples(0, 5) + [ev(1, Source.NETWORK, "iso8583", "0800"),
                              ev(2, Source.NETWORK, "iso8583", "0810")]
    texts = legend_texts(power_figure(events, title="legend"))
    assert "ISO 8583 message (MTI): 2" in texts


def test_many_faults_are_all_shaded_but_the_legend_counts_the_rest() -> None:
    events = samples(0, 40)
    for fid in range(1, 16):
        events += fault("delay", fid, armed=fid * 2.0, fired=[fid * 2.0], cleared=fid * 2.0 + 1)
    fig = power_figure(events, title="many faults")
    assert len(spans(axes(fig)[0])) == 15
    texts = legend_texts(fig)
    assert sum(t.startswith("#") for t in texts) == 12
    assert "+3 more faults" in texts
