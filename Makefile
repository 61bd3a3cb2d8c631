# Everything a fresh machine with only python3 needs: `make test`, `make demo`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install test check lint format demo bench bench-trainer clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	@# setuptools announces every editable install with a boxed "be careful" banner; it is
	@# information, not a problem, so it is filtered by its text (real warnings still show).
	PYTHONWARNINGS="ignore:Editable installation" $(BIN)/python -m pip install -q --disable-pip-version-check -e '.[test,lint]'
	@touch $(STAMP)

install: $(STAMP)

# The suite runs on Apache Kafka when this machine has Java (fetched from Maven Central on first use,
# started by the tests); then a smoke subset runs again on the embedded Tansu broker, the one
# `make demo` uses. Without Java everything runs on Tansu and the real_kafka tests skip.
# STREAMRANK_REQUIRE_PROMETHEUS=1 (set by .ci/run) makes a failed Prometheus install fail the run
# instead of letting its tests skip. pytest exits 5 when it collected nothing: a failure here.
test: install
	@bash scripts/install-prometheus.sh || [ "$${STREAMRANK_REQUIRE_PROMETHEUS:-0}" != 1 ]
	@$(BIN)/python -m consumer.io.brokers.apache check --if-java
	@$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; [ $$rc -eq 0 ] || exit $$rc
	@if $(BIN)/python -m consumer.io.brokers.apache has-java; then \
	  echo "== smoke subset on the embedded Tansu broker =="; \
	  STREAMRANK_TEST_BROKER=tansu $(BIN)/python -m pytest -m tansu_smoke $(PYTEST_ARGS); \
	fi

# The edit-test loop: every test that needs no broker (a test reaching the broker fixture is
# marked `broker` automatically), in about a minute.
check: install
	@$(BIN)/python -m pytest -q -m "not broker" $(PYTEST_ARGS)

# Style and structure: ruff (lint, and format --check), mypy, and the package layering
# (import-linter contracts in pyproject.toml: no upward import, no cycle, xgboost and Kafka only
# where they belong). `make format` applies ruff's fixes and formatting.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

demo: install
	$(BIN)/python -m consumer.tools.demo

# The worker against its Kafka ceiling, 3 runs, then latency vs offered load (bench-out/latency_vs_load.png)
# and cost growth at 1k/10k/100k businesses per partition; BENCH_ARGS sizes it (see --help).
bench: install
	$(BIN)/python -m consumer.tools.bench $(BENCH_ARGS)

# The trainer at scale: build memory over 1x/4x/16x history, incremental reads, 1 vs 2 processes,
# Dask vs one process (models.benchscale); fit time and memory in vs out of core (models.benchfit).
bench-trainer: install
	$(BIN)/python -m models.benchscale
	$(BIN)/python -m models.benchfit

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
