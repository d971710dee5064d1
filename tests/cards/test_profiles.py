"""The card profiles of fixtures/cards: every one loads through the one model, each new key is
checked with a key-path error, and no message shows a PAN, PIN or key."""

from __future__ import annotations

import datetime
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from protocols.atr import parse_atr
from protocols.errors import ConfigError, DecodeError
from protocols.magstripe import decode_track
from sim.card.profile import CardProfile, load_profile
from tests.cards.conftest import CARDS_DIR, GOOD

PROFILES = sorted(CARDS_DIR.glob("*.yaml"))
SECRET_KEY = "A1B2C3D4E5F60718293A4B5C6D7E8F90"


def _loaded() -> dict[str, CardProfile]:
    return {p.stem: load_profile(p) for p in PROFILES}


def test_at_least_twelve_profiles_named_by_their_files() -> None:
    profiles = _loaded()
    assert len(profiles) >= 12
    assert all(profile.name == stem for stem, profile in profiles.items())
    pans = [p.pan for p in profiles.values()]
    assert len(set(pans)) == len(pans)                      # the issuer keys accounts by PAN
    assert {"good", "credit", "international", "contactless", "offline_pin", "magstripe",
            "expired", "blocked", "pin_exhausted", "insufficient_funds", "mute", "garbage_atr",
            "decline_gac", "pulled"} <= set(profiles)


@pytest.mark.parametrize("path", PROFILES, ids=[p.stem for p in PROFILES])
def test_every_profile_loads_and_hides_its_secrets(path: Path) -> None:
    profile = load_profile(path)
    text = repr(profile) + str(profile)
    assert profile.pan not in text and profile.pin not in text
    assert profile.keys.imk_ac.hex() not in text.lower()
    assert profile.masked_pan == profile.pan[:6] + "*" * (len(profile.pan) - 10) + profile.pan[-4:]
    if profile.answers_reset and profile.faulty_atr is None:
        parse_atr(profile.atr)
    if profile.stripe:
        assert profile.track1 is not None and profile.track2 is not None
        assert profile.track2.startswith(";" + profile.pan + "=" + profile.expiry)


def test_each_profile_says_what_it_proves() -> None:
    p = _loaded()
    today = datetime.date(2026, 1, 1).strftime("%y%m")
    assert p["good"].issuer == {"balance_minor": 1000000, "status": "active"}
    assert p["credit"].aid.hex().upper() == "A000000333010102"
    assert p["credit"].issuer["per_txn_limit_minor"] < p["credit"].issuer["balance_minor"]
    intl = p["international"]
    assert (intl.network, intl.aid.hex().upper(), intl.pan[0], intl.country) == \
        ("visa", "A0000000031010", "4", "0840")
    assert p["contactless"].contactless and p["contactless"].ppse_aids
    assert (p["offline_pin"].cvm, p["offline_pin"].pin_try_counter) == ("offline_pin", 3)
    stripe = p["magstripe"]
    assert not stripe.chip and stripe.reset_answer == b"" and stripe.service_code[0] in "15"
    assert p["expired"].expiry < today
    assert p["blocked"].blocked == "application" and p["blocked"].issuer["status"] == "blocked"
    assert p["pin_exhausted"].pin_try_counter == 0
    assert p["pin_exhausted"].issuer["pin_failures"] >= 3
    assert p["insufficient_funds"].issuer["balance_minor"] < 1000
    assert p["mute"].mute and p["mute"].reset_answer == b""
    garbage = p["garbage_atr"].reset_answer
    with pytest.raises(DecodeError, match="TCK"):
        parse_atr(garbage)
    assert p["decline_gac"].decline_at == "first_generate_ac"
    assert p["decline_after_approval"].decline_at == "second_generate_ac"
    assert p["pulled"].pull_at == "GENERATE AC"
    assert p["counterfeit"].keys.icc_imk_ac not in (None, p["counterfeit"].keys.imk_ac)
    assert p["restricted"].issuer["status"] == "restricted"
    assert p["issuer_unavailable"].issuer["fault"] == "unreachable"
    assert p["issuer_malfunction"].issuer["fault"] == "malfunction"
    assert p["damaged_stripe"].bad_stripe


def test_tracks_of_the_good_card_exactly() -> None:
    good = load_profile(GOOD)
    assert good.track2 == ";6214830000000017=30122200000000000?" + good.track2[-1]
    assert decode_track(2, good.track2) == "6214830000000017=30122200000000000"
    assert decode_track(1, good.track1 or "") == \
        "B6214830000000017^UNIONPAY/TEST CARD^30122200000000000"
    assert good.track2_equivalent == "6214830000000017D30122200000000000"
    data = good.stripe_data
    assert data is not None and data.service_code == "220"
    assert "6214830000000017" not in repr(data)


def test_bad_stripe_fails_the_lrc_on_both_tracks() -> None:
    damaged = load_profile(CARDS_DIR / "damaged_stripe.yaml")
    for track, raw in ((1, damaged.track1), (2, damaged.track2)):
        assert raw is not None
        with pytest.raises(DecodeError, match=f"track {track}: LRC error") as err:
            decode_track(track, raw)
        assert damaged.pan not in str(err.value)


def test_no_stripe_no_tracks(tmp_path: Path) -> None:
    profile = load_profile(_write(tmp_path, stripe=False))
    assert profile.stripe_data is None and profile.track1 is None and profile.track2 is None
    assert profile.track2_equivalent.startswith("6214830000000017D3012")   # the chip has it


# -- one bad file per key ------------------------------------------------------------------------

def _write(tmp_path: Path, **changes: Any) -> Path:
    data = yaml.safe_load(GOOD.read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        elif key in ("issuer", "keys") and isinstance(value, dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    path = tmp_path / "card.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


BAD: list[tuple[dict[str, Any], str]] = [
    ({"name": "Good Card"}, r"name: expected a card name of a-z 0-9 _ -"),
    ({"network": "amex"}, r"network: expected one of 'unionpay', 'visa' or 'mastercard'"),
    ({"network": "visa"}, r"aid: A000000333010101 is not a visa application \(its RID is "
                          r"A000000003\)"),
    ({"chip": "yes"}, r"chip: expected true or false"),
    ({"atr": "3B6F00002063"}, r"atr: not a valid ISO/IEC 7816-3 ATR: ATR 3B6F00002063: T0 "
                              r"announces 15 historical bytes from offset 4, only 2 follow"),
    ({"faulty_atr": "3B6500002063CB6600"}, r"faulty_atr: 3B6500002063CB6600 is a valid ISO/IEC "
                                           r"7816-3 ATR; a faulty ATR must break it"),
    ({"chip": False, "service_code": "101", "faulty_atr": "3B01"},
     r"faulty_atr: a card without a chip \(chip: false\) gives no ATR at all"),
    ({"contactless": False, "contactless_aids": ["A000000333010101"]},
     r"contactless_aids: given, but contactless is not true"),
    ({"contactless_aids": ["A0000000031010"]},
     r"contactless_aids: A0000000031010 is not a unionpay application"),
    ({"pan": "4176660000000019"}, r"pan: expected a UnionPay PAN: 16-19 digits starting with "
                                  r"62, got <hidden>"),
    ({"effective": "3101"}, r"effective: 3101 is after the expiry 3012"),
    ({"service_code": "101"}, r"service_code: a chip card has a service code starting 2 or 6"),
    ({"chip": False}, r"service_code: a card without a chip \(chip: false\) has a service code "
                      r"starting 1 or 5"),
    ({"cardholder": "lower/case"}, r"cardholder: expected 2-26 upper-case ASCII characters"),
    ({"chip": False, "service_code": "101", "stripe": False},
     r"stripe: a card with neither chip nor stripe \(chip: false\) cannot be read"),
    ({"stripe": False, "bad_stripe": True}, r"bad_stripe: the card has no stripe"),
    ({"pin_try_limit": 0}, r"pin_try_limit: must be >= 1"),
    ({"pin_try_limit": 2, "pin_try_counter": 3}, r"pin_try_counter: 3 is above pin_try_limit 2"),
    ({"blocked": "yes"}, r"blocked: expected one of 'application' or 'card'"),
    ({"decline_at": "third_generate_ac"}, r"decline_at: expected one of 'first_generate_ac' "
                                          r"or 'second_generate_ac'"),
    ({"pull_at": "GENERATE"}, r"pull_at: expected an instruction name, one of \["),
    ({"issuer": {"pin_failures": -1}}, r"issuer.pin_failures: must be >= 0"),
    ({"issuer": {"per_txn_limit_minor": -5}}, r"issuer.per_txn_limit_minor: must be > 0"),
    ({"issuer": {"fault": "slow"}}, r"issuer.fault: expected one of 'unreachable' or "
                                    r"'malfunction'"),
    ({"issuer": {"status": "frozen"}}, r"issuer.status: expected one of"),
    ({"keys": {"imk_ac": "0011"}}, r"keys.imk_ac: expected 16 bytes of hex, got 2"),
    ({"keys": {"imk_ac": "00112233445566770011223344556677"}},
     r"keys.imk_ac: the two halves are equal"),
    ({"keys": {"icc_imk_ac": "0123456789ABCDEFFEDCBA9876543210"}},
     r"keys.icc_imk_ac: equals imk_ac"),
]


@pytest.mark.parametrize(("change", "message"), BAD, ids=[
    "-".join(sorted(c)) + f"-{i}" for i, (c, _) in enumerate(BAD)])
def test_a_bad_key_is_named(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    path = _write(tmp_path, **change)
    with pytest.raises(ConfigError) as err:
        load_profile(path)
    text = str(err.value)
    assert text.startswith(f"{path}: card profile is not valid:\n"), text
    assert re.search(rf"\n  {message}", text), text
    for secret in ("6214830000000017", "4176660000000019", "123456",
                   "0123456789ABCDEFFEDCBA9876543210"):
        assert secret not in text.upper(), text


@pytest.mark.parametrize("change", [
    {"keys": {"imk_ac": SECRET_KEY[:30]}},
    {"keys": {"icc_imk_ac": SECRET_KEY + "00"}},
    {"pan": "4176660000000018", "network": "visa", "aid": "A0000000031010"},
    {"pin": "12"},
])
def test_messages_never_show_pan_pin_or_key(tmp_path: Path, change: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as err:
        load_profile(_write(tmp_path, **change))
    text = str(err.value).upper()
    for secret in (SECRET_KEY, SECRET_KEY[:30], "4176660000000018", "6214830000000017"):
        assert secret not in text, text
    assert "4176660000000018" not in text


def test_visa_profile_with_its_own_pan_range(tmp_path: Path) -> None:
    profile = load_profile(_write(tmp_path, network="visa", aid="A0000000031010",
                                  pan="4176660000000019", label="VISA CREDIT", contactless=False))
    assert profile.network == "visa" and profile.holder_name == "VISA/TEST CARD"
    assert profile.track1 is not None and profile.track1.startswith("%B4176660000000019^VISA/")
