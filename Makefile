# swinseg: `make demo` runs the whole pipeline on synthetic phantoms, `make test` runs the test suite.
PYTHON ?= python3
VENV ?= .venv
DEMO_OUT ?= demo_output
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast install bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check swinseg tests benchmarks examples
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

demo: $(STAMP)
	$(BIN)/swinseg demo -o $(DEMO_OUT)

bench: $(STAMP)
	$(BIN)/python benchmarks/model_speed.py
	$(BIN)/python benchmarks/predict_speed.py
	$(BIN)/python benchmarks/evaluate_speed.py
	$(BIN)/python benchmarks/train_speed.py

clean:
	rm -rf $(VENV) $(DEMO_OUT) build *.egg-info
