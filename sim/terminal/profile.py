"""The terminal profile (fixtures/terminal/profile.yaml): the simulated POS's parameters.

:class:`ProfileFile` is the file, key for key (validated through :mod:`protocols.yamlmodel`, so a
mistake is a ConfigError naming the file and the key path, e.g. ``operators.01.password``).
:class:`Profile` is what the firmware uses: the same facts, flat, as a frozen dataclass, so
``dataclasses.replace(profile, boot_s=…)`` keeps working for tests and overrides.

The bench supervisor (sim/bench.py) reads the terminal and merchant IDs, the operators and the
supply thresholds from here too, so they are written once.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from protocols.errors import ConfigError
from protocols.yamlmodel import (
    Count,
    HexKey,
    HostPort,
    Integer,
    MerchantId,
    Seconds,
    TerminalId,
    Volts,
    check_value,
    load_model,
    validate_model,
)
from protocols.yamlmodel import parse_hostport as _parse_hostport

WHAT = "terminal profile"
Role = Literal["operator", "admin"]


# -------------------------------------------------------------------------------- the file

class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OperatorSpec(_Section):
    password: str = Field(min_length=1, repr=False, description="Typed at login; test values.")
    role: Role = "operator"


class Timeouts(_Section):
    """Seconds."""

    boot: Seconds = Field(0.4, description="power-on self-test")
    card_wait: Seconds = Field(30.0, description="waiting for a card after INSERT_CARD")
    pin_entry: Seconds = Field(30.0, description="waiting for PIN digits + ENTER")
    print_copy: Seconds = Field(0.3, description="printing one receipt copy")
    connect: Seconds = Field(3.0, description="acquirer TCP connect")
    response: Seconds = Field(5.0, description="acquirer response")
    card_apdu: Seconds = Field(2.0, description="one APDU exchange with the card")
    chip_retry: Seconds = Field(5.0, description=(
        "after a chip that could not be read, while the card stays in the slot: how long the "
        "terminal waits for it to be taken out and tried again (or swiped, fallback) before "
        "it gives up with CARD_ERROR"))
    signature: Seconds = Field(60.0, description=(
        "waiting for the cardholder's signature on the pad (then: not signed, the merchant "
        "copy keeps a signature line)"))


#: The terminal's brown-out detector (hardware, not a parameter): below it the MCU is held in
#: reset, so the bench kills the firmware process (sim/bench.py).  Every rail threshold of the
#: profile lies above it.
BROWNOUT_VOLTS = 6.00


def _above(info: ValidationInfo, value: float, lower: str, *, equal: bool = False) -> float:
    """*value* must be above the already validated threshold *lower* (or equal, if *equal*);
    a threshold that failed its own check is not compared again."""
    if lower not in info.data:
        return value
    bound = float(info.data[lower])
    if value < bound or (value == bound and not equal):
        word = "at or above" if equal else "above"
        raise ValueError(f"must be {word} {lower} ({bound:.2f} V), got {value:.2f} V; the "
                         f"order is {THRESHOLD_ORDER}")
    return value


THRESHOLD_ORDER = (f"brown-out ({BROWNOUT_VOLTS:.2f} V) < min_operating_volts < cutoff_volts "
                   "<= critical_volts < low_battery_volts < restart_volts <= nominal_volts")


class Thresholds(_Section):
    """Supply rail (volts), lowest first (:data:`THRESHOLD_ORDER`; docs/terminal-behaviour.md,
    "Power")."""

    min_operating_volts: Volts = Field(6.20, description=(
        "below it (and above brown-out) for power.hang_after: the MCU hangs until a power "
        "cycle"))
    cutoff_volts: Volts = Field(6.40, description=(
        "at or below for power.cutoff_debounce: battery empty, the terminal shuts down"))
    critical_volts: Volts = Field(6.45, description=(
        "at or below at power-on: E12 battery critical, the terminal does not start"))
    low_battery_volts: Volts = Field(6.80, description="at or below: LOW_BATTERY")
    restart_volts: Volts = Field(7.00, description=(
        "a terminal that shut itself down starts again above it (charger connected)"))
    nominal_volts: Volts = Field(7.40, description="a healthy battery")

    @field_validator("min_operating_volts")
    @classmethod
    def _above_brownout(cls, value: float) -> float:
        if value <= BROWNOUT_VOLTS:
            raise ValueError(f"must be above the brown-out {BROWNOUT_VOLTS:.2f} V, got "
                             f"{value:.2f} V; the order is {THRESHOLD_ORDER}")
        return value

    @field_validator("cutoff_volts")
    @classmethod
    def _cutoff(cls, value: float, info: ValidationInfo) -> float:
        return _above(info, value, "min_operating_volts")

    @field_validator("critical_volts")
    @classmethod
    def _critical(cls, value: float, info: ValidationInfo) -> float:
        return _above(info, value, "cutoff_volts", equal=True)

    @field_validator("low_battery_volts")
    @classmethod
    def _low(cls, value: float, info: ValidationInfo) -> float:
        return _above(info, value, "critical_volts")

    @field_validator("restart_volts")
    @classmethod
    def _restart(cls, value: float, info: ValidationInfo) -> float:
        return _above(info, value, "low_battery_volts")

    @field_validator("nominal_volts")
    @classmethod
    def _nominal(cls, value: float, info: ValidationInfo) -> float:
        return _above(info, value, "restart_volts", equal=True)


class Power(_Section):
    """Seconds: how the terminal's power circuits react to the rail (docs/terminal-behaviour.md,
    "Power")."""

    cutoff_debounce: Seconds = Field(0.3, description=(
        "the rail stays at or below thresholds.cutoff_volts this long: battery empty"))
    hang_after: Seconds = Field(0.05, description=(
        "the rail stays below thresholds.min_operating_volts this long: the MCU hangs"))
    power_on_reset: Seconds = Field(0.5, description=(
        "after a brown-out the rail must be above brown-out this long before the terminal "
        "starts (power-on reset hold-off; the bench supervisor applies it)"))


class Limits(_Section):
    """Minor units (fen).  Checked before going online; PARAMETER (admin) overrides them."""

    txn_limit: Integer = Field(5_000_000, gt=0, description="one sale at most (LIMIT_EXCEEDED)")
    daily_limit: Integer = Field(20_000_000, gt=0, description="approved sales of the business day "
                                                           "(DAILY_LIMIT_EXCEEDED)")
    refund_limit: Integer = Field(100_000, gt=0, description="a refund above needs an admin "
                                                         "(NOT_AUTHORISED)")


class Security(_Section):
    lock_after: Integer = Field(3, ge=1, description="wrong passwords in a row that lock an operator "
                                                 "(role operator; admins are never locked)")


class Anomalies(_Section):
    """What the TOTALS report flags."""

    declines_per_card: Integer = Field(3, ge=1, description="declines of one card (masked PAN)")
    refund_burst: Integer = Field(3, ge=1, description="approved refunds within refund_window")
    refund_window: Seconds = Field(600.0, description="seconds (terminal clock)")


class Cards(_Section):
    """How the terminal takes cards besides the chip (docs/terminal-behaviour.md, "Entry
    modes")."""

    fallback_after: Count = Field(3, description=(
        "failed chip reads in one transaction after which a swiped chip card is accepted "
        "(fallback, field 22 801); 0: no fallback, a chip read failure ends the transaction"))
    contactless_cvm_limit: Count = Field(100_000, description=(
        "minor units: a tap above it asks for the online PIN, at or below it no CVM"))
    swipe_tries: Count = Field(3, description=(
        "swipes that read badly in one transaction before the terminal gives up (CARD_ERROR, "
        "reason unreadable); 0: it asks again until the card wait runs out"))


class Qr(_Section):
    """QR payments through the QR payment platform (docs/terminal-behaviour.md, "QR
    payments").  Seconds.  The platform's address and the terminal's signing key are not here:
    the address is a firmware argument (``--qr-platform``), the key is read at start from the
    platform's terminals file (``--qr-terminals``, fixtures/qr/terminals.yaml): one source."""

    wait: Seconds = Field(90.0, description=(
        "merchant-presented: how long the code is shown and the order polled before the "
        "terminal closes it (TIMEOUT)"))
    scan: Seconds = Field(30.0, description=(
        "customer-presented: waiting for a payment code at the scanner (TIMEOUT)"))
    password: Seconds = Field(60.0, description=(
        "USERPAYING: how long the order is polled for the customer's wallet password before "
        "the terminal cancels it (TIMEOUT)"))
    poll: Seconds = Field(1.0, description="between two order queries")
    request: Seconds = Field(5.0, description="one request to the platform (connect + "
                                                  "answer)")


class Reversal(_Section):
    tries: Integer = Field(2, ge=1, description="0400 tries per occasion (before the next financial "
                                            "or settlement message); each bounded by "
                                            "timeouts.connect + timeouts.response")


class ProfileFile(_Section):
    """fixtures/terminal/profile.yaml, key for key."""

    terminal_id: TerminalId
    merchant_id: MerchantId
    merchant_name: str = ""
    model: str = Field("POSRIG-SIM T1", min_length=1, max_length=32, pattern=r"^[ -~]+$",
                       description="The model the terminal reports (READY, STATUS).")
    serial_no: str = Field("SIM00000001", pattern=r"^[A-Z0-9-]{4,24}$", description=(
        "The device serial number the terminal reports (READY, STATUS)."))
    master_key: HexKey = Field(repr=False, description="Terminal master key (TMK), hex.")
    host: HostPort
    currency_code: str = Field("156", pattern=r"^\d{3}$")
    country_code: str = Field("156", pattern=r"^\d{3}$")
    operators: dict[str, OperatorSpec] = Field(description="Operator ID → password, role.")
    timeouts: Timeouts = Field(default_factory=lambda: Timeouts.model_validate({}))
    thresholds: Thresholds = Field(default_factory=lambda: Thresholds.model_validate({}))
    power: Power = Field(default_factory=lambda: Power.model_validate({}))
    limits: Limits = Field(default_factory=lambda: Limits.model_validate({}))
    security: Security = Field(default_factory=lambda: Security.model_validate({}))
    anomalies: Anomalies = Field(default_factory=lambda: Anomalies.model_validate({}))
    reversal: Reversal = Field(default_factory=lambda: Reversal.model_validate({}))
    cards: Cards = Field(default_factory=lambda: Cards.model_validate({}))
    qr: Qr = Field(default_factory=lambda: Qr.model_validate({}))

    @field_validator("operators")
    @classmethod
    def _some_operators(cls, value: dict[str, OperatorSpec]) -> dict[str, OperatorSpec]:
        if not value:
            raise ValueError("expected at least one operator: ID → {password, role}")
        return value

    def to_profile(self) -> Profile:
        host, port = _parse_hostport(self.host)
        t, th, lim, an = self.timeouts, self.thresholds, self.limits, self.anomalies
        return Profile(
            terminal_id=self.terminal_id, merchant_id=self.merchant_id,
            merchant_name=self.merchant_name, model=self.model, serial_no=self.serial_no,
            master_key=self.master_key, host=host, port=port,
            operators={op_id: Operator(spec.password, spec.role)
                       for op_id, spec in self.operators.items()},
            currency_code=self.currency_code, country_code=self.country_code,
            boot_s=t.boot, card_wait_s=t.card_wait, pin_entry_s=t.pin_entry,
            print_copy_s=t.print_copy, connect_s=t.connect, response_s=t.response,
            card_apdu_s=t.card_apdu, chip_retry_s=t.chip_retry, signature_s=t.signature,
            fallback_after=self.cards.fallback_after,
            contactless_cvm_limit=self.cards.contactless_cvm_limit,
            swipe_tries=self.cards.swipe_tries,
            min_operating_volts=th.min_operating_volts,
            cutoff_volts=th.cutoff_volts, critical_volts=th.critical_volts,
            low_battery_volts=th.low_battery_volts, restart_volts=th.restart_volts,
            nominal_volts=th.nominal_volts, cutoff_debounce_s=self.power.cutoff_debounce,
            hang_after_s=self.power.hang_after, power_on_reset_s=self.power.power_on_reset,
            txn_limit=lim.txn_limit,
            daily_limit=lim.daily_limit, refund_limit=lim.refund_limit,
            lock_after=self.security.lock_after, declines_per_card=an.declines_per_card,
            refund_burst=an.refund_burst, refund_window_s=an.refund_window,
            reversal_tries=self.reversal.tries, qr_wait_s=self.qr.wait,
            qr_scan_s=self.qr.scan, qr_password_s=self.qr.password, qr_poll_s=self.qr.poll,
            qr_request_s=self.qr.request)


# -------------------------------------------------------------------------- the firmware's view

@dataclass(frozen=True)
class Operator:
    password: str = field(repr=False)
    role: str


@dataclass(frozen=True)
class Profile:
    terminal_id: str
    merchant_id: str
    merchant_name: str
    master_key: bytes = field(repr=False)
    host: str
    port: int
    operators: Mapping[str, Operator]
    model: str = "POSRIG-SIM T1"
    serial_no: str = "SIM00000001"
    currency_code: str = "156"
    country_code: str = "156"
    boot_s: float = 0.4
    card_wait_s: float = 30.0
    pin_entry_s: float = 30.0
    print_copy_s: float = 0.3
    connect_s: float = 3.0
    response_s: float = 5.0
    card_apdu_s: float = 2.0
    chip_retry_s: float = 5.0
    signature_s: float = 60.0
    fallback_after: int = 3
    contactless_cvm_limit: int = 100_000  # minor units
    swipe_tries: int = 3
    min_operating_volts: float = 6.20
    cutoff_volts: float = 6.40
    critical_volts: float = 6.45
    low_battery_volts: float = 6.80
    restart_volts: float = 7.00
    nominal_volts: float = 7.40
    cutoff_debounce_s: float = 0.3
    hang_after_s: float = 0.05
    power_on_reset_s: float = 0.5
    txn_limit: int = 5_000_000  # minor units
    daily_limit: int = 20_000_000
    refund_limit: int = 100_000
    lock_after: int = 3
    declines_per_card: int = 3
    refund_burst: int = 3
    refund_window_s: float = 600.0
    reversal_tries: int = 2
    qr_wait_s: float = 90.0
    qr_scan_s: float = 30.0
    qr_password_s: float = 60.0
    qr_poll_s: float = 1.0
    qr_request_s: float = 5.0

    def limit(self, name: str) -> int:
        """The profile's value of limit *name* (``txn_limit``, ``daily_limit``,
        ``refund_limit``)."""
        return int(getattr(self, name))

    def role_credentials(self) -> dict[str, tuple[str, str]]:
        """Role → (operator ID, password) of the first operator with that role, in file order
        (what a bench file's ``terminal.operators`` lists)."""
        out: dict[str, tuple[str, str]] = {}
        for op_id, op in self.operators.items():
            out.setdefault(op.role, (op_id, op.password))
        return out


def parse_hostport(text: str, where: str) -> tuple[str, int]:
    """``host:port`` (the grammar of the profile's ``host``); a ConfigError names *where*."""
    try:
        return _parse_hostport(text)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def load_profile(path: str | os.PathLike[str]) -> Profile:
    """Read fixtures/terminal/profile.yaml; a wrong or missing key is a ConfigError naming it."""
    return load_model(ProfileFile, path, what=WHAT).to_profile()


def profile_from_dict(raw: Mapping[str, Any], where: str = "<terminal profile>") -> Profile:
    """Validate an already-loaded profile document (errors name *where*)."""
    return validate_model(ProfileFile, dict(raw), where, what=WHAT).to_profile()


def with_overrides(profile: Profile, *, terminal_id: str | None = None,
                   merchant_id: str | None = None, host: str | None = None) -> Profile:
    """The profile with command-line overrides applied, each checked with the file's grammar
    (errors name the option: ``--terminal-id``, ``--merchant-id``, ``--host``)."""
    changes: dict[str, Any] = {}
    if terminal_id is not None:
        changes["terminal_id"] = check_value(TerminalId, terminal_id, "--terminal-id")
    if merchant_id is not None:
        changes["merchant_id"] = check_value(MerchantId, merchant_id, "--merchant-id")
    if host is not None:
        changes["host"], changes["port"] = parse_hostport(host, "--host")
    return dataclasses.replace(profile, **changes)


__all__ = [
    "BROWNOUT_VOLTS",
    "THRESHOLD_ORDER",
    "Anomalies",
    "Cards",
    "Limits",
    "Operator",
    "OperatorSpec",
    "Power",
    "Profile",
    "ProfileFile",
    "Qr",
    "Reversal",
    "Security",
    "Thresholds",
    "Timeouts",
    "load_profile",
    "parse_hostport",
    "profile_from_dict",
    "with_overrides",
]
