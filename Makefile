# make run  : create .venv and install the package (torch pinned to a CPU build by
#             constraints.txt), then run the project workflow `all`: convert the GMB
#             data in assets/, train, evaluate on the test split, show entities, package.
# make test : the same setup with the test extras, then the linter and the formatter's check
#             (ruff), the type checker over the plugin core (mypy; both configured in
#             pyproject.toml, and run by .pre-commit-config.yaml too), the wheel smoke and the
#             test suite.
# make smoke: scripts/wheel_smoke.sh: build the sdist and the wheel, check them, and run a smoke
#             suite against the installed wheel in a fresh environment for every Python that
#             setup.py declares (SMOKE_PYTHONS="3.12 3.13" for only some).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SMOKE := HOST_PYTHON=$(BIN)/python bash scripts/wheel_smoke.sh

.PHONY: setup run test smoke clean

setup: $(VENV)/.installed

$(VENV)/.installed: setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $@

run: setup
	$(BIN)/python -m spacy project run all .

test: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(SMOKE) $(SMOKE_PYTHONS)
	$(BIN)/python -m pytest tests --durations=15

smoke: setup
	$(SMOKE) $(SMOKE_PYTHONS)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache build/wheel-smoke
