"""``python -m sim.host --listen HOST:PORT --db PATH --terminals YAML --cards-dir DIR
[--rules YAML] [--control SOCKET] [--max-delay S]``.

Runs until SIGTERM or SIGINT.  Prints ``READY host:port`` on stdout once listening (and, with
``--control``, once the control socket listens too; the bench supervisor may wait for that line
or for the port).  ``--rules``: the response rules in force from the start
(fixtures/host/rules.yaml, :mod:`sim.host.rules`); ``--control``: the unix socket of the control
ops (:mod:`sim.host.control`); ``--max-delay``: the longest a rule may delay an answer.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from types import FrameType

from protocols.errors import RigError
from sim.host.engine import AcquirerEngine, load_accounts, load_terminals
from sim.host.ledger import SqliteLedger
from sim.host.rules import RuleBook, load_rules
from sim.host.server import AcquirerServer


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: expected HOST:PORT, e.g. 198.18.0.20:8583")
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sim.host", description=__doc__)
    ap.add_argument("--listen", type=_address, required=True, help="HOST:PORT")
    ap.add_argument("--db", required=True, help="ledger SQLite file (created if missing)")
    ap.add_argument("--terminals", required=True, help="terminals YAML")
    ap.add_argument("--cards-dir", required=True, help="directory of card profile YAML files")
    ap.add_argument("--idle-timeout", type=float, default=30.0,
                    help="close a connection idle this many seconds (default 30)")
    ap.add_argument("--rules", default=None, help="host rules YAML (default: no rules)")
    ap.add_argument("--control", default=None,
                    help="unix socket path of the control ops (default: no control socket)")
    ap.add_argument("--max-delay", type=float, default=60.0,
                    help="bound of a rule's delay_s, seconds (default 60)")
    ap.add_argument("--log-level", default="INFO")
    args = ap.parse_args(argv)
    if not args.max_delay > 0:
        ap.error(f"--max-delay must be above 0 seconds, got {args.max_delay}")
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    log = logging.getLogger("sim.host")
    try:
        terminals = load_terminals(args.terminals)
        accounts = load_accounts(args.cards_dir)
        rules = RuleBook(load_rules(args.rules) if args.rules else ())
        ledger = SqliteLedger(args.db)
        engine = AcquirerEngine(terminals, accounts, ledger=ledger, rules=rules)
        server = AcquirerServer(engine, *args.listen, idle_timeout=args.idle_timeout,
                                max_delay=args.max_delay, control_path=args.control)
        host, port = server.start()
    except RigError as exc:
        log.error("cannot start: %s", exc)
        return 2
    stop = threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    log.info("%d terminals, %d card accounts, %d rules, ledger %s, control %s", len(terminals),
             len(accounts), len(rules), args.db, args.control or "none")
    print(f"READY {host}:{port}", flush=True)
    while not stop.wait(1.0):
        pass
    server.stop()
    ledger.close()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
