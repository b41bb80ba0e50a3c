"""ONNX export and the ONNX Runtime backend against the PyTorch model they come from (tiny random backbone)."""

import json
import shutil

import numpy as np
import onnx
import pandas as pd
import pytest
import torch

from mtlib.cli import main
from mtlib.onnx import GRAPH_FILE, OnnxModel, quantize_int8

SENTENCES = pd.read_csv("data/sentences.csv")["text"].tolist()[:120]


@pytest.fixture(scope="module")
def saved(_tiny_model, tmp_path_factory):
    return _tiny_model.save(tmp_path_factory.mktemp("torch") / "model")


@pytest.fixture(scope="module")
def exported(saved, tmp_path_factory):
    """The tiny model exported through the command line, as a user would."""
    folder = tmp_path_factory.mktemp("onnx") / "fp32"
    assert main(["export", "--model", str(saved), "--output", str(folder)]) == 0
    return folder


@pytest.fixture(scope="module")
def quantized(saved, tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx") / "int8"
    assert main(["export", "--model", str(saved), "--output", str(folder), "--quantize", "int8"]) == 0
    return folder


@pytest.mark.parametrize("batch_size", [1, 7, 64])
def test_fp32_logits_and_embeddings_equal_pytorch(_tiny_model, exported, batch_size):
    model = OnnxModel.load(exported)
    expected, got = _tiny_model.predict_logits(SENTENCES), model.predict_logits(SENTENCES, batch_size=batch_size)
    assert set(got) == set(_tiny_model.tasks)
    for task in expected:
        assert got[task].shape == expected[task].shape
        assert torch.allclose(got[task], expected[task], rtol=0, atol=1e-4), task
    embeddings = model.encode(SENTENCES, batch_size=batch_size, normalize=True)
    assert torch.allclose(embeddings, _tiny_model.encoder.encode(SENTENCES, normalize=True), rtol=0, atol=1e-4)
    labels = [{task: p[task]["label"] for task in p} for p in model.predict(SENTENCES, batch_size=batch_size)]
    assert labels == [{task: p[task]["label"] for task in p} for p in _tiny_model.predict(SENTENCES)]


def test_int8_has_int8_weights_and_keeps_embeddings(exported, quantized):
    graph = onnx.load(quantized / GRAPH_FILE).graph
    assert any(node.op_type == "MatMulInteger" for node in graph.node)
    fp32, int8 = OnnxModel.load(exported), OnnxModel.load(quantized)
    assert int8.quantize == "int8" and fp32.quantize is None
    cosine = torch.nn.functional.cosine_similarity(fp32.encode(SENTENCES), int8.encode(SENTENCES))
    assert cosine.min() >= 0.99


def test_predict_evaluate_embed_with_onnx_backend(exported, small_csv, tmp_path, capsys):
    assert main(["predict", "--backend", "onnx", "--model", str(exported), "Shares slid on Friday.", "A goal!"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["text"] for line in lines] == ["Shares slid on Friday.", "A goal!"]
    assert lines == [{"text": text, **p} for text, p in zip(["Shares slid on Friday.", "A goal!"],
                     OnnxModel.load(exported).predict(["Shares slid on Friday.", "A goal!"]), strict=True)]

    report = tmp_path / "eval.json"
    args = ["evaluate", "--backend", "onnx", "--model", str(exported), "--data", small_csv, "--output", str(report)]
    assert main(args) == 0
    assert json.loads(report.read_text())["topic"]["n"] == 300

    out = tmp_path / "e.npy"
    assert main(["embed", "--backend", "onnx", "--model", str(exported), "one", "two words", "--output", str(out)]) == 0
    assert np.load(out).shape == (2, 32)
    assert np.allclose(np.linalg.norm(np.load(out), axis=1), 1, atol=1e-5)


def test_onnx_errors_are_one_line(saved, exported, tmp_path, capsys):
    altered = tmp_path / "altered"
    shutil.copytree(exported, altered)
    with open(altered / GRAPH_FILE, "ab") as f:
        f.write(b"\0")
    cases = [
        (["predict", "--backend", "onnx", "--model", str(saved), "hi"], "python -m mtlib export"),
        (["export", "--model", str(saved), "--output", str(exported)], "not empty"),
        (["predict", "--backend", "onnx", "--model", str(altered), "hi"], "sha256"),
        (["embed", "--backend", "onnx", "--model", str(exported), "--pooling", "max", "hi"], "drop --pooling"),
    ]
    for args, message in cases:
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err


def test_quantizing_twice_is_refused(quantized, tmp_path):
    with pytest.raises(ValueError, match="already quantized"):
        quantize_int8(quantized, tmp_path / "again")
