"""The terminal profile's supply thresholds must keep their order (brown-out < min_operating <
cutoff <= critical < low_battery < restart <= nominal) and its power timings be positive; a
mistake names the key path and the threshold it collides with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from protocols.errors import ConfigError
from sim.terminal.profile import BROWNOUT_VOLTS, load_profile, profile_from_dict

REPO = Path(__file__).resolve().parents[2]
TERMINAL = REPO / "fixtures/terminal/profile.yaml"


def _doc() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(TERMINAL.read_text(encoding="utf-8"))
    return doc


def _problems(doc: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as err:
        profile_from_dict(doc, "profile.yaml")
    text = str(err.value)
    assert text.startswith("profile.yaml: terminal profile is not valid:\n")
    return [line.strip() for line in text.splitlines()[1:]]


def test_fixture_profile_thresholds_are_in_order() -> None:
    p = load_profile(TERMINAL)
    assert (BROWNOUT_VOLTS < p.min_operating_volts < p.cutoff_volts <= p.critical_volts
            < p.low_battery_volts < p.restart_volts <= p.nominal_volts)
    assert (p.cutoff_debounce_s, p.hang_after_s, p.power_on_reset_s) == (0.3, 0.05, 0.5)


@pytest.mark.parametrize(("changes", "expected"), [
    ({"min_operating_volts": 6.00},
     "thresholds.min_operating_volts: must be above the brown-out 6.00 V, got 6.00 V"),
    ({"cutoff_volts": 6.20},
     "thresholds.cutoff_volts: must be above min_operating_volts (6.20 V), got 6.20 V"),
    ({"critical_volts": 6.30},
     "thresholds.critical_volts: must be at or above cutoff_volts (6.40 V), got 6.30 V"),
    ({"low_battery_volts": 6.45},
     "thresholds.low_battery_volts: must be above critical_volts (6.45 V), got 6.45 V"),
    ({"restart_volts": 6.70},
     "thresholds.restart_volts: must be above low_battery_volts (6.80 V), got 6.70 V"),
    ({"nominal_volts": 6.90},
     "thresholds.nominal_volts: must be at or above restart_volts (7.00 V), got 6.90 V"),
])
def test_thresholds_out_of_order_name_the_key(changes: dict[str, float], expected: str) -> None:
    doc = _doc()
    doc["thresholds"].update(changes)
    (problem,) = _problems(doc)
    assert problem.startswith(expected), problem
    assert problem.endswith("the order is brown-out (6.00 V) < min_operating_volts < "
                            "cutoff_volts <= critical_volts < low_battery_volts < restart_volts "
                            "<= nominal_volts")


def test_equal_where_allowed() -> None:
    doc = _doc()
    doc["thresholds"].update(critical_volts=6.40, restart_volts=7.40)
    p = profile_from_dict(doc, "profile.yaml")
    assert (p.cutoff_volts, p.critical_volts, p.restart_volts, p.nominal_volts) == (
        6.40, 6.40, 7.40, 7.40)


def test_every_threshold_out_of_place_is_listed() -> None:
    doc = _doc()
    doc["thresholds"].update(min_operating_volts=5.5, critical_volts=6.0, nominal_volts=6.9)
    problems = _problems(doc)
    assert [p.split(":")[0] for p in problems] == [
        "thresholds.min_operating_volts", "thresholds.critical_volts",
        "thresholds.nominal_volts"]


@pytest.mark.parametrize("key", ["cutoff_debounce", "hang_after", "power_on_reset"])
def test_power_timings_must_be_positive(key: str) -> None:
    doc = _doc()
    doc["power"][key] = 0
    (problem,) = _problems(doc)
    assert problem.startswith(f"power.{key}: must be > 0"), problem


def test_power_section_rejects_unknown_keys() -> None:
    doc = _doc()
    doc["power"]["hang_after_ms"] = 20
    assert _problems(doc) == ["power.hang_after_ms: unknown key (misspelt?)"]
