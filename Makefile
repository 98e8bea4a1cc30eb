# EventFlow: `make run` starts everything locally, `make test` checks everything.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test lint typecheck unit integration faults deploy-check format sql bench soak clean system-deps

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

system-deps:
	bash scripts/install-system-deps.sh

## Run the whole service locally (PostgreSQL and Redis are started for you).
run: $(STAMP) system-deps
	$(BIN)/eventflow dev

## Lint, type check and the whole test suite.
test: $(STAMP) system-deps lint typecheck
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff format --check src tests scripts benchmarks
	$(BIN)/ruff check src tests scripts benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

integration: $(STAMP) system-deps
	$(BIN)/pytest -q tests/integration

faults: $(STAMP) system-deps
	$(BIN)/pytest -q tests/faults

format: $(STAMP)
	$(BIN)/ruff format src tests scripts benchmarks
	$(BIN)/ruff check --fix src tests scripts benchmarks

## Regenerate scripts/init_db.sql from the migrations.
sql: $(STAMP)
	$(BIN)/eventflow migrate --sql > scripts/init_db.sql

bench: $(STAMP) system-deps
	bash scripts/install-system-deps.sh --bench
	$(BIN)/python benchmarks/run.py $(BENCH_ARGS)

## Scaling: drain by workers x partitions, CPU per event (SCALING_ARGS="--repeat 1").
.PHONY: bench-scaling
bench-scaling: $(STAMP) system-deps
	bash scripts/install-system-deps.sh --bench
	$(BIN)/python benchmarks/scaling.py $(SCALING_ARGS)

## Console: every page's time on 1,000,000 stored events (CONSOLE_ARGS="--events 100000").
.PHONY: bench-console
bench-console: $(STAMP) system-deps
	$(BIN)/python benchmarks/console.py --record benchmarks/records/console-$$(date -u +%F).json $(CONSOLE_ARGS)

## Soak test: faults and mixed traffic for 10 minutes (SOAK_ARGS="--minutes 3").
soak: $(STAMP) system-deps
	$(BIN)/python scripts/soak.py $(SOAK_ARGS)

clean:
	rm -rf $(VENV) .eventflow .pytest_cache .mypy_cache .ruff_cache
