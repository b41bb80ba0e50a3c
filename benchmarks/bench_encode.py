"""Encoding throughput: mtlib's encode against sentence-transformers on the same model, sentences and batch size.

Runs alternate after a warm-up, in one process, and the best of several runs counts. Also: throughput by
sentence length, and bf16 autocast against fp32 with the cosine similarity of their embeddings.

    python benchmarks/bench_encode.py [--repeats 3] [--batch-size 64]
"""

from __future__ import annotations

import argparse

import pandas as pd
import torch
from common import best_of, peak_rss_mb, save
from sentence_transformers import SentenceTransformer

from mtlib.backbone import resolve_backbone
from mtlib.encoder import SentenceEncoder


def long_sentences(texts: list[str], n: int) -> list[str]:
    """Sentences of roughly 100-200 tokens, made by joining shipped sentences."""
    return [" ".join(texts[i : i + 8]) for i in range(0, 8 * n, 8)]


def sentences_of_tokens(tokenizer, texts: list[str], tokens: int, n: int) -> list[str]:
    """``n`` distinct texts of exactly ``tokens`` tokens (with [CLS] and [SEP]), cut from the shipped data."""
    ids = tokenizer(" ".join(texts), add_special_tokens=False)["input_ids"]
    step = tokens - 2
    return [tokenizer.decode(ids[i * step : (i + 1) * step]) for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--data", default="data/sentences.csv")
    args = parser.parse_args()

    texts = pd.read_csv(args.data)["text"].tolist()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    ours = SentenceEncoder.from_pretrained("minilm", device=device)
    reference = SentenceTransformer(resolve_backbone("minilm"), device=device)
    sets = {"shipped data": texts, "long sentences": long_sentences(texts, 300)}

    rows = []
    for name, sentences in sets.items():
        run_ours = lambda s=sentences: ours.encode(s, batch_size=args.batch_size, precision="fp32")  # noqa: E731
        run_ref = lambda s=sentences: reference.encode(s, batch_size=args.batch_size)  # noqa: E731
        run_ours(), run_ref()  # warm-up
        t_ours, t_ref = [], []
        for _ in range(args.repeats):  # alternate so both see the same machine load
            t_ours.append(best_of(run_ours, 1))
            t_ref.append(best_of(run_ref, 1))
        rows.append({"sentences": name, "n": len(sentences), "mtlib_per_s": len(sentences) / min(t_ours),
                     "sentence_transformers_per_s": len(sentences) / min(t_ref)})
    table = pd.DataFrame(rows)
    table["ratio"] = table["mtlib_per_s"] / table["sentence_transformers_per_s"]

    fp32 = ours.encode(texts[:1000], batch_size=args.batch_size, precision="fp32")
    bf16 = ours.encode(texts[:1000], batch_size=args.batch_size, precision="bf16")
    cosine = torch.nn.functional.cosine_similarity(fp32, bf16).min().item()
    t32 = best_of(lambda: ours.encode(texts, batch_size=args.batch_size, precision="fp32"), args.repeats)
    t16 = best_of(lambda: ours.encode(texts, batch_size=args.batch_size, precision="bf16"), args.repeats)
    precision = {"fp32_per_s": len(texts) / t32, "bf16_per_s": len(texts) / t16, "bf16_speedup": t32 / t16,
                 "min_cosine_bf16_vs_fp32": cosine}

    by_length = []
    for tokens in (16, 32, 64, 128):
        sentences = sentences_of_tokens(ours.tokenizer, texts, tokens, 512)
        seconds = best_of(lambda s=sentences: ours.encode(s, batch_size=args.batch_size, precision="fp32"),
                          args.repeats)
        by_length.append({"tokens": tokens, "sentences_per_s": 512 / seconds, "tokens_per_s": 512 * tokens / seconds})

    print(table.round(2).to_string(index=False))
    print(pd.Series(precision).round(4).to_string())
    print(pd.DataFrame(by_length).round(1).to_string(index=False))
    print(f"peak RSS: {peak_rss_mb():.0f} MB")
    path = save("encode", {"batch_size": args.batch_size, "repeats": args.repeats, "throughput": rows,
                           "precision": precision, "by_length": by_length, "peak_rss_mb": peak_rss_mb()})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
