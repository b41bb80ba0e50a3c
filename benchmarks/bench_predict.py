"""`predict` throughput on the shipped sentences: PyTorch fp32 and bf16 autocast, ONNX Runtime fp32 and int8.

One process, the same sentences and batch size; the contenders take turns after a warm-up and the best of
``--repeats`` runs counts. ONNX Runtime gets as many threads as PyTorch uses. Speed depends on the model's
shape, not its weights, so without ``--model`` a fresh model on the default backbone is timed.

    python benchmarks/bench_predict.py [--repeats 3] [--batch-size 64] [--model runs/default/model] [--sentences N]
"""

from __future__ import annotations

import argparse
import tempfile
from functools import partial
from pathlib import Path

import onnxruntime
import pandas as pd
import torch
from common import peak_rss_mb, race, save

from mtlib.model import MultiTaskModel
from mtlib.onnx import OnnxModel, export_onnx, quantize_int8
from mtlib.precision import cpu_has_native_bf16


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--data", default="data/sentences.csv")
    parser.add_argument("--model", help="a saved model folder; default: the default backbone with fresh heads")
    parser.add_argument("--sentences", type=int, help="time only the first N sentences (a quick check)")
    args = parser.parse_args()

    texts = pd.read_csv(args.data)["text"].tolist()[: args.sentences]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.model) if args.model else MultiTaskModel.from_pretrained("minilm").save(Path(tmp) / "model")
        model = MultiTaskModel.load(folder, device="cpu")
        fp32 = export_onnx(folder, Path(tmp) / "onnx")
        threads = torch.get_num_threads()
        onnx = {"fp32": OnnxModel.load(fp32, threads=threads),
                "int8": OnnxModel.load(quantize_int8(fp32, Path(tmp) / "onnx-int8"), threads=threads)}
        contenders = {
            "pytorch_fp32": partial(model.predict, texts, batch_size=args.batch_size, precision="fp32"),
            "pytorch_bf16": partial(model.predict, texts, batch_size=args.batch_size, precision="bf16"),
            "onnx_fp32": partial(onnx["fp32"].predict, texts, batch_size=args.batch_size),
            "onnx_int8": partial(onnx["int8"].predict, texts, batch_size=args.batch_size),
        }
        seconds = race(contenders, args.repeats)
    rows = [{"backend": name, "sentences_per_s": len(texts) / t, "speedup_over_pytorch_fp32":
             seconds["pytorch_fp32"] / t} for name, t in seconds.items()]
    print(pd.DataFrame(rows).round(2).to_string(index=False))
    print(f"peak RSS: {peak_rss_mb():.0f} MB")
    path = save("predict", {"n": len(texts), "batch_size": args.batch_size, "repeats": args.repeats,
                            "threads": threads, "native_bf16": cpu_has_native_bf16(),
                            "onnxruntime": onnxruntime.__version__, "model": args.model or "minilm, fresh heads",
                            "throughput": rows, "peak_rss_mb": peak_rss_mb()})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
