"""The bench façade the steps use: ``bench.terminal``, ``bench.cards``, ``bench.power``,
``bench.switch``, ``bench.network``, ``bench.host``.

Built from a :class:`~rigs.config.BenchConfig`; the same code drives the virtual bench and a lab.
It knows what "nominal" means for a bench (supply on at nominal voltage, network passing, paper
in, no card in the slot, terminal idle) and restores it after every scenario; a bench that cannot
be restored is marked broken so later scenarios fail at once with the first reason.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rigs.config import BenchConfig
from rigs.errors import BenchNotNominal, CapabilityMissing, NoResponse, RigError

if TYPE_CHECKING:
    from rigs.cards import PcscCardBank
    from rigs.host import SqliteAcquirerLedger
    from rigs.network import ScapyBridgeInjector
    from rigs.power import ScpiPowerSupply
    from rigs.switch import ScpiRelayUnit
    from rigs.terminal import SerialTerminalLink, TerminalStatus

log = logging.getLogger(__name__)

PAPER_SENSOR = "paper_sensor"
RECOVERY_BOUND = 5.0
"""Longest wait (s), when the bench is restored, for the terminal to report that a fault the
instruments just cleared is gone (card removed, paper in, battery fine)."""


@dataclass(frozen=True)
class TerminalCheck:
    """One condition of a nominal terminal, as its STATUS shows it, and the event that says it
    has recovered."""

    failing: Callable[[TerminalStatus], bool]
    recovery_event: str
    describe: Callable[[TerminalStatus], str]


TERMINAL_CHECKS = (
    TerminalCheck(lambda st: st.card_present, "CARD_REMOVED",
                  lambda st: "a card is still in the slot"),
    TerminalCheck(lambda st: not st.paper_present, "PAPER_OK",
                  lambda st: "paper sensor says no paper"),
    TerminalCheck(lambda st: st.battery_low, "BATTERY_OK",
                  lambda st: f"battery low at {st.supply_volts:.2f} V"),
)

# Scenario tags → the bench section they need.
CAPABILITY_OF_TAG = {"card": "cards", "power": "power", "printer": "switch", "network": "network"}


@dataclass(frozen=True)
class Evidence:
    name: str
    kind: str  # "text", "csv", "pcap"
    content: bytes | str | None = None
    path: Path | None = None


def missing_capabilities(config: BenchConfig, tags: set[str]) -> list[str]:
    """What a bench lacks for a scenario with *tags* (empty: it can run)."""
    out = []
    for tag, section in CAPABILITY_OF_TAG.items():
        if tag in tags and getattr(config, section) is None:
            out.append(f"@{tag} needs a '{section}' section in the bench file")
    if "printer" in tags and config.switch is not None \
            and PAPER_SENSOR not in config.switch.channels:
        out.append(f"@printer needs switch.channels.{PAPER_SENSOR} in the bench file")
    if "hw_only" in tags and config.bench.kind == "virtual":
        out.append("@hw_only scenarios need a lab bench")
    return out


class Bench:
    """One bench: its drivers, opened together, restored to nominal together."""

    def __init__(self, config: BenchConfig, *, workdir: Path) -> None:
        self.config = config
        self.workdir = workdir
        self.broken: str | None = None
        self.terminal: SerialTerminalLink = self._build_terminal()
        self.cards: PcscCardBank | None = self._build_cards()
        self.power: ScpiPowerSupply | None = self._build_power()
        self.switch: ScpiRelayUnit | None = self._build_switch()
        self.network: ScapyBridgeInjector | None = self._build_network()
        self.host: SqliteAcquirerLedger | None = self._build_host()
        self._opened: list[Any] = []
        self._capture: Path | None = None
        self._trip_mark = 0
        self._ledger_mark: int | None = None

    # -- construction: configuration in, drivers with injected transports out -------------------
    def _build_terminal(self) -> SerialTerminalLink:
        from rigs.terminal import SerialTerminalLink
        from rigs.transport import serial_transport

        t = self.config.terminal
        return SerialTerminalLink("terminal", serial_transport(
            t.port, baudrate=t.baudrate, where="terminal.port"))

    def _build_cards(self) -> PcscCardBank | None:
        if self.config.cards is None:
            return None
        from rigs.cards import PcscCardBank
        from rigs.transport import serial_transport

        c = self.config.cards
        return PcscCardBank("cards", serial_transport(c.probe, where="cards.probe"),
                            {name: card.reader for name, card in c.bank.items()},
                            c.pcsc_socket)

    def _build_power(self) -> ScpiPowerSupply | None:
        if self.config.power is None:
            return None
        from rigs.power import ScpiPowerSupply
        from rigs.scpi import VisaScpiTransport

        p = self.config.power
        return ScpiPowerSupply("psu", VisaScpiTransport(p.resource), max_volts=p.limits.max_volts,
                               max_amps=p.limits.max_amps, dialect=p.dialect, channel=p.channel)

    def _build_switch(self) -> ScpiRelayUnit | None:
        if self.config.switch is None:
            return None
        from rigs.scpi import VisaScpiTransport
        from rigs.switch import ScpiRelayUnit

        return ScpiRelayUnit("relay", VisaScpiTransport(self.config.switch.resource))

    def _build_network(self) -> ScapyBridgeInjector | None:
        if self.config.network is None:
            return None
        from rigs.network import ScapyBridgeInjector

        n = self.config.network
        return ScapyBridgeInjector("network", n.terminal_if, n.host_if, n.netns,
                                   self.workdir / "network")

    def _build_host(self) -> SqliteAcquirerLedger | None:
        if self.config.host is None or self.config.host.ledger is None:
            return None
        from rigs.host import SqliteAcquirerLedger

        return SqliteAcquirerLedger("host", Path(self.config.host.ledger))

    # -- life ---------------------------------------------------------------------------------
    def drivers(self) -> list[Any]:
        """Open order: instruments that shape the terminal's world first, the terminal last."""
        return [d for d in (self.host, self.network, self.switch, self.power, self.cards,
                            self.terminal) if d is not None]

    def open(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for driver in self.drivers():
            try:
                driver.open()
            except RigError as exc:
                self.close()
                raise RigError(f"bench {self.config.bench.name}: cannot open {driver!r}: {exc}") \
                    from exc
            self._opened.append(driver)

    def close(self) -> None:
        errors = []
        for driver in reversed(self._opened):
            try:
                driver.close()
            except RigError as exc:
                errors.append(f"{driver!r}: {exc}")
        self._opened.clear()
        if errors:
            log.error("closing the bench: %s", "; ".join(errors))

    # -- capabilities ---------------------------------------------------------------------------
    def need(self, section: str) -> Any:
        driver = getattr(self, section)
        if driver is None:
            raise CapabilityMissing(f"bench {self.config.bench.name} has no '{section}' section")
        return driver

    def host_port(self) -> int:
        """The acquirer's TCP port (bench YAML ``host.address``), to recognise its traffic."""
        if self.config.host is None:
            raise CapabilityMissing(f"bench {self.config.bench.name} has no 'host' section")
        return self.config.host.port

    def paper_channel(self) -> int:
        switch = self.config.switch
        if switch is None or PAPER_SENSOR not in switch.channels:
            raise CapabilityMissing(f"bench {self.config.bench.name} has no relay wired to the "
                                    f"paper sensor (switch.channels.{PAPER_SENSOR})")
        return switch.channels[PAPER_SENSOR]

    def card_pin(self, card: str) -> str:
        cards = self.config.cards
        if cards is None or card not in cards.bank:
            raise CapabilityMissing(f"no card {card!r} in the card bank")
        pin = cards.bank[card].pin
        if pin is None:
            raise CapabilityMissing(f"card {card!r} has no pin in cards.bank.{card}.pin")
        return pin

    # -- nominal ------------------------------------------------------------------------------
    def restore_nominal(self) -> None:
        """Return every instrument to nominal and check it; raise BenchNotNominal otherwise."""
        if self.broken:
            raise BenchNotNominal(self.broken)
        problems: list[str] = []

        def step(what: str, fn: Callable[[], object]) -> None:
            try:
                fn()
            except RigError as exc:
                problems.append(f"{what}: {exc}")

        t = self.config.terminal
        if self.network is not None:
            step("network", self.network.restore_nominal)
        if self.switch is not None:
            step("relay", self.switch.restore_nominal)
        mark = len(self.terminal.events)
        if self.cards is not None:
            step("card bank", self.cards.restore_nominal)
        step("terminal", self.terminal.restore_nominal)
        if self.power is not None:
            step("power supply", lambda: self.power.restore_nominal(t.nominal_volts))  # type: ignore[union-attr]
        step("terminal", lambda: self._terminal_idle(mark))

        for driver in self.drivers():
            is_nominal = getattr(driver, "is_nominal", None)
            if driver is self.power:
                ok = self.power.is_nominal(t.nominal_volts)  # type: ignore[union-attr]
            else:
                ok = is_nominal() if is_nominal else True
            if not ok:
                problems.append(f"{driver!r} is not nominal after restoring it")
        if problems:
            self.broken = ("the bench could not be returned to nominal, so no later scenario "
                           "can be trusted: " + "; ".join(problems))
            raise BenchNotNominal(self.broken)

    def _terminal_idle(self, mark: int) -> None:
        """The terminal answers, is idle, sees no card, paper and a healthy battery (boots if it
        was off).  The instruments were just restored, and what they changed reaches the
        terminal on its own wires: for each condition still off, the terminal's recovery event
        since event *mark* is awaited (bounded by RECOVERY_BOUND) before it is judged."""
        t = self.config.terminal
        status = self.terminal.wait_ready(timeout=t.boot_timeout)  # at once if it is up
        for check in TERMINAL_CHECKS:
            if check.failing(status):
                try:
                    self.terminal.wait_for_event(check.recovery_event, timeout=RECOVERY_BOUND,
                                                 since=mark)
                except NoResponse as exc:
                    log.warning("%r: restore: %s", self, exc)  # judged below by STATUS
                status = self.terminal.status()
        bad = [check.describe(status) for check in TERMINAL_CHECKS if check.failing(status)]
        if bad:
            raise BenchNotNominal(f"terminal not nominal: {', '.join(bad)}")

    # -- evidence -----------------------------------------------------------------------------
    def begin_scenario(self, slug: str) -> None:
        """Clear per-scenario evidence and start the capture."""
        self.terminal.clear_evidence()
        if self.cards is not None:
            self.cards.clear_trace()
        if self.power is not None:
            self.power.clear_trace()
            self.power.start_sampling(period_s=0.1)
        if self.host is not None:
            last = self.host.last()
            self._ledger_mark = last.id if last is not None else 0
        if self.network is not None:
            path = self.workdir / "capture" / f"{slug}.pcap"
            path.parent.mkdir(parents=True, exist_ok=True)
            self.network.start_capture(path)
            self._capture = path
            tripped = self.network.trips()
            self._trip_mark = max((int(t["n"]) for t in tripped), default=0)

    def host_entries_this_scenario(self) -> list[Any]:
        """The acquirer ledger's entries since the scenario began."""
        return self.need("host").entries(since_id=self._ledger_mark)  # type: ignore[no-any-return]

    def end_scenario(self) -> list[Evidence]:
        """Stop the capture and collect what the scenario's report should carry (all masked)."""
        out = [Evidence("ECR transcript", "text", self.terminal.transcript_text())]
        receipts = self.terminal.receipts
        if receipts:
            out.append(Evidence("receipts", "text", "\n\n".join(receipts)))
        if self.cards is not None:
            out.append(Evidence("APDU trace (PAN masked)", "text", self.cards.trace_text()))
        if self.power is not None:
            self.power.stop_sampling()
            out.append(Evidence("power supply trace (V, A every 100 ms)", "csv",
                                self.power.trace_csv()))
        if self.network is not None and self._capture is not None:
            from rigs.network.capture import redact_pcap

            raw = self.network.stop_capture()
            self._capture = None
            if self.config.host is not None:
                from rigs.host import decode_pcap, render_messages

                out.append(Evidence("ISO 8583 messages (decoded, masked)", "text",
                                    render_messages(decode_pcap(raw, port=self.config.host.port))))
            safe = raw.with_name(raw.stem + ".redacted.pcap")
            try:
                redact_pcap(raw, safe)
            finally:
                raw.unlink(missing_ok=True)  # the raw capture holds PAN, track 2, PIN block
            out.append(Evidence("network capture (payload blanked)", "pcap", path=safe))
            tripped = self.network.trips(after=self._trip_mark)
            if tripped:
                out.append(Evidence("network faults tripped by traffic", "text", "\n".join(
                    f"{dt.datetime.fromtimestamp(t['wall']).strftime('%H:%M:%S.%f')[:-3]} "
                    f"{t['from']} -> {t['to']}: {t['action']} {t['direction']} {t['frame']}"
                    for t in tripped)))
        if self.host is not None:
            entries = self.host_entries_this_scenario()
            out.append(Evidence("acquirer ledger (this scenario)", "text",
                                "\n".join(str(e) for e in entries) or "(no entries)"))
        return out
