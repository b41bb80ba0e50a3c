"""Faults found by a probe of bad inputs, damaged folders and hostile files: each ends in one clear line
(exit status 2) or is handled, never a silent wrong answer, code run from a file, or a half-written folder."""

import json
import pickle
import shutil
import time

import numpy as np
import pytest
import torch
from conftest import cli_error
from filelock import FileLock
from safetensors import SafetensorError

import mtlib.checkpoint
import mtlib.model
import mtlib.onnx
from mtlib.cli import main
from mtlib.config import ModelConfig, TrainConfig
from mtlib.model import MultiTaskModel
from mtlib.onnx import OnnxModel, export_onnx
from mtlib.train import train


def settings(data, out, backbone, **overrides) -> TrainConfig:
    fast = {"epochs": 1, "batch_size": 16, "progress": False}  # as train_args below
    return TrainConfig(data=str(data), output_dir=str(out), model=ModelConfig(backbone=backbone), **fast | overrides)


def train_args(data, out, backbone) -> list[str]:
    return ["train", "--data", str(data), "--output-dir", str(out), "--backbone", str(backbone), "--epochs", "1",
            "--batch-size", "16", "--no-progress"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, small_csv, tiny_bert_dir):
    out = tmp_path_factory.mktemp("finished") / "run"
    train(settings(small_csv, out, tiny_bert_dir, epochs=2))
    return out


@pytest.fixture(scope="module")
def exported(_tiny_model, tmp_path_factory):
    saved = _tiny_model.save(tmp_path_factory.mktemp("torch") / "model")
    return export_onnx(saved, tmp_path_factory.mktemp("onnx") / "fp32")


def rewrite_json(path, change) -> None:
    config = json.loads(path.read_text())
    change(config)
    path.write_text(json.dumps(config))


class RunsCode:
    """Unpickling this calls ``open(path, "w")``: a file appears if a loader runs code from the pickle."""

    def __init__(self, path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


# Accelerate reads these with pickle on resume: the model (when its safetensors file is gone), the optimizer,
# the schedule, the random states, and a registered object's state (which it reads with weights_only=False).
PICKLE_NAMES = ["pytorch_model.bin", "optimizer.bin", "scheduler.bin", "random_states_0.pkl",
                "custom_checkpoint_0.pkl"]


@pytest.mark.parametrize("name", PICKLE_NAMES)
def test_resume_refuses_a_pickle_that_runs_code(name, finished_run, tmp_path, small_csv, tiny_bert_dir, capsys):
    run = shutil.copytree(finished_run, tmp_path / "run")
    pointer = run / "checkpoint.json"
    folder = run / json.loads(pointer.read_text())["folder"]
    if name == "pytorch_model.bin":
        (folder / "model.safetensors").unlink()
    witness = tmp_path / "code-ran"
    (folder / name).write_bytes(pickle.dumps({"state": RunsCode(witness)}))

    def plant(state: dict) -> None:  # a careful attacker also updates the manifest, so the sha256 check passes
        state["files"][name] = mtlib.checkpoint.sha256_of(folder / name)
        if name == "pytorch_model.bin":
            del state["files"]["model.safetensors"]

    rewrite_json(pointer, plant)
    err = cli_error([*train_args(small_csv, run, tiny_bert_dir), "--epochs", "2", "--resume"], capsys)
    assert "refused" in err and name in err
    assert not witness.exists()


def test_best_weights_are_kept_without_pickle(finished_run):
    folder = finished_run / json.loads((finished_run / "checkpoint.json").read_text())["folder"]
    assert not list(folder.glob("custom_checkpoint_*"))
    assert (folder / mtlib.checkpoint.RUN_STATE_FILE).is_file()


@pytest.mark.parametrize("damage", ["tokenizer.json", "model.onnx"])
def test_onnx_manifest_listing_no_files_is_refused(damage, exported, tmp_path, capsys):
    folder = shutil.copytree(exported, tmp_path / "onnx")
    if damage == "tokenizer.json":
        (folder / damage).unlink()
    else:
        with open(folder / damage, "r+b") as f:
            f.seek(200)
            f.write(b"\0" * 64)
    rewrite_json(folder / "config.json", lambda config: config.update(files={}))
    err = cli_error(["predict", "--backend", "onnx", "--model", folder, "The striker scored twice."], capsys)
    assert "files['model.onnx']" in err


def test_relabelled_config_is_refused(exported, tiny_model, tmp_path, capsys):
    saved = tiny_model.save(tmp_path / "model")
    onnx_folder = shutil.copytree(exported, tmp_path / "onnx")
    for folder, backend in ((saved, "torch"), (onnx_folder, "onnx")):
        rewrite_json(folder / "config.json", lambda config: config["tasks"]["topic"].reverse())
        err = cli_error(["predict", "--backend", backend, "--model", folder, "The striker scored twice."], capsys)
        assert "relabel" in err


@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_non_finite_floats_are_refused(value, tmp_path, small_csv, tiny_bert_dir, capsys):
    assert f"lr={float(value)!r} is not valid" in cli_error(
        [*train_args(small_csv, tmp_path / "a", tiny_bert_dir), f"--lr={value}"], capsys)
    config = tmp_path / "config.yaml"
    config.write_text(f"lr: {value.replace('inf', '.inf').replace('nan', '.nan')}\n")  # YAML's spelling
    cli_error([*train_args(small_csv, tmp_path / "b", tiny_bert_dir), "--config", config], capsys)
    assert not (tmp_path / "a" / "model").exists() and not (tmp_path / "b" / "model").exists()


def test_a_second_run_into_a_folder_in_use_is_refused(tmp_path, small_csv, tiny_bert_dir, capsys):
    out = tmp_path / "run"
    out.mkdir()
    with FileLock(out / mtlib.checkpoint.LOCK_FILE):  # a first run, still writing
        err = cli_error(train_args(small_csv, out, tiny_bert_dir), capsys)
    assert "being written by another run" in err
    assert sorted(p.name for p in out.iterdir()) == [mtlib.checkpoint.LOCK_FILE]  # nothing written
    assert main(train_args(small_csv, out, tiny_bert_dir)) == 0  # the lock goes with the first run


def test_a_refused_run_leaves_no_folder(tmp_path, tiny_bert_dir, capsys):
    out = tmp_path / "runs" / "new"
    cli_error(train_args(tmp_path / "no-such.csv", out, tiny_bert_dir), capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_predict_input_splits_on_newlines_only(tiny_model, tmp_path, capsys):
    saved = tiny_model.save(tmp_path / "model")
    separators = ["\u2028", "\u2029", "\f", "\v", "\x85", "\x1c", "\x1d"]
    lines = [f"First half{sep}second half" for sep in separators]
    path = tmp_path / "in.txt"
    path.write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")
    capsys.readouterr()
    assert main(["predict", "--model", str(saved), "--input", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["text"] for line in out] == lines


def test_predict_says_which_lines_it_skips(tiny_model, tmp_path, capsys):
    saved = tiny_model.save(tmp_path / "model")
    path = tmp_path / "in.txt"
    path.write_text("One goal.\n\n\0\0\0\n   \nTwo goals.\n", encoding="utf-8")
    capsys.readouterr()
    assert main(["predict", "--model", str(saved), "--input", str(path)]) == 0
    captured = capsys.readouterr()
    assert [json.loads(line)["text"] for line in captured.out.splitlines()] == ["One goal.", "Two goals."]
    assert "skipped 3 line(s)" in captured.err and "line 2, 3, 4" in captured.err


def test_config_file_whose_model_is_not_a_mapping(tmp_path, small_csv, tiny_bert_dir, capsys):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model": "minilm"}))
    err = cli_error([*train_args(small_csv, tmp_path / "run", tiny_bert_dir), "--config", config], capsys)
    assert "model should be a mapping" in err


@pytest.fixture
def full_disk(monkeypatch):
    """No space left: every tensor write fails as torch and safetensors report it, and the disk shows 0 bytes."""

    def torch_full(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")

    def safetensors_full(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(mtlib.checkpoint.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10, 10, 0))
    return torch_full, safetensors_full


def test_full_disk_while_checkpointing_is_named(full_disk, monkeypatch, tmp_path, small_csv, tiny_bert_dir, capsys):
    monkeypatch.setattr(torch, "save", full_disk[0])
    err = cli_error(train_args(small_csv, tmp_path / "run", tiny_bert_dir), capsys)
    assert "the disk is full" in err and "--resume" in err


def test_full_disk_while_saving_the_model_is_named(full_disk, monkeypatch, tmp_path, small_csv, tiny_bert_dir, capsys):
    monkeypatch.setattr(mtlib.model, "save_file", full_disk[1])
    err = cli_error(train_args(small_csv, tmp_path / "run", tiny_bert_dir), capsys)
    assert "the disk is full" in err and "--resume" in err


def test_backbone_with_pickle_weights_is_refused_at_once(tmp_path, tiny_bert_dir, capsys):
    folder = shutil.copytree(tiny_bert_dir, tmp_path / "pickled")
    weights = folder / "model.safetensors"
    torch.save(mtlib.checkpoint.load_file(weights), folder / "pytorch_model.bin")
    weights.unlink()
    started = time.perf_counter()
    err = cli_error(["embed", "--backbone", folder, "A sentence."], capsys)
    assert "pytorch_model.bin" in err and "refused" in err
    assert time.perf_counter() - started < 60  # not minutes of asking the hub for a conversion


def test_interrupted_export_leaves_nothing(tiny_model, tmp_path, monkeypatch):
    saved = tiny_model.save(tmp_path / "model")
    output = tmp_path / "onnx"

    def interrupted(model, folder):
        (folder / "model.onnx").write_bytes(b"half a graph")
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(mtlib.onnx, "write_graph", interrupted)
        with pytest.raises(KeyboardInterrupt):
            export_onnx(saved, output)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    (tmp_path / ".onnx.partial").mkdir()  # left by an export killed outright
    export_onnx(saved, output)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "onnx"]


def test_onnx_threads_with_an_empty_omp_setting(exported, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "")
    assert OnnxModel.load(exported).predict(["The striker scored twice."])[0]["topic"]["label"]


def test_fine_tuned_encoder_loads_in_sentence_transformers(tiny_model, tmp_path, capsys):
    from sentence_transformers import SentenceTransformer

    with torch.no_grad():  # a fine-tuned encoder: weights that differ from the pretrained backbone's
        for p in tiny_model.encoder.parameters():
            p.add_(0.01 * torch.randn_like(p))
    saved = tiny_model.save(tmp_path / "model")
    sentences = ["The striker scored twice.", "Shares slid on Friday.", "A new phone with a bigger battery."]
    ours = tmp_path / "ours.npy"
    assert main(["embed", "--model", str(saved), "--output", str(ours), *sentences]) == 0
    theirs = SentenceTransformer(str(saved), device="cpu").encode(sentences, convert_to_tensor=True)
    assert torch.allclose(theirs, torch.from_numpy(np.load(ours)), atol=1e-5)
    assert MultiTaskModel.load(saved)  # the mtlib files still load


def test_a_runs_config_file_never_replaces_the_run(tmp_path, small_csv, tiny_bert_dir, capsys):
    out = tmp_path / "run"
    assert main([*train_args(small_csv, out, tiny_bert_dir), "--overwrite"]) == 0
    saved = json.loads((out / "train_config.json").read_text())
    assert "overwrite" not in saved and "resume" not in saved
    assert "already holds a run" in cli_error(["train", "--config", out / "train_config.json"], capsys)
