# codesign: two commands set up a fresh machine.
#   make demo   - create .venv, install everything (first time only), run the default flow
#   make test   - create .venv, install everything (first time only), install Icarus Verilog from
#                 Debian if missing (the tests need it; stops if it cannot), run the test suite;
#                 a skipped test fails the run (tests/conftest.py)
#   make test-slow - the slow tests (minutes each: bench smoke run, fuzzing 500 graphs, kill tests with
#                 the fpga stage, real-model RTL at full size)
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
JOBS    ?= 2   # pytest-xdist workers for make test (one test file per worker at a time)
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup demo test test-slow lint bench clean

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/codesign flow

test: $(STAMP)
	@bash sim/install_icarus.sh
	$(PY) -m pytest -q -n $(JOBS) --dist loadfile --durations=25

test-slow: $(STAMP)
	@bash sim/install_icarus.sh
	$(PY) -m pytest -q -m slow -n $(JOBS) --dist loadfile --durations=25

lint: $(STAMP)
	$(VENV)/bin/ruff check codesign tests bench sim

bench: $(STAMP)
	$(PY) -m bench all

clean:
	rm -rf runs .pytest_cache build
