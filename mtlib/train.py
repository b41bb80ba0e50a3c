"""Task 4: the multi-task training loop on Hugging Face Accelerate, in named steps read top to bottom.

The same code runs on a CPU, on one GPU (bf16 autocast where supported) and on several processes
through ``accelerate launch`` or ``torchrun``. Walked through in ``notebooks/04_training_loop.ipynb``.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from mtlib.backbone import sha256_of
from mtlib.checkpoint import (
    POINTER_FILE,
    RUN_FILES,
    check_run_folder,
    load_checkpoint,
    naming_a_full_disk,
    one_run_per_folder,
    read_pointer,
    run_settings,
    save_checkpoint,
)
from mtlib.config import ModelConfig, TrainConfig
from mtlib.data import (
    check_splits,
    check_subsample,
    endless,
    get_dataloaders,
    load_dataset,
    split_dataset,
    subsample,
    task_schedule,
)
from mtlib.evaluate import evaluate_loader
from mtlib.freezing import count_trainable, encoder_is_frozen, freeze, gradual_unfreeze, layerwise_param_groups
from mtlib.losses import MultiTaskLoss, compute_losses
from mtlib.model import MultiTaskModel
from mtlib.precision import accelerator_precision, make_accelerator
from mtlib.transfer import encoder_state, fit_linear_probe, interpolate_encoder

__all__ = ["ModelConfig", "TrainConfig", "build_model", "train", "train_one_epoch"]
METRICS_COLUMNS = ["epoch", "split", "task", "loss", "accuracy", "macro_f1", "n", "lr", "seconds", "trainable_params"]


def build_model(
    config: TrainConfig, device: torch.device | str | None = None, tasks: dict[str, list[str]] | None = None
) -> MultiTaskModel:
    """A fresh model for ``config.model``; ``tasks`` (default: its tasks) picks the heads."""
    model_config = config.model if tasks is None else dataclasses.replace(config.model, tasks=tasks)
    return MultiTaskModel.from_config(model_config, device=device)


def load_splits(config: TrainConfig) -> tuple[dict[str, pd.DataFrame], dict[str, list[str]]]:
    """The seeded split (identical in every process) and the tasks with labels, checked before anything is written."""
    frame = load_dataset(config.data, config.model.tasks)
    splits = split_dataset(frame, seed=config.seed)
    labelled = check_splits(splits, config.data)
    tasks = {task: labels for task, labels in config.model.tasks.items() if task in labelled}
    if unlabelled := [task for task in frame.columns if task != "text" and task not in tasks]:
        warnings.warn(f"{config.data}: no labels in column(s) {unlabelled}; training {list(tasks)} only.", stacklevel=3)
    full_train = splits["train"]
    splits["train"] = subsample(full_train, config.train_fraction, config.seed)
    check_subsample(full_train, splits["train"], config.train_fraction, list(tasks))
    return splits, tasks


def build_and_freeze(
    config: TrainConfig, tasks: dict[str, list[str]], train_rows: pd.DataFrame, accelerator: Accelerator
) -> tuple[MultiTaskModel, dict[str, torch.Tensor] | None]:
    """The model with its freezing and linear probe applied, and the pretrained encoder's weights for WiSE-FT."""
    if config.gradual_unfreeze and accelerator.num_processes > 1:
        raise ValueError("gradual_unfreeze changes which parameters train mid-run, which DDP cannot follow; "
                         "run it in one process.")
    model = build_model(config, accelerator.device, tasks)
    freeze(model, config.freeze)
    pretrained = encoder_state(model.encoder) if config.wise_alpha < 1 else None
    if config.linear_probe:
        fit_linear_probe(model, train_rows)
    return model, pretrained


def start_run_folder(config: TrainConfig, accelerator: Accelerator) -> None:
    """Empty the folder of an overwritten run and create it, once every process has checked it."""
    accelerator.wait_for_everyone()
    out = Path(config.output_dir)
    if accelerator.is_main_process:
        if config.overwrite:
            for path in (out / name for name in RUN_FILES):
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink(missing_ok=True)
        out.mkdir(parents=True, exist_ok=True)


def build_optimizer(
    model: MultiTaskModel, criterion: MultiTaskLoss, config: TrainConfig, steps_per_epoch: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW over every parameter (frozen ones get no state) and a linear warm-up then decay.

    The heads and the learned loss weights are fresh, so they get ``head_lr`` (the loss weights ``log_var_lr``
    when set: Adam moves a parameter by about its rate per step, so a log-variance needs a larger one to
    travel far in a short run); the encoder gets ``lr``, shrinking layer by layer with ``layer_lr_decay``.
    """
    head_lr = config.head_lr or config.lr
    groups = layerwise_param_groups(
        model, config.lr, decay=config.layer_lr_decay, weight_decay=config.weight_decay, head_lr=head_lr
    )
    if criterion.log_vars is not None:
        groups.append({"params": [criterion.log_vars], "lr": config.log_var_lr or head_lr, "weight_decay": 0.0})
    optimizer = torch.optim.AdamW(groups)
    total = steps_per_epoch * config.epochs
    return optimizer, get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total), total)


class EarlyStopping:
    """The best mean validation macro-F1 so far, its weights and the epochs since; checkpointed with the run
    (the counters in ``checkpoint.json``, the weights in a safetensors file)."""

    def __init__(self, patience: int) -> None:
        self.patience, self.best_score, self.best_state, self.bad_epochs = patience, -1.0, None, 0

    @property
    def stop(self) -> bool:
        return self.bad_epochs >= self.patience

    def update(self, score: float, model: torch.nn.Module) -> None:
        if score > self.best_score:
            self.best_score, self.bad_epochs = score, 0
            self.best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        else:
            self.bad_epochs += 1

    def counters(self) -> dict:
        return {"best_score": self.best_score, "bad_epochs": self.bad_epochs}


def run_state(stopper: EarlyStopping, criterion: MultiTaskLoss) -> dict[str, torch.Tensor]:
    """The tensors a resumed run needs beside Accelerate's state: the best weights and the learned loss weights."""
    state = {f"best.{name}": t for name, t in (stopper.best_state or {}).items()}
    return state | {f"criterion.{name}": t for name, t in criterion.state_dict().items()}


def resume_run(
    accelerator: Accelerator, checkpoint: Path | None, metrics_path: Path, stopper: EarlyStopping,
    criterion: MultiTaskLoss,
) -> int:
    """Load the checkpoint of a resumed run (or start an empty log); returns the first epoch to train."""
    start_epoch = 0
    if checkpoint is not None:
        state = load_checkpoint(accelerator, checkpoint)
        counters = read_pointer(checkpoint.parent.parent / POINTER_FILE)["early_stopping"]
        stopper.best_score, stopper.bad_epochs = counters["best_score"], counters["bad_epochs"]
        stopper.best_state = {k.removeprefix("best."): v for k, v in state.items() if k.startswith("best.")} or None
        criterion.load_state_dict({k.removeprefix("criterion."): v.to(accelerator.device)
                                   for k, v in state.items() if k.startswith("criterion.")})
        start_epoch = int(checkpoint.name.removeprefix("epoch-")) + 1
    if accelerator.is_main_process:  # drop rows of an epoch that was cut short
        # n stays an integer column (empty on training rows), as log_epoch wrote it
        log = pd.read_csv(metrics_path, dtype={"n": "Int64"}) if checkpoint else pd.DataFrame(columns=METRICS_COLUMNS)
        log[log["epoch"] < start_epoch].to_csv(metrics_path, index=False)
    return start_epoch


def train_one_epoch(
    model: torch.nn.Module,
    loaders: dict[str, DataLoader],
    schedule: list[str],
    criterion: MultiTaskLoss,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    accelerator: Accelerator,
    *,
    max_grad_norm: float = 1.0,
    desc: str = "",
    progress: bool = True,
) -> dict[str, float]:
    """One optimizer step per entry of ``schedule`` (the loader each batch comes from).

    Returns:
        Each task's mean training loss over the batches that carried its labels, across processes.
    """
    iterators = {name: endless(loader) for name, loader in loaders.items()}
    loss_sum = torch.zeros(len(criterion.tasks), device=accelerator.device)
    loss_count = torch.zeros(len(criterion.tasks), device=accelerator.device)
    for name in tqdm(schedule, desc=desc, disable=not (progress and accelerator.is_main_process)):
        batch = next(iterators[name])
        losses = compute_losses(model(**batch), batch)
        loss = criterion(losses)
        if torch.is_tensor(loss) and loss.requires_grad:  # nothing to step when every parameter is frozen
            accelerator.backward(loss)
            if criterion.log_vars is not None and criterion.log_vars.grad is not None:
                # the loss weights live outside DDP: average their gradient across processes by hand
                criterion.log_vars.grad = accelerator.reduce(criterion.log_vars.grad, reduction="mean")
            if max_grad_norm:
                accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        for i, task in enumerate(criterion.tasks):
            if task in losses:
                loss_sum[i] += losses[task].detach()
                loss_count[i] += 1
    loss_sum, loss_count = accelerator.reduce(loss_sum), accelerator.reduce(loss_count)
    return {
        task: float(loss_sum[i] / loss_count[i]) if loss_count[i] else float("nan")
        for i, task in enumerate(criterion.tasks)
    }


def log_epoch(path: Path, epoch: int, train_loss: dict[str, float], validation: dict[str, dict], **common) -> None:
    """Append one CSV row per split and task; ``common`` (lr, seconds, trainable_params) repeats on each row."""
    tail = [common["lr"], common["seconds"], common["trainable_params"]]
    rows = [[epoch, "train", task, loss, None, None, None, *tail] for task, loss in train_loss.items()]
    rows += [
        [epoch, "validation", task, m["loss"], m["accuracy"], m["macro_f1"], m["n"], *tail]
        for task, m in validation.items()
    ]
    with open(path, "a", newline="") as f:
        csv.writer(f).writerows(rows)


@one_run_per_folder
def train(config: TrainConfig, accelerator: Accelerator | None = None) -> tuple[MultiTaskModel, dict]:
    """Train, early-stop on mean validation macro-F1, test the best weights once, and save.

    Writes ``metrics.csv`` (one row per epoch, split and task), ``test_metrics.json``, ``model/``
    (with its model card), ``train_config.json`` and the checkpoint to ``config.output_dir``, which no
    other run may write meanwhile. Every setting, the data and the output folder are checked before the
    model is built; a task without labels in the data is left out.

    Returns:
        The model with the best weights, and its test metrics per task (empty outside the main process).
    """
    config.validate()
    accelerator = accelerator or make_accelerator(config.mixed_precision)
    out = Path(config.output_dir)
    metrics_path = out / "metrics.csv"

    # 1) data and output folder, checked before anything is written
    splits, tasks = load_splits(config)
    data = {"path": config.data, "sha256": sha256_of(config.data)}
    resume_from = check_run_folder(config, data["sha256"])
    start_run_folder(config, accelerator)

    # 2) model, built after seeding so the seed also fixes the heads' initial weights
    set_seed(config.seed)
    model, pretrained = build_and_freeze(config, tasks, splits["train"], accelerator)
    # a frozen encoder gives the same vector for a sentence every epoch: compute them once
    cache = config.cache_embeddings and encoder_is_frozen(model) and not config.gradual_unfreeze
    train_loaders, eval_loaders = get_dataloaders(
        model, splits, config, cache=cache, precision=accelerator_precision(accelerator)
    )
    samplers = [loader.batch_sampler for loader in train_loaders.values()]

    # 3) loss weighting, optimizer and schedule, counted before sharding (a prepared scheduler steps per process)
    weights = {t: w for t, w in config.task_weights.items() if t in tasks} if config.task_weights else None
    criterion = MultiTaskLoss(list(tasks), weighting=config.loss_weighting, weights=weights)
    optimizer, scheduler = build_optimizer(model, criterion, config, sum(len(s) for s in samplers))

    # 4) one prepare call wraps model, optimizer and loaders for the device and the processes
    names = list(train_loaders)
    model, optimizer, scheduler, val_loader, test_loader, *loaders = accelerator.prepare(
        model, optimizer, scheduler, *eval_loaders.values(), *train_loaders.values()
    )
    train_loaders = dict(zip(names, loaders, strict=True))
    raw_model = accelerator.unwrap_model(model)
    criterion.to(accelerator.device)
    stopper = EarlyStopping(config.patience)

    # 5) resume: the state of the last finished epoch, checked against these settings and data in step 1
    start_epoch = resume_run(accelerator, resume_from, metrics_path, stopper, criterion)

    for epoch in range(start_epoch, config.epochs):
        if stopper.stop:
            break
        started = time.perf_counter()
        # 6) the epoch, not the run so far, fixes shuffling and dropout: a resumed run repeats an unbroken one
        set_seed(config.seed + epoch)
        for sampler in samplers:  # across processes, the sharded loader does not pass set_epoch on to them
            sampler.set_epoch(epoch)
        for loader in train_loaders.values():  # else a prepared loader resets its sampler to its own epoch count,
            loader.set_epoch(epoch)  # which stays 0 when train_one_epoch stops at the last batch
        if config.gradual_unfreeze:
            gradual_unfreeze(raw_model, epoch, every=config.gradual_unfreeze)
        model.train()
        if encoder_is_frozen(raw_model):
            raw_model.encoder.eval()  # a frozen encoder should not apply dropout either
        sizes = {name: len(loader) for name, loader in train_loaders.items()}
        rng = np.random.default_rng([config.seed, epoch])
        schedule = task_schedule(sizes, config.sampling, temperature=config.temperature, rng=rng)
        train_loss = train_one_epoch(
            model, train_loaders, schedule, criterion, optimizer, scheduler, accelerator,
            max_grad_norm=config.max_grad_norm, desc=f"epoch {epoch}", progress=config.progress,
        )

        # 7) validation and the log: one CSV row per split and task
        validation = evaluate_loader(model, val_loader, tasks, accelerator)
        if accelerator.is_main_process:
            log_epoch(
                metrics_path, epoch, train_loss, validation,
                lr=max(scheduler.get_last_lr()),  # the heads' rate when rates differ
                seconds=time.perf_counter() - started, trainable_params=count_trainable(raw_model),
            )

        # 8) early stopping on mean validation macro-F1, then the checkpoint
        stopper.update(float(np.mean([m["macro_f1"] for m in validation.values()])), raw_model)
        record = {"config": run_settings(config), "data": data, "loss_weights": criterion.task_weights(),
                  "early_stopping": stopper.counters()}
        save_checkpoint(accelerator, out, epoch, record, run_state(stopper, criterion))

    # 9) the test split, once, with the best weights (moved towards the pretrained encoder for WiSE-FT)
    if stopper.best_state is not None:
        raw_model.load_state_dict(stopper.best_state)
    if pretrained is not None:
        interpolate_encoder(raw_model, pretrained, config.wise_alpha)
    test = evaluate_loader(model, test_loader, tasks, accelerator, full=True)
    if accelerator.is_main_process:
        (out / "test_metrics.json").write_text(json.dumps(test, indent=2) + "\n")
        training = dataclasses.asdict(config) | {"data_sha256": data["sha256"]}
        with naming_a_full_disk(out / "model", "continue the run with --resume (resume=True)."):
            raw_model.save(out / "model", training=training, evaluations={"test split": test})
        # the settings without the one-time actions: --config of this file repeats the run, but never replaces
        # or resumes a run unless the command says so again
        settings = {k: v for k, v in dataclasses.asdict(config).items() if k not in ("resume", "overwrite")}
        (out / "train_config.json").write_text(json.dumps(settings, indent=2) + "\n")
    accelerator.wait_for_everyone()
    return raw_model, test if accelerator.is_main_process else {}
