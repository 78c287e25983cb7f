# make test : create .venv, install the package with its test extras (torch pinned
#             to a CPU build by constraints.txt), run the test suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup test clean

setup: $(VENV)/.installed

$(VENV)/.installed: setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $@

test: setup
	$(BIN)/python -m pytest tests

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
