"""Training speed: dynamic padding with length-grouped batches against fixed padding to 128 tokens, at the
validation macro-F1 each reaches; bf16 autocast against fp32; and a frozen-backbone epoch with the embedding
cache against one without. Every run but the bf16 one is fp32 (``mixed_precision="fp32"``), whatever ``auto``
would pick on this machine.

    python benchmarks/bench_train.py [--train-fraction 0.3] [--epochs 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import pandas as pd
from accelerate.state import AcceleratorState
from common import peak_rss_mb, save

from mtlib.config import ModelConfig
from mtlib.data import load_dataset, split_dataset, subsample
from mtlib.precision import cpu_has_native_bf16, resolve_precision
from mtlib.train import TrainConfig, train


def training_rows(config: TrainConfig) -> int:
    """Sentences in one training epoch: the same split and subsample that ``train`` makes."""
    splits = split_dataset(load_dataset(config.data, config.model.tasks), seed=config.seed)
    return len(subsample(splits["train"], config.train_fraction, config.seed))


def run(name: str, out: str, *, backbone: str, max_length: int | None = None, **settings) -> dict:
    model = ModelConfig(backbone=backbone, max_length=max_length)
    config = TrainConfig(output_dir=f"{out}/{name}", model=model, progress=False, **settings)
    # Accelerate keeps one precision per process: forget the last run's, as its own tests do
    AcceleratorState._reset_state(reset_partial_state=True)
    started = time.perf_counter()
    train(config)
    total = time.perf_counter() - started
    log = pd.read_csv(f"{out}/{name}/metrics.csv")
    validation = log[log["split"] == "validation"]
    last = validation[validation["epoch"] == validation["epoch"].max()]
    seconds = log.groupby("epoch")["seconds"].first()
    seconds = seconds.iloc[1:] if len(seconds) > 1 else seconds  # the first epoch also pays for warm-up
    rows = training_rows(config)
    return {"run": name, "seconds_per_epoch": float(seconds.mean()), "sentences_per_s": rows / float(seconds.mean()),
            "total_seconds": total, **{f"val_macro_f1_{t}": float(f) for t, f in zip(last["task"], last["macro_f1"],
                                                                                       strict=True)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-fraction", type=float, default=0.3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--backbone", default="minilm", help="backbone alias, id or folder")
    args = parser.parse_args()
    common = {"train_fraction": args.train_fraction, "epochs": args.epochs, "backbone": args.backbone,
              "mixed_precision": "fp32"}
    with tempfile.TemporaryDirectory() as out:
        rows = [
            run("full fine-tuning, dynamic padding", out, **common),
            run("full fine-tuning, fixed 128 padding", out, max_length=128, pad_to_max_length=True, **common),
            run("full fine-tuning, bf16 autocast", out, **common | {"mixed_precision": "bf16"}),
            run("frozen backbone, embedding cache", out, freeze="backbone", head_lr=1e-3, **common),
            run("frozen backbone, no cache", out, freeze="backbone", head_lr=1e-3, cache_embeddings=False, **common),
        ]
    table = pd.DataFrame(rows)
    epoch = table.set_index("run")["seconds_per_epoch"]
    dynamic, fixed = epoch["full fine-tuning, dynamic padding"], epoch["full fine-tuning, fixed 128 padding"]
    cached, uncached = epoch["frozen backbone, embedding cache"], epoch["frozen backbone, no cache"]
    bf16 = epoch["full fine-tuning, bf16 autocast"]
    ratios = {"fixed_over_dynamic": fixed / dynamic, "bf16_speedup": dynamic / bf16,
              "full_over_cached_frozen": dynamic / cached,
              "uncached_over_cached_frozen": uncached / cached}
    print(table.round(3).to_string(index=False))
    print(pd.Series(ratios).round(2).to_string())
    print(f"peak RSS: {peak_rss_mb():.0f} MB")
    path = save("train", {"settings": common, "native_bf16": cpu_has_native_bf16(),
                          "auto_picks": resolve_precision("auto", "cpu"), "runs": rows, "ratios": ratios,
                          "peak_rss_mb": peak_rss_mb()})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
