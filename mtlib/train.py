"""Task 4: the multi-task training loop, explicit from top to bottom, on Hugging Face Accelerate.

The same code runs on a CPU, on one GPU (bf16 autocast where supported) and on several processes
through ``accelerate launch`` or ``torchrun``. Walked through in ``notebooks/04_training_loop.ipynb``.
"""

from __future__ import annotations

import copy
import csv
import json
import os
import pickle
import shutil
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from mtlib.backbone import DEFAULT_BACKBONE, sha256_of
from mtlib.data import (
    Collator,
    LengthGroupedBatches,
    SentenceDataset,
    check_splits,
    load_dataset,
    split_dataset,
)
from mtlib.evaluate import evaluate_frame, task_metrics
from mtlib.freezing import count_trainable, encoder_is_frozen, freeze, gradual_unfreeze, layerwise_param_groups
from mtlib.losses import MultiTaskLoss, masked_cross_entropy
from mtlib.model import DEFAULT_TASKS, MultiTaskModel
from mtlib.precision import resolve_mixed_precision
from mtlib.transfer import encoder_state, fit_linear_probe, interpolate_encoder

SAMPLINGS = ("joint", "round_robin", "proportional", "temperature")
METRICS_COLUMNS = ["epoch", "split", "task", "loss", "accuracy", "macro_f1", "n", "lr", "seconds", "trainable_params"]
CHECKPOINT_FILE = "checkpoint.pt"
RUN_FILES = ("metrics.csv", CHECKPOINT_FILE, "model", "test_metrics.json", "train_config.json")
MIXED_PRECISIONS = ("auto", "no", "bf16", "fp16")
# a run folder may be moved and a data file renamed (its sha256 is compared instead); the rest must match
MAY_CHANGE_ON_RESUME = ("resume", "progress", "overwrite", "output_dir", "data")


@dataclass
class TrainConfig:
    data: str = "data/sentences.csv"  # CSV with a text column and one column per task
    output_dir: str = "runs/default"  # metrics.csv, test_metrics.json, model/ and the checkpoint go here
    tasks: dict[str, list[str]] = field(default_factory=lambda: copy.deepcopy(DEFAULT_TASKS))  # task -> labels
    backbone: str = DEFAULT_BACKBONE  # packaged MiniLM by default; any HF id or folder
    pooling: str = "mean"  # mean | cls | max | attention
    head: str = "linear"  # linear (dropout + linear) | mlp (one hidden layer)
    dropout: float = 0.1  # dropout before each head layer
    max_length: int | None = None  # tokens per sentence; None: what the backbone was trained with
    pad_to_max_length: bool = False  # pad every batch to max_length instead of its longest sentence (slower)
    freeze: str = "none"  # none | all | backbone | head:<task> | layers:<k>
    gradual_unfreeze: int = 0  # > 0: unfreeze one more layer from the top every this many epochs (ULMFiT)
    layer_lr_decay: float = 1.0  # < 1: each lower layer's learning rate is multiplied by this once more
    linear_probe: bool = False  # LP-FT: fit the linear heads on the frozen encoder to convergence before training
    wise_alpha: float = 1.0  # WiSE-FT: the trained encoder's share when averaged with the pretrained one; 1 = off
    epochs: int = 4  # passes over the training split
    batch_size: int = 32  # sentences per step (per process)
    lr: float = 1e-4  # peak learning rate of AdamW
    head_lr: float | None = 1e-3  # learning rate of the heads (fresh, so faster than the encoder); None: same as lr
    weight_decay: float = 0.01  # AdamW decoupled weight decay, not on biases and LayerNorm
    warmup_ratio: float = 0.1  # share of steps with linearly rising learning rate, then linear decay to 0
    max_grad_norm: float = 1.0  # gradient clipping
    loss_weighting: str = "equal"  # equal | fixed | uncertainty
    task_weights: dict[str, float] | None = None  # per-task weights for loss_weighting="fixed"
    sampling: str = "joint"  # joint: rows carry every label; else per-task batches mixed by this rule
    temperature: float = 2.0  # sampling="temperature": task probability proportional to size ** (1 / T)
    patience: int = 2  # stop after this many epochs without a better mean validation macro-F1
    seed: int = 0  # data split, initialisation, shuffling and dropout
    train_fraction: float = 1.0  # < 1: train on a seeded, stratified subset of the training split
    cache_embeddings: bool = True  # with a frozen encoder, embed each sentence once and train the heads on that
    mixed_precision: str = "auto"  # auto: bf16 where it pays (mtlib/precision.py), else fp32 | no | bf16 | fp16
    resume: bool = False  # continue from output_dir/checkpoint.pt
    progress: bool = True  # tqdm progress bars
    overwrite: bool = False  # replace a run already in output_dir; without it a new run there is refused

    def validate(self) -> None:
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"sampling={self.sampling!r} is not valid. Valid samplings are: {SAMPLINGS}.")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} should be a positive integer.")
        if not 0 < self.train_fraction <= 1:
            raise ValueError(f"train_fraction={self.train_fraction} should be in (0, 1].")
        if self.lr <= 0:
            raise ValueError(f"lr={self.lr} should be positive.")
        if not 0 <= self.wise_alpha <= 1:
            raise ValueError(
                f"wise_alpha={self.wise_alpha} should be in [0, 1]: "
                "1 keeps the fine-tuned encoder, 0 the pretrained one."
            )
        if self.linear_probe and self.head != "linear":
            raise ValueError(f"linear_probe=True needs head='linear', got head={self.head!r}.")
        if self.resume and self.overwrite:
            raise ValueError(
                "resume=True and overwrite=True: resume continues the run in output_dir, overwrite replaces it; "
                "pass one of them."
            )
        ranges = {
            "patience": (self.patience >= 1, "a positive integer"),
            "gradual_unfreeze": (self.gradual_unfreeze >= 0, "0 (off) or a positive integer"),
            "dropout": (0 <= self.dropout < 1, "in [0, 1)"),
            "warmup_ratio": (0 <= self.warmup_ratio <= 1, "in [0, 1]"),
            "layer_lr_decay": (0 < self.layer_lr_decay <= 1, "in (0, 1]"),
            "weight_decay": (self.weight_decay >= 0, "0 or more"),
            "max_grad_norm": (self.max_grad_norm >= 0, "0 (off) or more"),
            "temperature": (self.temperature > 0, "positive"),
            "head_lr": (self.head_lr is None or self.head_lr > 0, "positive, or None for lr"),
            "max_length": (self.max_length is None or self.max_length >= 1, "a positive integer, or None"),
            "mixed_precision": (self.mixed_precision in MIXED_PRECISIONS, f"one of {MIXED_PRECISIONS}"),
        }
        for name, (ok, expected) in ranges.items():
            if not ok:
                raise ValueError(f"{name}={getattr(self, name)!r} should be {expected}.")


def run_settings(config: TrainConfig) -> dict:
    """The settings a resumed run must share with the run it continues (the data is compared by content)."""
    return {k: v for k, v in asdict(config).items() if k not in MAY_CHANGE_ON_RESUME}


def build_model(
    config: TrainConfig, device: torch.device | str | None = None, tasks: dict[str, list[str]] | None = None
) -> MultiTaskModel:
    """A fresh model for ``config``; ``tasks`` (default: ``config.tasks``) picks the heads."""
    return MultiTaskModel.from_pretrained(
        config.backbone,
        config.tasks if tasks is None else tasks,
        pooling=config.pooling,
        head=config.head,
        dropout=config.dropout,
        max_length=config.max_length,
        device=device,
    )


def subsample(frame: pd.DataFrame, fraction: float, seed: int) -> pd.DataFrame:
    """A stratified share of the rows, for learning curves; the same rows for the same seed."""
    if fraction >= 1:
        return frame
    labels = frame.drop(columns="text").fillna("<missing>").astype(str).agg("|".join, axis=1)
    keep = labels.groupby(labels).sample(frac=fraction, random_state=seed).index
    return frame.loc[sorted(keep)].reset_index(drop=True)


def check_subsample(full: pd.DataFrame, part: pd.DataFrame, fraction: float, tasks: list[str]) -> None:
    """Refuse a ``train_fraction`` that leaves no training rows, or none of some label, before training starts."""
    strata = full.drop(columns="text").fillna("<missing>").astype(str).agg("|".join, axis=1)  # as in subsample
    missing, needed = [], 0.0
    for task in tasks:
        for label in full[task].dropna().unique():
            # round(fraction * n) rows of each stratum are kept: 1 / n keeps one row of the largest with this label
            needed = max(needed, 1 / strata[full[task] == label].value_counts().max())
            if not (part[task] == label).any():
                missing.append(f"{task}={label!r}")
    if missing:
        lacks = f"0 training rows (of {len(full)})" if part.empty else f"no training rows with {', '.join(missing)}"
        raise ValueError(f"train_fraction={fraction} leaves {lacks}; raise it to at least {needed:.3g}.")


def read_checkpoint(path: Path) -> dict:
    """A checkpoint's tensors and numbers (no pickled code), or one error if the file is damaged."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as err:
        raise ValueError(
            f"{path} cannot be read ({type(err).__name__}): it is truncated or corrupt, perhaps from a full disk. "
            "Start the run again with --overwrite (overwrite=True)."
        ) from err
    if not isinstance(state, dict) or not {"config", "data", "epoch", "model"} <= state.keys():
        raise ValueError(
            f"{path} does not record the run's settings (an older mtlib wrote it, or another program), so "
            "it cannot be checked against this run. Start the run again with --overwrite (overwrite=True)."
        )
    return state


def check_run_folder(config: TrainConfig, data_sha256: str) -> dict | None:
    """The checkpoint to resume from, or ``None`` for a new run; one folder never mixes two runs.

    A new run into a folder holding another is refused unless ``overwrite``; ``resume`` needs a
    checkpoint written with the same settings and the same data.
    """
    out = Path(config.output_dir)
    if not config.resume:
        found = [name for name in RUN_FILES if (out / name).exists()]
        if found and not config.overwrite:
            raise ValueError(
                f"output_dir={str(out)!r} already holds a run ({', '.join(found)}). Pass --resume (resume=True) "
                "to continue it, --overwrite (overwrite=True) to replace it, or choose another output_dir."
            )
        return None
    checkpoint = out / CHECKPOINT_FILE
    if not checkpoint.is_file():
        raise FileNotFoundError(
            f"resume=True but {checkpoint} does not exist: no finished epoch to resume in {out}. "
            "Train without --resume (with --overwrite if the folder holds an older run)."
        )
    if not (out / "metrics.csv").is_file():
        raise FileNotFoundError(f"{out / 'metrics.csv'} is missing, so the run cannot be continued; use --overwrite.")
    state = read_checkpoint(checkpoint)
    old, new = state["config"], run_settings(config)
    changed = [k for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)]
    changes = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed]
    if state["data"]["sha256"] != data_sha256:
        changes.append(
            f"data: {state['data']['path']!r} -> {config.data!r} "
            f"(sha256 {state['data']['sha256'][:12]}... -> {data_sha256[:12]}...)"
        )
    if changes:
        raise ValueError(
            f"resume=True but the run in {out} was started with other settings: {'; '.join(changes)}. "
            "Resume with the original settings, or start a new run (--overwrite or another output_dir)."
        )
    return state


def get_dataloaders(
    model: MultiTaskModel, splits: dict[str, pd.DataFrame], config: TrainConfig, *, cache: bool
) -> tuple[dict[str, DataLoader], DataLoader]:
    """Training loaders (one per task, or a single ``joint`` one) and the validation loader.

    With ``cache``, the frozen encoder embeds every sentence once and the loaders carry vectors.
    """
    collate = Collator(model.encoder.tokenizer, model.encoder.max_length, pad_to_max_length=config.pad_to_max_length)
    def embed(frame: pd.DataFrame) -> torch.Tensor | None:
        if not cache:
            return None
        return model.encoder.encode(frame["text"].tolist(), batch_size=128, show_progress=config.progress)

    train = splits["train"]
    if config.sampling == "joint":
        per_task = {"joint": train}
    else:
        per_task = {task: train[train[task].notna()][["text", task]] for task in model.tasks if task in train}
    train_loaders = {}
    for name, frame in per_task.items():
        batches = LengthGroupedBatches(frame["text"].str.len().tolist(), config.batch_size, seed=config.seed)
        dataset = SentenceDataset(frame, model.tasks if name == "joint" else {name: model.tasks[name]}, embed(frame))
        train_loaders[name] = DataLoader(dataset, batch_sampler=batches, collate_fn=collate)
    validation = SentenceDataset(splits["validation"], model.tasks, embed(splits["validation"]))
    return train_loaders, DataLoader(validation, batch_size=128, collate_fn=collate)


def task_schedule(sizes: dict[str, int], sampling: str, *, temperature: float, rng: np.random.Generator) -> list[str]:
    """Which task's loader feeds each step of an epoch of ``sum(sizes)`` steps.

    ``round_robin`` takes tasks in turn until each runs out; ``proportional`` shuffles every
    task's batches together; ``temperature`` draws with probability ``size ** (1 / T)``
    (T=1 is proportional, large T is uniform), restarting a task's loader when it runs out.
    """
    tasks = list(sizes)
    if sampling in ("joint", "round_robin"):
        rounds = [[t for t in tasks if sizes[t] > r] for r in range(max(sizes.values()))]
        return [t for round_ in rounds for t in round_]
    if sampling == "proportional":
        return [tasks[i] for i in rng.permutation(np.repeat(np.arange(len(tasks)), [sizes[t] for t in tasks]))]
    p = np.array([sizes[t] for t in tasks], dtype=float) ** (1 / temperature)
    return [tasks[i] for i in rng.choice(len(tasks), size=sum(sizes.values()), p=p / p.sum())]


def endless(loader: DataLoader) -> Iterator[dict]:
    while True:
        yield from loader


def compute_losses(logits: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-task masked loss for the tasks that have at least one label in this batch."""
    losses = {}
    for task, task_logits in logits.items():
        if f"labels_{task}" in batch:
            loss = masked_cross_entropy(task_logits, batch[f"labels_{task}"])
            if loss is not None:
                losses[task] = loss
    return losses


@torch.no_grad()
def evaluate_loader(model, loader: DataLoader, tasks: dict[str, list[str]], accelerator: Accelerator) -> dict:
    """Loss, accuracy and macro-F1 per task over a whole split, each row counted once across processes."""
    model.eval()
    outputs: dict[str, list[torch.Tensor]] = {task: [] for task in tasks}
    for batch in loader:
        logits = model(**batch)
        for task in tasks:
            labels = batch[f"labels_{task}"]
            row_loss = torch.nn.functional.cross_entropy(logits[task].float(), labels.clamp(min=0), reduction="none")
            # gather_for_metrics drops the rows duplicated to even out the last batch across processes.
            outputs[task].append(torch.stack([labels, logits[task].argmax(-1), row_loss], dim=1).cpu())
            outputs[task][-1] = accelerator.gather_for_metrics(outputs[task][-1].to(accelerator.device)).cpu()
    results = {}
    for task, labels in tasks.items():
        y_true, y_pred, row_loss = torch.cat(outputs[task]).T
        has_label = y_true >= 0
        metrics = task_metrics(y_true.long().tolist(), y_pred.long().tolist(), labels)
        results[task] = {"loss": float(row_loss[has_label].mean()) if has_label.any() else float("nan"), **metrics}
    return results


def train(config: TrainConfig, accelerator: Accelerator | None = None) -> tuple[MultiTaskModel, dict]:
    """Train, early-stop on mean validation macro-F1, test the best weights once, and save.

    Writes ``metrics.csv`` (one row per epoch, split and task), ``test_metrics.json``,
    ``model/`` and ``checkpoint.pt`` to ``config.output_dir``. Every setting, the data and the
    output folder are checked before the model is built; a task without labels in the data is left out.

    Returns:
        The model with the best weights, and its test metrics per task (empty outside the main process).
    """
    config.validate()
    if accelerator is None:
        accelerator = Accelerator(mixed_precision=resolve_mixed_precision(config.mixed_precision))
    out = Path(config.output_dir)
    checkpoint_path, metrics_path = out / CHECKPOINT_FILE, out / "metrics.csv"

    # 1) data: the same seeded split in every process, checked before anything is written
    frame = load_dataset(config.data, config.tasks)
    splits = split_dataset(frame, seed=config.seed)
    labelled = check_splits(splits, config.data)
    tasks = {task: labels for task, labels in config.tasks.items() if task in labelled}
    if unlabelled := [task for task in frame.columns if task != "text" and task not in tasks]:
        warnings.warn(f"{config.data}: no labels in column(s) {unlabelled}; training {list(tasks)} only.", stacklevel=2)
    full_train = splits["train"]
    splits["train"] = subsample(full_train, config.train_fraction, config.seed)
    check_subsample(full_train, splits["train"], config.train_fraction, list(tasks))
    data_sha256 = sha256_of(config.data)
    state = check_run_folder(config, data_sha256)
    accelerator.wait_for_everyone()  # every process has checked the folder before the main one changes it
    if accelerator.is_main_process:
        if config.overwrite:
            for path in (out / name for name in RUN_FILES):
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink(missing_ok=True)
        out.mkdir(parents=True, exist_ok=True)

    # 2) model, built after seeding so the seed also fixes the heads' initial weights
    set_seed(config.seed)
    model = build_model(config, accelerator.device, tasks)
    freeze(model, config.freeze)
    pretrained = encoder_state(model.encoder) if config.wise_alpha < 1 else None
    if config.linear_probe:
        fit_linear_probe(model, splits["train"])
    if config.gradual_unfreeze:
        if accelerator.num_processes > 1:
            raise ValueError(
                "gradual_unfreeze changes which parameters train mid-run, which DDP cannot follow; "
                "run it in one process."
            )
        gradual_unfreeze(model, 0, every=config.gradual_unfreeze)
    # a frozen encoder gives the same vector for a sentence every epoch: compute them once
    cache = config.cache_embeddings and encoder_is_frozen(model) and not config.gradual_unfreeze
    train_loaders, val_loader = get_dataloaders(model, splits, config, cache=cache)
    batch_samplers = {name: loader.batch_sampler for name, loader in train_loaders.items()}

    # 3) loss weighting, optimizer and schedule
    weights = {t: w for t, w in config.task_weights.items() if t in tasks} if config.task_weights else None
    criterion = MultiTaskLoss(list(tasks), weighting=config.loss_weighting, weights=weights)
    groups = layerwise_param_groups(model, config.lr, decay=config.layer_lr_decay, weight_decay=config.weight_decay)
    head_params = {id(p) for p in model.heads.parameters()}
    for group in groups:
        if config.head_lr and all(id(p) in head_params for p in group["params"]):
            group["lr"] = config.head_lr
    if config.gradual_unfreeze == 0:  # frozen parameters need no optimizer state
        groups = [g | {"params": [p for p in g["params"] if p.requires_grad]} for g in groups]
        groups = [g for g in groups if g["params"]]
    if criterion.log_vars is not None:
        groups.append({"params": [criterion.log_vars], "lr": config.lr, "weight_decay": 0.0})
    trains = bool(groups)
    # counted before sharding: Accelerate steps a prepared scheduler once per process at every step
    steps_per_epoch = sum(len(b) for b in batch_samplers.values())
    optimizer = torch.optim.AdamW(groups) if trains else None
    scheduler = (
        get_linear_schedule_with_warmup(
            optimizer, int(config.warmup_ratio * steps_per_epoch * config.epochs), steps_per_epoch * config.epochs
        )
        if trains
        else None
    )

    # 4) one prepare call wraps model, optimizer and loaders for the device and the processes
    names = list(train_loaders)
    if trains:
        model, optimizer, scheduler, val_loader, *loaders = accelerator.prepare(
            model, optimizer, scheduler, val_loader, *train_loaders.values()
        )
    else:  # nothing trains (freeze="all"): there are no gradients to synchronise
        model = model.to(accelerator.device)
        val_loader, *loaders = accelerator.prepare(val_loader, *train_loaders.values())
    train_loaders = dict(zip(names, loaders, strict=True))
    raw_model = accelerator.unwrap_model(model)
    criterion.to(accelerator.device)

    # 5) resume: weights, optimizer, schedule and early-stopping state of the last finished epoch
    start_epoch, best_score, best_state, bad_epochs = 0, -1.0, None, 0
    if state is not None:  # read and checked against this run's settings and data in step 1
        raw_model.load_state_dict(state["model"])
        criterion.load_state_dict(state["criterion"])
        if trains:
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
        start_epoch, best_score, best_state, bad_epochs = (
            state["epoch"] + 1,
            state["best_score"],
            state["best_model"],
            state["bad_epochs"],
        )
        if accelerator.is_main_process:  # drop rows of an epoch that was cut short
            kept = pd.read_csv(metrics_path)
            kept[kept["epoch"] < start_epoch].to_csv(metrics_path, index=False)
    elif accelerator.is_main_process:
        pd.DataFrame(columns=METRICS_COLUMNS).to_csv(metrics_path, index=False)

    for epoch in range(start_epoch, config.epochs):
        if bad_epochs >= config.patience:
            break
        started = time.perf_counter()
        # the epoch, not the run so far, fixes shuffling and dropout: a resumed run repeats an unbroken one
        set_seed(config.seed + epoch)
        for sampler in batch_samplers.values():
            sampler.set_epoch(epoch)
        if config.gradual_unfreeze:
            gradual_unfreeze(raw_model, epoch, every=config.gradual_unfreeze)
        model.train()
        if encoder_is_frozen(raw_model):
            raw_model.encoder.eval()  # a frozen encoder should not apply dropout either

        # 6) the training epoch
        sizes = {name: len(loader) for name, loader in train_loaders.items()}
        schedule = task_schedule(
            sizes, config.sampling, temperature=config.temperature, rng=np.random.default_rng([config.seed, epoch])
        )
        iterators = {name: endless(loader) for name, loader in train_loaders.items()}
        loss_sum = torch.zeros(len(tasks), device=accelerator.device)
        loss_count = torch.zeros(len(tasks), device=accelerator.device)
        for name in tqdm(
            schedule, desc=f"epoch {epoch}", disable=not (config.progress and accelerator.is_main_process)
        ):
            batch = next(iterators[name])
            if not trains:
                continue
            losses = compute_losses(model(**batch), batch)
            loss = criterion(losses)
            accelerator.backward(loss)
            if criterion.log_vars is not None and criterion.log_vars.grad is not None:
                # the loss weights live outside DDP: average their gradient across processes by hand
                criterion.log_vars.grad = accelerator.reduce(criterion.log_vars.grad, reduction="mean")
            if config.max_grad_norm:
                accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            for i, task in enumerate(tasks):
                if task in losses:
                    loss_sum[i] += losses[task].detach()
                    loss_count[i] += 1
        loss_sum, loss_count = accelerator.reduce(loss_sum), accelerator.reduce(loss_count)

        # 7) validation, one CSV row per split and task, flushed as written
        val = evaluate_loader(model, val_loader, tasks, accelerator)
        seconds = time.perf_counter() - started
        lr = max(scheduler.get_last_lr()) if trains else 0.0  # the heads' rate when layer rates differ
        trainable = count_trainable(raw_model)
        rows = [
            [
                epoch,
                "train",
                task,
                float(loss_sum[i] / loss_count[i]) if loss_count[i] else float("nan"),
                None,
                None,
                None,
                lr,
                seconds,
                trainable,
            ]
            for i, task in enumerate(tasks)
        ]
        rows += [
            [epoch, "validation", task, m["loss"], m["accuracy"], m["macro_f1"], m["n"], lr, seconds, trainable]
            for task, m in val.items()
        ]
        if accelerator.is_main_process:
            with open(metrics_path, "a", newline="") as f:
                writer = csv.writer(f)
                for row in rows:
                    writer.writerow(row)
                    f.flush()

        # 8) early stopping on mean validation macro-F1, keeping the best weights
        score = float(np.mean([m["macro_f1"] for m in val.values()]))
        if score > best_score:
            best_score, bad_epochs = score, 0
            best_state = {k: v.detach().cpu().clone() for k, v in raw_model.state_dict().items()}
        else:
            bad_epochs += 1
        if accelerator.is_main_process:
            save_checkpoint(
                checkpoint_path,
                {
                    "model": raw_model.state_dict(),
                    "criterion": criterion.state_dict(),
                    "optimizer": optimizer.state_dict() if trains else {},
                    "scheduler": scheduler.state_dict() if trains else {},
                    "epoch": epoch,
                    "best_score": best_score,
                    "best_model": best_state,
                    "bad_epochs": bad_epochs,
                    "config": run_settings(config),
                    "data": {"path": config.data, "sha256": data_sha256},
                },
            )
        accelerator.wait_for_everyone()

    # 9) the test split, once, with the best weights (moved towards the pretrained encoder for WiSE-FT)
    if best_state is not None:
        raw_model.load_state_dict(best_state)
    if pretrained is not None:
        interpolate_encoder(raw_model, pretrained, config.wise_alpha)
    test = {}
    if accelerator.is_main_process:
        test = evaluate_frame(raw_model, splits["test"])
        (out / "test_metrics.json").write_text(json.dumps(test, indent=2) + "\n")
        raw_model.save(out / "model")
        (out / "train_config.json").write_text(json.dumps(asdict(config), indent=2) + "\n")
    accelerator.wait_for_everyone()
    return raw_model, test


def save_checkpoint(path: Path, state: dict) -> None:
    """Write to a temporary file, then rename: a run killed mid-write leaves the old checkpoint intact."""
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
