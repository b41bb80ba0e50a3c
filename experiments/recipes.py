"""Which fine-tuning recipe still works on text written in other styles than the training data?

Every recipe trains with 3 seeds (a seed also draws its own 70/15/15 split) and is scored on the shipped
test split and on both halves of ``data/out_of_style.csv``: ``dev`` chooses the recipe, ``test`` is
reported. WiSE-FT trains nothing of its own: it interpolates each fine-tuned encoder with the pretrained
one. The baselines are fitted on the same training rows. One JSON file per run lands in
``experiments/results/recipes/``, with each model's predictions for paired comparisons.

    python experiments/recipes.py                          # every run not done yet, one after the other
    python experiments/recipes.py --shard 0/2 & python experiments/recipes.py --shard 1/2   # two at once
    python experiments/recipes.py --summary                # tables for the README, and recipes.csv
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from transformers.utils import logging as hf_logging

from mtlib.baselines import make_classifier
from mtlib.data import load_dataset, load_half, split_dataset
from mtlib.encoder import SentenceEncoder
from mtlib.evaluate import task_metrics
from mtlib.model import DEFAULT_TASKS
from mtlib.train import TrainConfig, train
from mtlib.transfer import encoder_state, interpolate_encoder

DATA, OUT_OF_STYLE = "data/sentences.csv", "data/out_of_style.csv"
RESULTS = Path(__file__).parent / "results" / "recipes"
SEEDS = (0, 1, 2)
# The first release's recipe, pinned here so the comparison does not move when TrainConfig's defaults do.
FIRST_RELEASE = {"epochs": 4, "lr": 1e-4, "freeze": "none", "layer_lr_decay": 1.0, "linear_probe": False}
RECIPES = {
    "full fine-tuning": {},
    "LP-FT": {"linear_probe": True, "lr": 5e-5},
    "layer-wise lr decay 0.7": {"layer_lr_decay": 0.7},
    "bottom 3 layers frozen": {"freeze": "layers:3"},
    "2 epochs": {"epochs": 2},
}
WISE_FROM = ("full fine-tuning", "LP-FT")  # recipes whose models are also interpolated
WISE_ALPHAS = (0.25, 0.5, 0.75)
BASELINES = {
    "TF-IDF + logistic regression": "tfidf_logreg",
    "frozen embeddings + logistic regression": "embedding_logreg",
}


def evaluation_sets(seed: int) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """The training split of ``seed`` and the three sets every model is scored on."""
    splits = split_dataset(load_dataset(DATA, DEFAULT_TASKS), seed=seed)
    return splits["train"], {
        "shipped test": splits["test"],
        "out-of-style dev": load_half(OUT_OF_STYLE, DEFAULT_TASKS, "dev"),
        "out-of-style test": load_half(OUT_OF_STYLE, DEFAULT_TASKS, "test"),
    }


def score(predicted: dict[str, np.ndarray], frame: pd.DataFrame) -> dict:
    """Metrics and the predictions themselves (one digit a row), per task."""
    out = {}
    for task, labels in DEFAULT_TASKS.items():
        rows = frame[task].notna().to_numpy()
        y_true = frame[task][rows].map(labels.index).tolist()
        metrics = task_metrics(y_true, predicted[task][rows].tolist(), labels)
        out[task] = {k: metrics[k] for k in ("accuracy", "macro_f1")} | {
            "predictions": "".join(map(str, predicted[task].tolist()))
        }
    return out


def model_scores(model, sets: dict[str, pd.DataFrame]) -> dict:
    return {
        name: score({t: x.argmax(-1).numpy() for t, x in model.predict_logits(frame["text"].tolist()).items()}, frame)
        for name, frame in sets.items()
    }


def run_recipe(name: str, seed: int) -> list[dict]:
    train_rows, sets = evaluation_sets(seed)
    config = TrainConfig(
        data=DATA, output_dir=f"runs/recipes/{slug(name)}/seed{seed}", seed=seed, progress=False,
        **(FIRST_RELEASE | RECIPES[name]),
    )
    started = time.perf_counter()
    model, _ = train(config)
    seconds = time.perf_counter() - started
    records = [{"recipe": name, "seed": seed, "train_seconds": seconds, "scores": model_scores(model, sets)}]
    if name in WISE_FROM:
        pretrained = encoder_state(SentenceEncoder.from_pretrained(config.backbone))
        fine_tuned = encoder_state(model.encoder)
        for alpha in WISE_ALPHAS:
            model.encoder.load_state_dict(fine_tuned)
            interpolate_encoder(model, pretrained, alpha)
            records.append(
                {"recipe": f"{name} + WiSE-FT {alpha}", "seed": seed, "train_seconds": seconds,
                 "scores": model_scores(model, sets)}
            )
    return records


def run_baselines(seed: int) -> list[dict]:
    train_rows, sets = evaluation_sets(seed)
    encoder = SentenceEncoder.from_pretrained(TrainConfig().backbone)
    records = []
    def features(kind: str, frame: pd.DataFrame) -> np.ndarray:
        if kind == "tfidf_logreg":
            return frame["text"].to_numpy()
        return encoder.encode(frame["text"].tolist(), show_progress=False).numpy()

    for name, kind in BASELINES.items():
        x_train = features(kind, train_rows)
        fitted = {}
        for task, labels in DEFAULT_TASKS.items():
            rows = train_rows[task].notna().to_numpy()
            fitted[task] = make_classifier(kind).fit(x_train[rows], train_rows[task][rows].map(labels.index))
        scores = {}
        for set_name, frame in sets.items():
            x = features(kind, frame)
            scores[set_name] = score({task: clf.predict(x) for task, clf in fitted.items()}, frame)
        records.append({"recipe": name, "seed": seed, "train_seconds": None, "scores": scores})
    return records


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


def jobs() -> list[tuple[str, int]]:
    return [("baselines", seed) for seed in SEEDS] + [(name, seed) for name in RECIPES for seed in SEEDS]


def summary() -> pd.DataFrame:
    rows = []
    for path in sorted(RESULTS.glob("*.json")):
        for record in json.loads(path.read_text()):
            for set_name, tasks in record["scores"].items():
                for task, m in tasks.items():
                    rows.append({"recipe": record["recipe"], "seed": record["seed"], "set": set_name, "task": task,
                                 "accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
                                 "train_seconds": record["train_seconds"]})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shard", default="0/1", help="i/n: run every n-th job starting at i, on one thread")
    parser.add_argument("--summary", action="store_true", help="only collect the results into recipes.csv")
    args = parser.parse_args()
    if not args.summary:
        hf_logging.set_verbosity_error()
        index, count = map(int, args.shard.split("/"))
        if count > 1:
            torch.set_num_threads(1)
        RESULTS.mkdir(parents=True, exist_ok=True)
        for name, seed in jobs()[index::count]:
            path = RESULTS / f"{slug(name)}-seed{seed}.json"
            if path.exists():
                continue
            records = run_baselines(seed) if name == "baselines" else run_recipe(name, seed)
            path.write_text(json.dumps(records) + "\n")
            print(f"{path.name}: done", flush=True)
    table = summary()
    table.to_csv(RESULTS.parent / "recipes.csv", index=False)
    means = table.groupby(["recipe", "set", "task"])["macro_f1"].agg(["mean", "std", "count"]).round(3)
    print(means.unstack(["set", "task"]).to_string())


if __name__ == "__main__":
    main()
