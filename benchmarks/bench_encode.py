"""Encoding throughput: mtlib's encode against sentence-transformers on the same model, sentences and batch size.

Runs alternate after a warm-up, in one process, and the best of several runs counts. Also: throughput by
sentence length, and bf16 autocast against fp32 with the cosine similarity of their embeddings.

    python benchmarks/bench_encode.py [--repeats 3] [--batch-size 64]
"""

from __future__ import annotations

import argparse
from functools import partial

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
    parser.add_argument("--model", default="minilm", help="backbone alias, id or folder")
    args = parser.parse_args()

    texts = pd.read_csv(args.data)["text"].tolist()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    ours = SentenceEncoder.from_pretrained(args.model, device=device)
    reference = SentenceTransformer(resolve_backbone(args.model), device=device)
    reference.max_seq_length = ours.max_length
    sets = {"shipped data": texts, "long sentences": long_sentences(texts, 300)}

    def embed(sentences: list[str], precision: str = "fp32") -> torch.Tensor:
        return ours.encode(sentences, batch_size=args.batch_size, precision=precision, show_progress=False)

    # On a GPU, "auto" is mtlib's default there (bf16 autocast); sentence-transformers' default is fp32.
    contenders = {"mtlib_fp32": partial(embed, precision="fp32"),
                  "sentence_transformers": partial(reference.encode, batch_size=args.batch_size)}
    if device == "cuda":
        contenders["mtlib_auto"] = partial(embed, precision="auto")
    rows = []
    for name, sentences in sets.items():
        seconds = {contender: [] for contender in contenders}
        for run in contenders.values():
            run(sentences)  # warm-up
        for _ in range(args.repeats):  # alternate so every contender sees the same machine load
            for contender, run in contenders.items():
                seconds[contender].append(best_of(partial(run, sentences), 1))
        rows.append({"sentences": name, "n": len(sentences),
                     **{f"{c}_per_s": len(sentences) / min(t) for c, t in seconds.items()}})
    table = pd.DataFrame(rows)
    for contender in contenders:
        if contender.startswith("mtlib"):
            table[f"{contender}_ratio"] = table[f"{contender}_per_s"] / table["sentence_transformers_per_s"]

    precision = []
    for name, sentences in sets.items():
        cosine = torch.nn.functional.cosine_similarity(embed(sentences), embed(sentences, "bf16")).min().item()
        t32 = best_of(partial(embed, sentences), args.repeats)
        t16 = best_of(partial(embed, sentences, "bf16"), args.repeats)
        precision.append({"sentences": name, "fp32_per_s": len(sentences) / t32, "bf16_per_s": len(sentences) / t16,
                          "bf16_speedup": t32 / t16, "min_cosine_bf16_vs_fp32": cosine})

    by_length = []
    for tokens in (16, 32, 64, 128):
        sentences = sentences_of_tokens(ours.tokenizer, texts, tokens, 512)
        seconds = best_of(partial(embed, sentences), args.repeats)
        by_length.append({"tokens": tokens, "sentences_per_s": 512 / seconds, "tokens_per_s": 512 * tokens / seconds})

    print(table.round(2).to_string(index=False))
    print(pd.DataFrame(precision).round(4).to_string(index=False))
    print(pd.DataFrame(by_length).round(1).to_string(index=False))
    print(f"peak RSS: {peak_rss_mb():.0f} MB")
    path = save("encode", {"batch_size": args.batch_size, "repeats": args.repeats, "throughput": rows,
                           "precision": precision, "by_length": by_length, "peak_rss_mb": peak_rss_mb()})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
