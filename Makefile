# Two commands: `make run` (the tutorial's work end to end) and `make test` (everything CI checks).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN_DIR := runs/default
NOTEBOOKS := $(sort $(wildcard notebooks/*.ipynb))

.PHONY: setup run test lint notebooks bench experiments lab clean

# (Re)create the virtual environment whenever the pins or the package metadata change.
$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(BIN)/python -m mtlib train --data data/sentences.csv --output-dir $(RUN_DIR) --overwrite
	$(BIN)/python -m mtlib evaluate --model $(RUN_DIR)/model --data data/out_of_style.csv --split test \
		--output $(RUN_DIR)/out_of_style_test_metrics.json > /dev/null
	$(BIN)/python -m mtlib baselines --data data/sentences.csv --out-of-style data/out_of_style.csv \
		--output $(RUN_DIR)/baselines.csv
	$(MAKE) --no-print-directory notebooks
	@echo "Results: $(RUN_DIR)/metrics.csv, $(RUN_DIR)/test_metrics.json, $(RUN_DIR)/out_of_style_test_metrics.json, $(RUN_DIR)/baselines.csv, $(RUN_DIR)/model/, notebooks/*.ipynb"

lint: setup
	$(BIN)/ruff check .
	$(BIN)/hadolint Dockerfile

test: lint
	$(BIN)/python -m pytest -q tests $(if $(NOTEBOOKS),--nbval $(NOTEBOOKS) --nbval-current-env --nbval-sanitize-with notebooks/sanitize.cfg)

# Re-execute every notebook in place from a clean kernel, storing the outputs readers see.
notebooks: setup
	cd notebooks && ../$(BIN)/jupyter nbconvert --to notebook --execute --inplace \
		--ExecutePreprocessor.timeout=1800 $(notdir $(NOTEBOOKS))

# Speed and memory against the reference implementations; tables printed, JSON in benchmarks/results/.
bench: setup
	$(BIN)/python benchmarks/bench_encode.py
	$(BIN)/python benchmarks/bench_predict.py
	$(BIN)/python benchmarks/bench_train.py

# The recipe comparison behind the default (about 80 min on a 2-core CPU); results in experiments/results/.
experiments: setup
	$(BIN)/python experiments/recipes.py

lab: setup
	$(BIN)/jupyter lab notebooks

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
