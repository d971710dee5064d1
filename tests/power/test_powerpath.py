"""The terminal's power path (sim/powerpath.py) without sockets: brown-out, the power-on reset
hold-off, a terminal that switched itself off and starts again on its cradle, a crash — and,
with the simulated supply in the loop, the slow, bounded boot loop of a current limit too low
to boot (TS-14)."""

from __future__ import annotations

import pytest

from sim.powerpath import Boot, Kill, PowerAction, PowerState, Rail, TerminalPowerPath
from sim.psu import SimPowerSupply
from sim.terminal.profile import BROWNOUT_VOLTS, load_profile
from tests.terminal.fakes import PROFILE_PATH

POR = 0.5


def path() -> TerminalPowerPath:
    return TerminalPowerPath(brownout_volts=6.00, restart_volts=7.00, power_on_reset_s=POR)


def test_power_on_waits_for_the_reset_hold_off() -> None:
    pp = path()
    assert pp.rail(7.40, 0.0) == [] and pp.state is PowerState.RESET
    assert pp.next_deadline() == POR
    assert pp.rail(7.20, 0.3) == []  # changes above brown-out do not restart the hold-off
    assert pp.tick(0.499) == []
    assert pp.tick(0.5) == [Boot(7.20, 1)] and pp.state is PowerState.RUNNING
    assert pp.next_deadline() is None
    assert pp.rail(7.20, 0.6) == []  # the firmware was told the rail at boot
    assert pp.rail(6.50, 0.7) == [Rail(6.50)]
    assert pp.rail(6.50, 0.8) == []  # samples without a change say nothing


def test_a_dip_below_brown_out_during_the_hold_off_starts_it_again() -> None:
    pp = path()
    pp.rail(7.40, 0.0)
    assert pp.rail(5.0, 0.4) == [] and pp.state is PowerState.UNPOWERED
    pp.rail(7.40, 0.45)
    assert pp.tick(0.5) == [] and pp.next_deadline() == pytest.approx(0.95)
    assert pp.tick(0.95) == [Boot(7.40, 1)]


def test_brown_out_kills_the_running_firmware_at_once() -> None:
    pp = path()
    pp.rail(7.40, 0.0)
    pp.tick(POR)
    (kill,) = pp.rail(5.99, 1.0)
    assert isinstance(kill, Kill) and kill.why == "rail at 5.99 V < brown-out 6.00 V"
    assert pp.rail(0.0, 1.1) == []  # already dead


def test_switched_off_terminal_starts_again_above_restart_volts() -> None:
    pp = path()
    pp.rail(6.35, 0.0)
    pp.tick(POR)
    (kill,) = pp.powered_off("cutoff")
    assert isinstance(kill, Kill) and "switched itself off (cutoff)" in kill.why
    assert pp.state is PowerState.OFF
    assert pp.rail(6.35, 1.0) == [] and pp.rail(6.90, 1.1) == [] and pp.rail(7.00, 1.2) == []
    assert pp.tick(10.0) == []  # no hold-off timer runs while it is off
    assert pp.rail(7.40, 2.0) == [Boot(7.40, 1)]  # charger connected: no hold-off
    assert pp.powered_off("cutoff") and pp.powered_off("again") == []


def test_switched_off_terminal_restarts_after_a_power_cycle_too() -> None:
    pp = path()
    pp.rail(6.42, 0.0)
    pp.tick(POR)
    pp.powered_off("critical")
    assert pp.rail(0.0, 1.0) == [] and pp.state is PowerState.UNPOWERED
    pp.rail(6.42, 2.0)
    assert pp.tick(2.0 + POR) == [Boot(6.42, 1)]  # it tries again (and will say why not)


def test_a_crashed_firmware_needs_a_power_cycle() -> None:
    pp = path()
    pp.rail(7.40, 0.0)
    pp.tick(POR)
    pp.booted()
    (kill,) = pp.exited(1)
    assert isinstance(kill, Kill) and "exited with code 1" in kill.why
    assert pp.rail(7.30, 1.0) == [] and pp.tick(5.0) == [] and pp.exited(1) == []
    pp.rail(0.0, 6.0)
    pp.rail(7.40, 6.1)
    assert pp.tick(6.1 + POR) == [Boot(7.40, 1)]


def test_attempts_count_until_the_terminal_boots() -> None:
    pp = path()
    for n in (1, 2, 3):
        pp.rail(7.40, 10.0 * n)
        assert pp.tick(10.0 * n + POR) == [Boot(7.40, n)]
        pp.rail(4.0, 10.0 * n + 0.6)
    pp.rail(7.40, 40.0)
    pp.booted()
    pp.rail(4.0, 40.1)
    pp.rail(7.40, 41.0)
    assert pp.tick(41.0 + POR) == [Boot(7.40, 1)]


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="brownout_volts"):
        TerminalPowerPath(brownout_volts=7.0, restart_volts=6.0, power_on_reset_s=0.5)
    with pytest.raises(ValueError, match="power_on_reset_s"):
        TerminalPowerPath(brownout_volts=6.0, restart_volts=7.0, power_on_reset_s=0.0)


class Wiring:
    """The supervisor's wiring (sim/bench.py) with the simulated supply and no process: the SCPI
    server's "after" hook samples the rail and posts it to the main loop, which hands it to the
    power path; a Boot sets the load to booting, a Kill removes it (and samples again)."""

    def __init__(self, psu: SimPowerSupply, pp: TerminalPowerPath) -> None:
        self.psu, self.pp = psu, pp
        self.posted: list[float] = []
        self.boots: list[float] = []
        self.samples: list[tuple[float, float, float]] = []  # t, MEAS:VOLT?, MEAS:CURR?

    def scpi(self, line: str, now: float) -> str | None:
        answer = self.psu.handle(line, now)
        self.posted.append(self.psu.rail_volts)  # sampled in the server thread
        return answer

    def loop(self, now: float) -> None:
        """One turn of the supervisor's main loop: the posted samples, then the timer."""
        posted, self.posted = self.posted, []
        for volts in posted:
            self.do(self.pp.rail(volts, now), now)
        self.do(self.pp.tick(now), now)

    def do(self, actions: list[PowerAction], now: float) -> None:
        for action in actions:
            if isinstance(action, Boot):
                self.boots.append(now)
                self.psu.load_state = "booting"
            elif isinstance(action, Kill):
                self.psu.load_state = None
                self.do(self.pp.rail(self.psu.rail_volts, now), now)

    def measure(self, now: float) -> None:
        """The rig's supply sampler: both quantities, one after the other."""
        volts = float(self.scpi("MEAS:VOLT?", now) or "nan")
        amps = float(self.scpi("MEAS:CURR?", now) or "nan")
        self.samples.append((now, volts, amps))


def run(w: Wiring, start: float, seconds: float, step: float = 0.1) -> float:
    """The rig samples every *step* s; the main loop turns in between (and at the samples)."""
    t = start
    for _ in range(round(seconds / 0.01)):
        t = round(t + 0.01, 2)
        w.loop(t)
        if round(t / step, 6).is_integer():
            w.measure(t)
    return t


def test_current_limit_too_low_to_boot_is_a_slow_bounded_boot_loop() -> None:
    """TS-14: 0.20 A cannot feed a booting terminal (0.30 A): each try pulls the supply into
    constant current, the rail sags below brown-out and the terminal dies; the next try comes a
    power-on reset later however often the rig samples, and the supply measures the current
    at the limit and the sagged rail while a try is on.  With the limit back, it boots."""
    profile = load_profile(PROFILE_PATH)
    pp = TerminalPowerPath(brownout_volts=BROWNOUT_VOLTS, restart_volts=profile.restart_volts,
                           power_on_reset_s=profile.power_on_reset_s)
    w = Wiring(SimPowerSupply(max_volts=8.4, max_amps=2.0), pp)
    for line in ("VOLT 7.4", "CURR 0.2", "OUTP ON"):
        w.scpi(line, 0.0)
    t = run(w, 0.0, 5.0, step=0.03)  # a busy rig: many samples per power-on reset
    assert 6 <= len(w.boots) <= 10, w.boots  # a power-on reset (+ one sample) per try
    gaps = [b - a for a, b in zip(w.boots, w.boots[1:], strict=False)]
    assert all(g >= profile.power_on_reset_s - 1e-6 for g in gaps), gaps
    assert pp.attempt == len(w.boots) and pp.state is not PowerState.RUNNING
    trying = [(v, a) for _, v, a in w.samples if a > 0]
    assert trying, w.samples
    assert all(a == pytest.approx(0.2) and v == pytest.approx(7.4 * 0.2 / 0.30)
               for v, a in trying), trying  # at the limit, the rail sagged below brown-out
    assert all(v < BROWNOUT_VOLTS for v, _ in trying)
    # the limit restored: the next try boots and stays up
    w.scpi("CURR 2.0", t)
    t = run(w, t, 1.0)
    assert pp.state is PowerState.RUNNING
    assert w.samples[-1][1:] == (pytest.approx(7.4), pytest.approx(0.30))
