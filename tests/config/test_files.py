"""Every YAML file a person edits is read through protocols.yamlmodel: a wrong key, a missing key
and a wrong type each give a ConfigError naming the file and the key path, and no PIN, PAN or
key value is ever echoed."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from protocols.errors import ConfigError
from rigs.config import load_bench
from sim.card.profile import IssuerStatus
from sim.card.profile import load_profile as load_card
from sim.host.config import load_account, load_terminals
from sim.host.engine import STATUS_CODES
from sim.terminal.profile import load_profile as load_terminal

REPO = Path(__file__).resolve().parents[2]
TERMINAL = REPO / "fixtures/terminal/profile.yaml"
CARD = REPO / "fixtures/cards/good.yaml"
TERMINALS = REPO / "fixtures/host/terminals.yaml"
LAB = REPO / "fixtures/benches/example-lab.yaml"

SECRET_PIN = "98765432"
SECRET_KEY = "FEDCBA98765432100123456789ABCD"  # 15 bytes: wrong length, must not be echoed


def _edit(src: Path, tmp_path: Path, change: Callable[[Any], None]) -> Path:
    data = yaml.safe_load(src.read_text(encoding="utf-8"))
    data = copy.deepcopy(data)
    change(data)
    path = tmp_path / src.name
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def _message(load: Callable[[Path], object], path: Path) -> str:
    with pytest.raises(ConfigError) as err:
        load(path)
    text = str(err.value)
    assert str(path) in text
    assert "Traceback" not in text and "pydantic" not in text
    return text


# -- terminal profile ------------------------------------------------------------------------

@pytest.mark.parametrize(("change", "expected"), [
    (lambda d: d["timeouts"].update(bot=1), "  timeouts.bot: unknown key (misspelt?)"),
    (lambda d: d["operators"]["01"].pop("password"),
     "  operators.01.password: required key is missing"),
    (lambda d: d["thresholds"].update(nominal_volts="high"),
     "  thresholds.nominal_volts: expected a number, got text"),
    (lambda d: d.update(terminal_id=10000001), "  terminal_id: expected a terminal ID"),
    (lambda d: d["operators"]["00"].update(role="boss"),
     "  operators.00.role: expected one of 'operator' or 'admin'"),
])
def test_terminal_profile_errors(tmp_path: Path, change: Callable[[Any], None],
                                 expected: str) -> None:
    path = _edit(TERMINAL, tmp_path, change)
    text = _message(load_terminal, path)
    assert text.startswith(f"{path}: terminal profile is not valid:\n")
    assert expected in text


def test_terminal_profile_hides_key_and_passwords(tmp_path: Path) -> None:
    def change(d: Any) -> None:
        d["master_key"] = SECRET_KEY
        d["operators"]["01"]["password"] = [SECRET_PIN]

    text = _message(load_terminal, _edit(TERMINAL, tmp_path, change))
    assert "master_key: expected a 16 or 24 byte 3DES key" in text
    assert "operators.01.password: expected a string" in text
    assert SECRET_KEY not in text and SECRET_PIN not in text


# -- card profile (one model for the card simulator and the issuer) ---------------------------

@pytest.mark.parametrize(("change", "says"), [
    (lambda d: d["keys"].update(imk_acc="00"), "keys.imk_acc: unknown key"),
    (lambda d: d.pop("pin"), "pin: required key is missing"),
    (lambda d: d["issuer"].update(balance_minor="lots"),
     "issuer.balance_minor: expected an integer"),
    (lambda d: d["issuer"].update(status="frozen"), "issuer.status: expected one of"),
])
def test_card_profile_errors_for_card_and_issuer(tmp_path: Path, change: Callable[[Any], None],
                                                 says: str) -> None:
    """One model, one message for the card simulator and the issuer alike."""
    path = _edit(CARD, tmp_path, change)
    expected = f"{path}: card profile is not valid:\n  {says}"
    assert _message(load_card, path).startswith(expected)
    assert _message(load_account, path).startswith(expected)


@pytest.mark.parametrize("load", [load_card, load_account])
def test_card_profile_hides_pan_pin_and_key(tmp_path: Path,
                                            load: Callable[[Path], object]) -> None:
    for change in (lambda d: d.update(pin=SECRET_PIN + "12345"),
                   lambda d: d.update(pin=int(SECRET_PIN)),
                   lambda d: d.update(pan="6214830000000018"),
                   lambda d: d.update(pan=6214830000000018),
                   lambda d: d["keys"].update(imk_ac=SECRET_KEY)):
        text = _message(load, _edit(CARD, tmp_path, change))
        for secret in (SECRET_PIN, SECRET_KEY, "6214830000000018"):
            assert secret not in text, text


def test_issuer_statuses_are_the_hosts() -> None:
    """The card file's status grammar and the host's status → response code table agree."""
    from typing import get_args

    assert set(get_args(IssuerStatus)) == set(STATUS_CODES)


def test_card_and_issuer_read_the_same_facts() -> None:
    card, account = load_card(CARD), load_account(CARD)
    assert (account.pan, account.expiry, account.pin) == (card.pan, card.expiry, card.pin)
    assert (account.balance_minor, account.status) == (card.issuer["balance_minor"],
                                                       card.issuer["status"])
    assert card.source == str(CARD) and account.source == CARD.name


# -- host terminals ---------------------------------------------------------------------------

@pytest.mark.parametrize(("change", "expected"), [
    (lambda d: d["terminals"][0].update(colour="red"),
     "  terminals[0].colour: unknown key (misspelt?)"),
    (lambda d: d["terminals"][1].pop("master_key"),
     "  terminals[1].master_key: required key is missing"),
    (lambda d: d["terminals"][0].update(merchant_id=898100012340001),
     "  terminals[0].merchant_id: expected a merchant ID (ISO 8583 field 42) as a quoted string"),
    (lambda d: d.update(terminals={"10000001": {}}), "  terminals: expected a list"),
    (lambda d: d["terminals"].append(dict(d["terminals"][0])),
     "  terminals: terminal_id 10000001 is listed twice (terminals[0] and terminals[2])"),
])
def test_host_terminals_errors(tmp_path: Path, change: Callable[[Any], None],
                               expected: str) -> None:
    path = _edit(TERMINALS, tmp_path, change)
    text = _message(load_terminals, path)
    assert text.startswith(f"{path}: host terminals file is not valid:\n")
    assert expected in text


def test_host_terminals_hide_master_keys(tmp_path: Path) -> None:
    path = _edit(TERMINALS, tmp_path, lambda d: d["terminals"][0].update(master_key=SECRET_KEY))
    text = _message(load_terminals, path)
    assert "terminals[0].master_key: expected a 16 or 24 byte 3DES key" in text
    assert SECRET_KEY not in text


# -- bench file ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("change", "expected"), [
    (lambda d: d["terminal"].update(boot_timout=3), "  terminal.boot_timout: unknown key"),
    (lambda d: d["power"]["limits"].pop("max_volts"),
     "  power.limits.max_volts: required key is missing"),
    (lambda d: d["terminal"].update(baudrate="fast"), "  terminal.baudrate: expected an integer"),
])
def test_bench_file_errors(tmp_path: Path, change: Callable[[Any], None], expected: str) -> None:
    path = _edit(LAB, tmp_path, change)
    text = _message(load_bench, path)
    assert text.startswith(f"{path}: bench file is not valid:\n")
    assert expected in text


def test_bench_file_hides_card_pins_and_passwords(tmp_path: Path) -> None:
    def change(d: Any) -> None:
        d["cards"]["bank"]["good"]["pin"] = SECRET_PIN + "x"
        d["terminal"]["operators"]["admin"]["password"] = int(SECRET_PIN)

    text = _message(load_bench, _edit(LAB, tmp_path, change))
    assert "cards.bank.good.pin: a PIN is 4 to 12 digits" in text
    assert "terminal.operators.admin.password: expected a string" in text
    assert SECRET_PIN not in text
