"""Does the ONNX Runtime path give the trained model's answers? fp32 and int8 exports against PyTorch.

On the test split the model was scored on when trained (and the out-of-style test half): the largest
logit difference of the fp32 export, macro-F1 per task of each backend, and the cosine similarity of the
int8 embeddings to fp32 (mean and worst sentence). The figures do not depend on the machine's load; results in
``experiments/results/onnx_parity.json``.

    python -m mtlib train --data data/sentences.csv --output-dir runs/default --overwrite   # if not trained yet
    python experiments/onnx_parity.py [--run runs/default]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import pandas as pd
import torch

from mtlib.data import load_dataset, load_half, split_dataset
from mtlib.evaluate import evaluate_frame
from mtlib.model import MultiTaskModel
from mtlib.onnx import OnnxModel, export_onnx, quantize_int8

RESULTS = Path(__file__).parent / "results" / "onnx_parity.json"


def test_sets(run: Path, model: MultiTaskModel) -> dict[str, pd.DataFrame]:
    """The run's own test split (its data and seed from ``train_config.json``) and the out-of-style test half."""
    config = json.loads((run / "train_config.json").read_text())
    sets = {"test": split_dataset(load_dataset(config["data"], model.tasks), seed=config["seed"])["test"]}
    sets["out-of-style test"] = load_half("data/out_of_style.csv", model.tasks, "test")
    return sets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/default", help="a training run folder (train_config.json, model/)")
    args = parser.parse_args()
    run = Path(args.run)
    model = MultiTaskModel.load(run / "model", device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(run / "model", Path(tmp) / "fp32")
        backends = {"pytorch": model, "onnx_fp32": OnnxModel.load(fp32),
                    "onnx_int8": OnnxModel.load(quantize_int8(fp32, Path(tmp) / "int8"))}
        result = {"run": str(run)}
        for name, frame in test_sets(run, model).items():
            texts = frame["text"].tolist()
            logits = {backend: m.predict_logits(texts) for backend, m in backends.items()}
            embeddings = {backend: backends[backend].encode(texts) for backend in ("onnx_fp32", "onnx_int8")}
            cosine = torch.nn.functional.cosine_similarity(embeddings["onnx_int8"], embeddings["onnx_fp32"])
            result[name] = {
                "n": len(texts),
                "max_abs_logit_diff_fp32": max(
                    float((logits["onnx_fp32"][t] - logits["pytorch"][t]).abs().max()) for t in model.tasks
                ),
                "max_abs_embedding_diff_fp32": float(
                    (embeddings["onnx_fp32"] - model.encoder.encode(texts)).abs().max()
                ),
                **{f"{stat}_cosine_int8_vs_fp32": float(getattr(cosine, stat)()) for stat in ("mean", "min")},
                "macro_f1": {backend: {task: scores["macro_f1"] for task, scores in evaluate_frame(m, frame).items()}
                             for backend, m in backends.items()},
            }
            scores = result[name]["macro_f1"]
            result[name]["int8_minus_fp32_macro_f1"] = {
                task: scores["onnx_int8"][task] - scores["onnx_fp32"][task] for task in scores["onnx_fp32"]
            }
    print(json.dumps(result, indent=2))
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
