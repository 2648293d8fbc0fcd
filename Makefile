# iac-runner tasks. `make test` and `make run` install what is missing first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROTO := protos/iacrunner/v1/runner.proto
PYTEST_ARGS ?=
# Test processes: the suite waits on real servers and terraform a third of the time, so
# 3 on 2 cores.
PYTEST_JOBS ?= 3
BENCH_ARGS ?=

.PHONY: install proto proto-check lint format test test-all bench run soak clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --config-settings editable_mode=compat -e '.[dev]'
	@touch $(STAMP)

# The platform on this machine (SQLite, one local runner), with a plan and an apply streamed.
run: $(STAMP)
	$(BIN)/python scripts/run_local.py

proto: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. $(PROTO)

# Fails when the committed generated code differs from what `make proto` writes.
proto-check: $(STAMP)
	$(BIN)/python -m pytest -q tests/test_proto_drift.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The quick profile (what .ci/run runs): everything but the tests marked slow.
test: lint
	$(BIN)/python -m pytest -n $(PYTEST_JOBS) -m "not slow" $(PYTEST_ARGS)

# Every test, the slow ones too.
test-all: lint
	$(BIN)/python -m pytest -n $(PYTEST_JOBS) $(PYTEST_ARGS)

# The performance figures of issue 6, each against a baseline measured in the same run:
# one line per figure, JSON in bench/results.json. About 10 minutes on 2 cores (more on slower ones).
# Options: BENCH_ARGS="--only relay --lines 200000" (python -m bench --help).
bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

# The reliability tests (tests/reliability) at full size: 200 load runs on SQLite and
# PostgreSQL, thousands of fuzzed inputs per entry point, three database restarts, the
# link that comes back. `make test` runs the same tests at their quick size.
soak: $(STAMP)
	IAC_SOAK=1 $(BIN)/python -m pytest -n $(PYTEST_JOBS) -m "soak or slow" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
