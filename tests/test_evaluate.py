"""The paired bootstrap behind every model-against-model finding."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from mtlib.evaluate import batched_macro_f1, paired_bootstrap


def test_batched_macro_f1_matches_scikit_learn():
    rng = np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, 3, size=(5, 40)), rng.integers(0, 3, size=(5, 40))
    y_pred[0] = 0  # a class never predicted
    expected = [f1_score(t, p, labels=[0, 1, 2], average="macro", zero_division=0) for t, p in zip(y_true, y_pred,
                                                                                                    strict=True)]
    np.testing.assert_allclose(batched_macro_f1(y_true, y_pred, 3), expected)


def test_paired_bootstrap_separates_a_better_model_and_not_an_equal_one():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, size=300)
    noisy = [np.where(rng.random(300) < 0.3, rng.integers(0, 3, size=300), y) for _ in range(3)]
    noisier = [np.where(rng.random(300) < 0.6, rng.integers(0, 3, size=300), y) for _ in range(3)]
    better = paired_bootstrap(y, noisy, noisier, 3)
    assert better["seeds"] == 3 and 0 < better["low"] < better["difference"] < better["high"]
    same = paired_bootstrap(y, noisy, noisy, 3, metric="accuracy")
    assert same["difference"] == same["low"] == same["high"] == 0


def test_paired_bootstrap_refuses_unpaired_predictions():
    with pytest.raises(ValueError, match="must both be"):
        paired_bootstrap([0, 1, 2], [[0, 1, 2]], [[0, 1]], 3)
    with pytest.raises(ValueError, match="metric="):
        paired_bootstrap([0, 1, 2], [[0, 1, 2]], [[0, 1, 2]], 3, metric="auc")
