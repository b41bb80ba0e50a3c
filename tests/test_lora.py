import copy

import pytest
import torch

from mtlib.freezing import count_trainable
from mtlib.lora import add_lora, is_lora_parameter
from mtlib.model import DEFAULT_TASKS, MultiTaskModel


@pytest.fixture
def model(tiny_backbone_dir):
    from mtlib.encoder import SentenceEncoder

    torch.manual_seed(0)
    return MultiTaskModel(SentenceEncoder.from_pretrained(tiny_backbone_dir), DEFAULT_TASKS)


def test_lora_trains_adapters_and_heads_only(model):
    before = copy.deepcopy(model)
    add_lora(model, r=4)
    config = model.encoder.transformer.config
    hidden = config.hidden_size if hasattr(config, "hidden_size") else config.dim
    layers = config.num_hidden_layers if hasattr(config, "num_hidden_layers") else config.n_layers
    adapters = layers * 2 * 4 * (hidden + hidden)  # query and value: A (r, in) and B (out, r) each
    heads = sum(p.numel() for p in model.heads.parameters())
    assert count_trainable(model) == adapters + heads
    trainable = [name for name, p in model.encoder.named_parameters() if p.requires_grad]
    assert trainable and all(is_lora_parameter(name) for name in trainable)

    # B starts at zero: the adapted model computes exactly what the pretrained one did
    inputs = model.encoder.tokenize(["A first sentence.", "And a second, longer one."])
    batch = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}
    model.eval(), before.eval()
    for task, logits in model(**batch).items():
        assert torch.allclose(logits, before(**batch)[task], atol=1e-6)


def test_lora_step_moves_adapters_not_pretrained_weights(model):
    add_lora(model, r=4)
    start = {name: p.detach().clone() for name, p in model.named_parameters()}
    inputs = model.encoder.tokenize(["Stocks slid on Friday.", "The match ended in a draw."])
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(2):  # the first step moves B away from zero, the second reaches A through B
        logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        (logits["topic"].sum() + logits["sentiment"].sum()).backward()
        optimizer.step()
        optimizer.zero_grad()
    for name, p in model.named_parameters():
        moved = not torch.equal(p, start[name])
        if is_lora_parameter(name):
            assert moved, name
        elif name.startswith("encoder."):
            assert not moved, name


def test_lora_twice_or_bad_rank_is_refused(model):
    with pytest.raises(ValueError, match="r=0 should be a positive integer"):
        add_lora(copy.deepcopy(model), r=0)
    add_lora(model)
    with pytest.raises(ValueError, match="already has LoRA adapters"):
        add_lora(model)
