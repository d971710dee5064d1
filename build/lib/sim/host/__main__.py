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
import sys

from sim.host.engine import AcquirerEngine, load_accounts, load_terminals
from sim.host.ledger import SqliteLedger
from sim.host.rules import RuleBook, load_rules
from sim.host.server import AcquirerServer
from sim.serving import Started, add_server_options, run_server


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sim.host", description=__doc__)
    ap.add_argument("--db", required=True, help="ledger SQLite file (created if missing)")
    ap.add_argument("--terminals", required=True, help="terminals YAML")
    ap.add_argument("--cards-dir", required=True, help="directory of card profile YAML files")
    add_server_options(ap, "198.18.0.20:8583", rules="host rules YAML")
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")

    def start() -> Started:
        terminals = load_terminals(args.terminals)
        accounts = load_accounts(args.cards_dir)
        rules = RuleBook(load_rules(args.rules) if args.rules else ())
        ledger = SqliteLedger(args.db)
        engine = AcquirerEngine(terminals, accounts, ledger=ledger, rules=rules)
        server = AcquirerServer(engine, *args.listen, idle_timeout=args.idle_timeout,
                                max_delay=args.max_delay, control_path=args.control)
        server.start()
        return Started(server, ledger.close,
                       f"{len(terminals)} terminals, {len(accounts)} card accounts, "
                       f"{len(rules)} rules, ledger {args.db}, control {args.control or 'none'}")

    return run_server(logging.getLogger("sim.host"), start)


if __name__ == "__main__":
    raise SystemExit(main())
