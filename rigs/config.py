"""The bench YAML: where the instruments of one bench are, validated before anything is opened.

A bench file describes places (URLs, VISA resource strings, PC/SC reader names, NIC names) and
limits; it holds no behaviour.  Every section but ``terminal`` is optional: a bench without a
power supply simply cannot run ``@power`` scenarios, which are then skipped with a reason.

The file is read through :mod:`protocols.yamlmodel`: errors name the file, every bad key path
(``power.limits.max_volts``) and what was expected.  Serial ports and VISA resources follow the
one grammar of the transports that open them (:func:`rigs.transport.serial_url_error`,
:func:`rigs.scpi.resource_error`); ``power.dialect`` / ``power.channel`` are checked against the
dialect table (:data:`rigs.power.DIALECTS`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    FiniteFloat,
    ValidationInfo,
    field_validator,
    model_validator,
)

from protocols.digits import ascii_digits
from protocols.yamlmodel import (
    Amps,
    BaudRate,
    HostPort,
    Integer,
    MerchantId,
    ProblemAt,
    Seconds,
    TerminalId,
    Text,
    Volts,
    load_model,
    validate_model,
)
from rigs.power import DIALECTS
from rigs.scpi import RESOURCE_FORMS, resource_error
from rigs.transport import URL_FORMS, serial_url_error

SERIAL_FORMS = URL_FORMS      # the one grammar: rigs.transport.serial_url_error
VISA_FORMS = RESOURCE_FORMS   # the one grammar: rigs.scpi.resource_error
_IFNAME_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,15}$")
_PROFILE_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
WHAT = "bench file"


def _check_serial_url(value: str) -> str:
    why = serial_url_error(value)
    if why is not None:
        raise ValueError(why)
    return value


def _check_visa(value: str) -> str:
    why = resource_error(value)
    if why is not None:
        raise ValueError(why)
    return value


SerialUrl = Annotated[str, AfterValidator(_check_serial_url)]
VisaResource = Annotated[str, AfterValidator(_check_visa)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


DRIVER_DOC = ("Implementation of this part: one of the rig's own (rigs.registry.BUILTIN) or a "
              "lab's factory 'package.module:function'; default: the rig's own.")


class _Part(_Section):
    """A section the bench builds an instrument from (it may name its implementation)."""

    driver: Text | None = Field(None, description=DRIVER_DOC)


class Credentials(_Section):
    id: Text = Field(description="Operator number as typed on the terminal, e.g. '01'.")
    password: Text = Field(repr=False)


class TerminalConfig(_Part):
    port: SerialUrl | None = Field(None, description=(
        f"ECR/test port: {SERIAL_FORMS}; required unless driver is concert (then optional: a "
        f"test port kept next to the Concert port)"))
    baudrate: BaudRate = 115200
    concert_port: SerialUrl | None = Field(None, description=(
        f"driver concert: the terminal's Concert cash-register port (docs/ecr-concert.md): "
        f"{SERIAL_FORMS}"))
    concert_baudrate: BaudRate = Field(9600, description="driver concert: its line speed")
    concert_pos: str = Field("01", pattern=r"^[0-9]{2}$",
                             description="driver concert: this register's POS number")
    terminal_id: TerminalId | None = None
    merchant_id: MerchantId | None = None
    nominal_volts: Volts = Field(7.40, description="Supply voltage of a healthy battery.")
    low_battery_volts: Volts = Field(6.80, description=(
        "At or below: low-battery warning; below nominal_volts."))
    boot_timeout: Seconds = Field(20.0, description="Bound on power-on to READY (s).")
    operators: dict[Text, Credentials] = Field(default_factory=dict,
                                              description="Role name → credentials.")

    @field_validator("low_battery_volts")
    @classmethod
    def _below_nominal(cls, value: float, info: ValidationInfo) -> float:
        nominal = info.data.get("nominal_volts")
        if nominal is not None and value >= nominal:
            raise ValueError(f"must be below nominal_volts ({nominal:.2f} V), got {value:.2f} V: "
                             f"a healthy battery would warn")
        return value

    @model_validator(mode="after")
    def _ports(self) -> TerminalConfig:
        if self.driver == "concert":
            if self.concert_port is None:
                raise ValueError("driver concert needs terminal.concert_port (the Concert "
                                 "cash-register port)")
        elif self.port is None:
            raise ValueError("terminal.port is required (the terminal's ECR/test port)")
        return self


class BankCard(_Section):
    reader: Text | None = Field(None, description="PC/SC reader name holding this test card.")
    emulator: str | None = Field(None, description=(
        "Instead of a reader: the profile the card emulator (cards.emulator) loads for this "
        "card, by name."))
    pin: str | None = Field(None, repr=False, description="The test card's PIN (card sheet).")

    @field_validator("pin")
    @classmethod
    def _pin_digits(cls, value: str | None) -> str | None:
        if value is not None and not (ascii_digits(value) and 4 <= len(value) <= 12):
            raise ValueError("a PIN is 4 to 12 digits")
        return value

    @field_validator("emulator")
    @classmethod
    def _profile_name(cls, value: str | None) -> str | None:
        if value is not None and not _PROFILE_RE.match(value):
            raise ValueError(f"{value!r} is not a profile name (a-z 0-9 _ -, the profile's file "
                             f"name without .yaml)")
        return value

    @model_validator(mode="after")
    def _one_place(self) -> BankCard:
        if (self.reader is None) == (self.emulator is None):
            raise ValueError("give the card's reader or the emulator profile (emulator), "
                             "exactly one of them")
        return self


class CardEmulatorConfig(_Section):
    """A programmable card emulator on one reader (a lab's card simulator instrument): it loads
    a profile on request, and pcscd sees the card leave and come back."""

    control: Text = Field(description="Path of the emulator's control socket (unix socket, "
                                      "JSON lines).")
    reader: Text = Field(description="PC/SC reader name of the emulator's reader.")
    load_timeout: Seconds = Field(5.0, le=60, description=(
        "Bound of loading a card (s): until pcscd reports the new card in the reader."))


class CardsConfig(_Part):
    probe: SerialUrl = Field(description=f"Serial URL of the slot probe: {SERIAL_FORMS}")
    bank: dict[Text, BankCard] = Field(description="Card name → its reader (or emulator "
                                                  "profile) in the card bank.")
    pcsc_socket: Text | None = Field(None, description="PCSCLITE_CSOCK_NAME of a private pcscd.")
    emulator: CardEmulatorConfig | None = Field(None, description=(
        "The card emulator that bank cards with 'emulator:' are loaded into."))

    @field_validator("bank")
    @classmethod
    def _bank_not_empty(cls, value: dict[str, BankCard]) -> dict[str, BankCard]:
        if not value:
            raise ValueError("the card bank needs at least one card")
        return value

    @model_validator(mode="after")
    def _emulated_need_emulator(self) -> CardsConfig:
        emulated = sorted(name for name, card in self.bank.items() if card.emulator is not None)
        if emulated and self.emulator is None:
            raise ValueError(f"cards.bank.{emulated[0]}.emulator names a profile, but there is "
                             f"no cards.emulator section (control socket and reader)")
        if self.emulator is not None:
            clash = sorted(name for name, card in self.bank.items()
                           if card.reader == self.emulator.reader)
            if clash:
                raise ValueError(f"cards.bank.{clash[0]}.reader is the emulator's reader "
                                 f"{self.emulator.reader!r}; a fixed card needs a reader of "
                                 f"its own")
        return self


class PowerLimits(_Section):
    max_volts: Volts = Field(description="The pack's rated voltage; no setpoint above it.")
    max_amps: Amps = Field(description="The pack's rated current; no current limit above it.")


class PowerConfig(_Part):
    resource: VisaResource = Field(description=f"VISA resource string: {VISA_FORMS}")
    dialect: str = Field("keysight-e36xx", description="Row of rigs.power.DIALECTS.")
    channel: Integer = Field(1, ge=1, description="Output channel, within the dialect's outputs.")
    limits: PowerLimits
    current_limit: Amps | None = Field(None, description=(
        "CURR setpoint (A), at most limits.max_amps; default max_amps."))
    sample_period_ms: FiniteFloat = Field(100.0, ge=10.0, le=10_000.0, description=(
        "How often voltage and current are measured into the scenario's supply trace (ms)."))

    @field_validator("dialect")
    @classmethod
    def _known_dialect(cls, value: str) -> str:
        if value not in DIALECTS:
            raise ValueError(f"{value!r} unknown; expected one of {sorted(DIALECTS)}")
        return value

    @field_validator("channel")
    @classmethod
    def _channel_of_dialect(cls, value: int, info: ValidationInfo) -> int:
        dialect = DIALECTS.get(str(info.data.get("dialect")))
        if dialect is not None and value > dialect.channels:
            raise ValueError(f"{value} outside 1..{dialect.channels} for dialect "
                             f"{info.data['dialect']!r} ({dialect.family})")
        return value

    @field_validator("current_limit")
    @classmethod
    def _within_max_amps(cls, value: float | None, info: ValidationInfo) -> float | None:
        limits = info.data.get("limits")
        if value is not None and isinstance(limits, PowerLimits) and value > limits.max_amps:
            raise ValueError(f"must be at most limits.max_amps ({limits.max_amps:.2f} A), got "
                             f"{value:.2f} A")
        return value


RelayChannel = Annotated[Integer, Field(ge=1, description="A relay unit's channel number, from 1.")]


class SwitchConfig(_Part):
    resource: VisaResource = Field(description=f"VISA resource string: {VISA_FORMS}")
    channels: dict[Text, RelayChannel] = Field(description="Wiring: signal name → relay channel.")

    @field_validator("channels")
    @classmethod
    def _wired_once(cls, value: dict[str, int]) -> dict[str, int]:
        if not value:
            raise ValueError("expected at least one wired channel: signal name → channel")
        seen: dict[int, str] = {}
        for name, channel in value.items():
            if channel in seen:
                raise ValueError(f"{seen[channel]} and {name} are both on channel {channel}; one "
                                 f"relay switches one line")
            seen[channel] = name
        return value


class NetworkConfig(_Part):
    terminal_if: str = Field(description="Rig NIC facing the terminal.")
    host_if: str = Field(description="Rig NIC facing the acquirer host.")
    netns: Text | None = Field(None, description="Network namespace the NICs live in (virtual "
                                                 "bench).")

    @field_validator("terminal_if", "host_if")
    @classmethod
    def _ifname(cls, value: str) -> str:
        if not _IFNAME_RE.match(value):
            raise ValueError(f"{value!r} is not a network interface name (1–15 of A-Z a-z 0-9 _ . : -)")
        return value

    @model_validator(mode="after")
    def _two_nics(self) -> NetworkConfig:
        if self.terminal_if == self.host_if:
            raise ValueError(f"terminal_if and host_if are both {self.terminal_if!r}; "
                             "the injector bridges two different NICs")
        return self


class HostConfig(_Part):
    address: HostPort = Field(description="host:port of the acquirer, to find its traffic in captures.")
    ledger: Text | None = Field(None, description="Path of the host simulator's SQLite ledger.")
    control: Text | None = Field(None, description="Path of the host simulator's control socket "
                                                   "(unix socket, JSON lines; virtual bench).")

    @property
    def port(self) -> int:
        """The TCP port of :attr:`address`."""
        return int(self.address.rsplit(":", 1)[1])


class QrConfig(_Section):
    """The QR payment platform: where the terminal reaches it, and (virtual bench) its ledger
    and control socket.  Three parts are built from it, each may name its implementation."""

    address: HostPort = Field(description="host:port of the QR platform, to find its traffic "
                                          "in captures.")
    ledger: Text | None = Field(None, description="Path of the platform simulator's SQLite "
                                                  "ledger.")
    control: Text | None = Field(None, description="Path of the platform simulator's control "
                                                   "socket (unix socket, JSON lines): the "
                                                   "customer's wallet and the platform's rules.")
    ledger_driver: Text | None = Field(None, description=DRIVER_DOC)
    wallet_driver: Text | None = Field(None, description=DRIVER_DOC)
    control_driver: Text | None = Field(None, description=DRIVER_DOC)

    @property
    def port(self) -> int:
        """The TCP port of :attr:`address`."""
        return int(self.address.rsplit(":", 1)[1])


class BenchInfo(_Section):
    name: Text
    kind: Literal["virtual", "lab"] = "lab"


class BenchConfig(_Section):
    bench: BenchInfo
    terminal: TerminalConfig
    cards: CardsConfig | None = None
    power: PowerConfig | None = None
    switch: SwitchConfig | None = None
    network: NetworkConfig | None = None
    host: HostConfig | None = None
    qr: QrConfig | None = None

    @model_validator(mode="after")
    def _supply_gives_nominal(self) -> BenchConfig:
        if self.power is not None and self.terminal.nominal_volts > self.power.limits.max_volts:
            raise ProblemAt(("terminal", "nominal_volts"), (
                f"{self.terminal.nominal_volts:.2f} V is above power.limits.max_volts "
                f"({self.power.limits.max_volts:.2f} V): the supply may never give it"))
        return self


def parse_bench(data: Any, source: str = "<bench>") -> BenchConfig:
    """Validate a loaded YAML document; errors name *source* and every bad key."""
    return validate_model(BenchConfig, data, source, what=WHAT)


def load_bench(path: str | Path) -> BenchConfig:
    """Read and validate a bench YAML file."""
    return load_model(BenchConfig, path, what=WHAT)
