# make run  : create .venv and install the package (torch pinned to a CPU build by
#             constraints.txt), then run the project workflow `all`: convert the GMB
#             data in assets/, train, evaluate on the test split, show entities, package.
# make test : the same setup with the test extras, then the linter (ruff, configured in
#             pyproject.toml) and the test suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup run test clean

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
	$(BIN)/python -m pytest tests

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
