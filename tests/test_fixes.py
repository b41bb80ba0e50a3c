"""Defects found in review, each pinned by a test that failed before its fix."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from accelerate import Accelerator
from huggingface_hub import ModelCard

import mtlib.encoder
from mtlib.backbone import sha256_of
from mtlib.cli import build_parser, main
from mtlib.config import ModelConfig, TrainConfig
from mtlib.data import LengthGroupedBatches, load_dataset, split_dataset, task_schedule
from mtlib.evaluate import evaluate_frame
from mtlib.freezing import freeze
from mtlib.model import DEFAULT_TASKS, MultiTaskModel
from mtlib.train import train


def settings(tmp_path, data, backbone, **overrides):
    model = ModelConfig(backbone=backbone, pooling=overrides.pop("pooling", "mean"))
    fast = {"epochs": 1, "batch_size": 16, "progress": False, "train_fraction": 0.5}
    return TrainConfig(data=data, output_dir=str(tmp_path / "run"), model=model, **(fast | overrides))


@pytest.fixture
def optimizer_groups(monkeypatch):
    """The parameter groups train() hands to AdamW, with each parameter's name (or 'log_vars')."""
    seen = []
    real = torch.optim.AdamW

    def spy(groups, *args, **kwargs):
        seen.extend(groups)
        return real(groups, *args, **kwargs)

    monkeypatch.setattr(torch.optim, "AdamW", spy)
    return seen


def lr_of(groups, params):
    ids = {id(p) for p in params}
    return {g["lr"] for g in groups for p in g["params"] if id(p) in ids}


def test_head_lr_applies_with_attention_pooling(tmp_path, small_csv, tiny_bert_dir, optimizer_groups):
    model, _ = train(settings(tmp_path, small_csv, tiny_bert_dir, pooling="attention", lr=1e-4, head_lr=1e-2))
    assert lr_of(optimizer_groups, model.heads.parameters()) == {1e-2}
    assert lr_of(optimizer_groups, model.encoder.pooling.parameters()) == {1e-4}


def test_uncertainty_weights_learn_at_head_lr(tmp_path, small_csv, tiny_bert_dir, optimizer_groups):
    train(settings(tmp_path, small_csv, tiny_bert_dir, loss_weighting="uncertainty", lr=1e-4, head_lr=1e-2))
    log_vars = [g for g in optimizer_groups if [p.shape for p in g["params"]] == [(2,)]]  # one s per task
    assert [g["lr"] for g in log_vars] == [1e-2]
    weights = json.loads((tmp_path / "run" / "checkpoint.json").read_text())["loss_weights"]
    assert set(weights) == set(DEFAULT_TASKS) and all(w != 1.0 for w in weights.values())


def test_uncertainty_weights_learn_at_their_own_rate(tmp_path, small_csv, tiny_bert_dir, optimizer_groups):
    config = settings(tmp_path, small_csv, tiny_bert_dir, loss_weighting="uncertainty", head_lr=1e-2, log_var_lr=0.1)
    model, _ = train(config)
    log_vars = [g for g in optimizer_groups if [p.shape for p in g["params"]] == [(2,)]]
    assert [g["lr"] for g in log_vars] == [0.1]
    assert lr_of(optimizer_groups, model.heads.parameters()) == {1e-2}


def test_each_epoch_draws_its_own_batch_order(tmp_path, small_csv, tiny_bert_dir, monkeypatch):
    epochs = []
    real = LengthGroupedBatches.__iter__

    def spy(self):
        epochs.append(self.epoch)
        return real(self)

    monkeypatch.setattr(LengthGroupedBatches, "__iter__", spy)
    train(settings(tmp_path, small_csv, tiny_bert_dir, epochs=3, patience=3))
    assert epochs[:3] == [0, 1, 2]  # then validation and test loaders, which do not use this sampler


def test_temperature_zero_is_a_clear_error():
    with pytest.raises(ValueError, match=r"temperature=0 should be a positive number"):
        task_schedule({"a": 3, "b": 1}, "temperature", temperature=0, rng=np.random.default_rng(0))


def test_freezing_the_backbone_keeps_attention_pooling_trainable(tiny_bert_dir):
    model = MultiTaskModel.from_pretrained(tiny_bert_dir, DEFAULT_TASKS, pooling="attention", device="cpu")
    freeze(model, "backbone")
    assert not any(p.requires_grad for p in model.encoder.transformer.parameters())
    assert all(p.requires_grad for p in model.encoder.pooling.parameters())


def test_one_precision_setting_reaches_encode(tmp_path, small_csv, tiny_bert_dir, monkeypatch):
    asked = []
    real = mtlib.encoder.SentenceEncoder.encode

    def spy(self, sentences, **kwargs):
        asked.append(kwargs.get("precision", "auto"))
        return real(self, sentences, **kwargs)

    monkeypatch.setattr(mtlib.encoder.SentenceEncoder, "encode", spy)
    train(settings(tmp_path, small_csv, tiny_bert_dir, freeze="backbone", mixed_precision="fp32"))
    assert asked and set(asked) == {"fp32"}  # the cached embeddings of every split, in the run's precision


def test_validation_and_test_take_the_same_path(tmp_path, small_csv, tiny_bert_dir):
    config = settings(tmp_path, small_csv, tiny_bert_dir, epochs=2, train_fraction=1.0)
    _, test = train(config)
    saved = tmp_path / "run" / "model"
    assert main(["evaluate", "--model", str(saved), "--data", small_csv]) == 0  # all 300 rows
    # the test split scored through the evaluate command's path gives the numbers train() wrote
    split = split_dataset(load_dataset(small_csv, DEFAULT_TASKS), seed=config.seed)["test"]
    again = evaluate_frame(MultiTaskModel.load(saved, device="cpu"), split)
    for task in test:
        assert again[task]["confusion_matrix"] == test[task]["confusion_matrix"]
        assert again[task]["loss"] == pytest.approx(test[task]["loss"], abs=1e-5)


def test_embed_model_is_a_saved_model_and_backbone_a_pretrained_one(tmp_path, tiny_model, tiny_bert_dir, capsys):
    folder = tiny_model.save(tmp_path / "model")
    assert main(["embed", "What a goal!", "--model", str(folder), "--output", str(tmp_path / "m.npy")]) == 0
    expected = tiny_model.encoder.encode(["What a goal!"], normalize=True)
    assert np.allclose(np.load(tmp_path / "m.npy"), expected.numpy(), atol=1e-6)
    assert main(["embed", "What a goal!", "--backbone", tiny_bert_dir]) == 0
    commands = build_parser()._subparsers._group_actions[0].choices
    for command in ("embed", "predict", "evaluate"):
        assert "folder written by MultiTaskModel.save" in " ".join(commands[command].format_help().split())


def test_model_card_and_config_round_trip(tmp_path, small_csv, tiny_bert_dir):
    model, test = train(settings(tmp_path, small_csv, tiny_bert_dir))
    folder = tmp_path / "run" / "model"
    config = json.loads((folder / "config.json").read_text())
    assert ModelConfig(**{k: v for k, v in config.items() if k not in ("files", "versions")}) == model.config
    card = ModelCard.load(folder / "README.md")  # validates the metadata as the hub reads it
    assert card.data.library_name == "mtlib" and card.data.pipeline_tag == "text-classification"
    assert card.data.base_model is None  # a local folder is no hub id
    results = {(r.dataset_name, r.task_name, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert results[("test split", "topic", "macro_f1")] == round(test["topic"]["macro_f1"], 4)
    for section in ("## Tasks and labels", "## Training data and recipe", "## Metrics", "## Intended use",
                    "## Limitations"):
        assert section in card.text
    assert f"| test split | topic | {test['topic']['accuracy']:.4f} | {test['topic']['macro_f1']:.4f} |" in card.text
    assert "Sports, Business" in card.text and small_csv in card.text and sha256_of(small_csv) in card.text


def test_kill_while_writing_a_checkpoint_keeps_the_last_good_one(tmp_path, small_csv, tiny_bert_dir, monkeypatch):
    config = settings(tmp_path, small_csv, tiny_bert_dir, epochs=2)
    real, calls = Accelerator.save_state, []

    def dies_halfway_through_the_second(self, output_dir, *args, **kwargs):
        calls.append(output_dir)
        real(self, output_dir, *args, **kwargs)
        if len(calls) == 2:  # files of epoch 1 partly written, as by a kill mid-write
            next(p for p in sorted(Path(output_dir).iterdir()) if p.is_file()).write_bytes(b"")
            raise KeyboardInterrupt

    monkeypatch.setattr(Accelerator, "save_state", dies_halfway_through_the_second)
    with pytest.raises(KeyboardInterrupt):
        train(config)
    monkeypatch.undo()
    pointer = json.loads((tmp_path / "run" / "checkpoint.json").read_text())
    assert pointer["epoch"] == 0
    config.resume = True
    train(config)  # resumes from epoch 0, the last checkpoint written whole
    log = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert sorted(set(log["epoch"])) == [0, 1] and len(log) == 8
