"""``python -m sim.card --vpcd HOST:PORT --profile fixtures/cards/good.yaml [--vpcd … --profile …]``

Hosts one virtual EMV card per ``--vpcd``/``--profile`` pair on pcscd's vpcd readers, until
SIGTERM.  Prints ``ready`` on stdout once every card is connected.
"""

from __future__ import annotations

import argparse
import logging
import sys

from protocols.errors import RigError
from sim.card.emv import SimEmvCard
from sim.card.profile import load_profile
from sim.card.vpcd import VpcdHost, VpcdSlot


def _endpoint(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:35963)")
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sim.card", description=__doc__)
    ap.add_argument("--vpcd", type=_endpoint, action="append", required=True,
                    help="vpcd reader port HOST:PORT (repeat for more cards)")
    ap.add_argument("--profile", action="append", required=True,
                    help="card profile YAML (one per --vpcd, same order)")
    ap.add_argument("--connect-timeout", type=float, default=10.0)
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    if len(args.vpcd) != len(args.profile):
        ap.error(f"{len(args.vpcd)} --vpcd but {len(args.profile)} --profile; give pairs")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s sim.card %(levelname)s %(message)s")
    try:
        slots = [VpcdSlot(SimEmvCard(load_profile(p)), h, port)
                 for (h, port), p in zip(args.vpcd, args.profile, strict=True)]
        host = VpcdHost(slots)
        host.install_signal_handlers()
        host.connect(args.connect_timeout)
        print("ready", flush=True)
        host.serve()
    except RigError as exc:
        logging.getLogger("sim.card").error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
