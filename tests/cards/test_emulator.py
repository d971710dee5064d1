"""The card emulator: its pure state and control ops, then the vpcd host serving it over a fake
vpcd (listening sockets standing for pcscd's reader ports) and driven through the rig's own
client, :class:`rigs.cards.SocketCardEmulator`: a load is a removal (the old connection
closes) and an insertion (a new connection, the new card's ATR)."""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from protocols.errors import DecodeError, SimError
from protocols.magstripe import decode_track
from rigs.cards import EmulatorState, SocketCardEmulator
from rigs.errors import InstrumentError, TransportError
from sim.card.emulator import CardEmulator, handle_emulator_control
from sim.card.emv import SimEmvCard, load_profile
from sim.card.vpcd import EmulatorBinding, VpcdHost, VpcdSlot
from tests.cards.conftest import CARDS_DIR, GOOD

H = bytes.fromhex
SELECT_AID = H("00A4040008A00000033301010100")
GPO = H("80A8000014831200000001234501560156250630" "00A1B2C3D4" "00")
GEN_AC = H("80AE800021") + bytes(33) + b"\x00"


# -- pure ----------------------------------------------------------------------------------------

def test_load_swaps_the_card_and_asks_for_an_insertion() -> None:
    emulator = CardEmulator(CARDS_DIR, "mute")
    assert emulator.state() == {"profile": "mute", "present": False, "atr": "", "mute": True}
    emulator.inserted()
    card = emulator.load("expired")
    assert card.profile.name == "expired" and emulator.card is card
    assert emulator.state() == {"profile": "expired", "present": False,
                                "atr": "3B6500002063CB6600", "mute": False}
    assert emulator.take_insertion() and not emulator.take_insertion()   # asked once
    assert "expired" in emulator.available() and "good" in emulator.available()


def test_cards_keep_their_state_in_the_drawer_until_reset() -> None:
    fixed = SimEmvCard(load_profile(GOOD))
    emulator = CardEmulator(CARDS_DIR, "mute", fixed=[fixed])
    card = emulator.load("offline_pin")
    card.pin_try_counter, fixed.atc = 1, 99
    emulator.load("good")
    assert emulator.load("offline_pin").pin_try_counter == 1      # the same card again
    assert emulator.reset() == ["good", "mute", "offline_pin"]
    assert card.pin_try_counter == 3 and fixed.atc == 1


@pytest.mark.parametrize(("profile", "says"), [
    ("gold", r"no profile 'gold' in .*; available: blocked, "),
    ("../good", r"'profile' must be a card name \(a-z 0-9 _ -\), got '../good'"),
    (7, r"'profile' must be a card name, got 7"),
])
def test_load_refusals_are_answers(profile: object, says: str) -> None:
    emulator = CardEmulator(CARDS_DIR, "mute")
    answer = handle_emulator_control(emulator, {"op": "load", "profile": profile, "seq": 4})
    assert answer["ok"] is False and answer["seq"] == 4
    assert re.search(says, answer["error"]), answer["error"]
    assert emulator.profile == "mute" and not emulator.take_insertion()


def test_a_profile_whose_name_differs_from_its_file_is_refused(tmp_path: Path) -> None:
    data = yaml.safe_load(GOOD.read_text())
    (tmp_path / "other.yaml").write_text(yaml.safe_dump({**data, "name": "good"}))
    (tmp_path / "mute.yaml").write_text((CARDS_DIR / "mute.yaml").read_text())
    answer = handle_emulator_control(CardEmulator(tmp_path, "mute"),
                                     {"op": "load", "profile": "other"})
    assert answer == {"ok": False, "error": f"load: {tmp_path}/other.yaml says name 'good'; a "
                                            f"profile's name is its file name ('other')"}


def test_a_broken_profile_names_its_key_and_hides_the_pan(tmp_path: Path) -> None:
    data = yaml.safe_load(GOOD.read_text())
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump({**data, "name": "broken",
                                                          "pan": "6214830000000018"}))
    (tmp_path / "mute.yaml").write_text((CARDS_DIR / "mute.yaml").read_text())
    answer = handle_emulator_control(CardEmulator(tmp_path, "mute"),
                                     {"op": "load", "profile": "broken"})
    assert "pan: 621483******0018 fails the Luhn check" in answer["error"]
    assert "6214830000000018" not in answer["error"]


def test_unknown_op_and_not_an_object() -> None:
    emulator = CardEmulator(CARDS_DIR, "mute")
    assert handle_emulator_control(emulator, {"op": "eject"}) == {
        "ok": False, "error": "unknown op 'eject'; expected one of ping, load, loaded, "
                              "profiles, reset, stripe"}
    assert handle_emulator_control(emulator, [1])["error"] == \
        "a request is a JSON object, got list"
    with pytest.raises(SimError, match="profiles directory /nonexistent does not exist"):
        CardEmulator("/nonexistent", "mute")


# -- the host over a fake vpcd, through the rig's client ---------------------------------------

class FakeVpcd:
    """pcscd's side of one reader port: accepts the card's connections, sends vpcd messages."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(2.0)
        self.port = self.server.getsockname()[1]
        self.conn: socket.socket | None = None

    def accept(self) -> None:
        self.conn, _ = self.server.accept()
        self.conn.settimeout(2.0)

    def send(self, payload: bytes, answer: bool = True) -> bytes:
        assert self.conn is not None
        self.conn.sendall(len(payload).to_bytes(2, "big") + payload)
        if not answer:
            return b""
        head = self.conn.recv(2, socket.MSG_WAITALL)
        if not head:
            return b""                       # the card closed the connection: removed
        return self.conn.recv(int.from_bytes(head, "big"), socket.MSG_WAITALL)

    def closed_by_card(self) -> bool:
        assert self.conn is not None
        return self.conn.recv(1) == b""

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.server.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[FakeVpcd, FakeVpcd, SocketCardEmulator, VpcdHost]]:
    fixed, emul = FakeVpcd(), FakeVpcd()
    good = VpcdSlot(SimEmvCard(load_profile(GOOD)), "127.0.0.1", fixed.port)
    emulator = CardEmulator(CARDS_DIR, "mute", fixed=[good.card])   # as python -m sim.card
    slot = VpcdSlot(emulator.card, "127.0.0.1", emul.port)
    control = tmp_path / "cards.ctl"
    host = VpcdHost([good, slot], emulator=EmulatorBinding(emulator, slot, str(control)))
    host.connect(timeout=2.0)
    fixed.accept()
    emul.accept()
    thread = threading.Thread(target=host.serve, daemon=True)
    thread.start()
    client = SocketCardEmulator("card-emulator", control, "Virtual PCD 00 01")
    client.open()
    try:
        yield fixed, emul, client, host
    finally:
        client.close()
        host.stop()
        thread.join(timeout=2.0)
        assert not thread.is_alive()
        assert not control.exists()              # the socket is removed on the way out
        fixed.close()
        emul.close()


def test_load_is_a_removal_and_an_insertion(
        served: tuple[FakeVpcd, FakeVpcd, SocketCardEmulator, VpcdHost]) -> None:
    fixed, emul, client, _ = served
    assert client.loaded() == EmulatorState("mute", True, b"", True)
    assert emul.send(b"\x04") == bytes(34)                       # mute: vpcd's NO_ATR
    old = emul.conn
    state = client.load("expired")
    assert state == EmulatorState("expired", True, H("3B6500002063CB6600"), False)
    assert old is not None and old.recv(1) == b""               # the old card left
    emul.accept()                                               # the new one is waiting
    assert emul.send(b"\x04") == H("3B6500002063CB6600")
    emul.send(b"\x01", answer=False)                            # power on
    assert emul.send(H("80CA9F1700")) == H("9F1701039000")
    assert fixed.send(b"\x04") == H("3B6500002063CB6600")        # the fixed card stays in
    assert client.loaded().profile == "expired"


def test_a_pulled_card_leaves_the_reader_until_it_is_loaded_again(
        served: tuple[FakeVpcd, FakeVpcd, SocketCardEmulator, VpcdHost]) -> None:
    _, emul, client, _ = served
    client.load("pulled")
    emul.accept()
    emul.send(b"\x01", answer=False)
    assert emul.send(SELECT_AID)[-2:] == H("9000")
    assert emul.send(GPO)[-2:] == H("9000")
    assert emul.send(GEN_AC) == b""                              # no answer: connection closed
    assert client.loaded() == EmulatorState("pulled", False, H("3B6500002063CB6600"), False)
    assert client.load("pulled").present                       # inserted again
    emul.accept()
    assert emul.send(b"\x04") == H("3B6500002063CB6600")


def test_reset_and_refusals_through_the_client(
        served: tuple[FakeVpcd, FakeVpcd, SocketCardEmulator, VpcdHost]) -> None:
    _, emul, client, _ = served
    client.load("offline_pin")
    emul.accept()
    emul.send(b"\x01", answer=False)
    emul.send(SELECT_AID)
    assert emul.send(H("0020008008249999FFFFFFFFFF")) == H("63C2")
    assert "offline_pin" in client.reset() and "good" in client.reset()
    assert emul.send(H("80CA9F1700")) == H("9F1701039000")
    with pytest.raises(InstrumentError, match=r"the emulator refused 'load': load: no profile "
                                              r"'gold'"):
        client.load("gold")
    assert client.loaded().profile == "offline_pin"             # still open and usable


def test_a_malformed_control_line_is_answered_and_the_session_goes_on(
        served: tuple[FakeVpcd, FakeVpcd, SocketCardEmulator, VpcdHost], tmp_path: Path) -> None:
    with socket.socket(socket.AF_UNIX) as raw:
        raw.settimeout(2.0)
        raw.connect(str(tmp_path / "cards.ctl"))
        raw.sendall(b"not json\n{\"op\": \"profiles\", \"seq\": 2}\n")
        data = b""
        while data.count(b"\n") < 2:
            data += raw.recv(65536)
    first, second = data.splitlines()
    assert first.startswith(b'{"ok":false,"error":"request refused: card emulator control')
    assert b'"seq":2' in second and b'"good"' in second


def test_the_client_names_the_socket_it_cannot_reach(tmp_path: Path) -> None:
    client = SocketCardEmulator("card-emulator", tmp_path / "none.ctl", "Virtual PCD 00 01")
    with pytest.raises(TransportError, match=r"open\(\): control socket .*none.ctl does not "
                                             r"exist \(is the card process running with "
                                             r"--control .*none.ctl\?\)"):
        client.open()
    with socket.socket(socket.AF_UNIX) as stale:      # a socket file nobody listens on
        stale.bind(str(tmp_path / "stale.ctl"))
    client = SocketCardEmulator("card-emulator", tmp_path / "stale.ctl", "Virtual PCD 00 01")
    with pytest.raises(TransportError, match=r"open\(\): cannot connect to .*stale.ctl within "
                                             r"2.0 s .*; is the card process running"):
        client.open()
    with pytest.raises(Exception, match=r"load\(\) needs an open session; state is CLOSED"):
        client.load("good")


def test_stripe_gives_the_tracks_of_a_card_not_loaded_and_none_for_a_chip_only_card() -> None:
    emulator = CardEmulator(CARDS_DIR, "mute")
    answer = handle_emulator_control(emulator, {"op": "stripe", "profile": "magstripe",
                                                "seq": 1})
    assert answer["ok"] and emulator.profile == "mute"  # nothing was loaded
    track1, track2 = answer["track1"], answer["track2"]
    assert decode_track(1, track1).startswith("B") and "=" in decode_track(2, track2)
    damaged = handle_emulator_control(emulator, {"op": "stripe", "profile": "damaged_stripe",
                                                 "seq": 2})
    with pytest.raises(DecodeError, match="track 2: LRC error"):
        decode_track(2, damaged["track2"])
    chip_only = handle_emulator_control(emulator, {"op": "stripe", "profile": "mute", "seq": 4})
    assert chip_only["ok"]
    refused = handle_emulator_control(emulator, {"op": "stripe", "profile": 7, "seq": 3})
    assert not refused["ok"] and "'profile' must be a card name" in refused["error"]
