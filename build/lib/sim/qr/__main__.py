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
import sys

from protocols.qr import DEFAULT_PORT
from sim.qr.config import load_terminals
from sim.qr.engine import CODE_TTL_S, ORDER_TTL_S, USER_PAYING_TIMEOUT_S, QrPlatformEngine
from sim.qr.ledger import SqliteQrLedger
from sim.qr.rules import RuleBook, load_rules
from sim.qr.server import QrPlatformServer
from sim.serving import Started, add_server_options, run_server, seconds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sim.qr", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ledger", required=True, help="ledger SQLite file (created if missing)")
    ap.add_argument("--terminals", required=True, help="terminals YAML (signing keys)")
    ap.add_argument("--order-ttl", type=seconds, default=ORDER_TTL_S,
                    help=f"an unpaid order closes after this many seconds (default "
                         f"{ORDER_TTL_S:g})")
    ap.add_argument("--user-paying-timeout", type=seconds, default=USER_PAYING_TIMEOUT_S,
                    help=f"a payment waiting for the wallet password fails after this many "
                         f"seconds (default {USER_PAYING_TIMEOUT_S:g})")
    ap.add_argument("--code-ttl", type=seconds, default=CODE_TTL_S,
                    help=f"a payment code is valid this many seconds (default {CODE_TTL_S:g})")
    add_server_options(ap, f"198.18.0.20:{DEFAULT_PORT}", rules="rules YAML")
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")

    def start() -> Started:
        terminals = load_terminals(args.terminals)
        rules = RuleBook(load_rules(args.rules) if args.rules else ())
        ledger = SqliteQrLedger(args.ledger)
        engine = QrPlatformEngine(terminals, ledger=ledger, rules=rules,
                                  order_ttl_s=args.order_ttl,
                                  user_paying_timeout_s=args.user_paying_timeout,
                                  code_ttl_s=args.code_ttl)
        server = QrPlatformServer(engine, *args.listen, idle_timeout=args.idle_timeout,
                                  max_delay=args.max_delay, control_path=args.control)
        server.start()
        return Started(server, ledger.close,
                       f"{len(terminals)} terminals, {len(rules)} rules, ledger {args.ledger}, "
                       f"control {args.control or 'none'}, order ttl {args.order_ttl:g} s, "
                       f"password wait {args.user_paying_timeout:g} s, code ttl "
                       f"{args.code_ttl:g} s")

    return run_server(logging.getLogger("sim.qr"), start)


if __name__ == "__main__":
    raise SystemExit(main())
