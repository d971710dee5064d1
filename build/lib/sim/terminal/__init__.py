"""The simulated POS terminal: firmware state machine, its host process, slot, printer, NVRAM,
journal (docs/terminal-behaviour.md).

``python -m sim.terminal --ecr-fd N --harness-fd M --state-dir DIR --profile PATH`` runs it.
"""
