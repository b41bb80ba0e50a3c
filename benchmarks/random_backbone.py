"""Write a randomly initialised copy of a backbone (same shape, same tokenizer) to a folder.

Speed depends on the shape, not the weights, so a machine without the packaged MiniLM weights can
still measure it: ``python benchmarks/random_backbone.py CONFIG_DIR OUT_DIR``, where CONFIG_DIR holds
``config.json`` and the tokenizer files.
"""

import sys

import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer

source, target = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
AutoModel.from_config(AutoConfig.from_pretrained(source)).save_pretrained(target)
AutoTokenizer.from_pretrained(source).save_pretrained(target)
print(f"random backbone written to {target}")
