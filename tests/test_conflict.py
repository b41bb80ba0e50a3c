"""Gradient conflict: layer groups, per-task gradients, cosines and PCGrad, against references written by hand."""

from __future__ import annotations

import copy

import matplotlib
import pytest
import torch

from mtlib.conflict import encoder_groups, gradient_cosines, pcgrad, task_gradients
from mtlib.encoder import Pooling
from mtlib.freezing import freeze
from mtlib.losses import compute_losses

matplotlib.use("Agg")
from mtlib.plots import architecture_diagram, figure_text  # noqa: E402


def batch_of(model, labels_topic, labels_sentiment):
    tokens = model.encoder.tokenize(["The striker scored twice.", "Shares slid after the warning.",
                                     "Parliament votes next week.", "The phone battery lasts two days."])
    return tokens | {"labels_topic": torch.tensor(labels_topic), "labels_sentiment": torch.tensor(labels_sentiment)}


def test_groups_cover_the_trainable_encoder_once_and_no_head(tiny_model):
    groups = encoder_groups(tiny_model)
    assert list(groups) == ["embeddings", "layer 1", "layer 2"]  # mean pooling has no weights
    grouped = [id(p) for params in groups.values() for p in params]
    assert sorted(grouped) == sorted(id(p) for p in tiny_model.encoder.parameters())
    freeze(tiny_model, "layers:1")
    assert list(encoder_groups(tiny_model)) == ["layer 2"]  # layers are numbered from 1, bottom first
    tiny_model.encoder.pooling = Pooling(tiny_model.encoder.hidden_size, "attention")
    assert list(encoder_groups(tiny_model))[-1] == "pooling"


def test_task_gradients_equal_one_backward_per_task(tiny_model):
    tiny_model.eval()  # no dropout: the same forward pass twice
    batch = batch_of(tiny_model, [0, 1, 4, 3], [2, 0, 1, -100])
    groups = encoder_groups(tiny_model)
    grads = task_gradients(compute_losses(tiny_model(**batch), batch), groups)
    for task in ("topic", "sentiment"):
        reference = copy.deepcopy(tiny_model)
        compute_losses(reference(**batch), batch)[task].backward()
        expected = torch.cat([p.grad.flatten() for p in reference.encoder.transformer.embeddings.parameters()])
        assert torch.allclose(grads[task]["embeddings"], expected, atol=1e-7)
        assert grads[task]["layer 1"].numel() == sum(p.numel() for p in groups["layer 1"])


def test_cosines_per_group_and_over_the_whole_encoder():
    first = {"a": torch.tensor([1.0, 0.0]), "b": torch.tensor([0.0, 2.0])}
    second = {"a": torch.tensor([-1.0, 0.0]), "b": torch.tensor([0.0, 1.0])}
    cosines = gradient_cosines(first, second)
    # whole: (1, 0, 0, 2) . (-1, 0, 0, 1) = 1, norms sqrt(5) and sqrt(2)
    assert cosines == pytest.approx({"a": -1.0, "b": 1.0, "all": 1 / (5**0.5 * 2**0.5)})


def test_pcgrad_removes_conflict_and_leaves_agreement_alone():
    agree = (torch.tensor([1.0, 2.0]), torch.tensor([2.0, 1.0]))
    assert all(torch.equal(x, y) for x, y in zip(pcgrad(*agree), agree, strict=True))
    torch.manual_seed(0)
    for _ in range(20):
        g1, g2 = torch.randn(50), torch.randn(50)
        if g1.dot(g2) >= 0:
            g2 = -g2
        p1, p2 = pcgrad(g1, g2)
        assert abs(float(p1.dot(g2))) < 1e-4 and abs(float(p2.dot(g1))) < 1e-4  # each on the other's normal plane
        assert float(torch.cosine_similarity(p1, p2, dim=0)) >= 0
    a, b = pcgrad(torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0]))
    assert a.tolist() == [0.5, 0.5] and b.tolist() == [0.0, 1.0]


def test_architecture_diagram_reads_sizes_from_the_model(tiny_model):
    freeze(tiny_model, "layers:1")
    fig = architecture_diagram(tiny_model)
    texts = [t.get_text() for t in fig.axes[0].texts]
    layer = sum(p.numel() for p in tiny_model.encoder.transformer.encoder.layer[1].parameters())
    assert sum(f"{layer:,} parameters" in t for t in texts) == 2  # both layers of the tiny model, same size
    assert sum("(frozen)" in t for t in texts) == 2  # embeddings and layer 1
    assert any(t.startswith("topic head: 32 → 5\n") for t in texts)
    assert any(t.startswith("sentiment head: 32 → 3\n") for t in texts)
    total = sum(p.numel() for p in tiny_model.parameters())
    assert f"{total:,} parameters" in figure_text(fig)
