import json
import subprocess
import sys

import numpy as np
import pytest

from mtlib.cli import main


def run(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "mtlib", *args], capture_output=True, text=True, input=stdin)


def test_embed_prints_shape_and_similarities(tmp_path):
    out = tmp_path / "e.npy"
    result = run("embed", "The striker scored twice.", "Two goals for the forward.", "Rates were held.",
                 "--output", str(out))
    assert result.returncode == 0, result.stderr
    assert "embeddings: (3, 384)" in result.stdout
    similarity = np.load(out) @ np.load(out).T
    assert similarity[0, 1] > similarity[0, 2]  # the two football sentences are closer


def test_embed_reads_stdin_with_tiny_backbone(tiny_bert_dir):
    result = run("embed", "--input", "-", "--backbone", tiny_bert_dir, "--pooling", "max", stdin="one\n\ntwo words\n")
    assert result.returncode == 0, result.stderr
    assert "embeddings: (2, 32)" in result.stdout


def test_predict_and_evaluate_saved_model(tiny_model, tmp_path, small_csv):
    folder = tiny_model.save(tmp_path / "model")
    result = run("predict", "--model", str(folder), "Shares slid on Friday.", "What a goal!")
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["text"] for line in lines] == ["Shares slid on Friday.", "What a goal!"]
    assert set(lines[0]["topic"]["probabilities"]) == set(tiny_model.tasks["topic"])

    report = tmp_path / "eval.json"
    result = run("evaluate", "--model", str(folder), "--data", small_csv, "--output", str(report))
    assert result.returncode == 0, result.stderr
    scores = json.loads(report.read_text())
    assert scores["topic"]["n"] == 300
    assert np.array(scores["sentiment"]["confusion_matrix"]).sum() == 300


def test_train_without_progress_bars(tiny_bert_dir, tmp_path, small_csv):
    result = run("train", "--data", small_csv, "--output-dir", str(tmp_path), "--backbone", tiny_bert_dir,
                 "--epochs", "1", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "epoch 0" not in result.stderr
    assert json.loads((tmp_path / "train_config.json").read_text())["progress"] is False


@pytest.mark.parametrize(("args", "message"), [
    (["predict", "--model", "no/such/folder", "hi"], "no config.json"),
    (["embed"], "give sentences"),
    (["train", "--data", "no-such.csv", "--output-dir", "x"], "no such file"),
])
def test_errors_are_one_line(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
