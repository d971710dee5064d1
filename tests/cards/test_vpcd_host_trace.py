from __future__ import annotations

import socket
import threading

import pytest

from protocols.errors import NoResponse
from rigs.cards import render_apdu
from sim.card.emv import SimEmvCard, load_profile
from sim.card.vpcd import NO_ATR, VpcdHost, VpcdSlot
from sim.pcsc import reader_conf
from tests.cards.conftest import GOOD, MUTE


def _exchange(conn: socket.socket, payload: bytes, answer: bool = True) -> bytes:
    conn.sendall(len(payload).to_bytes(2, "big") + payload)
    if not answer:
        return b""
    head = conn.recv(2, socket.MSG_WAITALL)
    return conn.recv(int.from_bytes(head, "big"), socket.MSG_WAITALL)


def test_vpcd_host_wire_exact_bytes() -> None:
    """A fake vpcd (listening socket) drives two hosted cards; answers are checked exactly."""
    srv = socket.create_server(("127.0.0.1", 0))
    srv2 = socket.create_server(("127.0.0.1", 0))
    good = SimEmvCard(load_profile(GOOD))
    host = VpcdHost([VpcdSlot(good, "127.0.0.1", srv.getsockname()[1]),
                     VpcdSlot(SimEmvCard(load_profile(MUTE)), "127.0.0.1",
                              srv2.getsockname()[1])])
    thread: threading.Thread | None = None
    host.connect(timeout=2.0)
    conn, _ = srv.accept()
    conn2, _ = srv2.accept()
    try:
        conn.settimeout(2.0)
        conn2.settimeout(2.0)
        thread = threading.Thread(target=host.serve, daemon=True)
        thread.start()
        assert _exchange(conn, b"\x04") == bytes.fromhex("3B6500002063CB6600")   # presence
        _exchange(conn, b"\x01", answer=False)                                   # power on
        assert _exchange(conn, b"\x04") == bytes.fromhex("3B6500002063CB6600")
        assert _exchange(conn, bytes.fromhex("80CA9F3600")) == bytes.fromhex("9F360200019000")
        assert _exchange(conn, bytes.fromhex("0084000008")) == bytes.fromhex("6D00")
        _exchange(conn, b"\x00", answer=False)                                   # power off
        assert _exchange(conn, bytes.fromhex("80CA9F3600")) == bytes.fromhex("6F00")
        assert not good.powered
        assert _exchange(conn2, b"\x04") == NO_ATR and len(NO_ATR) == 34
    finally:
        host.stop()                      # before vpcd's side closes: serve() ends cleanly
        if thread is not None:
            thread.join(timeout=2.0)
            assert not thread.is_alive()
        for c in (conn, conn2):
            c.close()
        srv.close()
        srv2.close()


def test_connect_is_bounded() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]          # bound, not listening: connection refused
        host = VpcdHost([VpcdSlot(SimEmvCard(load_profile(GOOD)), "127.0.0.1", port)])
        try:
            with pytest.raises(NoResponse, match="did not accept a connection within 0.2 s"):
                host.connect(timeout=0.2)
        finally:
            host.close()


def test_reader_conf_is_one_entry() -> None:
    text = reader_conf(35963)
    assert text.count("FRIENDLYNAME") == 1
    assert "DEVICENAME   /dev/null:0x8C7B\n" in text and "CHANNELID    0x8C7B\n" in text


def test_trace_rendering_masks_pan_track2_and_pin() -> None:
    rec = bytes.fromhex("7028" "5711" "6214830000000017D30122200000000000" "5F2012"
                        + b"UNIONPAY/TEST CARD".hex() + "5A08" "6214830000000017" "9000")
    text = render_apdu("R-APDU", rec)
    assert "6214830000000017" not in text and "D3012" not in text and "UNIONPAY" not in text
    assert "5A08[621483******0017]" in text and "5711[blanked]" in text
    assert text.endswith("9000")
    assert render_apdu("C-APDU", bytes.fromhex("0020008008241234FFFFFFFFFF")) == \
        "0020008008[PIN data blanked]"
    # not TLV, but a PAN-like digit run: still masked
    assert "6214830000000017" not in render_apdu("R-APDU", bytes.fromhex("00621483000000001790"))
