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

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from protocols.errors import ConfigError
from protocols.yamlmodel import (
    HexKey,
    HostPort,
    MerchantId,
    TerminalId,
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

    boot: float = Field(0.4, gt=0, description="power-on self-test")
    card_wait: float = Field(30.0, gt=0, description="waiting for a card after INSERT_CARD")
    pin_entry: float = Field(30.0, gt=0, description="waiting for PIN digits + ENTER")
    print_copy: float = Field(0.3, gt=0, description="printing one receipt copy")
    connect: float = Field(3.0, gt=0, description="acquirer TCP connect")
    response: float = Field(5.0, gt=0, description="acquirer response")
    card_apdu: float = Field(2.0, gt=0, description="one APDU exchange with the card")


class Thresholds(_Section):
    """Supply rail (volts)."""

    low_battery_volts: float = Field(6.80, gt=0, description="at or below: LOW_BATTERY")
    nominal_volts: float = Field(7.40, gt=0, description="a healthy battery")

    @model_validator(mode="after")
    def _ordered(self) -> Thresholds:
        if self.low_battery_volts >= self.nominal_volts:
            raise ValueError(f"low_battery_volts ({self.low_battery_volts:g}) must be below "
                             f"nominal_volts ({self.nominal_volts:g})")
        return self


class Limits(_Section):
    """Minor units (fen).  Checked before going online; PARAMETER (admin) overrides them."""

    txn_limit: int = Field(5_000_000, gt=0, description="one sale at most (LIMIT_EXCEEDED)")
    daily_limit: int = Field(20_000_000, gt=0, description="approved sales of the business day "
                                                           "(DAILY_LIMIT_EXCEEDED)")
    refund_limit: int = Field(100_000, gt=0, description="a refund above needs an admin "
                                                         "(NOT_AUTHORISED)")


class Security(_Section):
    lock_after: int = Field(3, ge=1, description="wrong passwords in a row that lock an operator "
                                                 "(role operator; admins are never locked)")


class Anomalies(_Section):
    """What the TOTALS report flags."""

    declines_per_card: int = Field(3, ge=1, description="declines of one card (masked PAN)")
    refund_burst: int = Field(3, ge=1, description="approved refunds within refund_window")
    refund_window: float = Field(600.0, gt=0, description="seconds (terminal clock)")


class Reversal(_Section):
    tries: int = Field(2, ge=1, description="0400 tries per occasion (before the next financial "
                                            "or settlement message); each bounded by "
                                            "timeouts.connect + timeouts.response")


class ProfileFile(_Section):
    """fixtures/terminal/profile.yaml, key for key."""

    terminal_id: TerminalId
    merchant_id: MerchantId
    merchant_name: str = ""
    master_key: HexKey = Field(repr=False, description="Terminal master key (TMK), hex.")
    host: HostPort
    currency_code: str = Field("156", pattern=r"^\d{3}$")
    country_code: str = Field("156", pattern=r"^\d{3}$")
    operators: dict[str, OperatorSpec] = Field(description="Operator ID → password, role.")
    timeouts: Timeouts = Field(default_factory=lambda: Timeouts.model_validate({}))
    thresholds: Thresholds = Field(default_factory=lambda: Thresholds.model_validate({}))
    limits: Limits = Field(default_factory=lambda: Limits.model_validate({}))
    security: Security = Field(default_factory=lambda: Security.model_validate({}))
    anomalies: Anomalies = Field(default_factory=lambda: Anomalies.model_validate({}))
    reversal: Reversal = Field(default_factory=lambda: Reversal.model_validate({}))

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
            merchant_name=self.merchant_name, master_key=self.master_key, host=host, port=port,
            operators={op_id: Operator(spec.password, spec.role)
                       for op_id, spec in self.operators.items()},
            currency_code=self.currency_code, country_code=self.country_code,
            boot_s=t.boot, card_wait_s=t.card_wait, pin_entry_s=t.pin_entry,
            print_copy_s=t.print_copy, connect_s=t.connect, response_s=t.response,
            card_apdu_s=t.card_apdu, low_battery_volts=th.low_battery_volts,
            nominal_volts=th.nominal_volts, txn_limit=lim.txn_limit,
            daily_limit=lim.daily_limit, refund_limit=lim.refund_limit,
            lock_after=self.security.lock_after, declines_per_card=an.declines_per_card,
            refund_burst=an.refund_burst, refund_window_s=an.refund_window,
            reversal_tries=self.reversal.tries)


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
    currency_code: str = "156"
    country_code: str = "156"
    boot_s: float = 0.4
    card_wait_s: float = 30.0
    pin_entry_s: float = 30.0
    print_copy_s: float = 0.3
    connect_s: float = 3.0
    response_s: float = 5.0
    card_apdu_s: float = 2.0
    low_battery_volts: float = 6.80
    nominal_volts: float = 7.40
    txn_limit: int = 5_000_000  # minor units
    daily_limit: int = 20_000_000
    refund_limit: int = 100_000
    lock_after: int = 3
    declines_per_card: int = 3
    refund_burst: int = 3
    refund_window_s: float = 600.0
    reversal_tries: int = 2

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
    "Anomalies",
    "Limits",
    "Operator",
    "OperatorSpec",
    "Profile",
    "ProfileFile",
    "Reversal",
    "Security",
    "Thresholds",
    "Timeouts",
    "load_profile",
    "parse_hostport",
    "profile_from_dict",
    "with_overrides",
]
