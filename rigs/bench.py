"""The bench façade the steps use.

``bench.terminal`` (a :class:`~rigs.interfaces.TerminalLink`) is always there; every other part
is reached through a typed accessor that raises :class:`~rigs.errors.CapabilityMissing` (turned
into a skip with the reason by the plugin) when the bench file lacks it: ``bench.cards``,
``bench.power``, ``bench.switch``, ``bench.network``, and ``bench.acquirer`` (what crossed the
wire, what the host booked).  ``bench.has(Capability…)`` asks without raising.

The bench YAML chooses each implementation (:mod:`rigs.registry`); the façade names only the
interfaces.  Every instrument answers ``is_nominal()`` / ``restore_nominal()``, so after every
scenario the bench restores them in one loop; a bench that cannot be restored is marked broken
and later scenarios fail at once with the first reason.

Per scenario the bench keeps one event stream (:mod:`rigs.events`) every instrument publishes
into and a fault ledger (:mod:`rigs.faults`); faults go through :meth:`Bench.inject` so each is
recorded and cleared when the scenario ends.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from protocols.faults import FAULT_KINDS, FaultKind, FaultSpec, Target
from rigs import registry
from rigs.acquirer import AcquirerView, decode_wire
from rigs.capabilities import CAPABILITY_OF_TAG, REQUIREMENT, Capability, reason
from rigs.config import BenchConfig
from rigs.errors import BenchNotNominal, CapabilityMissing, ConfigError, RigError
from rigs.events import Event, EventStream, Source
from rigs.faults import FaultLedger, FaultRecord
from rigs.interfaces import (
    AcquirerControl,
    AcquirerLedger,
    CardBank,
    Instrument,
    NetworkInjector,
    PowerSupply,
    SwitchUnit,
    TerminalLink,
)
from rigs.qr import QrPlatformView
from rigs.triggers import SEEN, WIRE_POLL_S, Armer, Trigger

log = logging.getLogger(__name__)

PAPER_SENSOR = "paper_sensor"
PAPER_NEAR_END = "paper_near_end"
PRINTER_PRESENCE = "printer_presence"
SAMPLE_PERIOD_S = 0.1
RECOVERY_OFF_MS = 500.0
"""How long the bench keeps the supply off to restart a terminal that did not come back."""


#: Injector and card bank kinds that act from the moment they are applied; the others wait for
#: traffic (the instrument reports when they fired).
ACTS_AT_ONCE = frozenset({FaultKind.CABLE_PULL, FaultKind.DELAY, FaultKind.SYN_BLACKHOLE,
                          FaultKind.FLAP, FaultKind.BANDWIDTH,
                          FaultKind.CARRIER_LOSS})


@dataclass(frozen=True)
class FaultAction:
    """How the bench applies and clears one fault kind through its instrument.  ``apply`` may
    return the instrument's own id of the fault (a network or card rule)."""

    apply: Callable[[FaultSpec], object]
    clear: Callable[[FaultRecord], object]
    fires_later: bool = False
    """Armed now, fires on traffic (the instrument reports when)."""
    over_when_applied: bool = False
    """One-shot and already over when ``apply`` returns (a dip, a power cycle)."""


@dataclass(frozen=True)
class Evidence:
    name: str
    kind: str  # "text", "csv", "pcap", "png", "json"
    content: bytes | str | None = None
    path: Path | None = None


def missing_for_tags(config: BenchConfig, tags: Iterable[str]) -> list[str]:
    """Why a scenario with *tags* cannot run on the bench *config* describes (empty: it can)."""
    out = []
    for tag in sorted(set(tags)):
        cap = CAPABILITY_OF_TAG.get(tag)
        if cap is not None and lacks(config, cap):
            out.append(reason(f"@{tag}", cap))
    return out


def lacks(config: BenchConfig, cap: Capability) -> bool:
    """True when the bench *config* describes has no part providing *cap*."""
    if cap is Capability.CARDS:
        return config.cards is None
    if cap is Capability.POWER:
        return config.power is None
    if cap is Capability.PAPER_SENSOR:
        return config.switch is None or PAPER_SENSOR not in config.switch.channels
    if cap is Capability.NETWORK:
        return config.network is None
    if cap is Capability.WIRE:
        return config.network is None or config.host is None
    if cap is Capability.LEDGER:
        return config.host is None or config.host.ledger is None
    if cap is Capability.HOST_CONTROL:
        return config.host is None or getattr(config.host, "control", None) is None
    if cap is Capability.QR:
        return config.qr is None or config.qr.control is None
    if cap is Capability.QR_LEDGER:
        return config.qr is None or config.qr.ledger is None
    if cap is Capability.LAB:
        return config.bench.kind == "virtual"
    raise ConfigError(f"unknown capability {cap!r}")


class Bench:
    """One bench: its instruments, opened together, restored to nominal together."""

    def __init__(self, config: BenchConfig, *, workdir: Path,
                 build: Callable[[str, Any, registry.BuildContext], Any] = registry.build
                 ) -> None:
        self.config = config
        self.workdir = workdir
        self.broken: str | None = None
        self.events = EventStream()
        self.faults = FaultLedger(self.events)
        self.armer = Armer(self.events)
        self._watches: dict[str, int] = {}
        self._watcher: tuple[threading.Event, threading.Thread] | None = None
        self._watch_mark = 0
        self._fault_lock = threading.RLock()
        self._fault_actions = self._build_fault_actions()
        ctx = registry.BuildContext(config, workdir)
        self.terminal: TerminalLink = build("terminal", config.terminal, ctx)
        self._cards: CardBank | None = (
            None if config.cards is None else build("cards", config.cards, ctx))
        self._power: PowerSupply | None = (
            None if config.power is None else build("power", config.power, ctx))
        self._switch: SwitchUnit | None = (
            None if config.switch is None else build("switch", config.switch, ctx))
        self._network: NetworkInjector | None = (
            None if config.network is None else build("network", config.network, ctx))
        self._ledger: AcquirerLedger | None = (
            None if config.host is None or config.host.ledger is None
            else build("ledger", config.host, ctx))
        self._control: AcquirerControl | None = (
            None if lacks(config, Capability.HOST_CONTROL)
            else build("control", config.host, ctx))
        self.acquirer = AcquirerView(
            config.bench.name, network=self._network, ledger=self._ledger,
            control=self._control,
            host_port=None if config.host is None else config.host.port)
        self._qr = QrPlatformView(
            config.bench.name, address=None if config.qr is None else config.qr.address,
            ledger=None if lacks(config, Capability.QR_LEDGER)
            else build("qr_ledger", config.qr, ctx),
            wallet=None if lacks(config, Capability.QR) else build("qr_wallet", config.qr, ctx),
            control=None if lacks(config, Capability.QR)
            else build("qr_control", config.qr, ctx))
        for instrument in self.instruments():
            instrument.event_sink = self.events
        self._opened: list[Instrument] = []
        self._capture: Path | None = None
        self._trip_mark = 0
        self._scenario = ""
        self.raw_capture_dir: Path | None = None
        """Where raw captures are also kept (``--raw-capture``); None: never."""
        self.defer_plots = False
        """Attach each supply plot's data and leave the drawing to the report step
        (``--defer-plots``, set by ``python -m rigs.report``): no scenario waits for it."""

    @property
    def sample_period_s(self) -> float:
        """How often the supply is measured during a scenario (``power.sample_period_ms``)."""
        power = self.config.power
        return SAMPLE_PERIOD_S if power is None else power.sample_period_ms / 1000.0

    # -- capabilities -----------------------------------------------------------------------
    def has(self, cap: Capability) -> bool:
        return not lacks(self.config, cap)

    def _need(self, cap: Capability, part: Any) -> Any:
        if part is None or not self.has(cap):
            raise CapabilityMissing(f"bench {self.config.bench.name}: needs "
                                    f"{REQUIREMENT[cap]}")
        return part

    @property
    def cards(self) -> CardBank:
        return self._need(Capability.CARDS, self._cards)  # type: ignore[no-any-return]

    @property
    def power(self) -> PowerSupply:
        return self._need(Capability.POWER, self._power)  # type: ignore[no-any-return]

    @property
    def switch(self) -> SwitchUnit:
        if self._switch is None:
            raise CapabilityMissing(f"bench {self.config.bench.name}: needs a 'switch' section "
                                    f"in the bench file (relay unit)")
        return self._switch

    @property
    def qr(self) -> QrPlatformView:
        """The QR payment platform: its ledger, the customer's wallet, its rules."""
        if self.config.qr is None:
            raise CapabilityMissing(f"bench {self.config.bench.name}: needs "
                                    f"{REQUIREMENT[Capability.QR]}")
        return self._qr

    @property
    def network(self) -> NetworkInjector:
        return self._need(Capability.NETWORK, self._network)  # type: ignore[no-any-return]

    def paper_channel(self) -> int:
        return self.sensor_channel(PAPER_SENSOR)

    def sensor_channel(self, name: str) -> int:
        """The relay channel wired across the terminal's line *name* (bench file
        ``switch.channels.<name>``)."""
        switch = self.config.switch
        if switch is None or name not in switch.channels:
            need = (REQUIREMENT[Capability.PAPER_SENSOR] if name == PAPER_SENSOR
                    else f"a relay channel wired to the terminal's {name} (switch.channels."
                         f"{name} in the bench file)")
            raise CapabilityMissing(f"bench {self.config.bench.name}: needs {need}")
        return switch.channels[name]

    def card_pin(self, card: str) -> str:
        cards = self.config.cards
        if cards is None or card not in cards.bank:
            raise CapabilityMissing(f"bench {self.config.bench.name}: no card {card!r} in the "
                                    f"card bank (cards.bank.{card})")
        pin = cards.bank[card].pin
        if pin is None:
            raise CapabilityMissing(f"card {card!r} has no pin in cards.bank.{card}.pin")
        return pin

    # -- life ---------------------------------------------------------------------------------
    def instruments(self) -> list[Instrument]:
        """Open order: what shapes the terminal's world first, the terminal last.  Restore
        uses the same order: the terminal judges the world the others have just restored."""
        parts: list[Instrument | None] = [self._ledger, self._control, *self._qr.instruments(),
                                          self._network, self._switch, self._cards, self._power,
                                          self.terminal]
        return [p for p in parts if p is not None]

    def open(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for instrument in self.instruments():
            try:
                instrument.open()
            except RigError as exc:
                self.close()
                raise RigError(f"bench {self.config.bench.name}: cannot open {instrument!r}: "
                               f"{exc}") from exc
            self._opened.append(instrument)

    def close(self) -> None:
        errors = []
        for instrument in reversed(self._opened):
            try:
                instrument.close()
            except RigError as exc:
                errors.append(f"{instrument!r}: {exc}")
        self._opened.clear()
        if errors:
            log.error("closing the bench: %s", "; ".join(errors))

    # -- faults -------------------------------------------------------------------------------
    def _build_fault_actions(self) -> Mapping[FaultKind, FaultAction]:
        """Fault kind → how the instrument that carries it out applies and clears it.  Adding a
        kind is a row of protocols.faults.FAULT_KINDS and a row here; a network or card kind
        needs no row here (every kind whose target is the injector or the card bank goes to it),
        only its rule in that instrument."""
        def remote(part: Callable[[], NetworkInjector | CardBank], kind: FaultKind
                   ) -> FaultAction:
            def clear(rec: FaultRecord) -> None:
                if rec.remote_id is not None:
                    self.sync_faults()
                    part().clear(rec.remote_id)
            return FaultAction(lambda spec: part().apply(spec), clear,
                               fires_later=kind not in ACTS_AT_ONCE)

        def channel(name: str) -> FaultAction:
            return FaultAction(lambda spec: self.switch.close_channel(self.sensor_channel(name)),
                               lambda rec: self.switch.open_channel(self.sensor_channel(name)))

        def back_to_nominal(rec: FaultRecord) -> None:
            self.power.set_voltage(self.power.nominal_volts)

        def discharge(spec: FaultSpec) -> None:
            p = spec.params
            self.power.ramp_to(float(p["to_volts"]), float(p["volts_per_s"]),
                               float(p["step_ms"]))

        def stop_discharge(rec: FaultRecord) -> None:
            self.power.stop_ramp()
            back_to_nominal(rec)

        def max_amps() -> float:
            power = self.config.power
            assert power is not None  # self.power raised CapabilityMissing otherwise
            return float(power.limits.max_amps)

        parts: dict[Target, Callable[[], NetworkInjector | CardBank]] = {
            Target.NETWORK: lambda: self.network, Target.CARDS: lambda: self.cards}
        return MappingProxyType({
            **{kind: remote(parts[ks.target], kind) for kind, ks in FAULT_KINDS.items()
               if ks.target in parts},
            FaultKind.PAPER_OUT: channel(PAPER_SENSOR),
            FaultKind.PAPER_LOW: channel(PAPER_NEAR_END),
            FaultKind.PRINTER_DISCONNECTED: channel(PRINTER_PRESENCE),
            FaultKind.SUPPLY_SAG: FaultAction(
                lambda spec: self.power.sag_to(float(spec.params["volts"])), back_to_nominal),
            FaultKind.POWER_CUT: FaultAction(lambda spec: self.power.output_off(),
                                             lambda rec: self.power.output_on()),
            FaultKind.BATTERY_DISCHARGE: FaultAction(discharge, stop_discharge),
            FaultKind.BROWNOUT_DIP: FaultAction(
                lambda spec: self.power.dip(float(spec.params["volts"]),
                                            float(spec.params["ms"])),
                back_to_nominal, over_when_applied=True),
            FaultKind.CURRENT_LIMIT: FaultAction(
                lambda spec: self.power.set_current_limit(float(spec.params["amps"])),
                lambda rec: self.power.set_current_limit(max_amps())),
            FaultKind.POWER_CYCLE: FaultAction(
                lambda spec: self.power.power_cycle(float(spec.params["off_ms"])),
                lambda rec: self.power.output_on(), over_when_applied=True),
        })

    def _action(self, spec: FaultSpec) -> FaultAction:
        action = self._fault_actions.get(spec.kind)
        if action is None:
            raise ConfigError(f"bench {self.config.bench.name}: no instrument carries out fault "
                              f"kind {spec.kind.value} on {spec.target.value}")
        return action

    def _apply(self, spec: FaultSpec, rec: FaultRecord) -> None:
        """Apply *spec* for *rec* (under the fault lock) and record its firing."""
        action = self._action(spec)
        result = action.apply(spec)
        rec.remote_id = result if isinstance(result, int) else None
        if not action.fires_later:
            self.faults.fired(rec)
        if action.over_when_applied:
            self.faults.cleared(rec, "over by itself")

    def inject(self, spec: FaultSpec) -> FaultRecord:
        """Apply *spec* now through the instrument that carries its kind out, and record it."""
        self._action(spec)  # an unknown kind is refused before anything is recorded
        with self._fault_lock:
            rec = self.faults.armed(spec, fires_now=False)
            try:
                self._apply(spec, rec)
            except BaseException:
                self.faults.cleared(rec, "failed to apply")
                raise
        return rec

    def arm(self, spec: FaultSpec, trigger: Trigger) -> FaultRecord:
        """Arm *spec* to be applied when *trigger* matches the scenario's event stream (see
        :mod:`rigs.triggers`); a failure to apply it then fails the scenario at its end."""
        self._action(spec)
        rec = self.faults.armed(spec, fires_now=False, trigger=trigger.describe())

        def fire(ev: Event) -> None:
            with self._fault_lock:
                if rec.active:
                    self._apply(spec, rec)

        if trigger.source is Source.NETWORK and trigger.kind == SEEN and trigger.name:
            for mti in sorted(trigger.name):
                self._watch_wire(mti)
        rec.armed_id = self.armer.arm(trigger, fire)
        return rec

    def _watch_wire(self, mti: str) -> None:
        """Have the injector note every *mti* crossing, and publish the notes live (see
        :mod:`rigs.triggers`)."""
        network = self.network
        with self._fault_lock:
            if mti not in self._watches:
                self._watches[mti] = network.apply(FaultSpec.of(FaultKind.WATCH_MESSAGE,
                                                                mti=mti))
            if self._watcher is None:
                self._watch_mark = max((t.n for t in network.trips()), default=0)
                stop = threading.Event()
                thread = threading.Thread(target=self._poll_wire, args=(stop,), daemon=True,
                                          name="wire-watch")
                self._watcher = (stop, thread)
                thread.start()

    def _poll_wire(self, stop: threading.Event) -> None:
        network = self.network
        while not stop.wait(WIRE_POLL_S):
            try:
                trips = network.trips(after=self._watch_mark)
            except RigError as exc:
                log.warning("bench: polling the injector's notes: %s", exc)
                return
            watch_ids = {rule_id: mti for mti, rule_id in self._watches.items()}
            for trip in trips:
                self._watch_mark = max(self._watch_mark, trip.n)
                mti = watch_ids.get(trip.rule_id)
                if mti is not None:
                    self.events.publish(Source.NETWORK, SEEN, mti,
                                        f"{trip.direction.value} {trip.frame}", t=trip.wall,
                                        data={"n": trip.n})

    def _stop_watching(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher[0].set()
            watcher[1].join(timeout=2.0)
        watches, self._watches = self._watches, {}
        if self._network is not None:
            for rule_id in watches.values():
                try:
                    self._network.clear(rule_id)
                except RigError as exc:
                    log.warning("bench: clearing the injector's watch #%d: %s", rule_id, exc)

    def clear_fault(self, rec: FaultRecord, by: str = "step") -> None:
        """Undo one injected fault through its instrument (or disarm it if its trigger never
        matched) and record that."""
        with self._fault_lock:
            if not rec.active:
                return
            if rec.armed_id is not None and self.armer.disarm(rec.armed_id) and not rec.fired \
                    and rec.remote_id is None:
                self.faults.cleared(rec, f"{by}: disarmed before its trigger matched")
                return
            self._action(rec.spec).clear(rec)
            self.faults.cleared(rec, by)

    def clear_faults(self, *kinds: FaultKind, by: str = "step") -> list[FaultRecord]:
        """Clear every active fault of *kinds* (all kinds when none given)."""
        done = []
        for rec in self.faults.active():
            if not kinds or rec.kind in kinds:
                self.clear_fault(rec, by)
                done.append(rec)
        return done

    def sync_faults(self) -> None:
        """Copy when the injector's and the card bank's rules fired into the fault ledger (done
        at every clear and at the end of the scenario; a step that reads ``fired`` of such a
        fault calls it first)."""
        ledgers: list[tuple[Target, Any]] = []
        if self._network is not None:
            ledgers.append((Target.NETWORK, self._network))
        if self._cards is not None and self.has(Capability.CARDS):
            ledgers.append((Target.CARDS, self._cards))
        if not ledgers:
            return
        by_rule = {(r.target, r.remote_id): r for r in self.faults.records()
                   if r.remote_id is not None}
        for target, part in ledgers:
            for rule in part.fault_ledger():
                rec = by_rule.get((target, rule.id))
                if rec is not None:
                    for fired in rule.fired:
                        self.faults.fired(rec, getattr(fired, "wall", fired))

    # -- nominal ------------------------------------------------------------------------------
    def restore_nominal(self) -> None:
        """Return every instrument to nominal and check it; raise BenchNotNominal otherwise."""
        if self.broken:
            raise BenchNotNominal(self.broken)
        self.armer.settle()  # nothing armed may fire while the bench is being restored
        self._stop_watching()
        try:
            self.sync_faults()
        except RigError as exc:
            log.warning("bench: reading the injector's fault ledger: %s", exc)
        problems: list[str] = []
        for instrument in self.instruments():
            try:
                instrument.restore_nominal()
            except RigError as exc:
                if instrument is self.terminal and self._recover_by_power_cycle(exc):
                    continue
                problems.append(f"{instrument!r}: {exc}")
        for instrument in self.instruments():
            try:
                ok = instrument.is_nominal()
            except RigError as exc:
                ok = False
                problems.append(f"{instrument!r}: checking nominal: {exc}")
            if not ok:
                problems.append(f"{instrument!r} is not nominal after restoring it")
        if problems:
            self.broken = ("the bench could not be returned to nominal, so no later scenario "
                           "can be trusted: " + "; ".join(problems))
            raise BenchNotNominal(self.broken)
        for rec in self.faults.active():
            self.faults.cleared(rec, "bench restored to nominal")

    def _recover_by_power_cycle(self, why: RigError) -> bool:
        """A terminal that does not come back (hung by a brown-out, shut down) is restarted the
        way a field engineer does it (TS-18): the supply off for RECOVERY_OFF_MS and on again.
        True if it is then restored; said in the log and the timeline either way."""
        if self._power is None or not self.has(Capability.POWER):
            return False
        log.warning("bench %s: the terminal did not come back (%s); power-cycling it",
                    self.config.bench.name, why)
        self.events.publish(Source.RIG, "recovery", "power_cycle",
                            f"terminal not nominal after restore ({why}); supply off "
                            f"{RECOVERY_OFF_MS:.0f} ms and on again")
        try:
            self._power.power_cycle(RECOVERY_OFF_MS)
            self.terminal.restore_nominal()
        except RigError as exc:
            log.error("bench %s: the terminal did not come back after a power cycle either: %s",
                      self.config.bench.name, exc)
            return False
        return True

    # -- evidence -----------------------------------------------------------------------------
    def begin_scenario(self, slug: str) -> None:
        """Clear per-scenario evidence and start the capture."""
        self.events.clear()
        self.faults.reset()
        self.armer.reset()
        self.terminal.clear_evidence()
        if self._cards is not None:
            self._cards.clear_trace()
        if self._switch is not None:
            self._switch.clear_trace()
        if self._power is not None:
            self._power.clear_trace()
            self._power.start_sampling(period_s=self.sample_period_s)
        self.acquirer.begin_scenario()
        self._qr.begin_scenario()
        if self._network is not None:
            path = self.workdir / "capture" / f"{slug}.pcap"
            path.parent.mkdir(parents=True, exist_ok=True)
            self._network.start_capture(path)
            self._capture = path
            self._trip_mark = max((t.n for t in self._network.trips()), default=0)
        self._scenario = slug
        self.events.publish(Source.RIG, "scenario", "begin", slug)

    def end_scenario(self) -> list[Evidence]:
        """Clear the scenario's faults (so the evidence shows each one cleared, on the same
        clock), stop the capture and collect what the scenario's report should carry (all
        masked).  A fault that cannot be cleared here is left to restore_nominal(), which
        fails loudly."""
        self.armer.settle()
        try:
            self.sync_faults()
            self.clear_faults(by="scenario ended")
        except RigError as exc:
            log.warning("clearing the scenario's faults at its end: %s (restoring the bench "
                        "to nominal will try again)", exc)
        self._stop_watching()
        out = [Evidence("ECR transcript", "text", self.terminal.transcript_text())]
        receipts = self.terminal.receipts
        if receipts:
            out.append(Evidence("receipts", "text", "\n\n".join(receipts)))
        if self._cards is not None:
            out.append(Evidence("APDU trace (card data masked)", "text",
                                self._cards.trace_text()))
        if self._power is not None:
            self._power.stop_sampling()
            out.append(Evidence(f"power supply trace (V, A every "
                                f"{self.sample_period_s * 1000:.0f} ms)", "csv",
                                self._power.trace_csv()))
        if self._switch is not None:
            relay = self._switch.trace_text()
            if relay:
                out.append(Evidence("relay unit actions", "text", relay))
        if self._network is not None and self._capture is not None:
            out += self._network_evidence(self._network)
        if self._ledger is not None:
            entries = self.acquirer.booked()
            out.append(Evidence("acquirer ledger (this scenario)", "text",
                                "\n".join(str(e) for e in entries) or "(no entries)"))
        qr_text = self._qr.evidence_text()
        if qr_text is not None:
            out.append(Evidence("QR platform ledger (this scenario)", "text", qr_text))
        self.sync_faults()
        out.append(Evidence("faults injected (armed, fired, cleared)", "text", self.faults.text()))
        self.events.publish(Source.RIG, "scenario", "end")
        out += self._pictures()
        out.append(Evidence("timeline (every instrument, one clock)", "text",
                            self.events.timeline()))
        return out

    def _keep_raw(self, raw: Path, label: str) -> None:
        """Only on explicit request (``--raw-capture DIR``, never under reports/): the capture
        as it crossed, card data in the clear."""
        assert self.raw_capture_dir is not None
        self.raw_capture_dir.mkdir(parents=True, exist_ok=True)
        kept = self.raw_capture_dir / f"{self._scenario}-{label}.pcap"
        shutil.copyfile(raw, kept)
        os.chmod(kept, 0o600)
        log.warning("raw capture kept as asked: %s holds card data in the clear (PAN, track 2, "
                    "PIN block); it is not part of the report: keep it out of anything shared",
                    kept)

    def _pictures(self) -> list[Evidence]:
        """The supply's voltage and current over the scenario with the fault windows shaded
        and the protocol moments marked (when the supply was sampled), and the QR codes the
        terminal showed or its scanner was shown (a customer's payment code masked).  A picture
        that cannot be drawn is said so in its place; it never costs the other evidence."""
        from rigs.cards import SCANNED
        from rigs.plotdata import PLOT_DATA_NAME, PLOT_NAME, plot_data
        from rigs.qrimage import payment_code_png, qr_png

        out: list[Evidence] = []
        try:
            if self._power is not None:
                t = self.config.terminal
                events = self.events.events()
                title = f"supply during {self._scenario}"
                thresholds = {f"low battery {t.low_battery_volts:.2f} V": t.low_battery_volts,
                              f"nominal {t.nominal_volts:.2f} V": t.nominal_volts}
                if self.defer_plots:  # drawn after the run (rigs.report)
                    data = plot_data(events, title=title, thresholds=thresholds)
                    if data is not None:
                        out.append(Evidence(PLOT_DATA_NAME, "json", data))
                else:  # drawn now, from the events themselves (no JSON round trip)
                    from rigs.plots import power_png

                    png = power_png(events, title=title, thresholds=thresholds)
                    if png is not None:
                        out.append(Evidence(PLOT_NAME, "png", png))
            shown = [e.qr_code for e in self.terminal.events if e.qr_code]
            for n, code in enumerate(dict.fromkeys(shown), 1):
                out.append(Evidence(f"QR code shown by the terminal ({n})", "png",
                                    qr_png(code, caption="merchant-presented code the terminal "
                                                         "showed (PG SHOW_QR)")))
            scanned = [e.detail.rsplit(": ", 1)[1] for e in self.events.events(
                lambda e: e.source is Source.CARDS and e.detail.startswith(SCANNED))]
            for n, masked in enumerate(dict.fromkeys(scanned), 1):
                out.append(Evidence(f"payment code shown to the scanner ({n}, masked)", "png",
                                    payment_code_png(masked)))
        except (RigError, OSError) as exc:  # OSError: e.g. a font matplotlib cached is gone
            log.warning("bench: the scenario's pictures were not drawn: %s", exc)
            out.append(Evidence("pictures not drawn", "text", str(exc)))
        return out

    def _network_evidence(self, network: NetworkInjector) -> list[Evidence]:
        from rigs.host import render_messages
        from rigs.network.capture import ISO_PORT, QR_PORT, redact_pcap

        out: list[Evidence] = []
        paths = network.stop_capture()
        self._capture = None
        start = self._trip_mark
        self._trip_mark = network.publish_trips(start)
        try:
            if self.config.host is not None:
                port = self.config.host.port
                for msg in decode_wire(paths.seen, port):
                    self.events.publish(Source.NETWORK, "iso8583", msg.mti or "?",
                                        f"{msg.direction.value} {msg.describe()}", t=msg.t)
                from rigs.host import decode_pcap

                out.append(Evidence("ISO 8583 messages sent (decoded, masked)", "text",
                                    render_messages(decode_pcap(paths.seen, port=port))))
                out.append(Evidence("ISO 8583 messages delivered by the injector (decoded, "
                                    "masked)", "text",
                                    render_messages(decode_pcap(paths.delivered, port=port))))
            iso_ports = (self.config.host.port,) if self.config.host is not None else (
                ISO_PORT,)
            qr_ports = (self.config.qr.port,) if self.config.qr is not None else (QR_PORT,)
            for raw, label in ((paths.seen, "seen"), (paths.delivered, "delivered")):
                safe = raw.with_name(raw.stem + ".redacted.pcap")
                try:
                    redact_pcap(raw, safe, iso_ports=iso_ports, qr_ports=qr_ports)
                    if self.raw_capture_dir is not None:
                        self._keep_raw(raw, label)
                finally:
                    raw.unlink(missing_ok=True)  # raw captures hold PAN, track 2, PIN block
                out.append(Evidence(f"network capture, frames {label} (card data masked in "
                                    f"place; decode with rigs/wireshark/posrig_iso8583.lua)",
                                    "pcap", path=safe))
        finally:
            for raw in (paths.seen, paths.delivered):
                raw.unlink(missing_ok=True)
        tripped = [t for t in network.trips(after=start)
                   if t.spec.kind is not FaultKind.WATCH_MESSAGE]
        if tripped:
            out.append(Evidence("network faults tripped by traffic", "text",
                                "\n".join(t.describe() for t in tripped)))
        return out
