"""Which layers to freeze, LoRA beside freezing, and where fine-tuning changes the encoder (notebook 03).

Every arm trains 3 seeds on one split (seed 0's), on a stratified subset of the training split drawn
with the run's seed, and is scored on one fixed stratified subset of the validation split, so models of
the same seed are compared on the same sentences (paired bootstrap). Every arm gets the same number of
optimizer steps: ``ceil(MIN_STEPS / batches per epoch)`` epochs, i.e. 30 steps on the 480-row subset;
the learning curve uses the same rule, so fine-tuning on 120 rows gets 8 epochs and on the full training
split one epoch. The frozen encoder + logistic regression arm is fitted to convergence instead. The
optimizer settings are ``TrainConfig()``'s defaults, except where an arm sets its own (LP-FT as in
``experiments/recipes.py``; LoRA's adapters at the heads' rate). One JSON file per run lands in
``experiments/results/freezing/``, with the predictions, and the layer-wise CKA for some arms.

    python experiments/freezing.py                     # every run not done yet, one after the other
    python experiments/freezing.py --shard 0/2 & python experiments/freezing.py --shard 1/2   # two at once
    python experiments/freezing.py --only "LoRA r=8" --seeds 0   # one arm, one seed
    python experiments/freezing.py --summary           # collect results/freezing.csv and freezing_cka.csv
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from transformers.utils import logging as hf_logging

from mtlib.baselines import make_classifier
from mtlib.config import ModelConfig, TrainConfig
from mtlib.data import Collator, LengthGroupedBatches, SentenceDataset, load_dataset, split_dataset, subsample
from mtlib.evaluate import task_metrics
from mtlib.freezing import count_trainable, encoder_is_frozen
from mtlib.lora import add_lora
from mtlib.losses import MultiTaskLoss
from mtlib.model import DEFAULT_TASKS
from mtlib.precision import make_accelerator
from mtlib.train import build_and_freeze, build_optimizer, train_one_epoch
from mtlib.transfer import layer_outputs, linear_cka

DATA = Path(__file__).parents[1] / "data" / "sentences.csv"  # the same file from any working folder
RESULTS = Path(__file__).parent / "results" / "freezing"
SEEDS = (0, 1, 2)
SPLIT_SEED = 0  # one split for every run: every model is scored on the same validation sentences
TRAIN_ROWS = 480  # training rows of every arm of the comparison
VALIDATION_ROWS = 300  # the fixed validation subset every run is scored on
MIN_STEPS = 30  # optimizer steps of every run: enough epochs to reach this many (at least one epoch)
MAX_LENGTH = 64  # tokens per sentence; the longest training sentence has 59
CURVE_ROWS = (120, 480, None)  # learning curve: training rows (None: the full training split)
CKA_SENTENCES = 200  # validation sentences whose layer outputs CKA compares
LORA_RANK = 8
ARMS = {  # TrainConfig fields of each arm ("lora" is the adapters' rank)
    "everything frozen": {"freeze": "all"},
    "frozen encoder, trained heads": {"freeze": "backbone"},
    **{f"bottom {k} layers frozen": {"freeze": f"layers:{k}"} for k in range(6)},
    "full fine-tuning": {"freeze": "none"},
    f"LoRA r={LORA_RANK}": {"lora": LORA_RANK, "lr": 1e-3},  # adapters start at zero, like heads: head_lr
    "LP-FT": {"linear_probe": True, "lr": 5e-5, "head_lr": None},  # as in experiments/recipes.py
}
CKA_ARMS = ("full fine-tuning", "LP-FT", "bottom 3 layers frozen", f"LoRA r={LORA_RANK}")
LOGREG = "frozen encoder + logistic regression"


@functools.cache
def splits() -> dict[str, pd.DataFrame]:
    frame = split_dataset(load_dataset(DATA, DEFAULT_TASKS), seed=SPLIT_SEED)
    validation = subsample(frame["validation"], VALIDATION_ROWS / len(frame["validation"]), SPLIT_SEED)
    return {"train": frame["train"], "validation": validation}


def training_rows(rows: int | None, seed: int) -> pd.DataFrame:
    train = splits()["train"]
    return subsample(train, (rows or len(train)) / len(train), seed)


def scores(logits: dict[str, np.ndarray], frame: pd.DataFrame) -> dict:
    """Accuracy, macro-F1 and the predicted label ids (one digit a sentence) per task, on its labelled rows."""
    out = {}
    for task, labels in DEFAULT_TASKS.items():
        labelled = frame[task].notna().to_numpy()
        predicted = np.asarray(logits[task]).argmax(-1)[labelled]
        metrics = task_metrics(frame[task][labelled].map(labels.index).tolist(), predicted.tolist(), labels)
        out[task] = {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
                     "predictions": "".join(map(str, predicted))}
    return out


@functools.cache
def pretrained_layers() -> list[torch.Tensor]:
    config = TrainConfig(model=ModelConfig(max_length=MAX_LENGTH))
    model, _ = build_and_freeze(config, DEFAULT_TASKS, splits()["train"], make_accelerator("fp32"))
    return layer_outputs(model.encoder, splits()["validation"]["text"].tolist()[:CKA_SENTENCES])


def run_arm(name: str, seed: int, rows: int | None = TRAIN_ROWS) -> dict:
    """Train one arm for one seed on the fixed step budget; its validation scores, costs and (some) CKA."""
    settings = dict(ARMS[name])
    lora_rank = settings.pop("lora", 0)
    train_rows, validation = training_rows(rows, seed), splits()["validation"]
    epochs = math.ceil(MIN_STEPS / math.ceil(len(train_rows) / TrainConfig.batch_size))
    config = TrainConfig(seed=seed, epochs=epochs, progress=False, mixed_precision="fp32",
                         model=ModelConfig(max_length=MAX_LENGTH), **settings)
    accelerator = make_accelerator(config.mixed_precision)
    set_seed(seed)  # before building: the seed fixes the heads' initial weights
    model, _ = build_and_freeze(config, DEFAULT_TASKS, train_rows, accelerator)
    if lora_rank:
        add_lora(model, r=lora_rank)
    # a frozen encoder gives a sentence the same vector every step: embed once, train the heads on the vectors
    cache = None
    if encoder_is_frozen(model):
        cache = model.encoder.encode(train_rows["text"].tolist(), batch_size=128, show_progress=False)
    batches = LengthGroupedBatches(train_rows["text"].str.len().tolist(), config.batch_size, seed=seed)
    loader = DataLoader(SentenceDataset(train_rows, DEFAULT_TASKS, cache), batch_sampler=batches,
                        collate_fn=Collator(model.encoder.tokenizer, model.encoder.max_length))
    criterion = MultiTaskLoss(list(DEFAULT_TASKS))
    optimizer, scheduler = build_optimizer(model, criterion, config, len(loader))
    started = time.process_time()  # CPU seconds of this one-thread process: other work on the machine does not count
    for epoch in range(epochs):
        set_seed(seed + epoch)
        batches.set_epoch(epoch)
        model.train()
        if cache is not None:
            model.encoder.eval()  # no dropout in a frozen encoder
        train_one_epoch(model, {"joint": loader}, ["joint"] * len(loader), criterion, optimizer, scheduler,
                        accelerator, max_grad_norm=config.max_grad_norm, progress=False)
    seconds = time.process_time() - started
    logits = {t: x.numpy() for t, x in model.predict_logits(validation["text"].tolist(), precision="fp32").items()}
    record = {"arm": name, "seed": seed, "rows": len(train_rows), "epochs": epochs, "steps": epochs * len(loader),
              "trainable_params": count_trainable(model), "seconds_per_epoch": seconds / epochs,
              "scores": scores(logits, validation)}
    if name in CKA_ARMS and rows == TRAIN_ROWS:
        tuned = layer_outputs(model.encoder, validation["text"].tolist()[:CKA_SENTENCES])
        record["cka"] = [linear_cka(a, b) for a, b in zip(pretrained_layers(), tuned, strict=True)]
    return record


def run_logreg(seed: int) -> list[dict]:
    """The frozen pretrained encoder's vectors with a logistic regression fitted to convergence, per curve size."""
    config = TrainConfig(model=ModelConfig(max_length=MAX_LENGTH))
    model, _ = build_and_freeze(config, DEFAULT_TASKS, splits()["train"], make_accelerator("fp32"))
    train, validation = splits()["train"], splits()["validation"]
    vectors = model.encoder.encode(train["text"].tolist(), batch_size=128, show_progress=False).numpy()
    x_validation = model.encoder.encode(validation["text"].tolist(), batch_size=128, show_progress=False).numpy()
    row_of = {text: i for i, text in enumerate(train["text"])}
    records = []
    for rows in CURVE_ROWS:
        part = training_rows(rows, seed)
        x = vectors[[row_of[text] for text in part["text"]]]
        logits = {}
        for task, labels in DEFAULT_TASKS.items():
            labelled = part[task].notna().to_numpy()
            classifier = make_classifier("embedding_logreg").fit(x[labelled], part[task][labelled].map(labels.index))
            logits[task] = classifier.predict_proba(x_validation)
        records.append({"arm": LOGREG, "seed": seed, "rows": len(part), "epochs": None, "steps": None,
                        "trainable_params": None, "seconds_per_epoch": None, "scores": scores(logits, validation)})
    return records


def jobs() -> list[tuple[str, int, int | None]]:
    main = [(name, seed, TRAIN_ROWS) for seed in SEEDS for name in ARMS]
    curve = [("full fine-tuning", seed, rows) for rows in CURVE_ROWS if rows != TRAIN_ROWS for seed in SEEDS]
    return main + curve + [(LOGREG, seed, None) for seed in SEEDS]


def job_path(name: str, seed: int, rows: int | None) -> Path:
    slug = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")
    size = "" if name == LOGREG else f"-rows{rows or 'all'}"
    return RESULTS / f"{slug}{size}-seed{seed}.json"


def load_records() -> list[dict]:
    return [record for path in sorted(RESULTS.glob("*.json")) for record in json.loads(path.read_text())]


def summarize(records: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per arm, training rows, seed and task; and one per arm, seed and layer with its CKA."""
    keys = ("arm", "seed", "rows", "epochs", "steps", "trainable_params", "seconds_per_epoch")
    scores_table = pd.DataFrame(
        {**{k: r[k] for k in keys}, "task": task, "accuracy": m["accuracy"], "macro_f1": m["macro_f1"]}
        for r in records for task, m in r["scores"].items()
    )
    cka = pd.DataFrame(
        {"arm": r["arm"], "seed": r["seed"], "layer": layer, "cka": value}
        for r in records for layer, value in enumerate(r.get("cka", []))
    )
    return scores_table, cka


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shard", default="0/1", help="i/n: run every n-th job starting at i")
    parser.add_argument("--only", help=f"run only this arm: one of {[*ARMS, LOGREG]}")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS), help="run only these seeds")
    parser.add_argument("--summary", action="store_true", help="only collect the results into the CSV files")
    args = parser.parse_args()
    if not args.summary:
        hf_logging.set_verbosity_error()
        torch.set_num_threads(1)  # one process, one core: the seconds per epoch are comparable across arms
        RESULTS.mkdir(parents=True, exist_ok=True)
        index, count = map(int, args.shard.split("/"))
        for name, seed, rows in jobs()[index::count]:
            path = job_path(name, seed, rows)
            if args.only not in (None, name) or seed not in args.seeds or path.exists():
                continue
            records = run_logreg(seed) if name == LOGREG else [run_arm(name, seed, rows)]
            path.write_text(json.dumps(records) + "\n")
            print(f"{path.name}: done", flush=True)
    scores_table, cka = summarize(load_records())
    scores_table.to_csv(RESULTS.parent / "freezing.csv", index=False)
    cka.to_csv(RESULTS.parent / "freezing_cka.csv", index=False)
    print(scores_table.groupby(["arm", "rows", "task"])["macro_f1"].agg(["mean", "std", "count"]).round(3).to_string())


if __name__ == "__main__":
    main()
