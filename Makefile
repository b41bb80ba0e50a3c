# Two commands: `make run` (the tutorial's work end to end) and `make test` (everything CI checks).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN_DIR := runs/default
RUN_NOTEBOOKS := runs/notebooks
NOTEBOOKS := $(sort $(wildcard notebooks/*.ipynb))
# Executes notebooks from a clean kernel, in their own folder. The kernel logs errors only: its warning that it
# talks to nbconvert over local TCP without encryption is not for learners; WARN drops nbconvert's line per file.
EXECUTE := $(BIN)/jupyter nbconvert --to notebook --execute --ExecutePreprocessor.timeout=1800 \
	--ExecutePreprocessor.extra_arguments=--IPKernelApp.log_level=ERROR --log-level=WARN

.PHONY: setup run check test lint notebooks bench experiments lab clean

# (Re)create the virtual environment whenever the pins or the package metadata change.
$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

setup: $(STAMP)

# Each step says what it does; the notebooks/ copies are left as cloned, the executed ones go to runs/notebooks/.
run: setup
	@echo "1/4 Training the default model into $(RUN_DIR)/"
	@$(BIN)/python -m mtlib train --data data/sentences.csv --output-dir $(RUN_DIR) --overwrite --no-progress > /dev/null
	@echo "2/4 Scoring it on the out-of-style test half"
	@$(BIN)/python -m mtlib evaluate --model $(RUN_DIR)/model --data data/out_of_style.csv --split test \
		--output $(RUN_DIR)/out_of_style_test_metrics.json --card > /dev/null
	@echo "3/4 Fitting the baselines"
	@$(BIN)/python -m mtlib baselines --data data/sentences.csv --out-of-style data/out_of_style.csv \
		--output $(RUN_DIR)/baselines.csv > /dev/null
	@echo "4/4 Executing the notebooks into $(RUN_NOTEBOOKS)/"
	@for notebook in $(NOTEBOOKS); do \
		echo "    $$notebook"; $(EXECUTE) --output-dir $(RUN_NOTEBOOKS) $$notebook || exit 1; \
	done
	@$(BIN)/python scripts/summary.py $(RUN_DIR) $(RUN_NOTEBOOKS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/hadolint Dockerfile

# The quick tier, for while you change code: lint and the unit tests on tiny random backbones. It leaves out the
# browser test, the notebooks, the one-thread re-run of their outputs, the scripts' --help, the two-process tests
# and the re-runs of committed experiments; make test runs everything, as CI does.
SLOW_TESTS := lab exercises portable_outputs scripts distributed gradient_conflict weighting_experiment freezing_experiment recipes
check: lint
	$(BIN)/python -m pytest -q tests $(foreach name,$(SLOW_TESTS),--ignore=tests/test_$(name).py)

test: lint
	$(BIN)/python -m pytest -q -rs tests $(if $(NOTEBOOKS),--nbval $(NOTEBOOKS) --nbval-current-env --nbval-sanitize-with notebooks/sanitize.cfg)

# Re-execute every notebook in place, storing the outputs readers see.
notebooks: setup
	$(EXECUTE) --inplace $(NOTEBOOKS)

# Speed and memory against the reference implementations; tables printed, JSON in benchmarks/results/.
bench: setup
	$(BIN)/python benchmarks/bench_encode.py
	$(BIN)/python benchmarks/bench_predict.py
	$(BIN)/python benchmarks/bench_train.py

# The recipe comparison behind the default (on the current data: the default and LP-FT, with their WiSE-FT
# interpolations, and the two baselines, 3 seeds each), then the experiments notebooks 02, 03 and 04 load (gradient
# conflict, freezing, loss weighting); results in experiments/results/. Runs already stored are not run again: on
# the committed state this trains nothing.
experiments: setup
	$(BIN)/python experiments/recipes.py
	$(BIN)/python experiments/gradient_conflict.py
	$(BIN)/python experiments/freezing.py
	$(BIN)/python experiments/loss_weighting.py

# JupyterLab on the notebooks; it prints the URL with its token. As root (containers, CI) it needs --allow-root.
# LAB_OPTIONS adds server options: make lab LAB_OPTIONS="--port=8890 --no-browser".
lab: setup
	$(BIN)/jupyter lab notebooks --KernelManager.transport=ipc $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_OPTIONS)

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
