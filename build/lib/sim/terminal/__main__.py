"""``python -m sim.terminal --ecr-fd N --harness-fd M --state-dir DIR --profile PATH
[--host 198.18.0.20:8583] [--terminal-id ID] [--merchant-id ID] [--netif term0]
[--qr-platform 198.18.0.20:8600 --qr-terminals fixtures/qr/terminals.yaml] [--concert-fd K]``

Started by the bench supervisor when the PSU output comes on; SIGTERM ends it cleanly, SIGKILL
is a power loss.  It also ends by itself (exit 0) after it switched itself off (battery
cut-off, or too low to start): its last word is the harness notice ``{"t":"power_off"}``, on
which the supervisor cuts its power anyway.  With ``--netif`` the acquirer client reads that
interface's carrier before each dial and fails at once without a link (cable out).  Logs go to
stderr (masked).  The state dir holds the NVRAM (``terminal-nvram.json``) and the journal
(``terminal-journal.sqlite``, WAL).  With ``--qr-platform`` the terminal takes QR payments
through that platform, signing with its key from ``--qr-terminals`` (the platform's own
terminals file, read once at start: the key is written in one place).  With ``--concert-fd``
the terminal has a second serial port speaking Concert (docs/ecr-concert.md) on that pty master
fd, inherited like the ECR one: a cash register starts transactions there, the test port stays.
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
from types import FrameType

from protocols.errors import ConfigError, RigError
from protocols.qrclient import HttpTransport, QrPlatformClient
from sim.terminal.firmware import TerminalFirmware
from sim.terminal.journal import SqliteJournal, journal_key
from sim.terminal.netif import sysfs_carrier
from sim.terminal.nvram import FileNvram
from sim.terminal.profile import Profile, load_profile, parse_hostport, with_overrides
from sim.terminal.runner import KernelServices, TerminalRunner
from sim.terminal.slot import HarnessSlot


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sim.terminal", description=__doc__)
    p.add_argument("--ecr-fd", type=int, required=True, help="ECR pty master fd (inherited)")
    p.add_argument("--harness-fd", type=int, required=True, help="harness socket fd (inherited)")
    p.add_argument("--state-dir", required=True, help="NVRAM directory (survives power cycles)")
    p.add_argument("--profile", required=True, help="terminal profile YAML")
    p.add_argument("--host", help="acquirer host:port (default: from the profile)")
    p.add_argument("--terminal-id", help="override the profile's terminal_id")
    p.add_argument("--merchant-id", help="override the profile's merchant_id")
    p.add_argument("--netif", help="the terminal's network interface (e.g. term0): its carrier "
                                   "is checked before each dial (default: no check)")
    p.add_argument("--qr-platform", help="the QR payment platform's host:port (default: no QR "
                                         "payments)")
    p.add_argument("--qr-terminals", help="the QR platform's terminals file "
                                          "(fixtures/qr/terminals.yaml): this terminal's key")
    p.add_argument("--concert-fd", type=int, help="Concert pty master fd (inherited): a second "
                                                   "serial port for a cash register speaking "
                                                   "Concert (default: none)")
    p.add_argument("--log-level", default="INFO")
    return p


def build_qr_client(profile: Profile, platform: str | None,
                    terminals: str | None) -> QrPlatformClient | None:
    """The QR platform's client for this terminal (None without ``--qr-platform``); its key
    is the terminal's entry in the platform's terminals file."""
    if platform is None:
        if terminals is not None:
            raise ConfigError("--qr-terminals given without --qr-platform")
        return None
    host, port = parse_hostport(platform, "--qr-platform")
    if terminals is None:
        raise ConfigError("--qr-platform needs --qr-terminals (the terminal's signing key)")
    from sim.qr.config import load_terminals
    known = load_terminals(terminals)
    rec = known.get(profile.terminal_id)
    if rec is None:
        raise ConfigError(f"--qr-terminals {terminals}: no terminal {profile.terminal_id}; "
                          f"it has {', '.join(sorted(known))}")
    if rec.merchant_id != profile.merchant_id:
        raise ConfigError(f"--qr-terminals {terminals}: terminal {profile.terminal_id} belongs "
                          f"to merchant {rec.merchant_id}, the profile says "
                          f"{profile.merchant_id}")
    return QrPlatformClient(HttpTransport(host, port, timeout=profile.qr_request_s),
                            terminal_id=profile.terminal_id, merchant_id=profile.merchant_id,
                            key=rec.sign_key)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s terminal %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(args.log_level.upper())
    try:
        profile = with_overrides(load_profile(args.profile), terminal_id=args.terminal_id or None,
                                 merchant_id=args.merchant_id or None, host=args.host or None)
    except RigError as exc:
        logging.getLogger("sim.terminal").error("%s", exc)
        return 2
    if args.netif is not None:
        try:
            sysfs_carrier(args.netif)  # an interface that is not there fails here, not per dial
        except RigError as exc:
            logging.getLogger("sim.terminal").error("--netif %s: %s", args.netif, exc)
            return 2
    try:
        qr_client = build_qr_client(profile, args.qr_platform, args.qr_terminals)
    except RigError as exc:
        logging.getLogger("sim.terminal").error("%s", exc)
        return 2
    harness = socket.socket(fileno=args.harness_fd)
    try:
        journal = SqliteJournal(args.state_dir, data_key=journal_key(profile.master_key))
    except RigError as exc:
        logging.getLogger("sim.terminal").error("%s", exc)
        return 2
    firmware = TerminalFirmware(profile, FileNvram(args.state_dir), journal=journal,
                                qr=qr_client is not None)

    def services(slot: HarnessSlot) -> KernelServices:
        return KernelServices(slot, profile, profile.host, profile.port, netif=args.netif,
                              qr_client=qr_client)

    runner = TerminalRunner(ecr_fd=args.ecr_fd, harness=harness, firmware=firmware,
                            make_services=services, concert_fd=args.concert_fd)

    def on_term(signum: int, frame: FrameType | None) -> None:
        runner.stop()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    try:
        runner.run()
    finally:
        journal.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
