"""Loading, validating and splitting labelled sentences, and batching them with dynamic padding.

A data file is a UTF-8 CSV with a ``text`` column and any subset of the task columns. An empty
label cell means "no label for this task": that row trains only the other tasks.
Introduced in ``notebooks/04_training_loop.ipynb``.
"""

from __future__ import annotations

import csv
import io
import itertools
import re
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset
from transformers import PreTrainedTokenizerBase

if TYPE_CHECKING:
    from mtlib.config import TrainConfig
    from mtlib.model import MultiTaskModel

IGNORE_INDEX = -100  # label id of a missing label; cross_entropy skips it
SPLITS = ("train", "validation", "test")
EVAL_BATCH_SIZE = 128  # sentences per batch when scoring: validation, test and the evaluate command
SPLIT_FRACTIONS = (0.70, 0.15, 0.15)
OUT_OF_STYLE_HALVES = ("dev", "test")  # the split column of data/out_of_style.csv


class DataError(ValueError):
    """A data file or table that cannot be used; the message says where and how to fix it."""


def load_dataset(source: str | Path | pd.DataFrame, tasks: dict[str, Sequence[str]]) -> pd.DataFrame:
    """Read and validate labelled sentences.

    Args:
        source: A CSV path or a DataFrame with a ``text`` column and at least one task column.
            Other columns are ignored.
        tasks: Allowed labels per task, e.g. ``{"topic": ["Sports", ...]}``.

    Returns:
        A DataFrame with ``text`` and the task columns present; missing labels are NA.

    Raises:
        DataError: naming the file, the row (as a line number of the CSV) and the column.
    """
    if isinstance(source, pd.DataFrame):
        name, frame = "DataFrame", source.copy()
        rows = list(range(len(frame)))  # a DataFrame's rows are named by position
    else:
        name, (frame, rows) = str(source), _read_csv(Path(source))
    if "text" not in frame.columns:
        raise DataError(f"{name}: missing column 'text' (columns found: {list(frame.columns)}).")
    present = [task for task in tasks if task in frame.columns]
    if not present:
        raise DataError(f"{name}: no task column; expected at least one of {list(tasks)}.")
    frame = frame[["text", *present]].reset_index(drop=True)
    if frame.empty:
        raise DataError(f"{name}: no data rows, only the header; add labelled sentences, one a row.")

    for i, text in enumerate(frame["text"]):
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{name}: row {rows[i]}, column 'text': empty text.")
    for task in present:
        allowed = list(tasks[task])
        frame[task] = frame[task].map(lambda v: v.strip() if isinstance(v, str) and v.strip() else None)
        for i, label in enumerate(frame[task]):
            if pd.notna(label) and label not in allowed:
                raise DataError(
                    f"{name}: row {rows[i]}, column {task!r}: unknown label {label!r}; allowed: {allowed}."
                )
    seen: dict[str, int] = {}
    for i, key in enumerate(frame["text"].map(normalize_text)):
        if key in seen:
            raise DataError(
                f"{name}: row {rows[i]}, column 'text': duplicate of row {rows[seen[key]]} "
                "(same text after normalising case, whitespace and punctuation)."
            )
        seen[key] = i
    return frame


def load_half(source: str | Path, tasks: dict[str, Sequence[str]], half: str) -> pd.DataFrame:
    """The rows of a file whose ``split`` column equals ``half``, validated like :func:`load_dataset`.

    ``data/out_of_style.csv`` is never trained on: its ``dev`` half chooses between recipes, its
    ``test`` half is reported.
    """
    frame = load_dataset(source, tasks)
    halves = _read_csv(Path(source))[0].get("split")
    if halves is None:
        raise DataError(f"{source}: no 'split' column to choose rows by (data/out_of_style.csv has one).")
    if half not in set(halves):
        raise DataError(f"{source}: no rows with split={half!r}; values found: {sorted(set(halves))}.")
    return frame[(halves == half).to_numpy()].reset_index(drop=True)


def _read_csv(path: Path) -> tuple[pd.DataFrame, list[int]]:
    """The table, and the CSV line on which each of its rows starts (for error messages)."""
    if not path.is_file():
        raise DataError(f"{path}: no such file.")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataError(
            f"{path}: row {line}: bytes that are not UTF-8 ({raw[err.start : err.end]!r}); save the file as UTF-8."
        ) from None
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise DataError(f"{path}: not a readable CSV ({err}).") from None
    lines = _record_lines(text)
    if len(lines) != len(frame):  # the two parsers disagree: fall back to one line per row
        lines = list(range(2, len(frame) + 2))
    return frame, lines


def _record_lines(text: str) -> list[int]:
    """The line on which each data row starts: a quoted field may span lines, and blank lines are skipped."""
    reader = csv.reader(io.StringIO(text, newline=""))
    starts, end = [], 0
    for record in reader:
        start, end = end + 1, reader.line_num
        if record:  # a blank line is no row, for pandas as for csv
            starts.append(start)
    return starts[1:]  # the first record is the header


def normalize_text(text: str) -> str:
    """Lower case, punctuation removed, whitespace collapsed: the key for duplicate checks."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def split_dataset(
    frame: pd.DataFrame, *, seed: int = 0, fractions: tuple[float, float, float] = SPLIT_FRACTIONS
) -> dict[str, pd.DataFrame]:
    """Seeded split into train, validation and test, stratified on every label column jointly.

    Each stratum (one combination of labels, a missing label counting as its own value) is
    shuffled with NumPy's PCG64 generator, which gives the same stream on every machine,
    and cut so each split is within one row of its fraction. The split is then checked for leaks.

    Example:
        >>> splits = split_dataset(load_dataset("data/sentences.csv", DEFAULT_TASKS), seed=0)
        >>> {name: len(part) for name, part in splits.items()}  # doctest: +SKIP
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(f"fractions={fractions} should be three non-negative numbers that sum to 1.")
    label_columns = [c for c in frame.columns if c != "text"]
    strata = frame[label_columns].fillna("<missing>").astype(str).agg("|".join, axis=1)
    rng = np.random.default_rng(seed)
    parts: dict[str, list[int]] = {name: [] for name in SPLITS}
    for key in sorted(strata.unique()):
        rows = rng.permutation(np.flatnonzero((strata == key).to_numpy()))
        n_val, n_test = round(fractions[1] * len(rows)), round(fractions[2] * len(rows))
        n_train = len(rows) - n_val - n_test
        parts["train"] += rows[:n_train].tolist()
        parts["validation"] += rows[n_train : n_train + n_val].tolist()
        parts["test"] += rows[n_train + n_val :].tolist()
    splits = {name: frame.iloc[sorted(rows)].reset_index(drop=True) for name, rows in parts.items()}
    report = find_leaks(splits)
    if report.exact:
        raise DataError(f"{len(report.exact)} texts appear in two splits, e.g. {report.exact[0]}; remove duplicates.")
    return splits


MIN_ROWS = 4  # the fewest rows of one label combination that leave a row in each of the three splits


def check_splits(splits: dict[str, pd.DataFrame], source: str | Path) -> list[str]:
    """The task columns with labels, after checking each can be trained and scored on this split.

    A column with no label at all is left out (a file may label only some tasks). Raises a
    DataError, naming ``source``, when the file is too small to split, no task has labels, a task
    has a single label, or a label has too few rows to reach every split (the split is stratified).
    """
    rows = sum(len(part) for part in splits.values())
    if rows < MIN_ROWS:
        raise DataError(
            f"{source}: {rows} data row{'s' * (rows != 1)}; training needs at least {MIN_ROWS} to split them "
            "70/15/15 into train, validation and test (and hundreds to learn anything useful)."
        )
    whole = pd.concat(splits.values())
    columns = [c for c in whole.columns if c != "text"]
    tasks = [task for task in columns if whole[task].notna().any()]
    if not tasks:
        raise DataError(f"{source}: no labelled rows: every cell of {columns} is empty; label some sentences.")
    for task in tasks:
        counts = whole[task].value_counts()
        if len(counts) < 2:
            raise DataError(
                f"{source}: column {task!r} has one label only ({counts.index[0]!r}): nothing to learn; "
                "add rows with other labels or empty the column."
            )
        for label, n in counts.items():
            for name, part in splits.items():
                if not (part[task] == label).any():
                    raise DataError(
                        f"{source}: column {task!r}, label {label!r}: {n} row{'s' * (n != 1)}, too few to "
                        f"stratify: none lands in the {name} split. Give every label (and every combination "
                        f"of labels) at least {MIN_ROWS} rows, or remove the rows of this label."
                    )
    return tasks


@dataclass
class LeakReport:
    exact: list[tuple[str, str, str]] = field(default_factory=list)  # (split a, split b, normalised text)
    near: list[tuple[str, str, str, str, float]] = field(default_factory=list)  # (split a, split b, text a, text b, J)


def _trigrams(text: str) -> frozenset[tuple[str, ...]]:
    words = normalize_text(text).split()
    return frozenset(zip(words, words[1:], words[2:], strict=False)) or frozenset([tuple(words)])


def find_leaks(splits: dict[str, pd.DataFrame], *, threshold: float = 0.8) -> LeakReport:
    """Texts shared by two splits after normalisation, and near-duplicates across splits.

    Near-duplicates are pairs whose word-trigram sets have Jaccard similarity >= ``threshold``;
    only pairs that share a trigram are compared, so the check stays fast on thousands of rows.
    """
    report = LeakReport()
    keys = {name: set(part["text"].map(normalize_text)) for name, part in splits.items()}
    for a, b in itertools.combinations(splits, 2):
        report.exact += [(a, b, text) for text in sorted(keys[a] & keys[b])]

    docs = [(name, text, _trigrams(text)) for name, part in splits.items() for text in part["text"]]
    index: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for i, (_, _, grams) in enumerate(docs):
        for gram in grams:
            index[gram].append(i)
    candidates = {(i, j) for ids in index.values() for i, j in itertools.combinations(ids, 2)}
    for i, j in sorted(candidates):
        (split_a, text_a, ga), (split_b, text_b, gb) = docs[i], docs[j]
        if split_a != split_b:
            jaccard = len(ga & gb) / len(ga | gb)
            if jaccard >= threshold:
                report.near.append((split_a, split_b, text_a, text_b, round(jaccard, 3)))
    return report


class SentenceDataset(Dataset):
    """Texts with one label id per task; a missing label is ``IGNORE_INDEX``.

    With ``embeddings`` (one cached sentence vector per row, from a frozen encoder) items carry
    the vector instead of the text, and the heads train without running the encoder.
    """

    def __init__(
        self, frame: pd.DataFrame, tasks: dict[str, Sequence[str]], embeddings: torch.Tensor | None = None
    ) -> None:
        self.texts = frame["text"].tolist()
        self.embeddings = embeddings
        self.labels = {
            task: torch.tensor(
                [
                    IGNORE_INDEX if label is None or label != label else list(labels).index(label)
                    for label in frame[task]
                ]
                if task in frame
                else [IGNORE_INDEX] * len(frame)
            )
            for task, labels in tasks.items()
        }

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> dict:
        inputs = {"text": self.texts[i]} if self.embeddings is None else {"embedding": self.embeddings[i]}
        return inputs | {task: ids[i] for task, ids in self.labels.items()}


class Collator:
    """Tokenise a list of items, padding only to the longest sentence in the batch (dynamic padding).

    ``pad_to_max_length`` pads every batch to ``max_length`` instead, the common fixed-size
    alternative, kept to measure what dynamic padding saves. Items with cached ``embedding``
    vectors are stacked instead.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_length: int, *, pad_to_max_length: bool = False) -> None:
        self.tokenizer, self.max_length = tokenizer, max_length
        self.padding = "max_length" if pad_to_max_length else True

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        if "embedding" in items[0]:
            batch = {"embeddings": torch.stack([item["embedding"] for item in items])}
        else:
            tokens = self.tokenizer(
                [item["text"] for item in items],
                padding=self.padding,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
            batch = {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]}
        for task in sorted(items[0].keys() - {"text", "embedding"}):
            batch[f"labels_{task}"] = torch.stack([item[task] for item in items])
        return batch


class LengthGroupedBatches:
    """Shuffled batches of sentences of similar length, reproducible from ``(seed, epoch)``.

    Shuffle all rows, cut them into pools of ``pool_batches`` batches, sort each pool by length
    and cut it into batches, then shuffle the batches: little padding, still random order.
    Call ``set_epoch`` before each epoch so a resumed run sees the same order as an unbroken one.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, *, seed: int = 0, pool_batches: int = 50) -> None:
        self.lengths, self.batch_size, self.seed, self.pool = list(lengths), batch_size, seed, pool_batches
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.lengths))
        pool_size = self.pool * self.batch_size
        batches = []
        for start in range(0, len(order), pool_size):
            pool = sorted(order[start : start + pool_size], key=lambda i: self.lengths[i])
            batches += [pool[i : i + self.batch_size] for i in range(0, len(pool), self.batch_size)]
        for i in rng.permutation(len(batches)):
            yield [int(j) for j in batches[i]]


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


def get_dataloaders(
    model: MultiTaskModel, splits: dict[str, pd.DataFrame], config: TrainConfig, *, cache: bool, precision: str
) -> tuple[dict[str, DataLoader], dict[str, DataLoader]]:
    """Training loaders (one per task, or a single ``joint`` one) and the validation and test loaders.

    With ``cache``, the frozen encoder embeds every sentence once, in ``precision``, and the loaders carry vectors.
    """
    collate = Collator(model.encoder.tokenizer, model.encoder.max_length, pad_to_max_length=config.pad_to_max_length)

    def dataset(frame: pd.DataFrame, tasks: dict[str, list[str]]) -> SentenceDataset:
        vectors = None
        if cache:
            texts = frame["text"].tolist()
            vectors = model.encoder.encode(texts, batch_size=128, show_progress=config.progress, precision=precision)
        return SentenceDataset(frame, tasks, vectors)

    train = splits["train"]
    if config.sampling == "joint":
        per_task = {"joint": train}
    else:
        per_task = {task: train[train[task].notna()][["text", task]] for task in model.tasks if task in train}
    train_loaders = {}
    for name, frame in per_task.items():
        batches = LengthGroupedBatches(frame["text"].str.len().tolist(), config.batch_size, seed=config.seed)
        tasks = model.tasks if name == "joint" else {name: model.tasks[name]}
        train_loaders[name] = DataLoader(dataset(frame, tasks), batch_sampler=batches, collate_fn=collate)
    eval_loaders = {
        name: DataLoader(dataset(splits[name], model.tasks), batch_size=EVAL_BATCH_SIZE, collate_fn=collate)
        for name in ("validation", "test")
    }
    return train_loaders, eval_loaders


def task_schedule(sizes: dict[str, int], sampling: str, *, temperature: float, rng: np.random.Generator) -> list[str]:
    """Which task's loader feeds each step of an epoch of ``sum(sizes)`` steps.

    ``round_robin`` takes tasks in turn until each runs out; ``proportional`` shuffles every
    task's batches together; ``temperature`` draws with probability ``size ** (1 / T)``
    (T=1 is proportional, large T is uniform), restarting a task's loader when it runs out.
    """
    if not temperature > 0:
        raise ValueError(
            f"temperature={temperature!r} should be a positive number: sampling probabilities are "
            "size ** (1 / temperature); use 1 for proportional sampling, a large value for uniform."
        )
    tasks = list(sizes)
    if sampling in ("joint", "round_robin"):
        rounds = [[t for t in tasks if sizes[t] > r] for r in range(max(sizes.values()))]
        return [t for round_ in rounds for t in round_]
    if sampling == "proportional":
        return [tasks[i] for i in rng.permutation(np.repeat(np.arange(len(tasks)), [sizes[t] for t in tasks]))]
    p = np.array([sizes[t] for t in tasks], dtype=float) ** (1 / temperature)
    return [tasks[i] for i in rng.choice(len(tasks), size=sum(sizes.values()), p=p / p.sum())]


def endless(loader: DataLoader) -> Iterator[dict]:
    """Restart ``loader`` whenever it runs out (a task drawn more often than it has batches)."""
    while True:
        yield from loader
