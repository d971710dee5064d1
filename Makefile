# The two commands of the README.  Each installs what it needs first.
SHELL := /bin/bash
PYTHON ?= python3
TOXVENV := .venv-tox
TOX := $(TOXVENV)/bin/tox

.PHONY: run test system bench-up bench-down power-cuts soak clean bench bench-quick

## make run: the scenario suite on the virtual bench, an HTML report and a summary
run: $(TOX) node_modules/.installed
	@PYTHON=$(PYTHON) scripts/ensure-system.sh --report
	$(TOX) -e run

## make test: lint and types, unit and integration tests, then the feature suite on the virtual
## bench with its report, then what the report holds is checked (no network request when
## opened, no card data anywhere under reports/, captures decoded by the shipped dissector)
test: $(TOX) node_modules/.installed
	@PYTHON=$(PYTHON) scripts/ensure-system.sh --report
	$(TOX) -e test

$(TOX):
	@PYTHON=$(PYTHON) scripts/ensure-system.sh
	$(PYTHON) -m venv $(TOXVENV)
	$(TOXVENV)/bin/pip install --quiet --disable-pip-version-check 'tox>=4.11,<5'

node_modules/.installed: package.json
	@PYTHON=$(PYTHON) scripts/ensure-system.sh --report
	npm install --no-audit --no-fund --loglevel=error
	touch $@

## make power-cuts N=200 SEED=7: cut the terminal's power at seeded random instants during N
## sales on the virtual bench, then check its journal against the acquirer's ledger
N ?= 200
SEED ?= 7
power-cuts: $(TOX)
	@PYTHON=$(PYTHON) scripts/ensure-system.sh
	$(TOX) -e power-cuts -- --sales $(N) --seed $(SEED)

## make soak N=300 SEED=7: N transactions of mixed types on the virtual bench with faults at
## seeded random protocol moments, restored between them as an operator would; then the
## invariants as a table, reports/soak.json, and a last line `soak: N transactions, F faults
## injected, V invariant violations` (exit 1 on any violation).  SOAK_ARGS for more options
## (posrig soak --help), e.g. SOAK_ARGS="--settle-every 50 --fault-ratio 0.3"
soak: N = 300
soak: $(TOX)
	@PYTHON=$(PYTHON) scripts/ensure-system.sh
	$(TOX) -e soak -- --count $(N) --seed $(SEED) $(SOAK_ARGS)

## make bench: every benchmark figure next to its baseline, measured in the same run (root):
## reports/benchmarks.json and a table; nothing else may use the default virtual bench meanwhile
bench: $(TOX)
	@PYTHON=$(PYTHON) scripts/ensure-system.sh
	$(TOX) -e perf

## make bench-quick: the same with small counts and the smallest subsets (about a minute)
bench-quick: $(TOX)
	@PYTHON=$(PYTHON) scripts/ensure-system.sh
	$(TOX) -e perf -- --quick

## make fuzz SECONDS=60: coverage-guided fuzzing (atheris) of every parser and simulator message
## handler, SECONDS per target, seeds from fixtures/fuzz/; a table and reports/fuzz.json, each
## crashing input under reports/fuzz/<target>/ (exit 1 on a crash)
.PHONY: fuzz
SECONDS ?= 60
fuzz: $(TOX)
	@PYTHON=$(PYTHON) scripts/ensure-system.sh
	$(TOX) -e fuzz -- --seconds $(SECONDS)

bench-up: $(TOX)
	$(TOX) -e bench -- up
bench-down: $(TOX)
	$(TOX) -e bench -- down

clean:
	rm -rf reports .tox $(TOXVENV) node_modules
