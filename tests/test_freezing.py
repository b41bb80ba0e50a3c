import pytest
import torch

from mtlib.freezing import (
    count_trainable,
    freeze,
    gradual_unfreeze,
    layerwise_param_groups,
    parameter_report,
    transformer_layers,
)
from mtlib.losses import MultiTaskLoss, compute_losses

SENTENCES = ["The striker scored twice.", "Shares slid 4% on Friday.", "Parliament votes on Tuesday."]


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def expected_trainable(model, strategy):
    encoder, heads = n_params(model.encoder), n_params(model.heads)
    frozen_bottom = n_params(model.encoder.transformer.embeddings) + sum(n_params(layer) for layer in
                                                                          transformer_layers(model)[:1])
    return {"none": encoder + heads, "all": 0, "backbone": heads, "head:topic": encoder + heads -
            n_params(model.heads["topic"]), "layers:1": encoder + heads - frozen_bottom}[strategy]


@pytest.mark.parametrize("strategy", ["none", "all", "backbone", "head:topic", "layers:1"])
def test_frozen_parameters_do_not_move(tiny_model, strategy):
    freeze(tiny_model, strategy)
    assert count_trainable(tiny_model) == expected_trainable(tiny_model, strategy)
    assert parameter_report(tiny_model).set_index("part").loc["all", "trainable"] == count_trainable(tiny_model)
    before = {name: p.detach().clone() for name, p in tiny_model.named_parameters()}
    trainable = [p for p in tiny_model.parameters() if p.requires_grad]
    if trainable:
        optimizer = torch.optim.AdamW(trainable, lr=1e-2, weight_decay=0.1)
        batch = tiny_model.encoder.tokenize(SENTENCES)
        batch |= {"labels_topic": torch.tensor([0, 1, 4]), "labels_sentiment": torch.tensor([2, 0, 1])}
        MultiTaskLoss(["topic", "sentiment"])(compute_losses(tiny_model(**batch), batch)).backward()
        optimizer.step()
    for name, p in tiny_model.named_parameters():
        if p.requires_grad:
            assert not torch.equal(p, before[name]), f"{name} should have changed"
        else:
            assert torch.equal(p, before[name]), f"{name} is frozen but changed"


def test_bad_strategy_lists_valid_ones(tiny_model):
    for bad in ["partial", "head:summary", "layers:9", "layers:x"]:
        with pytest.raises(ValueError, match="Valid strategies"):
            freeze(tiny_model, bad)


def test_gradual_unfreezing_goes_top_down(tiny_model):
    layers = transformer_layers(tiny_model)
    assert gradual_unfreeze(tiny_model, 0, every=1) == 1
    assert not any(p.requires_grad for p in layers[0].parameters())
    assert all(p.requires_grad for p in layers[1].parameters())
    assert not any(p.requires_grad for p in tiny_model.encoder.transformer.embeddings.parameters())
    assert gradual_unfreeze(tiny_model, 1, every=1) == 2
    assert count_trainable(tiny_model) == n_params(tiny_model)


def test_layerwise_learning_rates(tiny_model):
    groups = layerwise_param_groups(tiny_model, 1.0, decay=0.5)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    layers = transformer_layers(tiny_model)
    assert lr_of[id(next(tiny_model.heads.parameters()))] == 1.0
    assert lr_of[id(next(layers[1].parameters()))] == 0.5
    assert lr_of[id(next(layers[0].parameters()))] == 0.25
    assert lr_of[id(next(tiny_model.encoder.transformer.embeddings.parameters()))] == 0.125
    assert sum(len(g["params"]) for g in groups) == len(list(tiny_model.parameters()))
