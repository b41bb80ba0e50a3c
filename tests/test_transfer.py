import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from mtlib.config import ModelConfig, TrainConfig
from mtlib.data import load_dataset, split_dataset
from mtlib.freezing import transformer_layers
from mtlib.model import DEFAULT_TASKS, MultiTaskModel
from mtlib.train import train
from mtlib.transfer import (
    PROBE_C,
    encoder_state,
    fit_linear_probe,
    interpolate_encoder,
    layer_outputs,
    linear_cka,
)


@pytest.fixture
def small_frame(small_csv):
    frame = load_dataset(small_csv, DEFAULT_TASKS)
    frame.loc[frame.index[::10], "topic"] = None  # some rows without a topic, as in the shipped data
    return frame


def test_linear_probe_heads_equal_logistic_regression(tiny_model, small_frame):
    fit_linear_probe(tiny_model, small_frame)
    # the vectors the probe was fitted on, bit for bit (same batches): L-BFGS stops where its tolerance says, and
    # that point moves with the last bits of its input, so a reference fitted on other bits may differ by 1e-3
    vectors = tiny_model.encoder.encode(small_frame["text"].tolist(), batch_size=128, show_progress=False).numpy()
    logits = tiny_model.predict_logits(small_frame["text"].tolist())
    for task, labels in DEFAULT_TASKS.items():
        rows = small_frame[task].notna().to_numpy()
        reference = LogisticRegression(C=PROBE_C, max_iter=2000)
        reference.fit(vectors[rows], small_frame[task][rows].map(labels.index))
        linear = tiny_model.heads[task][-1]
        assert torch.equal(linear.weight, torch.as_tensor(reference.coef_, dtype=torch.float32))
        assert torch.equal(linear.bias, torch.as_tensor(reference.intercept_, dtype=torch.float32))
        # logits of the same sentences batched otherwise: float32 rounding of the vectors and the dot products
        assert np.allclose(logits[task].numpy(), reference.decision_function(vectors), atol=1e-5, rtol=1e-5)


def test_linear_probe_needs_a_linear_head(tiny_bert_dir, small_frame):
    model = MultiTaskModel.from_pretrained(tiny_bert_dir, DEFAULT_TASKS, head="mlp")
    with pytest.raises(ValueError, match="needs head='linear'"):
        fit_linear_probe(model, small_frame)


def test_interpolation_ends_and_midpoint(tiny_model):
    pretrained = encoder_state(tiny_model.encoder)
    heads = {k: v.clone() for k, v in tiny_model.heads.state_dict().items()}
    with torch.no_grad():
        for p in tiny_model.encoder.parameters():
            p.add_(1.0)
    tuned = encoder_state(tiny_model.encoder)

    interpolate_encoder(tiny_model, pretrained, 0.5)
    for name, weight in tiny_model.encoder.state_dict().items():
        if weight.is_floating_point():
            assert torch.allclose(weight, (pretrained[name] + tuned[name]) / 2, atol=1e-6), name
    tiny_model.encoder.load_state_dict(tuned)
    interpolate_encoder(tiny_model, pretrained, 0.0)
    assert all(torch.equal(w, pretrained[k]) for k, w in tiny_model.encoder.state_dict().items())
    assert all(torch.equal(w, heads[k]) for k, w in tiny_model.heads.state_dict().items())
    with pytest.raises(ValueError, match=r"alpha=1.5 should be in \[0, 1\]"):
        interpolate_encoder(tiny_model, pretrained, 1.5)


def test_lp_ft_and_wise_through_train(tmp_path, small_frame, tiny_bert_dir):
    data = tmp_path / "small.csv"
    small_frame.to_csv(data, index=False)
    settings = {"data": str(data), "model": ModelConfig(backbone=tiny_bert_dir), "epochs": 1, "batch_size": 16,
                "progress": False}
    model, test = train(TrainConfig(output_dir=str(tmp_path / "a"), linear_probe=True, wise_alpha=0.0, **settings))
    pretrained = MultiTaskModel.from_pretrained(tiny_bert_dir, DEFAULT_TASKS).encoder.state_dict()
    # alpha 0 hands back the pretrained encoder, with the heads that were trained on top of it
    assert all(torch.equal(w.cpu(), pretrained[k]) for k, w in model.encoder.state_dict().items())
    # rows without a topic are left out of the topic metrics, not counted as errors
    test_split = split_dataset(load_dataset(data, DEFAULT_TASKS), seed=0)["test"]
    assert test["topic"]["n"] == test_split["topic"].notna().sum() < len(test_split)
    assert test["sentiment"]["n"] == len(test_split)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("wise_alpha", -0.1, r"wise_alpha=-0.1 is not valid: it should be a number in \[0, 1\]"),
    ("linear_probe", True, r"linear_probe=True needs head='linear'"),
])
def test_bad_recipe_options(tmp_path, small_csv, field, value, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(data=small_csv, output_dir=str(tmp_path), model=ModelConfig(head="mlp"), **{field: value})


def test_linear_cka_against_its_definition():
    torch.manual_seed(0)
    x, y = torch.randn(50, 6, dtype=torch.float64), torch.randn(50, 4, dtype=torch.float64)
    centre = torch.eye(50, dtype=torch.float64) - 1 / 50  # H = I - 11^T / n

    def hsic(k, m):
        return torch.trace(k @ centre @ m @ centre)

    k, m = x @ x.T, y @ y.T
    assert linear_cka(x, y) == pytest.approx(float(hsic(k, m) / torch.sqrt(hsic(k, k) * hsic(m, m))), rel=1e-9)
    rotation = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))[0]
    assert linear_cka(x, 5 * x @ rotation + 2) == pytest.approx(1.0)  # rotation, scale and shift do not count
    assert 0 <= linear_cka(x, y) < 0.5
    with pytest.raises(ValueError, match="need the same sentences"):
        linear_cka(x, y[:10])


def test_layer_outputs_end_in_the_sentence_vector(tiny_model):
    sentences = ["Stocks slid on Friday.", "A short one.", "The match ended in a draw after extra time."]
    outputs = layer_outputs(tiny_model.encoder, sentences)
    assert len(outputs) == len(transformer_layers(tiny_model)) + 1  # embeddings, then each layer
    assert torch.allclose(outputs[-1], tiny_model.encoder.encode(sentences), atol=1e-5)  # mean pooling of the top
    assert not torch.allclose(outputs[0], outputs[-1])
