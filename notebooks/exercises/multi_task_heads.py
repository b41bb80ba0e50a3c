"""Checkers for the exercises of ``notebooks/02_multi_task_heads.ipynb``."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping

import torch

from mtlib.conflict import pcgrad
from mtlib.encoder import SentenceEncoder
from mtlib.freezing import parameter_report
from mtlib.model import DEFAULT_TASKS, MultiTaskModel

from . import correct, not_yet, raised

THIRD_TASK = {"formality": ["formal", "informal"]}
PROBE = "The committee will publish its findings next week."  # one sentence for a forward pass through the answer


def third_task(three: MultiTaskModel | None, formality_head_params: int | None, encoder: SentenceEncoder) -> None:
    """Check that three adds a formality head on the shared encoder and formality_head_params counts that head."""
    if three is None and formality_head_params is None:
        return not_yet("three and formality_head_params are not filled in yet: build the model with one more entry "
                        "in the tasks dictionary, then count the new head's weights and biases.")
    if three is None:
        return not_yet("three is not filled in yet: MultiTaskModel(model.encoder, tasks) with topic, sentiment and "
                        "formality.")
    if not isinstance(three, MultiTaskModel):
        return not_yet(f"three is a {type(three).__name__}; build a MultiTaskModel.")
    tasks = DEFAULT_TASKS | THIRD_TASK
    if set(three.tasks) != set(tasks):
        return not_yet(f"three has the tasks {list(three.tasks)}; it needs {list(tasks)}: "
                        "DEFAULT_TASKS plus one entry.")
    if three.tasks["formality"] != THIRD_TASK["formality"]:
        return not_yet(f"the formality labels are {three.tasks['formality']}; use {THIRD_TASK['formality']}.")
    if three.encoder is not encoder:
        return not_yet("three has an encoder of its own; pass model.encoder itself, so the two models share it.")
    weights, biases = encoder.hidden_size * len(THIRD_TASK["formality"]), len(THIRD_TASK["formality"])
    counted = parameter_report(three).set_index("part")["total"]
    if counted["head:formality"] != weights + biases:
        return not_yet("three's formality head is not one linear layer; keep the default head='linear'.")
    try:
        with torch.no_grad():  # the shared encoder's train/eval mode is left as it is
            logits = three(**encoder.tokenize([PROBE]))
    except Exception as error:
        return not_yet(f"three raised {type(error).__name__} on a sentence: {error}")
    if tuple(logits["formality"].shape) != (1, len(THIRD_TASK["formality"])):
        return not_yet("three's formality logits should have shape (batch, 2).")
    if formality_head_params is None:
        return not_yet("three is right; now set formality_head_params to the new head's parameter count.")
    if isinstance(formality_head_params, bool) or not isinstance(formality_head_params, numbers.Real):
        return not_yet(f"formality_head_params is a {type(formality_head_params).__name__}; make it a number.")
    if formality_head_params == weights:
        return not_yet("that counts the weight matrix only: a linear layer also has one bias per output.")
    if formality_head_params != weights + biases:
        return not_yet("that is not the new head's size: a Linear(in, out) has in x out weights and out biases, "
                        "and in is model.encoder.hidden_size.")
    shared = sum(p.numel() for p in encoder.parameters())
    correct(f"the formality head is Linear({encoder.hidden_size}, {biases}): {encoder.hidden_size} x {biases} "
             f"weights + {biases} biases = {weights + biases:,} parameters, on a shared encoder of {shared:,}.")


def pcgrad_pair(project: Callable | None, grads: Mapping[str, Mapping[str, torch.Tensor]]) -> None:
    """Check project(g1, g2) against mtlib's pcgrad on every layer group of the topic and sentiment gradients."""
    missing = "project is not written yet: it should return the pair (g1, g2) after PCGrad's projection."
    if project is None:
        return not_yet(missing)
    if project is pcgrad:
        return not_yet("that is mtlib's own pcgrad; write the projection yourself.")
    flipped = []  # (group, cosine before, cosine after) where the two gradients conflict
    for group in grads["topic"]:
        g_topic, g_sentiment = grads["topic"][group], grads["sentiment"][group]
        topic_copy, sentiment_copy = g_topic.clone(), g_sentiment.clone()
        try:
            result = project(topic_copy, sentiment_copy)
        except Exception as error:
            return raised(error)
        if result is None:
            return not_yet(missing)
        if not (isinstance(result, tuple | list) and len(result) == 2
                and all(isinstance(g, torch.Tensor) for g in result)):
            return not_yet("project should return a pair of tensors: (g1 projected, g2 projected).")
        if not (torch.equal(topic_copy, g_topic) and torch.equal(sentiment_copy, g_sentiment)):
            return not_yet("project changed its inputs in place; build new tensors (g1 - ..., not g1 -= ...).")
        mine_topic, mine_sentiment = result
        ref_topic, ref_sentiment = pcgrad(g_topic, g_sentiment)
        conflict = float(g_topic @ g_sentiment) < 0
        if mine_topic.shape != g_topic.shape or mine_sentiment.shape != g_sentiment.shape:
            return not_yet(f"in {group} project returned shapes {tuple(mine_topic.shape)} and "
                            f"{tuple(mine_sentiment.shape)}; each gradient should keep its shape.")
        same_topic, same_sentiment = _close(mine_topic, ref_topic), _close(mine_sentiment, ref_sentiment)
        if same_topic and same_sentiment:
            if conflict:
                flipped.append((group, _cosine(g_topic, g_sentiment), _cosine(ref_topic, ref_sentiment)))
            continue
        if not conflict:
            return not_yet(f"in {group} the two gradients agree (dot product >= 0): PCGrad returns both unchanged.")
        if same_topic and _close(mine_sentiment, g_sentiment):
            return not_yet(f"in {group} the sentiment gradient came back unchanged although the two conflict: "
                            "project each gradient against the other's ORIGINAL gradient.")
        which = "sentiment (g2)" if same_topic else "topic (g1)"
        return not_yet(f"in {group}, where the two conflict, the {which} gradient is not PCGrad's: subtract from "
                        "each its component along the other, (g1 . g2 / |g2|^2) g2 for g1.")
    if not flipped:
        return correct(f"project matches PCGrad on all {len(grads['topic'])} groups; none conflicts in this batch.")
    group, before, after = min(flipped, key=lambda row: row[1])
    correct(f"project matches PCGrad on all {len(grads['topic'])} layer groups; in the {len(flipped)} that "
             f"conflict the cosine flips sign, e.g. {group}: {before:+.3f} before, {after:+.3f} after.")


def _close(mine: torch.Tensor, reference: torch.Tensor) -> bool:
    """Equal up to float noise, measured against the gradient's own scale (some groups' entries are tiny)."""
    scale = float(reference.abs().max())
    return torch.allclose(mine.to(reference.dtype), reference, rtol=1e-5, atol=1e-6 * scale + 1e-30)


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.cosine_similarity(a, b, dim=0))
