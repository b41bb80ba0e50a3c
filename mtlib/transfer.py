"""Transfer recipes that keep what pretraining knows, beside plain fine-tuning.

- Linear probe, then fine-tuning (LP-FT; Kumar et al., 2022): fit the heads on the frozen encoder
  first, so fine-tuning starts from good heads and the first gradients do not distort the features.
- Weight-space interpolation (WiSE-FT; Wortsman et al., 2022): average the fine-tuned encoder with
  the pretrained one; part of the fine-tuned gain stays, and robustness outside the training style returns.

Compared in ``notebooks/03_freezing_tradeoffs.ipynb`` and by ``experiments/recipes.py``.
"""

from __future__ import annotations

import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression

from mtlib.encoder import SentenceEncoder
from mtlib.model import MultiTaskModel

PROBE_C = 1.0  # inverse L2 strength of the probe; the same as the frozen-embedding baseline's


def fit_linear_probe(model: MultiTaskModel, frame: pd.DataFrame, *, batch_size: int = 128) -> dict[str, float]:
    """Fit each linear head to convergence on frozen sentence vectors (L-BFGS logistic regression), in place.

    The probe is the frozen-embedding baseline of :mod:`mtlib.baselines`, copied into the heads, so
    fine-tuning starts where that baseline ends. Rows without a task's label are left out of that task.

    Returns:
        Each task's training accuracy of the probe.

    Example:
        >>> fit_linear_probe(model, splits["train"])  # doctest: +SKIP
        {'topic': 0.93, 'sentiment': 0.81}
    """
    if model.head_type != "linear":
        raise ValueError(f"a linear probe needs head='linear', got head={model.head_type!r}; use the linear head.")
    vectors = model.encoder.encode(frame["text"].tolist(), batch_size=batch_size, show_progress=False).numpy()
    accuracy = {}
    for task, labels in model.tasks.items():
        if task not in frame or frame[task].notna().sum() == 0:
            continue
        rows = frame[task].notna().to_numpy()
        y = frame[task][rows].map(labels.index).to_numpy()
        if len(set(y)) < len(labels):
            raise ValueError(f"task {task!r}: the probe needs every label among the training rows; add rows for each.")
        probe = LogisticRegression(C=PROBE_C, max_iter=2000).fit(vectors[rows], y)
        linear = model.heads[task][-1]
        with torch.no_grad():
            linear.weight.copy_(torch.as_tensor(probe.coef_, dtype=linear.weight.dtype))
            linear.bias.copy_(torch.as_tensor(probe.intercept_, dtype=linear.bias.dtype))
        accuracy[task] = float(probe.score(vectors[rows], y))
    return accuracy


@torch.no_grad()
def interpolate_encoder(model: MultiTaskModel, pretrained: dict[str, torch.Tensor], alpha: float) -> MultiTaskModel:
    """Set the encoder's weights to ``alpha * fine-tuned + (1 - alpha) * pretrained``, in place; heads keep theirs.

    Args:
        model: A fine-tuned model.
        pretrained: The encoder's weights before fine-tuning, from :func:`encoder_state`.
        alpha: 1 keeps the fine-tuned encoder, 0 restores the pretrained one.
    """
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha={alpha} should be in [0, 1]: 1 keeps the fine-tuned encoder, 0 the pretrained one.")
    state = model.encoder.state_dict()
    if state.keys() != pretrained.keys():
        raise ValueError("the pretrained state does not match the encoder: take it with encoder_state(model).")
    for name, weight in state.items():
        if weight.is_floating_point():
            weight.copy_(alpha * weight + (1 - alpha) * pretrained[name].to(weight.device, weight.dtype))
    return model


def encoder_state(encoder: SentenceEncoder) -> dict[str, torch.Tensor]:
    """A CPU copy of an encoder's weights, to interpolate with after fine-tuning."""
    return {name: t.detach().cpu().clone() for name, t in encoder.state_dict().items()}


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear centred kernel alignment (Kornblith et al., 2019) of two representations of the same sentences.

    1 when ``y`` is ``x`` rotated and scaled, near 0 when they share no linear structure; the number of
    features may differ. Rows are sentences.

    Example:
        >>> x = torch.randn(100, 8)
        >>> round(linear_cka(x, 3 * x @ torch.linalg.qr(torch.randn(8, 8))[0]), 6)
        1.0
    """
    if x.shape[0] != y.shape[0] or x.shape[0] < 2:
        raise ValueError(f"x {tuple(x.shape)} and y {tuple(y.shape)} need the same sentences (rows), at least 2.")
    x, y = x.double() - x.double().mean(0), y.double() - y.double().mean(0)
    return float((y.T @ x).square().sum() / (torch.linalg.norm(x.T @ x) * torch.linalg.norm(y.T @ y)))


@torch.inference_mode()
def layer_outputs(encoder: SentenceEncoder, sentences: list[str]) -> list[torch.Tensor]:
    """Mean-pooled outputs ``(n, H)`` of the embeddings and of each transformer layer, bottom first."""
    was_training = encoder.training
    encoder.eval()
    tokens = encoder.tokenize(sentences)
    mask = tokens["attention_mask"].to(encoder.device)
    hidden = encoder.transformer(input_ids=tokens["input_ids"].to(encoder.device), attention_mask=mask,
                                 output_hidden_states=True).hidden_states  # embeddings + each layer, (B, T, H)
    encoder.train(was_training)
    weights = mask.unsqueeze(-1).float()
    return [((h.float() * weights).sum(1) / weights.sum(1)).cpu() for h in hidden]
