"""The two settings objects: ``ModelConfig`` (what is saved with a model) nested in ``TrainConfig``.

Every field is checked when the object is made, so a bad value fails before any data is read;
the command line is generated from these fields and their comments (:mod:`mtlib.cli`). The allowed
values of every choice live here, as ``Literal`` types, and the modules that act on them import them:
this module imports no other part of mtlib, so reading a config costs no torch import.
Introduced in ``notebooks/04_training_loop.ipynb``.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

DEFAULT_BACKBONE = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_TASKS = {
    "topic": ["Sports", "Business", "Entertainment", "Technology", "Politics"],
    "sentiment": ["Negative", "Neutral", "Positive"],
}
PoolingMode = Literal["mean", "cls", "max", "attention"]
HeadType = Literal["linear", "mlp"]
LossWeighting = Literal["equal", "fixed", "uncertainty"]
Sampling = Literal["joint", "round_robin", "proportional", "temperature"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
Backend = Literal["torch", "onnx"]
Quantization = Literal["int8"]
POOLING_MODES, HEAD_TYPES, LOSS_WEIGHTINGS = get_args(PoolingMode), get_args(HeadType), get_args(LossWeighting)
SAMPLINGS, PRECISIONS = get_args(Sampling), get_args(Precision)
BACKENDS, QUANTIZATIONS = get_args(Backend), get_args(Quantization)
FREEZE_STRATEGIES = ("none", "all", "backbone", "head:<task>", "layers:<k>")


@dataclass
class ModelConfig:
    backbone: str = DEFAULT_BACKBONE  # packaged MiniLM by default; any Hugging Face id or folder
    pooling: PoolingMode = "mean"  # mean | cls | max | attention
    head: HeadType = "linear"  # linear (dropout + linear) | mlp (one hidden layer)
    dropout: float = 0.1  # dropout before each head layer
    max_length: int | None = None  # tokens per sentence; None: what the backbone was trained with
    tasks: dict[str, list[str]] = field(default_factory=lambda: copy.deepcopy(DEFAULT_TASKS))  # task -> labels (JSON)

    def __post_init__(self) -> None:
        check(self, {
            "backbone": (is_text, "a Hugging Face id, an alias such as 'minilm', or a folder"),
            "pooling": (lambda v: v in POOLING_MODES, f"one of {POOLING_MODES}"),
            "head": (lambda v: v in HEAD_TYPES, f"one of {HEAD_TYPES}"),
            "dropout": (lambda v: is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
            "max_length": (lambda v: v is None or is_int(v) and v >= 1, "a positive integer, or None"),
            "tasks": (valid_tasks, "a non-empty dict of task name -> two or more distinct label names"),
        })
        self.tasks = {task: list(labels) for task, labels in self.tasks.items()}


@dataclass
class TrainConfig:
    data: str = "data/sentences.csv"  # CSV with a text column and one column per task
    output_dir: str = "runs/default"  # metrics.csv, test_metrics.json, model/ and the checkpoint go here
    model: ModelConfig = field(default_factory=ModelConfig)  # backbone, pooling, heads and tasks
    pad_to_max_length: bool = False  # pad every batch to max_length instead of its longest sentence (slower)
    freeze: str = "none"  # none | all | backbone | head:<task> | layers:<k>
    gradual_unfreeze: int = 0  # > 0: unfreeze one more layer from the top every this many epochs (ULMFiT)
    layer_lr_decay: float = 1.0  # < 1: each lower layer's learning rate is multiplied by this once more
    linear_probe: bool = False  # LP-FT: fit the linear heads on the frozen encoder to convergence before training
    wise_alpha: float = 1.0  # WiSE-FT: the trained encoder's share when averaged with the pretrained one; 1 = off
    epochs: int = 4  # passes over the training split
    batch_size: int = 32  # sentences per step (per process)
    lr: float = 1e-4  # peak learning rate of AdamW for the encoder
    head_lr: float | None = 1e-3  # learning rate of the heads and loss weights (fresh, so faster); None: lr
    log_var_lr: float | None = None  # learning rate of the uncertainty weights' log-variances; None: head_lr
    weight_decay: float = 0.01  # AdamW decoupled weight decay, not on biases and LayerNorm
    warmup_ratio: float = 0.1  # share of steps with linearly rising learning rate, then linear decay to 0
    max_grad_norm: float = 1.0  # gradient clipping; 0: off
    loss_weighting: LossWeighting = "equal"  # equal | fixed | uncertainty
    task_weights: dict[str, float] | None = None  # per-task weights (JSON) for loss_weighting="fixed"
    sampling: Sampling = "joint"  # joint: rows carry every label; else per-task batches mixed by this rule
    temperature: float = 2.0  # sampling="temperature": task probability proportional to size ** (1 / T)
    patience: int = 2  # stop after this many epochs without a better mean validation macro-F1
    seed: int = 0  # data split, initialisation, shuffling and dropout
    train_fraction: float = 1.0  # < 1: train on a seeded, stratified subset of the training split
    cache_embeddings: bool = True  # with a frozen encoder, embed each sentence once and train the heads on that
    mixed_precision: Precision = "auto"  # auto: bf16 on a GPU that supports it, else fp32 | fp32 | bf16 | fp16
    resume: bool = False  # continue the run in output_dir from its last finished epoch
    progress: bool = True  # tqdm progress bars
    overwrite: bool = False  # replace a run already in output_dir; without it a new run there is refused

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):  # read back from train_config.json or a --config file
            self.model = ModelConfig(**self.model)
        self.validate()

    def validate(self) -> None:
        """Check every field (again: a field may have been changed since the object was made)."""
        tasks = list(self.model.tasks) if isinstance(self.model, ModelConfig) else []
        positive_int = (lambda v: is_int(v) and v >= 1, "a positive integer")
        check(self, {
            "data": (is_text, "the path of a CSV file"),
            "output_dir": (is_text, "a folder path"),
            "model": (lambda v: isinstance(v, ModelConfig), "a ModelConfig"),
            "freeze": (lambda v: valid_freeze(v, tasks), f"one of {FREEZE_STRATEGIES}, with <task> one of {tasks}"),
            "gradual_unfreeze": (lambda v: is_int(v) and v >= 0, "0 (off) or a positive integer"),
            "layer_lr_decay": (lambda v: is_number(v) and 0 < v <= 1, "a number in (0, 1]"),
            "wise_alpha": (lambda v: is_number(v) and 0 <= v <= 1,
                           "a number in [0, 1]: 1 keeps the fine-tuned encoder, 0 the pretrained one"),
            "epochs": positive_int,
            "batch_size": positive_int,
            "lr": (lambda v: is_number(v) and v > 0, "a positive number"),
            "head_lr": (lambda v: v is None or is_number(v) and v > 0, "a positive number, or None for lr"),
            "log_var_lr": (lambda v: v is None or is_number(v) and v > 0, "a positive number, or None for head_lr"),
            "weight_decay": (lambda v: is_number(v) and v >= 0, "a number, 0 or more"),
            "warmup_ratio": (lambda v: is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
            "max_grad_norm": (lambda v: is_number(v) and v >= 0, "0 (off) or a positive number"),
            "loss_weighting": (lambda v: v in LOSS_WEIGHTINGS, f"one of {LOSS_WEIGHTINGS}"),
            "task_weights": (lambda v: valid_weights(v, self.loss_weighting, tasks),
                             f"None, or with loss_weighting='fixed' a weight of 0 or more for each task {tasks}"),
            "sampling": (lambda v: v in SAMPLINGS, f"one of {SAMPLINGS}"),
            "temperature": (lambda v: is_number(v) and v > 0, "a positive number"),
            "patience": positive_int,
            "seed": (lambda v: is_int(v) and v >= 0, "an integer, 0 or more"),
            "train_fraction": (lambda v: is_number(v) and 0 < v <= 1, "a number in (0, 1]"),
            "mixed_precision": (lambda v: v in PRECISIONS, f"one of {PRECISIONS}"),
            **{name: (lambda v: isinstance(v, bool), "True or False") for name in (
                "pad_to_max_length", "linear_probe", "cache_embeddings", "resume", "progress", "overwrite")},
        })
        if self.linear_probe and self.model.head != "linear":
            raise ValueError(f"linear_probe=True needs head='linear', got head={self.model.head!r}; "
                             "use the linear head or turn the linear probe off.")
        if self.gradual_unfreeze and self.freeze != "none":
            raise ValueError(f"gradual_unfreeze={self.gradual_unfreeze} decides which layers train, so it cannot be "
                             f"combined with freeze={self.freeze!r}; keep freeze='none' or set gradual_unfreeze=0.")
        if self.resume and self.overwrite:
            raise ValueError(
                "resume=True and overwrite=True: resume continues the run in output_dir, overwrite replaces it; "
                "pass one of them."
            )


def check(config: Any, rules: dict[str, tuple]) -> None:
    """Raise naming the first field whose value breaks its rule, the valid range and the default."""
    defaults = {f.name: f for f in dataclasses.fields(config)}
    for name, (ok, expected) in rules.items():
        value = getattr(config, name)
        if not ok(value):
            default = defaults[name].default
            if default is dataclasses.MISSING:
                default = defaults[name].default_factory()
            raise ValueError(
                f"{name}={value!r} is not valid: it should be {expected}. "
                f"Set {name} (--{name.replace('_', '-')}) to such a value, e.g. the default {default!r}."
            )


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite int or float: NaN and infinity are refused like any other value out of range."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def is_text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def valid_tasks(tasks: Any) -> bool:
    return isinstance(tasks, dict) and bool(tasks) and all(
        isinstance(labels, list | tuple) and len(labels) >= 2 and len(set(labels)) == len(labels)
        and all(is_text(label) for label in labels)
        for labels in tasks.values()
    )


def valid_freeze(strategy: Any, tasks: list[str]) -> bool:
    if not isinstance(strategy, str):
        return False
    kind, _, arg = strategy.partition(":")
    return strategy in ("none", "all", "backbone") or (kind == "head" and arg in tasks) or (
        kind == "layers" and arg.isdigit())


def valid_weights(weights: Any, weighting: str, tasks: list[str]) -> bool:
    if weights is None:
        return weighting != "fixed"
    return weighting == "fixed" and isinstance(weights, dict) and set(weights) == set(tasks) and all(
        is_number(w) and w >= 0 for w in weights.values())
