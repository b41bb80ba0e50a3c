"""Checkers for the exercises of ``notebooks/03_freezing_tradeoffs.ipynb``."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable

import pandas as pd
import torch

from mtlib.freezing import count_trainable, freeze
from mtlib.lora import add_lora
from mtlib.model import MultiTaskModel
from mtlib.transfer import layer_outputs, linear_cka

from . import as_number, correct, not_yet

REFERENCE = "full fine-tuning"  # the arm every other arm of exercise 2 is compared with
CKA_SENTENCES = 50  # validation sentences of exercise 3, the first ones of the split
CKA_TOLERANCE = 1e-6  # float64 Gram matrices and feature products agree far closer than this


def _size(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def lora_trainable(answer: object, model: MultiTaskModel, *, r: int = 4) -> None:
    """Check answer against the trainable parameters of add_lora(model, r=r), counted on a copy of the model."""
    if answer is None:
        return not_yet(f"set lora_r4_trainable to the number of parameters add_lora(..., r={r}) leaves trainable; "
                        "each adapted projection (out, in) gets A (r, in) and B (out, r), and the heads train too.")
    value = as_number(answer)
    if value is None:
        return not_yet(f"lora_r4_trainable is of type {type(answer).__name__}; make it a number (an int, or a formula "
                        "that gives one).")
    # a copy: the notebook's model keeps its flags, and add_lora works in place
    lora = add_lora(freeze(copy.deepcopy(model), "none"), r=r)
    trainable = count_trainable(lora)
    heads = _size(lora.heads)
    adapters = trainable - heads
    projections = sum(1 for name, _ in lora.named_parameters() if "lora_A" in name)
    if value == trainable:
        return correct(f"LoRA r={r} trains {trainable:,} parameters, {trainable / _size(model):.3%} of the model: "
                        f"{projections} adapted projections x {adapters // projections:,} (r x (in + out)) = "
                        f"{adapters:,} in the adapters, plus the heads' {heads:,}.")
    if value == adapters:
        return not_yet("that counts the adapters only: the two heads train too (size(model.heads)).")
    if value == heads + adapters * 8 / r:
        return not_yet(f"that is the count for rank 8, the experiment's rank; this exercise asks for r = {r}.")
    if value == heads + adapters / 2:
        return not_yet("that adapts one projection per layer: LoRA adapts both the query and the value "
                        "projection of every layer.")
    if value > _size(model):
        return not_yet("that is more than the whole model: the pretrained weights are frozen, so count only the "
                        "adapters and the heads.")
    return not_yet("that is not the number of trainable parameters: r x (in + out) per adapted projection, two "
                    "projections (query and value) in every transformer layer, plus size(model.heads).")


def cheapest_arm(answer: object, main: pd.DataFrame, paired: Callable[[str, str, str], dict],
                 tasks: Iterable[str]) -> None:
    """Check answer is the cheapest arm of main (mean seconds_per_epoch) not measurably worse than full fine-tuning."""
    if answer is None:
        return not_yet("set cheapest to an arm's name, a string from main['arm']: keep the arms whose paired "
                        "interval against full fine-tuning has high > 0 on both tasks, then take the one with the "
                        "lowest mean seconds_per_epoch.")
    seconds = main.groupby("arm")["seconds_per_epoch"].mean()
    if not isinstance(answer, str):
        return not_yet(f"cheapest is of type {type(answer).__name__}; make it the arm's name, a str (.idxmin() gives "
                        "the index label of a Series' minimum).")
    if answer not in seconds.index:
        return not_yet(f"{answer[:60]!r} is not an arm of main['arm']; pick one of its values.")
    tasks = list(tasks)

    def lost_on(arm: str) -> list[str]:  # the tasks where arm is measurably worse than full fine-tuning
        return [task for task in tasks if arm != REFERENCE and paired(arm, REFERENCE, task)["high"] <= 0]

    if lost := lost_on(answer):
        return not_yet(f"{answer!r} is measurably worse than full fine-tuning on {' and '.join(lost)}: its paired "
                        "interval against it lies entirely below zero there. Keep only arms whose interval's high is "
                        "above zero on every task.")
    if answer == REFERENCE:
        return not_yet("full fine-tuning is the arm the others are compared with; a cheaper arm is not measurably "
                        "worse than it.")
    cheaper = [arm for arm in seconds.index
               if seconds[arm] < seconds[answer] and not math.isclose(seconds[arm], seconds[answer], rel_tol=1e-9)]
    if any(not lost_on(arm) for arm in cheaper):
        return not_yet(f"{answer!r} is not measurably worse than full fine-tuning, but another such arm has a "
                        "lower mean seconds_per_epoch.")
    correct(f"{answer} is the cheapest arm not measurably worse than full fine-tuning on either task, at "
             f"{seconds[answer] / seconds[REFERENCE]:.2f}x its CPU time per epoch.")


def _hsic(a: torch.Tensor, b: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    return torch.trace(a @ centre @ b @ centre)


def linear_cka_by_hand(answer: object, model: MultiTaskModel, validation: pd.DataFrame) -> None:
    """Check answer is the linear CKA of the encoder's embedding output and top layer on 50 validation sentences."""
    if answer is None:
        return not_yet("set cka_by_hand to HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) for K = x xᵀ and L = y yᵀ, "
                        "with HSIC(K, L) = trace(K H L H) and H = I - 11ᵀ / n.")
    value = as_number(answer)
    if value is None:
        return not_yet(f"cka_by_hand is of type {type(answer).__name__}; make it one number (float(...) of the "
                        "result).")
    outputs = layer_outputs(model.encoder, validation["text"].tolist()[:CKA_SENTENCES])
    x, y = outputs[0].double(), outputs[-1].double()  # (n, H): the embeddings' output and the top layer's
    expected = linear_cka(x, y)
    if math.isclose(value, expected, rel_tol=0, abs_tol=CKA_TOLERANCE):
        return correct(f"linear CKA of the embeddings' output and the top layer's on {len(x)} sentences is "
                        f"{expected:.3f}, the same as mtlib.transfer.linear_cka, which works from the feature side.")
    # the two usual slips, to say which one it was: no centring (H = I), and no square root in the denominator
    K, L = x @ x.T, y @ y.T
    identity = torch.eye(len(x), dtype=torch.float64)
    uncentred = float(_hsic(K, L, identity) / torch.sqrt(_hsic(K, K, identity) * _hsic(L, L, identity)))
    centre = identity - 1 / len(x)
    squared = float(_hsic(K, L, centre) / (_hsic(K, K, centre) * _hsic(L, L, centre)))
    if math.isclose(value, uncentred, abs_tol=CKA_TOLERANCE):
        return not_yet("that is CKA without centring: put H = I - 11ᵀ / n on both sides, trace(K H L H).")
    if math.isclose(value, squared, rel_tol=1e-6):
        return not_yet("the denominator is the square root of HSIC(K, K) HSIC(L, L), not the product itself.")
    if not 0 <= value <= 1 + CKA_TOLERANCE:
        return not_yet("linear CKA lies between 0 and 1; check the centring matrix H and the square root.")
    return not_yet("that is not the linear CKA of x and y (the check compares with mtlib.transfer.linear_cka to "
                    "1e-6); build K = x @ x.T and L = y @ y.T from the float64 x and y, and H = I - 1/n.")
