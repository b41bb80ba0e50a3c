"""Does the way two task losses are combined matter, and does learned uncertainty weighting find good weights?

Two settings, three seeds each, on a 25% subset of the training split for 2 epochs (every arm takes the same
optimizer steps): the losses as they come (equal weights, or sentiment alone), and the topic loss multiplied
by 10, a task whose loss comes in other units (equal weights, fixed weights of 0.1 for topic that undo the
scale, and uncertainty weighting with its log-variances at their own learning rate). Every run is scored on the
same test sentences (split seed 0), so arms are compared with a paired bootstrap. One JSON file per run
lands in ``experiments/results/loss_weighting/``, with the learned weights and the test predictions.

    python experiments/loss_weighting.py                   # every run not done yet
    python experiments/loss_weighting.py --seeds 0 --only "topic x10, uncertainty"   # one run
    python experiments/loss_weighting.py --summary         # results/loss_weighting.csv and the comparisons
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from accelerate.utils import set_seed
from transformers.utils import logging as hf_logging

from mtlib.data import IGNORE_INDEX, get_dataloaders, load_dataset, split_dataset, subsample
from mtlib.evaluate import paired_bootstrap, task_metrics
from mtlib.losses import MultiTaskLoss
from mtlib.model import DEFAULT_TASKS
from mtlib.precision import make_accelerator
from mtlib.train import TrainConfig, build_model, build_optimizer, train_one_epoch

DATA = str(Path(__file__).parents[1] / "data" / "sentences.csv")  # the notebook imports this file from notebooks/
RESULTS = Path(__file__).parent / "results" / "loss_weighting"
SEEDS = (0, 1, 2)
SPLIT_SEED = 0  # one split for every seed: the same test sentences, so arms pair sentence by sentence
TRAIN_FRACTION = 0.25  # a stratified quarter of the training split
EPOCHS = 2
LOG_VAR_LR = 0.05  # Adam moves s by about this much a step: far enough in the run's steps to reach log(10)
SCALE = {"topic": 10.0}
ONLY_SENTIMENT = {"loss_weighting": "fixed", "task_weights": {"topic": 0.0, "sentiment": 1.0}}
UNDO_SCALE = {"loss_weighting": "fixed", "task_weights": {"topic": 0.1, "sentiment": 1.0}}
UNCERTAINTY = {"loss_weighting": "uncertainty", "log_var_lr": LOG_VAR_LR}
ARMS = {  # name: (loss scales, TrainConfig fields)
    "equal": ({}, {}),
    "sentiment only": ({}, ONLY_SENTIMENT),
    "topic x10, equal": (SCALE, {}),
    "topic x10, fixed 0.1 for topic": (SCALE, UNDO_SCALE),
    "topic x10, uncertainty": (SCALE, UNCERTAINTY),
}


class ScaledLoss(MultiTaskLoss):
    """Each task's loss multiplied by its ``scales`` entry before the weighting sees it."""

    def __init__(self, tasks: list[str], scales: dict[str, float], **weighting) -> None:
        super().__init__(tasks, **weighting)
        self.scales = scales

    def forward(self, task_losses: dict[str, torch.Tensor]) -> torch.Tensor:
        return super().forward({task: self.scales.get(task, 1.0) * loss for task, loss in task_losses.items()})


def test_split() -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """The training subset and the splits ``get_dataloaders`` expects (validation is not used)."""
    splits = split_dataset(load_dataset(DATA, DEFAULT_TASKS), seed=SPLIT_SEED)
    return splits["test"], splits | {"train": subsample(splits["train"], TRAIN_FRACTION, SPLIT_SEED)}


def label_ids(frame: pd.DataFrame, task: str) -> list[int]:
    """Label ids of ``task``, ``IGNORE_INDEX`` where a row has none (some test rows carry no topic)."""
    labels = DEFAULT_TASKS[task]
    return [labels.index(v) if isinstance(v, str) else IGNORE_INDEX for v in frame[task]]


def run(arm: str, seed: int) -> dict:
    """Train one arm with one seed; its per-epoch losses and weights, and its test scores and predictions."""
    scales, fields = ARMS[arm]
    config = TrainConfig(data=DATA, seed=seed, epochs=EPOCHS, progress=False, **fields)
    test, splits = test_split()
    accelerator = make_accelerator("fp32")
    set_seed(seed)  # the seed fixes the heads' initial weights, then shuffling and dropout
    model = build_model(config, accelerator.device)
    loaders, _ = get_dataloaders(model, splits, config, cache=False, precision="fp32")
    criterion = ScaledLoss(list(DEFAULT_TASKS), scales, weighting=config.loss_weighting, weights=config.task_weights)
    optimizer, scheduler = build_optimizer(model, criterion, config, len(loaders["joint"]))
    model, optimizer, scheduler, loader = accelerator.prepare(model, optimizer, scheduler, loaders["joint"])
    started, epochs = time.perf_counter(), []
    for epoch in range(EPOCHS):
        set_seed(seed + epoch)
        loader.set_epoch(epoch)  # the prepared loader passes the epoch on to its batch sampler
        model.train()
        losses = train_one_epoch(model, {"joint": loader}, ["joint"] * len(loader), criterion, optimizer, scheduler,
                                 accelerator, max_grad_norm=config.max_grad_norm, progress=False)
        epochs.append({"epoch": epoch, "train_loss": losses, "weights": criterion.task_weights()})
    seconds = time.perf_counter() - started
    logits = accelerator.unwrap_model(model).predict_logits(test["text"].tolist())
    scores = {}
    for task, labels in DEFAULT_TASKS.items():
        predicted = logits[task].argmax(-1).tolist()
        metrics = task_metrics(label_ids(test, task), predicted, labels)
        scores[task] = {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
                        "predictions": "".join(map(str, predicted))}
    return {"arm": arm, "seed": seed, "train_seconds": seconds, "epochs": epochs, "test": scores}


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


def load_records() -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted(RESULTS.glob("*.json"))]


def score_table(records: list[dict]) -> pd.DataFrame:
    """One row per arm, seed and task: test scores and the weight the arm ended with."""
    return pd.DataFrame(
        {"arm": r["arm"], "seed": r["seed"], "task": task, "accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
         "final_weight": r["epochs"][-1]["weights"][task], "train_seconds": r["train_seconds"]}
        for r in records for task, m in r["test"].items()
    )


def compare(records: list[dict], a: str, b: str, task: str) -> dict:
    """Test macro-F1 of arm ``a`` minus arm ``b``, averaged over seeds, with its 95% paired-bootstrap interval."""
    y_true = np.array(label_ids(test_split()[0], task))
    scored = y_true != IGNORE_INDEX
    by_arm = {arm: {r["seed"]: np.array(list(r["test"][task]["predictions"]), dtype=int)[scored]
                    for r in records if r["arm"] == arm} for arm in (a, b)}
    seeds = sorted(set(by_arm[a]) & set(by_arm[b]))
    pairs = ([by_arm[a][s] for s in seeds], [by_arm[b][s] for s in seeds])
    return paired_bootstrap(y_true[scored], *pairs, len(DEFAULT_TASKS[task]))


COMPARISONS = [  # (a, b, task): the questions the notebook asks
    ("sentiment only", "equal", "sentiment"),
    ("topic x10, equal", "equal", "sentiment"),
    ("topic x10, fixed 0.1 for topic", "topic x10, equal", "sentiment"),
    ("topic x10, uncertainty", "topic x10, equal", "sentiment"),
    ("topic x10, uncertainty", "topic x10, fixed 0.1 for topic", "sentiment"),
    ("topic x10, uncertainty", "topic x10, fixed 0.1 for topic", "topic"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS), help="seeds to run (default 0 1 2)")
    parser.add_argument("--only", choices=list(ARMS), help="run only this arm")
    parser.add_argument("--summary", action="store_true", help="only collect the results into loss_weighting.csv")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if not args.summary:
        hf_logging.set_verbosity_error()
        RESULTS.mkdir(parents=True, exist_ok=True)
        for arm in [args.only] if args.only else ARMS:
            for seed in args.seeds:
                path = RESULTS / f"{slug(arm)}-seed{seed}.json"
                if not path.exists():
                    path.write_text(json.dumps(run(arm, seed)) + "\n")
                    print(f"{path.name}: done", flush=True)
    records = load_records()
    table = score_table(records)
    table.to_csv(RESULTS.parent / "loss_weighting.csv", index=False)
    print(table.groupby(["arm", "task"])[["macro_f1", "final_weight"]].agg(["mean", "std"]).round(3))
    for a, b, task in COMPARISONS:
        if {a, b} <= set(table["arm"]):
            c = compare(records, a, b, task)
            print(f"{task}: {a} minus {b}: {c['difference']:+.3f} [{c['low']:+.3f}, {c['high']:+.3f}], "
                  f"{c['seeds']} seeds")


if __name__ == "__main__":
    main()
