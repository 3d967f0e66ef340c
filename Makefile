# Two commands on a fresh clone: `make demo` and `make test`. Each builds what it needs.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: demo test bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/python examples/demo.py

test: $(BIN)/.installed
	bash scripts/ensure-servers.sh
	$(BIN)/ruff check .
	$(BIN)/mypy --strict aitems_sync
	$(BIN)/pytest -q -p no:cacheprovider

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) state/*.db* examples/data/*.db
