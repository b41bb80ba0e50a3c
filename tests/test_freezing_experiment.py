"""experiments/freezing.py: one seed of one arm, re-run, matches the committed results (notebook 03 reads them)."""

from __future__ import annotations

import json

import pytest
from conftest import load_experiment

ARM, SEED = "LoRA r=8", 0  # trains adapters through peft, and records the layer-wise CKA
F1_TOLERANCE = 0.02  # another thread count sums in another order: a few of the 300 predictions may flip
CKA_TOLERANCE = 0.01


@pytest.fixture(scope="module")
def experiment():
    return load_experiment("freezing")


def test_committed_results_cover_every_arm_and_seed(experiment):
    records = experiment.load_records()
    done = {(r["arm"], r["seed"], r["rows"]) for r in records}
    train_rows = len(experiment.training_rows(experiment.TRAIN_ROWS, 0))
    for name in experiment.ARMS:
        for seed in experiment.SEEDS:
            assert (name, seed, train_rows) in done, (name, seed)
    sizes = {(r["arm"], r["seed"]): set() for r in records}
    for r in records:
        sizes[(r["arm"], r["seed"])].add(r["rows"])
    for seed in experiment.SEEDS:
        assert len(sizes[("full fine-tuning", seed)]) == len(experiment.CURVE_ROWS)
        assert len(sizes[(experiment.LOGREG, seed)]) == len(experiment.CURVE_ROWS)


def test_one_seed_reproduces_the_committed_run(experiment):
    path = experiment.job_path(ARM, SEED, experiment.TRAIN_ROWS)
    committed = json.loads(path.read_text())[0]
    record = experiment.run_arm(ARM, SEED)
    for key in ("rows", "epochs", "steps", "trainable_params"):
        assert record[key] == committed[key], key
    for task, scores in committed["scores"].items():
        assert record["scores"][task]["macro_f1"] == pytest.approx(scores["macro_f1"], abs=F1_TOLERANCE), task
    assert record["cka"] == pytest.approx(committed["cka"], abs=CKA_TOLERANCE)
