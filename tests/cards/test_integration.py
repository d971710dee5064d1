"""Root only: private pcscd (own netns) + vpcd card process + PcscCardBank relaying a kernel run
through a SimProbe on a pty, as the virtual bench wires it."""

from __future__ import annotations

import datetime

import pytest

from protocols import tlv
from rigs.cards import PcscCardBank
from rigs.events import EventStream, Source, matching
from sim.card.emv import load_profile
from sim.terminal.emv import CardError, run_chip_transaction
from tests.cards.conftest import GOOD, PcscBench, needs_root
from tests.cards.probe_host import HarnessSlot, PtyProbeHost
from tests.cards.slots import expected_ac

pytestmark = needs_root


def _run(host: PtyProbeHost) -> object:
    return run_chip_transaction(
        HarnessSlot(host), amount_minor=12_345, txn_date=datetime.date(2025, 6, 30),
        unpredictable_number=bytes.fromhex("A1B2C3D4"), timeout=2.0)


def test_private_pcscd_lists_two_readers(pcsc_bench: PcscBench) -> None:
    daemon = pcsc_bench.daemon
    assert daemon.running
    assert daemon.client_socket == f"/proc/{daemon.pid}/root/run/pcscd/pcscd.comm"


def test_kernel_run_through_card_bank(relay: tuple[PcscCardBank, PtyProbeHost]) -> None:
    bank, host = relay
    stream = EventStream()
    bank.event_sink = stream
    assert host.expect("card", 1.0) == {"t": "card", "present": False}   # at connect
    bank.insert("good")
    assert bank.inserted == "good"
    assert host.expect("card", 1.0) == {"t": "card", "present": True}
    read = _run(host)
    profile = load_profile(GOOD)
    assert read.pan == profile.pan                                  # type: ignore[attr-defined]
    assert read.cryptogram_type == "ARQC"                           # type: ignore[attr-defined]
    icc = tlv.flatten(read.icc_data)                                # type: ignore[attr-defined]
    # The ARQC is the card's, computed over what the kernel sent (CDOL1 order).
    cdol = tlv.parse_dol(bytes.fromhex(
        "9F02069F03069F1A0295055F2A029A039C019F37049F35019F3403"))
    cdol_data = tlv.build_dol(cdol, icc)
    assert icc[0x9F26] == expected_ac(profile, cdol_data, icc[0x9F36])

    text = bank.trace_text()
    assert "00A404000E325041592E5359532E444446303100" in text       # PPSE select, verbatim
    assert profile.pan not in text and profile.pan not in text.replace(" ", "")
    assert "621483******0017" in text
    assert "[blanked]" in text                                      # track 2 equivalent
    assert text.count("C-APDU") == text.count("R-APDU") >= 6

    # The event stream has every APDU by instruction name, masked, in order.
    commands = [e.name for e in stream.events(matching(source=Source.CARDS, kind="c-apdu"))]
    assert commands[0] == "SELECT" and commands[-1] == "GENERATE AC"
    assert "GET PROCESSING OPTIONS" in commands and "READ RECORD" in commands
    ac = stream.find(matching(kind="r-apdu", name="9000"), since=stream.events(
        matching(name="GENERATE AC"))[-1].seq)
    assert ac is not None and ac.detail.startswith("to GENERATE AC")
    assert profile.pan not in stream.timeline()

    bank.restore_nominal()
    assert bank.is_nominal() and bank.inserted is None
    assert host.expect("card", 1.0) == {"t": "card", "present": False}


def test_mute_card_surfaces_as_mute_quickly(relay: tuple[PcscCardBank, PtyProbeHost]) -> None:
    bank, host = relay
    bank.insert("mute")
    host.expect("card", 1.0)
    with pytest.raises(CardError) as err:
        _run(host)
    assert err.value.reason == "mute"
    trace = bank.trace_text()
    assert "0x80100067" in trace and "→ mute" in trace     # the PC/SC error is named
    bank.remove()
    assert bank.is_nominal()


def test_no_card_inserted_is_absent(relay: tuple[PcscCardBank, PtyProbeHost]) -> None:
    _bank, host = relay
    with pytest.raises(CardError) as err:
        _run(host)
    assert err.value.reason == "absent"


def test_unknown_card_name_lists_configured(relay: tuple[PcscCardBank, PtyProbeHost]) -> None:
    bank, _ = relay
    with pytest.raises(Exception, match=r"unknown card 'gold'; configured cards are "
                                        r"\['good', 'mute'\]"):
        bank.insert("gold")
