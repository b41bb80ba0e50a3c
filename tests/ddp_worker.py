"""One of two training processes started by tests/test_distributed.py through torchrun."""

import hashlib
import json
import sys

from accelerate import Accelerator

from mtlib.config import TrainConfig
from mtlib.data import get_dataloaders, load_dataset, split_dataset
from mtlib.train import build_model, train

settings = TrainConfig(**json.loads(sys.argv[1]))
accelerator = Accelerator(cpu=True)  # without cpu=True, torchrun on a machine with no GPU runs two unrelated copies
rank, out = accelerator.process_index, settings.output_dir

# Which training rows does each process see in one epoch?
splits = split_dataset(load_dataset(settings.data, settings.model.tasks), seed=settings.seed)
model = build_model(settings, "cpu")
loaders, _ = get_dataloaders(model, splits, settings, cache=False, precision="fp32")
pad = model.encoder.tokenizer.pad_token_id
seen = [[t for t in row if t != pad] for batch in accelerator.prepare(loaders["joint"])
        for row in batch["input_ids"].tolist()]

trained, _ = train(settings, accelerator)
digest = hashlib.sha256()
for name, tensor in sorted(trained.state_dict().items()):
    digest.update(name.encode() + tensor.numpy().tobytes())
with open(f"{out}.rank{rank}.json", "w") as f:
    json.dump({"world": accelerator.num_processes, "rows": seen, "weights": digest.hexdigest()}, f)
