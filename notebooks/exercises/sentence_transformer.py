"""Checkers for the exercises of ``notebooks/01_sentence_transformer.ipynb``."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from mtlib.encoder import Pooling, SentenceEncoder

from . import correct, not_yet, raised

SEARCH_QUERIES = (("The goalkeeper was sent off in the derby.", 5), ("The central bank cut interest rates.", 3))
ORDERS = ("shuffled", "length-sorted")


def max_pool(answer: Callable | None, token_embeddings: torch.Tensor, attention_mask: torch.Tensor) -> None:
    """Check max_pool(hidden, attention_mask) against Pooling('max'), with and without all-negative tokens."""
    missing = "max_pool is not written yet: it should return one (B, H) tensor, the maximum over the real tokens."
    if answer is None:
        return not_yet(missing)
    # the notebook's four sentences, plus a batch whose real tokens are all negative, so a padded 0 would win
    negative = -torch.rand(2, 5, 3, generator=torch.Generator().manual_seed(0)) - 0.5  # (2, 5, 3)
    negative_mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1]])
    cases = [(token_embeddings, attention_mask), (negative, negative_mask)]
    for case, (hidden, mask) in enumerate(cases):
        expected = Pooling(hidden.shape[-1], "max")(hidden, mask)  # (B, H)
        hidden_copy, mask_copy = hidden.clone(), mask.clone()
        try:
            result = answer(hidden_copy, mask_copy)
        except Exception as error:
            return raised(error)
        if result is None:
            return not_yet(missing)
        if not isinstance(result, torch.Tensor):
            return not_yet(f"max_pool returned type {type(result).__name__}; return a torch tensor of shape (B, H).")
        if not (torch.equal(hidden_copy, hidden) and torch.equal(mask_copy, mask)):
            return not_yet("max_pool changed its input in place; use masked_fill (no trailing underscore).")
        if tuple(result.shape) != tuple(expected.shape):
            return not_yet(
                f"max_pool returned shape {tuple(result.shape)}, expected {tuple(expected.shape)}: "
                "take the maximum over the token axis, dim=1."
            )
        if not torch.allclose(result.float(), expected, atol=1e-6):
            where = "the notebook's four sentences" if case == 0 else "a batch whose real tokens are all negative"
            return not_yet(
                f"max_pool differs from Pooling('max') on {where}: can a padded position still win "
                "the maximum? Fill it with -inf (or the lowest float) before taking it."
            )
    expected = Pooling(token_embeddings.shape[-1], "max")(token_embeddings, attention_mask)
    unmasked = token_embeddings.amax(dim=1)
    differ = sum(not torch.allclose(unmasked[i], expected[i]) for i in range(len(expected)))
    padded = int((attention_mask == 0).any(dim=1).sum())
    correct(
        f"max_pool equals Pooling('max') on all {len(expected)} sentences and on all-negative tokens; "
        f"an unmasked maximum would be wrong for {differ} of them ({padded} with padding)."
    )


def search(answer: Callable | None, encoder: SentenceEncoder, unit_vectors: np.ndarray, sample: pd.DataFrame) -> None:
    """Check that search(query, k) returns the k rows of sample most cosine-similar to the query, best first."""
    missing = "search is not written yet: it should return the k most similar rows of sample, with a cosine column."
    if answer is None:
        return not_yet(missing)
    summary = ""
    for query, k in SEARCH_QUERIES:
        q = encoder.encode([query], normalize=False, show_progress=False).numpy()[0]  # (384,)
        reference = unit_vectors @ (q / np.linalg.norm(q))  # (N,) cosines, the sample's vectors have length 1
        try:
            hits = answer(query, k)
        except Exception as error:
            return raised(error)
        if hits is None:
            return not_yet(missing)
        if not isinstance(hits, pd.DataFrame) or not {"text", "topic", "cosine"} <= set(hits.columns):
            return not_yet("search should return a DataFrame: rows of sample, plus a cosine column (use .assign).")
        if len(hits) != k:
            return not_yet(f"search({query!r}, k={k}) returned {len(hits)} rows instead of {k}.")
        if not hits.index.isin(sample.index).all() or not hits["text"].equals(sample.loc[hits.index, "text"]):
            return not_yet(
                "the rows do not line up with sample's index: take them with sample.iloc[...] and keep the index."
            )
        found = reference[hits.index.to_numpy()]
        kth_best = np.sort(reference)[-k]
        if (found < kth_best - 1e-5).any():
            return not_yet(
                f"for {query!r}, these are not the {k} most cosine-similar sentences: "
                "sort by decreasing cosine (np.argsort(-scores)) and keep the first k."
            )
        if (np.diff(found) > 1e-5).any():
            return not_yet("the hits are the right ones, but not most similar first.")
        if not np.allclose(hits["cosine"].to_numpy(dtype=float), found, atol=1e-4):
            return not_yet(
                "the cosine column does not hold each hit's cosine similarity to the query: "
                "normalise the query vector too, then take the dot product."
            )
        if not summary:
            sports = int((hits["topic"] == "Sports").sum())
            summary = (
                f"for {query!r}, {sports} of the {k} hits are about Sports (best cosine {round(float(found[0]), 3)})"
            )
    correct(f"search returns the k most cosine-similar sentences, most similar first; {summary}.")


def _padding(lengths: Sequence[int], order: Sequence[int], batch_size: int) -> int:
    """Padding tokens when the sentences, in this order, are cut into batches each padded to its longest."""
    batches = [[lengths[i] for i in order[s : s + batch_size]] for s in range(0, len(order), batch_size)]
    return sum(max(b) * len(b) - sum(b) for b in batches)


def padding_share(
    answer: Mapping[str, float] | None, lengths: Sequence[int], shuffled: Sequence[int], by_length: Sequence[int]
) -> None:
    """Check the share of padding among all token positions, for shuffled and length-sorted batches of 16."""
    if answer is None:
        return not_yet(
            'share is not computed yet: a dict {"shuffled": ..., "length-sorted": ...} of padding / '
            "(padding + real tokens), with batches of 16."
        )
    if not isinstance(answer, Mapping) or set(answer) != set(ORDERS):
        return not_yet('share should be a dict with exactly the keys "shuffled" and "length-sorted".')
    real, shares = sum(lengths), {}
    for name, order in zip(ORDERS, (shuffled, by_length), strict=True):
        value = answer[name]
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            return not_yet(f'share["{name}"] has type {type(value).__name__}; it should be a number between 0 and 1.')
        pad16, pad64 = _padding(lengths, order, 16), _padding(lengths, order, 64)
        shares[name] = round(pad16 / (pad16 + real), 3)
        if math.isclose(value, pad16 / (pad16 + real), abs_tol=1e-9):
            continue
        if math.isclose(value, pad64 / (pad64 + real), abs_tol=1e-9):
            return not_yet(f'share["{name}"] is the share for batches of 64: pass batch_size=16 to padding_tokens.')
        if math.isclose(value, pad16 / real, abs_tol=1e-9):
            return not_yet(
                f'share["{name}"] divides by the real tokens only; divide by all positions, padding + real.'
            )
        return not_yet(
            f'share["{name}"] is not padding / (padding + real tokens) for the {name} order in batches of 16.'
        )
    correct(
        f"with batches of 16, {shares['shuffled']} of all token positions are padding in shuffled order "
        f"and {shares['length-sorted']} in length order."
    )
