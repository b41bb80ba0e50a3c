import math

import pytest
import torch

from mtlib.data import Collator, SentenceDataset, load_dataset
from mtlib.losses import MultiTaskLoss, compute_losses, masked_cross_entropy
from mtlib.model import DEFAULT_TASKS, MultiTaskModel

SENTENCES = ["The striker scored twice.", "Shares slid 4% on Friday.", "Parliament votes on Tuesday."]


def test_forward_runs_encoder_once_and_returns_logits_per_task(tiny_model):
    calls = []
    tiny_model.encoder.register_forward_hook(lambda *_: calls.append(1))
    logits = tiny_model(**tiny_model.encoder.tokenize(SENTENCES))
    assert {task: tuple(x.shape) for task, x in logits.items()} == {"topic": (3, 5), "sentiment": (3, 3)}
    assert len(calls) == 1


def test_a_third_task_is_configuration(tiny_model):
    tasks = DEFAULT_TASKS | {"urgency": ["low", "high"]}
    model = MultiTaskModel(tiny_model.encoder, tasks, head="mlp")
    assert model.predict(SENTENCES[:1])[0]["urgency"]["label"] in ("low", "high")


def test_missing_sentiment_label_gives_sentiment_head_zero_gradient(tiny_model, tokenizer, tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,topic,sentiment\nThe striker scored twice,Sports,\nShares slid on Friday,Business,\n")
    frame = load_dataset(path, DEFAULT_TASKS)
    batch = Collator(tokenizer, 32)([*SentenceDataset(frame, DEFAULT_TASKS)])
    losses = compute_losses(tiny_model(**batch), batch)
    assert set(losses) == {"topic"}
    MultiTaskLoss(list(DEFAULT_TASKS))(losses).backward()
    sentiment_grads = [p.grad for p in tiny_model.heads["sentiment"].parameters()]
    assert all(g is None or torch.count_nonzero(g) == 0 for g in sentiment_grads)
    assert any(torch.count_nonzero(p.grad) > 0 for p in tiny_model.heads["topic"].parameters())


def test_masked_loss_counts_only_labelled_rows():
    logits = torch.randn(3, 3)
    labels = torch.tensor([2, -100, 0])
    expected = torch.nn.functional.cross_entropy(logits[[0, 2]], labels[[0, 2]])
    assert torch.allclose(masked_cross_entropy(logits, labels), expected)
    assert masked_cross_entropy(logits, torch.full((3,), -100)) is None


def test_uncertainty_weighting():
    loss = MultiTaskLoss(["a", "b"], weighting="uncertainty")
    with torch.no_grad():
        loss.log_vars.copy_(torch.tensor([0.0, 1.0]))
    total = loss({"a": torch.tensor(2.0), "b": torch.tensor(3.0)})
    assert torch.isclose(total, torch.tensor(2.0 + 3.0 * math.exp(-1.0) + 1.0))
    with pytest.raises(ValueError, match="one weight per task"):
        MultiTaskLoss(["a", "b"], weighting="fixed", weights={"a": 1.0})


def test_save_load_predict_reproduce_logits(tiny_model, tmp_path):
    tiny_model.eval()
    before = tiny_model.predict_logits(SENTENCES)
    loaded = MultiTaskModel.load(tiny_model.save(tmp_path / "model"))
    after = loaded.predict_logits(SENTENCES)
    assert all(torch.equal(before[t], after[t]) for t in before)
    assert tiny_model.predict(SENTENCES) == loaded.predict(SENTENCES)
    assert not any(p.suffix in (".bin", ".pt", ".pkl") for p in (tmp_path / "model").rglob("*"))


def test_predict_logits_progress_bar_can_be_turned_off(tiny_model, capsys):
    many = SENTENCES * (1001 // len(SENTENCES) + 1)  # over 1,000 sentences: a bar by default
    tiny_model.predict_logits(many)
    assert "encode" in capsys.readouterr().err
    tiny_model.predict_logits(many, show_progress=False)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("name", ["heads.safetensors", "backbone/model.safetensors"])
def test_truncated_or_altered_weights_are_refused(tiny_model, tmp_path, name):
    folder = tiny_model.save(tmp_path / "model")
    weights = folder / name
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or altered"):
        MultiTaskModel.load(folder)
    altered = bytearray(data)
    altered[-1] ^= 0xFF
    weights.write_bytes(bytes(altered))
    with pytest.raises(ValueError, match="truncated or altered"):
        MultiTaskModel.load(folder)


def test_bad_head_and_tasks(tiny_model):
    with pytest.raises(ValueError, match="Valid head types"):
        MultiTaskModel(tiny_model.encoder, head="transformer")
    with pytest.raises(ValueError, match="two distinct labels"):
        MultiTaskModel(tiny_model.encoder, {"topic": ["Sports"]})
