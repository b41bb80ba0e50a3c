"""Do the topic and sentiment losses pull the shared encoder in the same direction while it trains?

A short multi-task run per seed (the default recipe's optimizer, warm-up, decay and clipping, on a fixed
subset of the seed's training split); every few steps, before the update, the topic and the sentiment loss
of the current batch are back-propagated separately and the cosine between their gradients is taken on each
layer group of the shared encoder (:mod:`mtlib.conflict`). One row per seed, step and group lands in
``experiments/results/gradient_conflict.csv``, which ``notebooks/02_multi_task_heads.ipynb`` plots.

    python experiments/gradient_conflict.py               # every seed, one after the other (one thread), unless
                                                          # the results file exists: delete it to measure again
    python experiments/gradient_conflict.py --seeds 0     # one seed, printed; the file is left as it is
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import torch
from accelerate.utils import set_seed
from transformers.utils import logging as hf_logging

from mtlib.conflict import encoder_groups, gradient_cosines, task_gradients
from mtlib.data import get_dataloaders
from mtlib.losses import MultiTaskLoss, compute_losses
from mtlib.train import TrainConfig, build_model, build_optimizer, load_splits

RESULTS = Path(__file__).parent / "results" / "gradient_conflict.csv"
SEEDS = (0, 1, 2)
TRAIN_ROWS = 1000  # a fixed subset of each seed's training split: the run is short, the question is direction
EPOCHS = 2  # passes over those rows: 64 optimizer steps at the default batch size of 32
MEASURE_EVERY = 4  # steps between measurements (each costs two extra backward passes)


def measure(seed: int) -> pd.DataFrame:
    """Cosine between the two tasks' gradients per layer group, every ``MEASURE_EVERY`` steps of one run."""
    config = TrainConfig(seed=seed, epochs=EPOCHS, progress=False, mixed_precision="fp32")
    splits, tasks = load_splits(config)
    splits["train"] = splits["train"].sample(n=TRAIN_ROWS, random_state=seed).reset_index(drop=True)
    set_seed(seed)  # the heads' initial weights, then dropout
    model = build_model(config, "cpu", tasks).train()
    loader = get_dataloaders(model, splits, config, cache=False, precision="fp32")[0]["joint"]
    criterion = MultiTaskLoss(list(tasks), weighting=config.loss_weighting)
    optimizer, scheduler = build_optimizer(model, criterion, config, steps_per_epoch=len(loader))
    groups = encoder_groups(model)
    rows, step = [], 0
    for epoch in range(config.epochs):
        loader.batch_sampler.set_epoch(epoch)
        for batch in loader:
            losses = compute_losses(model(**batch), batch)
            if step % MEASURE_EVERY == 0 and set(losses) == set(tasks):
                grads = task_gradients(losses, groups)
                cosines = gradient_cosines(*(grads[task] for task in tasks))
                rows += [{"seed": seed, "step": step, "group": group, "cosine": c} for group, c in cosines.items()]
            criterion(losses).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
    return pd.DataFrame(rows).round(5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=SEEDS, help="seeds to run (default: 0 1 2)")
    args = parser.parse_args()
    if tuple(args.seeds) == SEEDS and RESULTS.exists():
        print(f"{RESULTS} exists: nothing to run (delete it to measure again)")
        return
    hf_logging.set_verbosity_error()
    torch.set_num_threads(1)
    table = pd.concat([measure(seed) for seed in args.seeds], ignore_index=True)
    if tuple(args.seeds) == SEEDS:
        table.to_csv(RESULTS, index=False)
        print(f"{RESULTS}: {len(table)} rows")
    else:
        print(table.to_string(index=False))


if __name__ == "__main__":
    main()
