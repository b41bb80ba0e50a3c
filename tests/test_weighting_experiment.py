"""experiments/loss_weighting.py: its scaled loss, and one of its runs re-done against the committed result."""

import json

import numpy as np
import pytest
import torch
from conftest import load_experiment

ARM = "topic x10, uncertainty"  # the arm that exercises the scale and the log-variances' own learning rate


@pytest.fixture(scope="module")
def weighting():
    return load_experiment("loss_weighting")


def test_scaled_loss_multiplies_before_the_weighting(weighting):
    losses = {"topic": torch.tensor(0.5), "sentiment": torch.tensor(2.0)}
    equal = weighting.ScaledLoss(["topic", "sentiment"], {"topic": 10.0})
    undone = weighting.ScaledLoss(["topic", "sentiment"], {"topic": 10.0}, weighting="fixed",
                                  weights={"topic": 0.1, "sentiment": 1.0})
    learned = weighting.ScaledLoss(["topic", "sentiment"], {"topic": 10.0}, weighting="uncertainty")
    with torch.no_grad():
        learned.log_vars.copy_(torch.tensor([1.0, 0.0]))
    assert float(equal(losses).detach()) == pytest.approx(10 * 0.5 + 2.0)
    assert float(undone(losses).detach()) == pytest.approx(0.5 + 2.0)
    assert float(learned(losses).detach()) == pytest.approx(np.exp(-1.0) * 10 * 0.5 + 1.0 + 2.0)


def test_one_seed_matches_the_committed_result(weighting):
    committed = json.loads((weighting.RESULTS / f"{weighting.slug(ARM)}-seed0.json").read_text())
    fresh = weighting.run(ARM, 0)
    for task, scores in committed["test"].items():
        # thread counts change the order of float sums, so a few predictions may flip between machines
        assert fresh["test"][task]["macro_f1"] == pytest.approx(scores["macro_f1"], abs=0.01), task
        agree = np.mean([a == b for a, b in zip(fresh["test"][task]["predictions"], scores["predictions"],
                                                strict=True)])
        assert agree > 0.97, (task, agree)
    for new, old in zip(fresh["epochs"], committed["epochs"], strict=True):
        assert new["weights"] == pytest.approx(old["weights"], rel=0.05)
        assert new["train_loss"] == pytest.approx(old["train_loss"], rel=0.05)
