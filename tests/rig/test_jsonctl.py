"""The JSON-lines control client: answers matched by seq, bounded waits, and several threads
taking turns on one socket (a step and the bench's wire watch share the injector's)."""

from __future__ import annotations

import json
import socket
import threading

import pytest

from protocols.errors import NoResponse, TransportError
from rigs.jsonctl import ControlChannel


def _server(sock: socket.socket, delay_s: float = 0.0) -> threading.Thread:
    """Answer each request line with its op and seq (after *delay_s*), until the peer closes."""
    def serve() -> None:
        buf = b""
        pause = threading.Event()
        while True:
            data = sock.recv(4096)
            if not data:
                return
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                req = json.loads(line)
                pause.wait(delay_s)
                sock.sendall(json.dumps({"ok": True, "seq": req["seq"],
                                         "echo": req["op"]}).encode() + b"\n")
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def _channel(timeout: float = 1.0) -> tuple[ControlChannel, socket.socket]:
    ours, theirs = socket.socketpair()
    chan = ControlChannel("Fake(x)", "the peer", "test socket", reply_timeout_s=timeout,
                          max_line=4096)
    chan.attach(ours)
    return chan, theirs


def test_threads_take_turns_and_each_gets_its_own_answer() -> None:
    chan, theirs = _channel()
    server = _server(theirs, delay_s=0.005)
    got: dict[str, list[str]] = {"a": [], "b": []}

    def ask(name: str) -> None:
        for i in range(20):
            answer = chan.exchange("ask", {"op": f"{name}{i}"})
            got[name].append(str(answer["echo"]))

    threads = [threading.Thread(target=ask, args=(n,)) for n in got]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert got == {n: [f"{n}{i}" for i in range(20)] for n in got}
    chan.detach()
    server.join(timeout=2)
    theirs.close()


def test_no_answer_names_the_bound_and_a_peer_closing_is_a_transport_error() -> None:
    chan, theirs = _channel(timeout=0.1)
    with pytest.raises(NoResponse, match=r"ask\(\): no answer to 'x' from the peer within "
                                         r"0.1 s"):
        chan.exchange("ask", {"op": "x"})
    theirs.shutdown(socket.SHUT_WR)  # the peer reads on but will never answer again
    with pytest.raises(TransportError, match="the peer closed its control socket"):
        chan.exchange("ask", {"op": "y"})
    chan.detach()
    theirs.close()
