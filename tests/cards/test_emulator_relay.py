"""Root only: the card emulator on the private pcscd's second reader, loaded through its control
socket by the real PcscCardBank (``insert`` of an emulated card), and the terminal's kernel run
against it through the relay and a SimProbe on a pty, as the virtual bench wires it."""

from __future__ import annotations

import datetime

import pytest

from protocols import tlv
from protocols.emvcard import CDOL1
from sim.card.emv import load_profile
from sim.host.config import account_of
from sim.host.issuer import check_arqc
from sim.terminal.emv import CardError, CardRead, run_chip_transaction
from tests.cards.conftest import CARDS_DIR, EMULATOR_READER, PcscBench, needs_root, open_relay
from tests.cards.probe_host import HarnessSlot, PtyProbeHost

pytestmark = needs_root

H = bytes.fromhex
EMULATED = {p.stem: p.stem for p in CARDS_DIR.glob("*.yaml") if p.stem != "good"}
SELECT_AID = H("00A4040008A00000033301010100")
GPO = H("80A8000014831200000001234501560156250630" "00A1B2C3D4" "00")
CDOL1_DATA = H("000000012345" "000000000000" "0156" "0000000000" "0156" "250630" "00"
               "A1B2C3D4" "22" "020300")


class AtrSlot(HarnessSlot):
    """The kernel's slot, keeping the ATR it got."""

    atr = b""

    def power_on(self, timeout: float) -> bytes:
        self.atr = super().power_on(timeout)
        return self.atr


def _run(slot: HarnessSlot) -> CardRead:
    return run_chip_transaction(
        slot, amount_minor=12_345, txn_date=datetime.date(2025, 6, 30),
        unpredictable_number=H("A1B2C3D4"), timeout=2.0)


def _insert(host: PtyProbeHost, bank: object, name: str) -> None:
    bank.insert(name)                                                  # type: ignore[attr-defined]
    assert host.expect("card", 2.0) == {"t": "card", "present": True}


def _take_out(host: PtyProbeHost, bank: object) -> None:
    bank.remove()                                                      # type: ignore[attr-defined]
    assert host.expect("card", 2.0) == {"t": "card", "present": False}


def test_each_loaded_profile_is_what_the_kernel_reads(pcsc_bench: PcscBench) -> None:
    with open_relay(pcsc_bench, emulated=EMULATED) as (bank, host):
        assert host.expect("card", 1.0) == {"t": "card", "present": False}
        for name in ("expired", "credit", "decline_gac", "offline_pin"):
            profile = load_profile(CARDS_DIR / f"{name}.yaml")
            _insert(host, bank, name)
            read = _run(HarnessSlot(host))
            assert (read.pan, read.expiry, read.aid) == (profile.pan, profile.expiry,
                                                         profile.aid.hex().upper()), name
            wanted = "AAC" if profile.decline_at == "first_generate_ac" else "ARQC"
            assert read.cryptogram_type == wanted, name
            _take_out(host, bank)
        text = bank.trace_text()
        assert f"card emulator: load expired into {EMULATOR_READER!r}" in text
        assert f"card emulator: credit in {EMULATOR_READER!r} (ATR 3B6500002063CB6600)" in text
        for name in ("expired", "credit", "decline_gac", "offline_pin"):
            pan = load_profile(CARDS_DIR / f"{name}.yaml").pan
            assert pan not in text and pan not in text.replace(" ", "")


def test_cards_without_a_usable_answer_to_reset(pcsc_bench: PcscBench) -> None:
    with open_relay(pcsc_bench, emulated=EMULATED) as (bank, host):
        host.expect("card", 1.0)
        for name in ("magstripe", "mute"):
            _insert(host, bank, name)
            with pytest.raises(CardError) as err:
                _run(HarnessSlot(host))
            assert err.value.reason == "mute", name
            _take_out(host, bank)
        _insert(host, bank, "garbage_atr")
        slot = AtrSlot(host)
        try:
            _run(slot)
        except CardError:
            pass                    # a kernel that checks the ATR refuses the card here
        assert slot.atr == H("3B8880014A434F503231400006")   # pcscd passed it through as is
        assert f"card emulator: garbage_atr in {EMULATOR_READER!r} (ATR 3B8880" in \
            bank.trace_text()


def test_a_card_pulled_at_generate_ac_is_a_real_removal(pcsc_bench: PcscBench) -> None:
    with open_relay(pcsc_bench, emulated=EMULATED) as (bank, host):
        host.expect("card", 1.0)
        for attempt in (1, 2):                          # out, then inserted and pulled again
            _insert(host, bank, "pulled")
            with pytest.raises(CardError) as err:
                _run(HarnessSlot(host))
            assert err.value.reason == "absent", attempt
            assert host.expect("card", 3.0) == {"t": "card", "present": False}
            assert bank.inserted is None
        text = bank.trace_text()
        assert f"pulled left {EMULATOR_READER!r} → absent" in text
        assert "card pulled by leaving its reader: REMOVE to the probe" in text   # no fault rule
        bank.restore_nominal()
        assert bank.is_nominal()
        _insert(host, bank, "good")                      # the other reader is untouched
        assert _run(HarnessSlot(host)).cryptogram_type == "ARQC"


def test_offline_pin_counter_through_the_relay_and_restore(pcsc_bench: PcscBench) -> None:
    with open_relay(pcsc_bench, emulated=EMULATED) as (bank, host):
        host.expect("card", 1.0)
        _insert(host, bank, "offline_pin")
        slot = HarnessSlot(host)
        slot.power_on(2.0)
        assert slot.transmit(SELECT_AID, 2.0)[-2:] == H("9000")
        assert slot.transmit(H("0020008008249999FFFFFFFFFF"), 2.0) == H("63C2")
        assert slot.transmit(H("80CA9F1700"), 2.0) == H("9F1701029000")
        slot.power_off()
        assert "0020008008[PIN data blanked]" in bank.trace_text()
        assert "249999" not in bank.trace_text()
        _take_out(host, bank)
        _insert(host, bank, "offline_pin")               # the same card: its counter stayed
        slot.power_on(2.0)
        slot.transmit(SELECT_AID, 2.0)
        assert slot.transmit(H("80CA9F1700"), 2.0) == H("9F1701029000")
        slot.power_off()
        bank.restore_nominal()                           # every card back to its profile
        assert host.expect("card", 2.0) == {"t": "card", "present": False}
        _insert(host, bank, "offline_pin")
        assert "card emulator: offline_pin is in" in bank.trace_text()   # no reload needed
        slot.power_on(2.0)
        slot.transmit(SELECT_AID, 2.0)
        assert slot.transmit(H("80CA9F1700"), 2.0) == H("9F1701039000")
        slot.power_off()


def test_second_generate_ac_with_the_issuers_arpc_over_pcsc(pcsc_bench: PcscBench) -> None:
    with open_relay(pcsc_bench, emulated=EMULATED) as (bank, host):
        host.expect("card", 1.0)
        _insert(host, bank, "decline_after_approval")
        slot = HarnessSlot(host)
        slot.power_on(2.0)
        slot.transmit(SELECT_AID, 2.0)
        gpo = tlv.flatten(slot.transmit(GPO, 2.0)[:-2])
        first = slot.transmit(H("80AE800021") + CDOL1_DATA + b"\x00", 2.0)
        icc = {**tlv.split_dol(tlv.parse_dol(CDOL1), CDOL1_DATA), 0x82: gpo[0x82],
               **tlv.flatten(first[:-2])}
        check = check_arqc(account_of(load_profile(CARDS_DIR / "decline_after_approval.yaml")),
                           icc)
        assert check.verified, check.why
        data = b"00" + tlv.flatten(check.issuer_auth_tlv("00"))[0x91] + bytes(5) + \
            H("A1B2C3D4")
        second = slot.transmit(H("80AE400015") + data + b"\x00", 2.0)
        assert tlv.flatten(second[:-2])[0x9F27] == b"\x00"   # this card declines after approval
        slot.power_off()
