import json

import numpy as np
import pandas as pd
import pytest
import torch
from accelerate.utils import set_seed

import mtlib.train
from mtlib.config import ModelConfig, TrainConfig
from mtlib.data import task_schedule
from mtlib.model import MultiTaskModel
from mtlib.train import build_model, train

IGNORED_COLUMNS = ["seconds"]  # wall-clock time is the one column that differs between identical runs


def config(tmp_path, small_csv, backbone, name, **overrides):
    settings = {"epochs": 2, "batch_size": 16, "lr": 1e-3, "progress": False} | overrides
    return TrainConfig(data=small_csv, output_dir=str(tmp_path / name), model=ModelConfig(backbone=backbone),
                       **settings)


def metrics(run_dir):
    return pd.read_csv(run_dir / "metrics.csv").drop(columns=IGNORED_COLUMNS)


def test_training_writes_log_model_and_test_metrics(tmp_path, small_csv, tiny_bert_dir):
    _, test = train(config(tmp_path, small_csv, tiny_bert_dir, "run"))
    run = tmp_path / "run"
    log = pd.read_csv(run / "metrics.csv")
    assert len(log) == 2 * 2 * 2  # epochs x splits x tasks
    assert set(log["split"]) == {"train", "validation"}
    assert (log[log["split"] == "validation"]["n"] == 45).all()  # 15% of 300 rows
    saved = json.loads((run / "test_metrics.json").read_text())
    assert saved == json.loads(json.dumps(test))
    assert set(saved["topic"]) >= {"accuracy", "macro_f1", "n", "per_class", "confusion_matrix"}
    assert (run / "model" / "heads.safetensors").is_file()
    assert (run / "model" / "backbone" / "model.safetensors").is_file()


def test_same_seed_same_metrics(tmp_path, small_csv, tiny_bert_dir):
    train(config(tmp_path, small_csv, tiny_bert_dir, "a"))
    train(config(tmp_path, small_csv, tiny_bert_dir, "b"))
    pd.testing.assert_frame_equal(metrics(tmp_path / "a"), metrics(tmp_path / "b"))


def test_killed_run_resumes_to_the_same_result(tmp_path, small_csv, tiny_bert_dir, monkeypatch):
    train(config(tmp_path, small_csv, tiny_bert_dir, "whole", epochs=3))

    real = mtlib.train.compute_losses
    calls = {"n": 0}

    def crash_in_second_epoch(*args):
        calls["n"] += 1
        if calls["n"] == 20 + 5:  # 20 steps per epoch: dies a quarter into epoch 1
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(mtlib.train, "compute_losses", crash_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(config(tmp_path, small_csv, tiny_bert_dir, "broken", epochs=3))
    monkeypatch.setattr(mtlib.train, "compute_losses", real)
    assert not (tmp_path / "broken" / "test_metrics.json").exists()
    train(config(tmp_path, small_csv, tiny_bert_dir, "broken", epochs=3, resume=True))

    pd.testing.assert_frame_equal(metrics(tmp_path / "whole"), metrics(tmp_path / "broken"))
    whole, resumed = (tmp_path / name / "test_metrics.json" for name in ("whole", "broken"))
    assert whole.read_text() == resumed.read_text()


def test_frozen_backbone_cache_gives_the_same_result(tmp_path, small_csv, tiny_bert_dir):
    _, cached = train(config(tmp_path, small_csv, tiny_bert_dir, "cached", freeze="backbone"))
    no_cache = config(tmp_path, small_csv, tiny_bert_dir, "uncached", freeze="backbone", cache_embeddings=False)
    _, uncached = train(no_cache)
    for task in cached:
        assert cached[task]["accuracy"] == pytest.approx(uncached[task]["accuracy"], abs=0.02)
    a, b = metrics(tmp_path / "cached"), metrics(tmp_path / "uncached")
    assert np.allclose(a["loss"], b["loss"], atol=1e-3)


@pytest.mark.parametrize("sampling", ["round_robin", "proportional", "temperature"])
def test_per_task_sampling_and_weighting_train(tmp_path, small_csv, tiny_bert_dir, sampling, monkeypatch):
    schedules = []

    def recording(*args, **kwargs):
        schedules.append(task_schedule(*args, **kwargs))
        return schedules[-1]

    monkeypatch.setattr(mtlib.train, "task_schedule", recording)
    _, test = train(config(tmp_path, small_csv, tiny_bert_dir, sampling, sampling=sampling, epochs=1,
                           loss_weighting="uncertainty"))
    assert set(test) == {"topic", "sentiment"}
    # each step drew one task's batch: a per-task loader for each task, mixed by the rule
    assert len(schedules) == 1 and set(schedules[0]) == {"topic", "sentiment"}
    # the uncertainty weights learned: both moved away from their start, 1
    weights = json.loads((tmp_path / sampling / "checkpoint.json").read_text())["loss_weights"]
    assert set(weights) == {"topic", "sentiment"} and all(w != 1.0 for w in weights.values())


def test_nothing_trains_when_all_frozen(tmp_path, small_csv, tiny_bert_dir):
    settings = config(tmp_path, small_csv, tiny_bert_dir, "frozen", freeze="all", epochs=1)
    train(settings)
    log = pd.read_csv(tmp_path / "frozen" / "metrics.csv")
    assert (log["trainable_params"] == 0).all()
    set_seed(settings.seed)
    untouched = build_model(settings).state_dict()
    saved = MultiTaskModel.load(tmp_path / "frozen" / "model").state_dict()
    assert all(torch.equal(untouched[k], saved[k]) for k in untouched)


def test_task_schedule():
    sizes = {"a": 3, "b": 1}
    rng = np.random.default_rng(0)
    assert task_schedule(sizes, "round_robin", temperature=1, rng=rng) == ["a", "b", "a", "a"]
    assert sorted(task_schedule(sizes, "proportional", temperature=1, rng=rng)) == ["a", "a", "a", "b"]
    many = task_schedule({"a": 900, "b": 100}, "temperature", temperature=1e9, rng=rng)
    assert abs(many.count("b") / len(many) - 0.5) < 0.05  # a very high temperature is uniform


def test_bad_config(tmp_path, small_csv, tiny_bert_dir):
    with pytest.raises(ValueError, match=r"sampling='random' is not valid: it should be one of \("):
        config(tmp_path, small_csv, tiny_bert_dir, "bad", sampling="random")
