"""The bench YAML: where the instruments of one bench are, validated before anything is opened.

A bench file describes places (URLs, VISA resource strings, PC/SC reader names, NIC names) and
limits; it holds no behaviour.  Every section but ``terminal`` is optional: a bench without a
power supply simply cannot run ``@power`` scenarios, which are then skipped with a reason.

Errors name the file, the key path (``power.limits.max_volts``) and what was expected.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from rigs.errors import ConfigError

SERIAL_FORMS = "/dev/ttyUSB0, /dev/pts/N, rfc2217://host:port, socket://host:port"
VISA_FORMS = "TCPIP0::host::5025::SOCKET, TCPIP0::host::inst0::INSTR, ASRL/dev/ttyUSB0::INSTR, USB0::…::INSTR"
_VISA_RE = re.compile(
    r"^(TCPIP\d*::[^:]+::(\d+::SOCKET|[\w.]+::INSTR)"
    r"|ASRL[^:]+::INSTR|USB\d*::.+::INSTR|GPIB\d*::\d+(::\d+)?::INSTR)$",
    re.IGNORECASE)
_IFNAME_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,15}$")


def _check_serial_url(value: str) -> str:
    if not (value.startswith("/") or re.match(r"^(rfc2217|socket|loop|spy)://", value)):
        raise ValueError(f"{value!r} is not a serial port URL; expected one of {SERIAL_FORMS}")
    return value


def _check_visa(value: str) -> str:
    if not _VISA_RE.match(value):
        raise ValueError(f"{value!r} is not a VISA resource string; expected one of {VISA_FORMS}")
    return value


SerialUrl = Annotated[str, AfterValidator(_check_serial_url)]
VisaResource = Annotated[str, AfterValidator(_check_visa)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Credentials(_Section):
    id: str = Field(description="Operator number as typed on the terminal, e.g. '01'.")
    password: str


class TerminalConfig(_Section):
    port: SerialUrl = Field(description=f"ECR/test port: {SERIAL_FORMS}")
    baudrate: int = 115200
    terminal_id: str | None = None
    merchant_id: str | None = None
    nominal_volts: float = Field(7.40, gt=0, description="Supply voltage of a healthy battery.")
    low_battery_volts: float = Field(6.80, gt=0, description="At or below: low-battery warning.")
    boot_timeout: float = Field(20.0, gt=0, description="Bound on power-on to READY (s).")
    operators: dict[str, Credentials] = Field(default_factory=dict,
                                              description="Role name → credentials.")


class BankCard(_Section):
    reader: str = Field(description="PC/SC reader name holding this test card.")
    pin: str | None = Field(None, repr=False, description="The test card's PIN (card sheet).")

    @field_validator("pin")
    @classmethod
    def _pin_digits(cls, value: str | None) -> str | None:
        if value is not None and not (value.isdigit() and 4 <= len(value) <= 12):
            raise ValueError("a PIN is 4 to 12 digits")
        return value


class CardsConfig(_Section):
    probe: SerialUrl = Field(description=f"Serial URL of the slot probe: {SERIAL_FORMS}")
    bank: dict[str, BankCard] = Field(description="Card name → its reader in the card bank.")
    pcsc_socket: str | None = Field(None, description="PCSCLITE_CSOCK_NAME of a private pcscd.")

    @field_validator("bank")
    @classmethod
    def _bank_not_empty(cls, value: dict[str, BankCard]) -> dict[str, BankCard]:
        if not value:
            raise ValueError("the card bank needs at least one card")
        return value


class PowerLimits(_Section):
    max_volts: float = Field(gt=0)
    max_amps: float = Field(gt=0)


class PowerConfig(_Section):
    resource: VisaResource = Field(description=f"VISA resource string: {VISA_FORMS}")
    dialect: str = "keysight-e36xx"
    channel: int = Field(1, ge=1)
    limits: PowerLimits
    current_limit: float | None = Field(None, gt=0, description="CURR setpoint (A); default max_amps.")


class SwitchConfig(_Section):
    resource: VisaResource = Field(description=f"VISA resource string: {VISA_FORMS}")
    channels: dict[str, int] = Field(description="Wiring: signal name → relay channel.")


class NetworkConfig(_Section):
    terminal_if: str = Field(description="Rig NIC facing the terminal.")
    host_if: str = Field(description="Rig NIC facing the acquirer host.")
    netns: str | None = Field(None, description="Network namespace the NICs live in (virtual bench).")

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


class HostConfig(_Section):
    address: str = Field(description="host:port of the acquirer, to find its traffic in captures.")
    ledger: str | None = Field(None, description="Path of the host simulator's SQLite ledger.")

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        if not re.match(r"^[\w.-]+:\d{1,5}$", value):
            raise ValueError(f"{value!r} is not host:port (e.g. 198.18.0.20:8583)")
        return value

    @property
    def port(self) -> int:
        """The TCP port of :attr:`address`."""
        return int(self.address.rsplit(":", 1)[1])


class BenchInfo(_Section):
    name: str
    kind: Literal["virtual", "lab"] = "lab"


class BenchConfig(_Section):
    bench: BenchInfo
    terminal: TerminalConfig
    cards: CardsConfig | None = None
    power: PowerConfig | None = None
    switch: SwitchConfig | None = None
    network: NetworkConfig | None = None
    host: HostConfig | None = None


def _key_path(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def parse_bench(data: Any, source: str = "<bench>") -> BenchConfig:
    """Validate a loaded YAML document; errors name *source* and every bad key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return BenchConfig.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key (misspelt?)"
            elif err["type"] == "missing":
                msg = "required key is missing"
            lines.append(f"  {_key_path(err['loc'])}: {msg}")
        raise ConfigError(f"{source}: bench file is not valid:\n" + "\n".join(lines)) from None


def load_bench(path: str | Path) -> BenchConfig:
    """Read and validate a bench YAML file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read bench file ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    return parse_bench(data, str(path))
