"""One fuzz target under atheris (run by ``python -m tests.fuzz``, one process a target):
``python -m tests.fuzz.child NAME [libFuzzer options and corpus folders]``.

The project's modules are imported inside :func:`atheris.instrument_imports`, so coverage
guidance covers protocols/, sim/, rigs/ and pyiso8583 (the dialect's codec).
"""

from __future__ import annotations

import importlib
import sys

import atheris

#: Prefixes of the modules instrumented for coverage.
INSTRUMENTED = ("protocols", "sim", "rigs", "iso8583", "tests.fuzz.targets")
#: Modules the targets import lazily: imported here, inside the instrumentation.
LAZY_MODULES = (
    "sim.psu", "sim.relay", "sim.terminal.firmware", "sim.terminal.nvram", "sim.card.emv",
    "sim.card.profile", "sim.host.engine", "sim.host.ledger", "sim.qr.engine", "sim.qr.ledger",
    "sim.qr.config", "rigs.config",
)


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        raise SystemExit("usage: python -m tests.fuzz.child NAME [libFuzzer arguments]")
    name = argv[1]
    with atheris.instrument_imports(include=list(INSTRUMENTED)):
        from tests.fuzz import targets

        for module in LAZY_MODULES:
            importlib.import_module(module)
    target = targets.TARGETS.get(name)
    if target is None:
        raise SystemExit(f"unknown fuzz target {name!r}; known: {', '.join(targets.TARGETS)}")
    atheris.Setup([argv[0], *argv[2:]], target.check)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
