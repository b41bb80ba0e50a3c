"""Encoding throughput: mtlib's encode against sentence-transformers on the same model, sentences and batch size.

Runs alternate after a warm-up, in one process, and the best of several runs counts. Also: throughput by
sentence length, and bf16 autocast against fp32 with the cosine similarity of their embeddings.

    python benchmarks/bench_encode.py [--repeats 3] [--batch-size 64] [--prefetch-tokens]

``--prefetch-tokens`` adds a contender that tokenizes the next batches in a background thread while the
device runs the current one (the fast tokenizer releases the GIL): on a GPU, where tokenizing on the main
thread leaves the device idle between batches, it measures what overlapping the two gains.
"""

from __future__ import annotations

import argparse
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import pandas as pd
import torch
from common import best_of, peak_rss_mb, race, save
from sentence_transformers import SentenceTransformer

from mtlib.backbone import resolve_backbone
from mtlib.encoder import SentenceEncoder
from mtlib.precision import resolve_precision


def long_sentences(texts: list[str], n: int) -> list[str]:
    """Sentences of roughly 100-200 tokens, made by joining shipped sentences."""
    return [" ".join(texts[i : i + 8]) for i in range(0, 8 * n, 8)]


def sentences_of_tokens(tokenizer, texts: list[str], tokens: int, n: int) -> list[str]:
    """``n`` distinct texts of exactly ``tokens`` tokens (with [CLS] and [SEP]), cut from the shipped data."""
    ids = tokenizer(" ".join(texts), add_special_tokens=False)["input_ids"]
    step = tokens - 2
    return [tokenizer.decode(ids[i * step : (i + 1) * step]) for i in range(n)]


def encode_prefetching(encoder: SentenceEncoder, sentences: list[str], batch_size: int, precision: str) -> torch.Tensor:
    """``encoder.encode`` with tokenization moved to a worker thread that runs ahead of the device.

    Batches are grouped by characters (token counts are not known before tokenizing) and padded each to its
    own longest sentence; the vectors come back in input order, unnormalised.
    """
    order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
    batches = [[sentences[i] for i in order[start : start + batch_size]] for start in range(0, len(order), batch_size)]
    cuda = encoder.device.type == "cuda"

    def tokenize(batch: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = encoder.tokenizer(batch, padding=True, truncation=True, max_length=encoder.max_length,
                                   return_tensors="pt")
        ids, mask = tokens["input_ids"], tokens["attention_mask"]
        return (ids.pin_memory(), mask.pin_memory()) if cuda else (ids, mask)  # pinned: copies overlap compute

    chunks = []
    with ThreadPoolExecutor(max_workers=1) as worker, torch.inference_mode():
        for ids, mask in worker.map(tokenize, batches):  # map submits every batch at once: the worker runs ahead
            ids, mask = ids.to(encoder.device, non_blocking=True), mask.to(encoder.device, non_blocking=True)
            bf16 = resolve_precision(precision, encoder.device) == "bf16"
            with torch.autocast(encoder.device.type, dtype=torch.bfloat16, enabled=bf16):
                chunks.append(encoder.pool(ids, mask).float())
    embeddings = torch.empty(len(sentences), encoder.hidden_size)
    embeddings[order] = torch.cat(chunks).cpu()
    return embeddings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--data", default="data/sentences.csv")
    parser.add_argument("--model", default="minilm", help="backbone alias, id or folder")
    parser.add_argument("--prefetch-tokens", action="store_true", help="add encoding with tokenization in a worker")
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
    if args.prefetch_tokens:
        contenders["mtlib_prefetch_auto"] = partial(encode_prefetching, ours, batch_size=args.batch_size,
                                                    precision="auto")
    rows = []
    for name, sentences in sets.items():
        seconds = race({contender: partial(run, sentences) for contender, run in contenders.items()}, args.repeats)
        rows.append({"sentences": name, "n": len(sentences),
                     **{f"{c}_per_s": len(sentences) / t for c, t in seconds.items()}})
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

    if args.prefetch_tokens:  # the same vectors, or the speed means nothing
        check = (encode_prefetching(ours, texts, args.batch_size, "auto") - ours.encode(texts, show_progress=False))
        print(f"prefetching: largest difference to encode() {check.abs().max().item():.2e}")
    print(table.round(2).to_string(index=False))
    print(pd.DataFrame(precision).round(4).to_string(index=False))
    print(pd.DataFrame(by_length).round(1).to_string(index=False))
    print(f"peak RSS: {peak_rss_mb():.0f} MB")
    path = save("encode", {"batch_size": args.batch_size, "repeats": args.repeats, "throughput": rows,
                           "precision": precision, "by_length": by_length, "peak_rss_mb": peak_rss_mb()})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
