"""The rig's view of the acquirer host, split by where the evidence comes from.

- **The wire** (:meth:`AcquirerView.received`, :meth:`AcquirerView.answered`): the ISO 8583
  messages the in-line injector saw cross between terminal and host, decoded and masked.  Any
  bench with an injector has it, a lab included.  "Received" means delivered to the host: the
  injector's delivered capture, so a request the injector dropped was sent but not received.
- **The ledger** (:meth:`AcquirerView.booked`): what the host booked, from its ledger.  Usually
  only the virtual bench's host simulator exposes one; a scenario that needs it is tagged
  ``@ledger`` and skipped on a bench without.
- **The control** (:attr:`AcquirerView.control`): setting the host's answers (a response code,
  a late answer, no answer, a settlement that disagrees); the host simulator's control socket,
  virtual bench only (``@host_control``).

Asking for a part the bench lacks raises :class:`~rigs.errors.CapabilityMissing` (the plugin
turns it into a skip with the reason).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from protocols.faults import Direction
from rigs.capabilities import REQUIREMENT, Capability
from rigs.errors import CapabilityMissing
from rigs.host import LedgerEntry, decode_pcap
from rigs.interfaces import AcquirerControl, AcquirerLedger, NetworkInjector


@dataclass(frozen=True)
class WireMessage:
    """One ISO 8583 message decoded from a capture (masked), or what failed to decode."""

    index: int
    t: float
    direction: Direction
    src: str
    dst: str
    mti: str = ""
    stan: str = ""
    terminal_id: str = ""
    response_code: str = ""
    response_text: str = ""
    fields: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    error: str = ""

    @classmethod
    def from_entry(cls, entry: Mapping[str, Any]) -> WireMessage:
        """One entry of :func:`rigs.host.decode_pcap` (a dict) into a typed record."""
        arrow = str(entry.get("direction", ""))
        direction = Direction.TO_HOST if arrow.startswith("terminal") else Direction.TO_TERMINAL
        fields = entry.get("fields") or {}
        return cls(index=int(entry.get("index", 0)), t=float(entry.get("time", 0.0)),
                   direction=direction, src=str(entry.get("src", "?")),
                   dst=str(entry.get("dst", "?")), mti=str(entry.get("mti") or ""),
                   stan=str(entry.get("stan") or ""),
                   terminal_id=str(entry.get("terminal_id") or ""),
                   response_code=str(entry.get("response_code") or ""),
                   response_text=str(entry.get("response_text") or ""),
                   fields=MappingProxyType({str(k): str(v) for k, v in fields.items()}),
                   error=str(entry.get("error") or ""))

    def describe(self) -> str:
        if self.error:
            return f"undecodable: {self.error}"
        rc = f" rc={self.response_code} ({self.response_text})" if self.response_code else ""
        return f"MTI {self.mti} STAN {self.stan} TID {self.terminal_id}{rc}"


def decode_wire(path: Path, port: int) -> list[WireMessage]:
    """Every ISO 8583 message to/from *port* in the pcap at *path*, typed, in time order."""
    return [WireMessage.from_entry(e) for e in decode_pcap(path, port=port)]


class AcquirerView:
    """What the rig can know of the acquirer host on this bench (see the module doc)."""

    def __init__(self, bench_name: str, *, network: NetworkInjector | None,
                 ledger: AcquirerLedger | None, host_port: int | None,
                 control: AcquirerControl | None = None) -> None:
        self.bench_name = bench_name
        self._network = network
        self._ledger = ledger
        self._control = control
        self._decoded: dict[Path, tuple[int, list[WireMessage]]] = {}
        """Capture file → (frames when decoded, its messages): a step that polls the wire does
        not decode an unchanged capture again."""
        self._host_port = host_port
        self._ledger_mark = 0

    # -- capabilities ----------------------------------------------------------------------
    @property
    def has_wire(self) -> bool:
        return self._network is not None and self._host_port is not None

    @property
    def has_ledger(self) -> bool:
        return self._ledger is not None

    def _wire(self) -> tuple[NetworkInjector, int]:
        if self._network is None or self._host_port is None:
            raise CapabilityMissing(f"bench {self.bench_name}: what crossed the wire needs "
                                    f"{REQUIREMENT[Capability.WIRE]}")
        return self._network, self._host_port

    @property
    def host_port(self) -> int:
        """The acquirer's TCP port (bench YAML ``host.address``), to recognise its traffic."""
        if self._host_port is None:
            raise CapabilityMissing(f"bench {self.bench_name}: needs a 'host' section in the "
                                    f"bench file (the acquirer's address)")
        return self._host_port

    @property
    def ledger(self) -> AcquirerLedger:
        if self._ledger is None:
            raise CapabilityMissing(f"bench {self.bench_name}: what the acquirer booked needs "
                                    f"{REQUIREMENT[Capability.LEDGER]}")
        return self._ledger

    @property
    def control(self) -> AcquirerControl:
        """Setting the host's answers (rules, a settlement that disagrees)."""
        if self._control is None:
            raise CapabilityMissing(f"bench {self.bench_name}: setting the acquirer's answers "
                                    f"needs {REQUIREMENT[Capability.HOST_CONTROL]}")
        return self._control

    # -- the scenario ----------------------------------------------------------------------
    def begin_scenario(self) -> None:
        self._decoded.clear()
        if self._ledger is not None:
            self._ledger_mark = self._ledger.mark()

    # -- the wire --------------------------------------------------------------------------
    def _messages(self, delivered: bool, direction: Direction, mti: str | None
                  ) -> list[WireMessage]:
        network, port = self._wire()
        paths = network.flush_capture()
        path, frames = ((paths.delivered, paths.frames_delivered) if delivered
                        else (paths.seen, paths.frames_seen))
        cached = self._decoded.get(path)
        if cached is None or cached[0] != frames:  # decode again only when frames were added
            cached = (frames, decode_wire(path, port))
            self._decoded[path] = cached
        return [m for m in cached[1]
                if m.direction is direction and (mti is None or m.mti == mti)]

    def received(self, mti: str | None = None) -> list[WireMessage]:
        """Messages delivered to the host this scenario (optionally of one MTI)."""
        return self._messages(True, Direction.TO_HOST, mti)

    def answered(self, mti: str | None = None) -> list[WireMessage]:
        """Messages the host sent that were delivered to the terminal this scenario."""
        return self._messages(True, Direction.TO_TERMINAL, mti)

    def sent_by_terminal(self, mti: str | None = None) -> list[WireMessage]:
        """Messages the terminal put on the wire this scenario, delivered or not."""
        return self._messages(False, Direction.TO_HOST, mti)

    def sent_by_host(self, mti: str | None = None) -> list[WireMessage]:
        """Messages the host put on the wire this scenario, delivered to the terminal or not."""
        return self._messages(False, Direction.TO_TERMINAL, mti)

    # -- the ledger ------------------------------------------------------------------------
    def booked(self) -> list[LedgerEntry]:
        """The ledger's entries since the scenario began."""
        return self.ledger.entries(since_id=self._ledger_mark)
