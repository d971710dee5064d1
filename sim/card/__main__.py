"""``python -m sim.card --vpcd HOST:PORT --profile fixtures/cards/good.yaml [--vpcd … --profile …]
[--emulator HOST:PORT --profiles-dir DIR --initial NAME --control PATH]``

Hosts one virtual EMV card per ``--vpcd``/``--profile`` pair on pcscd's vpcd readers, and with
``--emulator`` the card emulator (:mod:`sim.card.emulator`) on one more reader: its card is the
profile ``--initial`` of ``--profiles-dir`` until a ``load`` on the control socket ``--control``
swaps it.  Runs until SIGTERM.  Prints ``ready`` on stdout once every card is connected (and the
control socket listens).
"""

from __future__ import annotations

import argparse
import logging
import sys

from protocols.errors import RigError
from protocols.yamlmodel import parse_hostport
from sim.card.emulator import CardEmulator
from sim.card.emv import SimEmvCard
from sim.card.profile import load_profile
from sim.card.vpcd import EmulatorBinding, VpcdHost, VpcdSlot


def _endpoint(text: str) -> tuple[str, int]:
    """``HOST:PORT`` of a vpcd reader port (the bench files' host:port rule)."""
    try:
        return parse_hostport(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sim.card", description=__doc__)
    ap.add_argument("--vpcd", type=_endpoint, action="append", default=[],
                    help="vpcd reader port HOST:PORT of a fixed card (repeat for more cards)")
    ap.add_argument("--profile", action="append", default=[],
                    help="card profile YAML (one per --vpcd, same order)")
    ap.add_argument("--emulator", type=_endpoint, default=None,
                    help="vpcd reader port HOST:PORT of the card emulator")
    ap.add_argument("--profiles-dir", default=None,
                    help="directory of the profiles the emulator loads by name")
    ap.add_argument("--initial", default=None, help="profile in the emulator at start")
    ap.add_argument("--control", default=None,
                    help="unix socket path of the emulator's control ops (JSON lines)")
    ap.add_argument("--connect-timeout", type=float, default=10.0)
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    if len(args.vpcd) != len(args.profile):
        ap.error(f"{len(args.vpcd)} --vpcd but {len(args.profile)} --profile; give pairs")
    emulator_args = (args.profiles_dir, args.initial, args.control)
    if args.emulator is not None and None in emulator_args:
        ap.error("--emulator needs --profiles-dir, --initial and --control")
    if args.emulator is None and any(a is not None for a in emulator_args):
        ap.error("--profiles-dir, --initial and --control go with --emulator")
    if not args.vpcd and args.emulator is None:
        ap.error("nothing to host: give --vpcd/--profile pairs and/or --emulator")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s sim.card %(levelname)s %(message)s")
    try:
        slots = [VpcdSlot(SimEmvCard(load_profile(p)), h, port)
                 for (h, port), p in zip(args.vpcd, args.profile, strict=True)]
        binding: EmulatorBinding | None = None
        if args.emulator is not None:
            emulator = CardEmulator(args.profiles_dir, args.initial,
                                    fixed=[slot.card for slot in slots])
            slot = VpcdSlot(emulator.card, *args.emulator)
            slots.append(slot)
            binding = EmulatorBinding(emulator, slot, args.control)
        host = VpcdHost(slots, emulator=binding)
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
