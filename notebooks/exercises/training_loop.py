"""Checkers for the exercises of ``notebooks/04_training_loop.ipynb``.

The records are read as passed, so the checks stay right when the experiments are run again.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from mtlib.evaluate import paired_bootstrap
from mtlib.model import DEFAULT_TASKS

from . import as_number, correct, not_yet

UNCERTAINTY_ARM, UNCERTAINTY_SEED = "topic x10, uncertainty", 0  # the run exercise 2 reads
BASELINE = "frozen embeddings + logistic regression"  # model B of exercise 3
OUT_OF_STYLE, TASK = "out-of-style test", "sentiment"  # the evaluation set and task of exercise 3
S_TOLERANCE = 1e-3  # a grid over s with steps of 1e-4 (the solution's) lands well within this
INTERVAL_TOLERANCE = 0.01  # another bootstrap seed or count moves the 95% bounds by less than this


def schedule(lr_at: Callable[[int, float, int, int], float] | None, lrs: Sequence[float], *, peak: float,
             warmup: int) -> None:
    """Check lr_at(step, peak, warmup, total) against the scheduler's learning rate at every step of lrs."""
    unfilled = ("define lr_at(step, peak, warmup, total) in the cell above so that it returns the learning rate at "
                "step: a linear rise from 0 to peak over warmup steps, then a linear fall to 0 at total.")
    if lr_at is None:
        return not_yet(unfilled)
    if not callable(lr_at):
        return not_yet(f"lr_at is a {type(lr_at).__name__}; make it a function of (step, peak, warmup, total).")
    total, wrong = len(lrs), []
    for step, expected in enumerate(lrs):
        try:
            value = lr_at(step, peak, warmup, total)
        except Exception as error:  # the learner's code: report it, don't stop the notebook
            return not_yet(f"your function raised {type(error).__name__}: {error}")
        if value is None:  # the scaffold as committed
            return not_yet(unfilled)
        number = as_number(value)
        if number is None:
            return not_yet(f"lr_at({step}, peak, warmup, total) returned a {type(value).__name__}; return a number.")
        if not math.isclose(number, expected, rel_tol=1e-6, abs_tol=1e-12):  # float32 answers pass too
            wrong.append(step)
    if not wrong:
        return correct(f"lr_at matches get_linear_schedule_with_warmup at all {total} steps: up from 0 to the peak "
                        f"at step {warmup}, then down to 0 at step {total}.")
    where = f"at {len(wrong)} of {total} steps, the first of them step {wrong[0]}"
    if wrong[-1] < warmup:
        return not_yet(f"lr_at differs from the scheduler {where}, all in the warm-up: the rate grows in equal "
                        "steps from 0 at step 0 to peak at step warmup.")
    if wrong[0] >= warmup:
        return not_yet(f"lr_at differs from the scheduler {where}, all after the warm-up: the rate falls in equal "
                        "steps from peak at step warmup to 0 at step total.")
    return not_yet(f"lr_at differs from the scheduler {where}, in the warm-up and after it: check both parts.")


def settled_weights(best_s: Mapping[str, float] | None, settled_ratio: float | None, runs: Sequence[dict],
                    scales: Mapping[str, float]) -> None:
    """Check the minimising s per task and the settled topic / sentiment weight ratio of uncertainty weighting."""
    if best_s is None and settled_ratio is None:
        return not_yet('set best_s to a dict {"topic": s, "sentiment": s} of the s that minimises e^(-s) L + s for '
                        "each task, and settled_ratio to the topic weight e^(-s) over the sentiment weight.")
    record = next((r for r in runs if r["arm"] == UNCERTAINTY_ARM and r["seed"] == UNCERTAINTY_SEED), None)
    if record is None:
        return not_yet(f"the records passed hold no run {UNCERTAINTY_ARM!r}, seed {UNCERTAINTY_SEED}: run python "
                        "experiments/loss_weighting.py, then this notebook again.")
    last = record["epochs"][-1]["train_loss"]
    seen = {task: scales.get(task, 1.0) * loss for task, loss in last.items()}  # the losses the weighting multiplies
    expected_s = {task: math.log(loss) for task, loss in seen.items()}  # d/ds (e^-s L + s) = 1 - e^-s L = 0
    expected_ratio = seen["sentiment"] / seen["topic"]  # weights e^-s = 1 / L
    if not isinstance(best_s, Mapping) or set(best_s) != set(seen):
        return not_yet(f"best_s should be a dict with one s per task, keys {sorted(seen)}.")
    for task, s in expected_s.items():
        value = as_number(best_s[task])
        if value is None:
            return not_yet(f'best_s["{task}"] is a {type(best_s[task]).__name__}; make it a number.')
        if abs(value - s) <= S_TOLERANCE:
            continue
        if scales.get(task, 1.0) != 1.0 and abs(value - math.log(last[task])) <= S_TOLERANCE:
            return not_yet(f'best_s["{task}"] is the minimum for the recorded {task} loss, but the weighting sees it '
                            "multiplied by its scale (the x10 in the arm's name): use that product as L.")
        return not_yet(f'best_s["{task}"] is not where e^(-s) L + s is smallest for L = the last epoch\'s {task} '
                        "training loss as the weighting sees it: make the grid finer (steps of a thousandth or less), "
                        "or set the derivative to zero.")
    ratio = as_number(settled_ratio)
    if ratio is None:
        return not_yet("best_s is right; now set settled_ratio to a number: the topic weight e^(-s) over the "
                        "sentiment weight.")
    if math.isclose(ratio, 1 / expected_ratio, rel_tol=1e-2):
        return not_yet("settled_ratio is the sentiment weight over the topic weight; turn it round.")
    if not math.isclose(ratio, expected_ratio, rel_tol=1e-2):
        return not_yet("settled_ratio is not the topic weight over the sentiment weight: each weight is e^(-s), "
                        "with s from best_s.")
    return correct(f"the minimum is at s = log L (topic {expected_s['topic']:.3f}, sentiment "
                    f"{expected_s['sentiment']:.3f}), so each weight settles at 1 / L and topic / sentiment = "
                    f"{expected_ratio:.3f}, the inverse ratio of the losses, not the 0.1 that would undo the scale.")


def _predictions(by_key: Mapping[tuple[str, int], dict], recipe: str, seed: int, rows: np.ndarray) -> np.ndarray:
    stored = by_key[recipe, seed]["scores"][OUT_OF_STYLE][TASK]["predictions"]  # one digit a sentence
    return np.array(list(stored), dtype=int)[rows]


def out_of_style_margin(answer: Mapping[str, float] | None, runs: Sequence[dict], default_recipe: str,
                        half: pd.DataFrame) -> None:
    """Check answer against paired_bootstrap of the default recipe minus the baseline on out-of-style sentiment."""
    if answer is None:
        return not_yet(f"set answer to what paired_bootstrap returns for the default recipe (A) against {BASELINE!r} "
                        f"(B) on the {OUT_OF_STYLE} sentences, {TASK}, with one array of predictions per seed.")
    by_key = {(r["recipe"], r["seed"]): r for r in runs}
    seeds = sorted(seed for recipe, seed in by_key if recipe == default_recipe and (BASELINE, seed) in by_key)
    labels = DEFAULT_TASKS[TASK]
    rows = half[TASK].notna().to_numpy()  # sentences without this task's label are not scored
    if not seeds or any(len(by_key[recipe, seed]["scores"][OUT_OF_STYLE][TASK]["predictions"]) != len(half)
                        for recipe in (default_recipe, BASELINE) for seed in seeds):
        return not_yet(f"the records passed hold no predictions of both models for these {len(half)} sentences: "
                        "run python experiments/recipes.py on the current data, then this notebook again.")
    y = half[TASK][rows].map(labels.index).to_numpy()
    ours = [_predictions(by_key, default_recipe, seed, rows) for seed in seeds]
    theirs = [_predictions(by_key, BASELINE, seed, rows) for seed in seeds]
    expected = paired_bootstrap(y, ours, theirs, len(labels))
    try:
        difference, low, high = (float(answer[key]) for key in ("difference", "low", "high"))
        n_seeds = int(answer["seeds"])
    except (KeyError, TypeError, ValueError, IndexError) as error:
        return not_yet(f"answer should be the dict paired_bootstrap returns (difference, low, high, seeds); "
                        f"reading it raised {type(error).__name__}: {error}")
    if n_seeds != len(seeds):
        return not_yet(f"answer covers {n_seeds} seed(s), the records hold {len(seeds)}: pass a list with one array "
                        "of predictions per seed for each model, seed i of A with seed i of B.")
    if math.isclose(difference, -expected["difference"], abs_tol=1e-6) and expected["difference"] != 0:
        return not_yet("the difference has the wrong sign: pass the default recipe's predictions first (A) and the "
                        "baseline's second (B).")
    if not math.isclose(difference, expected["difference"], abs_tol=1e-6):
        return not_yet(f"the difference is not the default's macro-F1 minus the baseline's, averaged over the seeds: "
                        f'check the recipes, the evaluation set "{OUT_OF_STYLE}", the task "{TASK}" and that the true '
                        "labels are the out-of-style test half's, as label ids.")
    if not (low <= difference <= high and abs(low - expected["low"]) <= INTERVAL_TOLERANCE
            and abs(high - expected["high"]) <= INTERVAL_TOLERANCE):
        return not_yet("the difference is right but the interval is not paired_bootstrap's: let it resample the "
                        "sentences (the default settings are fine).")
    low, high = expected["low"], expected["high"]
    call = ("the whole interval is above 0: the default is ahead" if low > 0 else
            "the whole interval is below 0: the baseline is ahead" if high < 0 else
            "the interval includes 0: no difference detected")
    correct(f"default minus frozen embeddings on out-of-style {TASK}: {expected['difference']:+.3f} "
             f"[{low:+.3f}, {high:+.3f}] macro-F1 over {len(seeds)} seeds; {call}.")
