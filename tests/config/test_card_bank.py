"""The bench file's card bank with a card emulator (rigs.config.CardsConfig): entries in a reader
or in the emulator, key-path errors, the virtual bench's document (every profile of
fixtures/cards in the bank, good on reader 00 00, the others through the emulator on 00 01), and
the card bank the registry builds from it (not opened: no pcscd here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from protocols.errors import ConfigError
from rigs.cards import PcscCardBank, SocketCardEmulator
from rigs.config import parse_bench
from rigs.registry import pcsc_cards
from sim import netns
from sim.bench import CARDS_DIR, TERMINAL_PROFILE, bench_document, card_bank_names
from sim.card.profile import load_profile as load_card
from sim.terminal.profile import load_profile

EMULATOR = {"control": "/run/bench/cards.ctl", "reader": "Virtual PCD 00 01"}


def _bench(cards: dict[str, Any]) -> dict[str, Any]:
    return {"bench": {"name": "t"}, "terminal": {"port": "/dev/ttyUSB0"}, "cards": cards}


def _cards(**changes: Any) -> dict[str, Any]:
    cards: dict[str, Any] = {
        "probe": "/dev/ttyUSB1",
        "bank": {"good": {"reader": "Virtual PCD 00 00", "pin": "123456"},
                 "expired": {"emulator": "expired", "pin": "123456"}},
        "emulator": dict(EMULATOR)}
    cards.update(changes)
    return cards


def test_a_bank_with_fixed_and_emulated_cards() -> None:
    config = parse_bench(_bench(_cards()))
    assert config.cards is not None and config.cards.emulator is not None
    assert config.cards.bank["expired"].emulator == "expired"
    assert config.cards.bank["expired"].reader is None
    assert config.cards.emulator.load_timeout == 5.0


@pytest.mark.parametrize(("cards", "says"), [
    (_cards(emulator=None), "cards: cards.bank.expired.emulator names a profile, but there is "
                            "no cards.emulator section"),
    (_cards(bank={"x": {"pin": "1234"}}), "cards.bank.x: give the card's reader or the "
                                          "emulator profile (emulator), exactly one of them"),
    (_cards(bank={"x": {"reader": "R", "emulator": "good"}}), "cards.bank.x: give the card's "
                                                               "reader or the emulator"),
    (_cards(bank={"x": {"emulator": "../good"}}), "cards.bank.x.emulator: '../good' is not a "
                                                  "profile name"),
    (_cards(bank={"x": {"reader": "Virtual PCD 00 01"}}),
     "cards: cards.bank.x.reader is the emulator's reader 'Virtual PCD 00 01'"),
    (_cards(emulator={"reader": "Virtual PCD 00 01"}), "cards.emulator.control: required key "
                                                        "is missing"),
    (_cards(emulator={**EMULATOR, "load_timeout": 0}), "cards.emulator.load_timeout: must be > 0"),
])
def test_card_bank_mistakes_name_the_key(cards: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_bench(_bench(cards), "bench.yaml")
    assert says in str(err.value), str(err.value)


def test_the_virtual_bench_document_puts_every_profile_in_the_bank() -> None:
    fixed, emulated = card_bank_names(CARDS_DIR)
    assert fixed == ("good",) and "mute" in emulated and len(emulated) >= 11
    doc = bench_document(
        profile=load_profile(TERMINAL_PROFILE), ecr_path="/dev/pts/7", probe_path="/dev/pts/8",
        pcsc_socket="/proc/42/root/run/pcscd/pcscd.comm",
        readers={"good": "Virtual PCD 00 00"}, psu_port=40001, relay_port=40002,
        topo=netns.Topology.default(), host_addr="198.18.0.20:8583",
        ledger=Path("/tmp/host.sqlite"),
        card_emulator={**EMULATOR, "profiles": {name: name for name in emulated}})
    bank = doc["cards"]["bank"]
    assert bank["good"] == {"reader": "Virtual PCD 00 00", "pin": "123456"}
    assert bank["mute"] == {"emulator": "mute", "pin": "123456"}
    assert bank["offline_pin"] == {"emulator": "offline_pin",
                                   "pin": load_card(CARDS_DIR / "offline_pin.yaml").pin}
    assert set(bank) == {"good", *emulated}
    assert doc["cards"]["emulator"] == EMULATOR
    config = parse_bench(doc)
    assert config.cards is not None
    built = pcsc_cards(config.cards, None)   # type: ignore[arg-type]
    assert isinstance(built, PcscCardBank) and isinstance(built.emulator, SocketCardEmulator)
    assert built.readers["good"] == "Virtual PCD 00 00"
    assert built.readers["expired"] == built.emulator.reader == "Virtual PCD 00 01"
    assert built.emulated["expired"] == "expired"


def test_bank_constructor_refuses_inconsistent_banks() -> None:
    from rigs.transport import serial_transport

    probe = serial_transport("loop://")
    with pytest.raises(ConfigError, match=r"emulated cards \['x'\] need an emulator"):
        PcscCardBank("cards", probe, {"good": "R0"}, emulated={"x": "x"})
    emulator = SocketCardEmulator("e", "/nonexistent.ctl", "R1")
    with pytest.raises(ConfigError, match=r"card\(s\) \['good'\] are both in a reader and in "
                                          r"the emulator"):
        PcscCardBank("cards", probe, {"good": "R0"}, emulator=emulator,
                     emulated={"good": "good"})
