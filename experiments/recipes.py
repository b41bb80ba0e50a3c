"""Which fine-tuning recipe still works on text written in other styles than the training data?

Every recipe trains with 3 seeds (a seed also draws its own 70/15/15 split) and is scored on the shipped
test split and on both halves of ``data/out_of_style.csv``: ``dev`` chooses the recipe, ``test`` is
reported. A recipe replaces the default only when it is ahead of it on ``dev`` (paired bootstrap, the 95%
interval above 0) on one task and not behind on the other: a difference within the noise moves nothing.
WiSE-FT trains nothing of its own: it interpolates each fine-tuned encoder with the pretrained one. The
baselines are fitted on the same training rows. One JSON file per run lands in
``experiments/results/recipes/``, with each model's predictions for paired comparisons and the sha256 of the
training data; runs on different versions of ``data/sentences.csv`` are kept apart, a table each.

    python experiments/recipes.py                          # every run not done yet, one after the other
    python experiments/recipes.py --shard 0/2 & python experiments/recipes.py --shard 1/2   # two at once
    python experiments/recipes.py --summary                # every table, and results/recipes.csv
    python experiments/recipes.py --readme                 # rewrite README.md's tables from the runs
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from transformers.utils import logging as hf_logging

from mtlib.backbone import sha256_of
from mtlib.baselines import make_classifier
from mtlib.data import load_dataset, load_half, split_dataset
from mtlib.encoder import SentenceEncoder
from mtlib.evaluate import batched_macro_f1, paired_bootstrap, task_metrics
from mtlib.model import DEFAULT_TASKS
from mtlib.train import TrainConfig, train
from mtlib.transfer import encoder_state, interpolate_encoder

DATA, OUT_OF_STYLE = (str(Path(__file__).parents[1] / "data" / name) for name in ("sentences.csv", "out_of_style.csv"))
RESULTS = Path(__file__).parent / "results" / "recipes"
README = Path(__file__).parents[1] / "README.md"
README_MARKERS = ("<!-- recipes: written by python experiments/recipes.py --readme -->", "<!-- recipes: end -->")
OUT_OF_STYLE_SETS = {"out-of-style dev": "dev", "out-of-style test": "test"}  # never trained on
SEEDS = (0, 1, 2)
# The first release's recipe, pinned here so the comparison does not move when TrainConfig's defaults do.
FIRST_RELEASE = {
    "epochs": 4, "lr": 1e-4, "head_lr": None, "freeze": "none", "layer_lr_decay": 1.0, "linear_probe": False,
}
RECIPES = {
    "full fine-tuning": {},
    "LP-FT": {"linear_probe": True, "lr": 5e-5},
    "layer-wise lr decay 0.7": {"layer_lr_decay": 0.7},
    "bottom 3 layers frozen": {"freeze": "layers:3"},
    "2 epochs": {"epochs": 2},
    "heads at lr 1e-3": {"head_lr": 1e-3},
    "heads at lr 1e-3, bf16 autocast": {"head_lr": 1e-3, "mixed_precision": "bf16"},
    "heads at lr 1e-3, 6 epochs": {"head_lr": 1e-3, "epochs": 6},
    "heads at lr 1e-3, encoder at 2e-4": {"head_lr": 1e-3, "lr": 2e-4},
    "heads at lr 1e-3, sentiment loss x2": {
        "head_lr": 1e-3, "loss_weighting": "fixed", "task_weights": {"topic": 1.0, "sentiment": 2.0},
    },
}
# The recipes run on the current data: the default and LP-FT, which notebook 03 compares with it. The others stay
# above for the tables of the earlier versions of the data they ran on.
CURRENT_RECIPES = ("heads at lr 1e-3", "LP-FT")
WISE_FROM = ("full fine-tuning", "LP-FT", "heads at lr 1e-3")  # recipes whose models are also interpolated
WISE_ALPHAS = (0.25, 0.5, 0.75)
BASELINES = {
    "TF-IDF + logistic regression": "tfidf_logreg",
    "frozen embeddings + logistic regression": "embedding_logreg",
}


def evaluation_sets(seed: int) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """The training split of ``seed`` and the three sets every model is scored on."""
    splits = split_dataset(load_dataset(DATA, DEFAULT_TASKS), seed=seed)
    return splits["train"], {"shipped test": splits["test"]} | {
        name: load_half(OUT_OF_STYLE, DEFAULT_TASKS, half) for name, half in OUT_OF_STYLE_SETS.items()
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
    _, sets = evaluation_sets(seed)
    config = TrainConfig(
        data=DATA, output_dir=f"runs/recipes/{slug(name)}/seed{seed}", seed=seed, progress=False, overwrite=True,
        **(FIRST_RELEASE | RECIPES[name]),
    )
    started = time.perf_counter()
    model, _ = train(config)
    seconds = time.perf_counter() - started
    records = [{"recipe": name, "seed": seed, "data": data_version(), "train_seconds": seconds,
                "scores": model_scores(model, sets)}]
    if name in WISE_FROM:
        pretrained = encoder_state(SentenceEncoder.from_pretrained(config.model.backbone))
        fine_tuned = encoder_state(model.encoder)
        for alpha in WISE_ALPHAS:
            model.encoder.load_state_dict(fine_tuned)
            interpolate_encoder(model, pretrained, alpha)
            records.append(
                {"recipe": f"{name} + WiSE-FT {alpha}", "seed": seed, "data": data_version(),
                 "train_seconds": seconds, "scores": model_scores(model, sets)}
            )
    return records


def run_baselines(seed: int) -> list[dict]:
    train_rows, sets = evaluation_sets(seed)
    encoder = SentenceEncoder.from_pretrained(TrainConfig().model.backbone)
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
        records.append({"recipe": name, "seed": seed, "data": data_version(), "train_seconds": None,
                        "scores": scores})
    return records


@functools.cache
def data_version() -> dict:
    """Which ``data/sentences.csv`` a run trained on, and which ``data/out_of_style.csv`` scored it: a change to the
    training file starts a new set of runs. Read once a process: every run of one session sees the same files."""
    return {"sha256": sha256_of(DATA), "rows": len(load_dataset(DATA, DEFAULT_TASKS)),
            "out_of_style_sha256": sha256_of(OUT_OF_STYLE)}


def result_path(name: str, seed: int) -> Path:
    return RESULTS / f"{slug(name)}-seed{seed}-data-{data_version()['sha256'][:8]}.json"


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


def jobs() -> list[tuple[str, int]]:
    return [("baselines", seed) for seed in SEEDS] + [(name, seed) for name in CURRENT_RECIPES for seed in SEEDS]


def recipe_config(name: str) -> dict:
    """The TrainConfig fields a recipe (or a WiSE-FT variant of one) sets."""
    base, _, alpha = name.partition(" + WiSE-FT ")
    return FIRST_RELEASE | RECIPES[base] | {"wise_alpha": float(alpha) if alpha else 1.0}


def default_recipe() -> str:
    """The recipe whose settings are TrainConfig's defaults."""
    names = [*RECIPES, *(f"{base} + WiSE-FT {alpha}" for base in WISE_FROM for alpha in WISE_ALPHAS)]
    defaults = TrainConfig()
    matches = [n for n in names if all(getattr(defaults, k) == v for k, v in recipe_config(n).items())]
    if len(matches) != 1:
        raise ValueError(f"TrainConfig's defaults match {matches}: exactly one recipe should be the default.")
    return matches[0]


def load_records(sha256: str | None = None) -> list[dict]:
    """Every stored run, or only the runs trained on the data with this sha256."""
    records = [record for path in sorted(RESULTS.glob("*.json")) for record in json.loads(path.read_text())]
    return [r for r in records if sha256 in (None, r["data"]["sha256"])]


def score_table(records: list[dict]) -> pd.DataFrame:
    """One row per recipe, seed, evaluation set and task."""
    return pd.DataFrame(
        {"recipe": r["recipe"], "seed": r["seed"], "data_sha256": r["data"]["sha256"], "data_rows": r["data"]["rows"],
         "set": set_name, "task": task, "accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
         "train_seconds": r["train_seconds"]}
        for r in records for set_name, tasks in r["scores"].items() for task, m in tasks.items()
    )


def paired_difference(a: list[dict], b: list[dict], set_name: str, task: str) -> tuple:
    """Macro-F1 of runs ``a`` minus runs ``b`` (seed i against seed i) on the same out-of-style rows, averaged over
    seeds, with a 95% paired-bootstrap interval."""
    labels = DEFAULT_TASKS[task]
    frame = load_half(OUT_OF_STYLE, DEFAULT_TASKS, OUT_OF_STYLE_SETS[set_name])  # the same rows for every seed
    labelled = frame[task].notna().to_numpy()  # a row without this task's label is not scored on it

    def predictions(runs: list[dict]) -> dict[int, list[int]]:
        return {r["seed"]: [int(c) for c in np.array(list(r["scores"][set_name][task]["predictions"]))[labelled]]
                for r in runs}

    ours, theirs = predictions(a), predictions(b)
    seeds = sorted(set(ours) & set(theirs))
    result = paired_bootstrap(
        frame[task][labelled].map(labels.index), [ours[s] for s in seeds], [theirs[s] for s in seeds], len(labels)
    )
    return result["difference"], result["low"], result["high"], result["seeds"]


def runs_of(records: list[dict], name: str) -> list[dict]:
    return [r for r in records if r["recipe"] == name]


def by_register(records: list[dict], names: list[str]) -> str:
    """Out-of-style test per register: topic accuracy (one topic dominates some registers) and sentiment macro-F1."""
    frame = load_half(OUT_OF_STYLE, DEFAULT_TASKS, "test")
    registers = pd.read_csv(OUT_OF_STYLE, dtype=str, keep_default_na=False).query("split == 'test'")["register"]
    rows = []
    for r in (r for r in records if r["recipe"] in names):
        for task, labels in DEFAULT_TASKS.items():
            labelled = frame[task].notna().to_numpy()
            y = frame[task].map(labels.index, na_action="ignore").fillna(-1).astype(int).to_numpy()
            predicted = np.array(list(r["scores"]["out-of-style test"][task]["predictions"]), dtype=int)
            for register in sorted(set(registers)):
                rows_of = (registers == register).to_numpy() & labelled
                score = (
                    batched_macro_f1(y[rows_of], predicted[rows_of], len(labels)) if task == "sentiment"
                    else float((y[rows_of] == predicted[rows_of]).mean())
                )
                label = f"{register} ({(registers == register).sum()})"
                rows.append({"model": r["recipe"], "task": task, "register": label, "score": score})
    table = pd.DataFrame(rows).groupby(["register", "task", "model"])["score"].agg(["mean", "std"])
    text = table.apply(lambda r: f"{r['mean']:.3f} ± {r['std']:.3f}", axis=1).unstack(["task", "model"])
    columns = [("topic", n) for n in names] + [("sentiment", n) for n in names]
    lines = ["| register (rows) | " + " | ".join(f"{'topic accuracy' if t == 'topic' else 'sentiment macro-F1'}, {n}"
                                                for t, n in columns) + " |", "|---|" + "---:|" * len(columns)]
    lines += [f"| {reg} | " + " | ".join(text.loc[reg, c] for c in columns) + " |" for reg in text.index]
    return "\n".join(lines)


def markdown_tables(records: list[dict]) -> str:
    """The tables of each data version the runs trained on, the current ``data/sentences.csv`` first, then what
    changing the data did to the recipes trained on both."""
    current = data_version()["sha256"]
    by_version: dict[str, list[dict]] = {}
    for r in records:
        by_version.setdefault(r["data"]["sha256"], []).append(r)
    order = sorted(by_version, key=lambda sha256: sha256 != current)
    rows = {sha256: runs[0]["data"]["rows"] for sha256, runs in by_version.items()}
    # Predictions can be paired only with the out-of-style file that produced them.
    scored_here = {sha256 for sha256, runs in by_version.items()
                   if runs[0]["data"].get("out_of_style_sha256") == data_version()["out_of_style_sha256"]}
    parts = [
        f"## Trained on {'the current' if sha256 == current else 'an earlier'} data/sentences.csv: {rows[sha256]:,} "
        f"rows, sha256 {sha256[:12]}"
        + ("" if sha256 in scored_here else ", scored on an earlier data/out_of_style.csv")
        + "\n\n" + version_tables(by_version[sha256], paired=sha256 in scored_here)
        for sha256 in order
    ]
    if current in by_version and len(scored_here) > 1:
        lines = ["## The data's effect: a recipe on the current data minus the same recipe on an earlier version", ""]
        for earlier in [sha256 for sha256 in order[1:] if sha256 in scored_here]:
            for name in dict.fromkeys(r["recipe"] for r in by_version[current]):
                ours, theirs = runs_of(by_version[current], name), runs_of(by_version[earlier], name)
                for set_name in OUT_OF_STYLE_SETS if theirs else ():
                    gaps = {task: paired_difference(ours, theirs, set_name, task) for task in DEFAULT_TASKS}
                    lines.append(
                        f"- {set_name}, {name}, {rows[current]:,} rows minus {rows[earlier]:,} rows "
                        f"({gaps['topic'][3]} seeds): "
                        + "; ".join(f"{task} {d:+.3f} [{lo:+.3f}, {hi:+.3f}]" for task, (d, lo, hi, _) in gaps.items())
                    )
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def version_tables(records: list[dict], paired: bool = True) -> str:
    """The score table of runs on one version of the data and, where their predictions are of today's out-of-style
    rows (``paired``), the paired comparisons and the by-register table."""
    table = score_table(records)
    cell = table.groupby(["recipe", "set", "task"])["macro_f1"].agg(["mean", "std", "count"])
    text = cell.apply(lambda r: f"{r['mean']:.3f} ± {r['std']:.3f}", axis=1).unstack(["set", "task"])
    columns = [(s, t) for s in ("shipped test", "out-of-style dev", "out-of-style test") for t in DEFAULT_TASKS]
    order = [*BASELINES, *RECIPES, *(f"{b} + WiSE-FT {a}" for b in WISE_FROM for a in WISE_ALPHAS)]
    default = default_recipe()
    lines = ["| model | " + " | ".join(f"{s}: {t}" for s, t in columns) + " | seeds | training minutes |",
             "|---|" + "---:|" * (len(columns) + 2)]
    for name in [n for n in order if n in text.index]:
        seeds = int(cell.loc[name]["count"].min())
        minutes = table.loc[table["recipe"] == name, "train_seconds"].mean() / 60
        label = f"**{name} (default)**" if name == default else name
        lines.append(f"| {label} | " + " | ".join(text.loc[name, c] for c in columns)
                     + f" | {seeds} | {'' if np.isnan(minutes) else f'{minutes:.1f}'} |")
    if not paired:
        return "\n".join(lines)
    lines += ["", f"Paired bootstrap, macro-F1 difference averaged over seeds [95% interval], default = {default}:", ""]
    comparisons = [(default, base, s) for base in BASELINES for s in ("out-of-style test",)]
    comparisons += [(name, default, "out-of-style dev") for name in order[len(BASELINES):] if name != default]
    present = set(text.index)
    for a, b, set_name in [c for c in comparisons if {c[0], c[1]} <= present]:
        parts = []
        for task in DEFAULT_TASKS:
            diff, low, high, seeds = paired_difference(runs_of(records, a), runs_of(records, b), set_name, task)
            parts.append(f"{task} {diff:+.3f} [{low:+.3f}, {high:+.3f}]")
        lines.append(f"- {set_name}, {a} minus {b} ({seeds} seeds): " + "; ".join(parts))
    lines += ["", by_register(records, [default, "frozen embeddings + logistic regression"])]
    return "\n".join(lines)


def readme_tables() -> str:
    """The tables of the runs on the current data, as README.md shows them between its markers."""
    return version_tables(load_records(data_version()["sha256"]))


def write_readme() -> None:
    begin, end = README_MARKERS
    text = README.read_text()
    head, _, rest = text.partition(begin)
    _, _, tail = rest.partition(end)
    if not tail:
        raise ValueError(f"{README}: the markers {begin} and {end} are missing; put them where the tables go.")
    README.write_text(f"{head}{begin}\n{readme_tables()}\n{end}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shard", default="0/1", help="i/n: run every n-th job starting at i, on one thread")
    parser.add_argument("--only", help="run only this recipe (or 'baselines')")
    parser.add_argument("--summary", action="store_true", help="only collect the results into recipes.csv")
    parser.add_argument("--readme", action="store_true", help="only rewrite README.md's tables from the results")
    args = parser.parse_args()
    if args.readme:
        write_readme()
        return
    if not args.summary:
        hf_logging.set_verbosity_error()
        index, count = map(int, args.shard.split("/"))
        if count > 1:
            torch.set_num_threads(1)
        RESULTS.mkdir(parents=True, exist_ok=True)
        for name, seed in jobs()[index::count]:
            if args.only not in (None, name):
                continue
            path = result_path(name, seed)
            if path.exists():
                continue
            records = run_baselines(seed) if name == "baselines" else run_recipe(name, seed)
            path.write_text(json.dumps(records) + "\n")
            print(f"{path.name}: done", flush=True)
    records = load_records()
    score_table(records).to_csv(RESULTS.parent / "recipes.csv", index=False)
    print(markdown_tables(records))


if __name__ == "__main__":
    main()
