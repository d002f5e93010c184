# essence: `make demo` runs every method's quick reproduction, `make test` runs the default test suite.
# Both install everything first (apt + .venv); see scripts/install.sh.
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.essence-installed
OUT ?= runs

.PHONY: setup demo test test-all lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/install.sh $(wildcard scripts/install.d/*.sh)
	bash scripts/install.sh
	touch $@

demo: setup
	$(BIN)/essence reproduce all --out $(OUT)

lint: setup
	$(BIN)/ruff check src tests benchmarks

test: setup lint
	$(BIN)/python -m pytest -q

test-all: setup lint
	$(BIN)/python -m pytest -q -m ""

bench: setup
	@for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .ruff_cache
