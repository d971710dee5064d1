"""``python -m sim.qr --listen HOST:PORT --ledger PATH --terminals YAML [--control SOCKET]
[--rules YAML] [--order-ttl S] [--user-paying-timeout S] [--code-ttl S] [--max-delay S]``.

Runs until SIGTERM or SIGINT.  Prints ``READY host:port`` on stdout once listening (and, with
``--control``, once the control socket listens too).  ``--terminals``: the registered terminals
and their signing keys (fixtures/qr/terminals.yaml, :mod:`sim.qr.config`); ``--rules``: the
rules in force from the start (fixtures/qr/rules.yaml, :mod:`sim.qr.rules`); ``--control``: the
unix socket of the control ops (:mod:`sim.qr.control`); ``--order-ttl``: an unpaid
merchant-presented order closes after this; ``--user-paying-timeout``: a payment waiting for the
wallet password fails after this; ``--code-ttl``: a payment code is refused after this;
``--max-delay``: the longest a rule may delay an answer.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from types import FrameType

from protocols.errors import RigError
from protocols.qr import DEFAULT_PORT
from sim.qr.config import load_terminals
from sim.qr.engine import CODE_TTL_S, ORDER_TTL_S, USER_PAYING_TIMEOUT_S, QrPlatformEngine
from sim.qr.ledger import SqliteQrLedger
from sim.qr.rules import RuleBook, load_rules
from sim.qr.server import QrPlatformServer


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: expected HOST:PORT, e.g. "
                                         f"198.18.0.20:{DEFAULT_PORT}")
    return host, int(port)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected seconds (a number)") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be above 0 seconds")
    return value


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sim.qr", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--listen", type=_address, required=True, help="HOST:PORT")
    ap.add_argument("--ledger", required=True, help="ledger SQLite file (created if missing)")
    ap.add_argument("--terminals", required=True, help="terminals YAML (signing keys)")
    ap.add_argument("--control", default=None,
                    help="unix socket path of the control ops (default: no control socket)")
    ap.add_argument("--rules", default=None, help="rules YAML (default: no rules)")
    ap.add_argument("--order-ttl", type=_seconds, default=ORDER_TTL_S,
                    help=f"an unpaid order closes after this many seconds (default "
                         f"{ORDER_TTL_S:g})")
    ap.add_argument("--user-paying-timeout", type=_seconds, default=USER_PAYING_TIMEOUT_S,
                    help=f"a payment waiting for the wallet password fails after this many "
                         f"seconds (default {USER_PAYING_TIMEOUT_S:g})")
    ap.add_argument("--code-ttl", type=_seconds, default=CODE_TTL_S,
                    help=f"a payment code is valid this many seconds (default {CODE_TTL_S:g})")
    ap.add_argument("--idle-timeout", type=_seconds, default=30.0,
                    help="close a connection idle this many seconds (default 30)")
    ap.add_argument("--max-delay", type=_seconds, default=60.0,
                    help="bound of a rule's delay_s, seconds (default 60)")
    ap.add_argument("--log-level", default="INFO")
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    log = logging.getLogger("sim.qr")
    try:
        terminals = load_terminals(args.terminals)
        rules = RuleBook(load_rules(args.rules) if args.rules else ())
        ledger = SqliteQrLedger(args.ledger)
        engine = QrPlatformEngine(terminals, ledger=ledger, rules=rules,
                                  order_ttl_s=args.order_ttl,
                                  user_paying_timeout_s=args.user_paying_timeout,
                                  code_ttl_s=args.code_ttl)
        server = QrPlatformServer(engine, *args.listen, idle_timeout=args.idle_timeout,
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
    log.info("%d terminals, %d rules, ledger %s, control %s, order ttl %g s, password wait %g "
             "s, code ttl %g s", len(terminals), len(rules), args.ledger,
             args.control or "none", args.order_ttl, args.user_paying_timeout, args.code_ttl)
    print(f"READY {host}:{port}", flush=True)
    while not stop.wait(1.0):
        pass
    server.stop()
    ledger.close()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
