"""A bridge process with fake ports, for driver tests that need neither root nor interfaces.

Run as ``python fake_bridge.py <the bridge's arguments>``.  It is the real
:func:`rigs.network.bridge.main` (control socket, signals, capture, rules) with each "interface"
replaced by a unix datagram socket: the bridge receives the frames of interface X on
``DIR/X.in`` and sends the frames for X to ``DIR/X.out`` (DIR = the control socket's folder).
With ``--fail-on-pull`` the CABLE_PULL rule raises, to test how a rule's bug is reported.
The terminal-side link (``carrier_loss``) is a file, ``DIR/X.link`` holding ``up`` or ``down``;
with ``--fail-link`` setting it fails as ``ip`` would, with an error on stderr.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

from protocols.faults import Direction, FaultKind, FaultSpec
from rigs.network.bridge import RULE_KINDS, LinkError, Rule, RuleFactory, Verdict, main


class DgramPort:
    def __init__(self, ifname: str, folder: Path) -> None:
        self.name = ifname
        self.peer = str(folder / f"{ifname}.out")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        inbox = folder / f"{ifname}.in"
        inbox.unlink(missing_ok=True)
        self.sock.bind(str(inbox))

    def fileno(self) -> int:
        return self.sock.fileno()

    def recv_frame(self) -> bytes | None:
        return self.sock.recv(65535)

    def send_frame(self, frame: bytes) -> None:
        self.sock.sendto(frame, self.peer)

    def close(self) -> None:
        self.sock.close()


class FileLink:
    """The link of interface X as the file ``X.link`` (up when absent)."""

    def __init__(self, ifname: str, folder: Path, fail: bool) -> None:
        self.ifname = ifname
        self.path = folder / f"{ifname}.link"
        self.fail = fail

    def __call__(self, carrier: bool) -> None:
        way = "up" if carrier else "down"
        if self.fail:
            raise LinkError(f"{self.ifname}: `ip link set dev {self.ifname} {way}` failed with "
                            "exit code 2: RTNETLINK answers: Operation not permitted")
        self.path.write_text(way)

    def is_up(self) -> bool:
        return not self.path.exists() or self.path.read_text() == "up"


def broken_rule(direction: Direction, frame: bytes, now: float) -> Verdict:
    raise ZeroDivisionError("a bug in a rule")


def broken_factory(spec: FaultSpec) -> Rule:
    return broken_rule


def run(argv: list[str]) -> int:
    kinds: dict[FaultKind, RuleFactory] = dict(RULE_KINDS)
    if "--fail-on-pull" in argv:
        argv = [a for a in argv if a != "--fail-on-pull"]
        kinds[FaultKind.CABLE_PULL] = broken_factory
    fail_link = "--fail-link" in argv
    argv = [a for a in argv if a != "--fail-link"]
    folder = Path(argv[argv.index("--control") + 1]).parent
    return main(argv, port_factory=lambda name: DgramPort(name, folder), rule_kinds=kinds,
                link_factory=lambda name: FileLink(name, folder, fail_link))


if __name__ == "__main__":
    raise SystemExit(run(sys.argv[1:]))
