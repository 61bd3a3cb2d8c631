# Everything a fresh machine with only python3 needs: `make test`, `make demo`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install test demo bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

# pytest exits 5 when it collected nothing: that is a failure here, not a pass.
# Prometheus/promtool (Debian package) for tests/ops; if they cannot be installed those tests skip
# and say why, the rest still runs.
test: install
	@bash scripts/install-prometheus.sh || true
	@$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc

demo: install
	$(BIN)/python -m consumer.demo

bench: install
	$(BIN)/python -m consumer.bench

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
