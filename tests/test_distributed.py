"""Two training processes on one CPU (gloo), started the way Accelerate's own CPU tests do."""

import hashlib
import json
import os

import pandas as pd
from accelerate import Accelerator, debug_launcher

from mtlib.data import load_dataset, split_dataset
from mtlib.train import TrainConfig, build_model, get_dataloaders, train


def in_each_process():
    settings = TrainConfig(**json.loads(os.environ["MTLIB_TEST_CONFIG"]))
    accelerator = Accelerator(cpu=True)
    rank, out = accelerator.process_index, settings.output_dir

    # Which training rows does each process see in one epoch?
    splits = split_dataset(load_dataset(settings.data, settings.tasks), seed=settings.seed)
    model = build_model(settings)
    loaders, _ = get_dataloaders(model, splits, settings, cache=False)
    loader = accelerator.prepare(loaders["joint"])
    pad = model.encoder.tokenizer.pad_token_id
    seen = [[t for t in row if t != pad] for batch in loader for row in batch["input_ids"].tolist()]
    with open(f"{out}.rows{rank}.json", "w") as f:
        json.dump(seen, f)

    trained, _ = train(settings, accelerator)
    digest = hashlib.sha256()
    for name, tensor in sorted(trained.state_dict().items()):
        digest.update(name.encode() + tensor.numpy().tobytes())
    with open(f"{out}.weights{rank}", "w") as f:
        f.write(digest.hexdigest())


def test_two_processes(tmp_path, small_csv, tiny_bert_dir):
    out = tmp_path / "ddp"
    settings = {"data": small_csv, "output_dir": str(out), "backbone": tiny_bert_dir, "epochs": 1,
                "batch_size": 16, "lr": 1e-3, "progress": False}
    os.environ["MTLIB_TEST_CONFIG"] = json.dumps(settings)
    debug_launcher(in_each_process, num_processes=2)

    weights = [(tmp_path / f"ddp.weights{r}").read_text() for r in range(2)]
    assert weights[0] == weights[1], "the processes' weights drifted apart"
    rows = [json.loads((tmp_path / f"ddp.rows{r}.json").read_text()) for r in range(2)]
    as_sets = [{tuple(x) for x in r} for r in rows]
    assert not as_sets[0] & as_sets[1], "the two processes saw the same training rows"
    assert len(as_sets[0] | as_sets[1]) == 210  # 70% of 300 rows, each seen once
    log = pd.read_csv(out / "metrics.csv")
    assert (log[log["split"] == "validation"]["n"] == 45).all()  # the whole validation split, once
