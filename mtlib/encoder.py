"""Task 1: a transformer encoder turned into a sentence encoder by pooling its token vectors.

Introduced step by step in ``notebooks/01_sentence_transformer.ipynb``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from mtlib.backbone import drop_pooler, load_backbone, trained_max_length
from mtlib.config import DEFAULT_BACKBONE, POOLING_MODES
from mtlib.precision import AUTOCAST_DTYPES, resolve_precision


def default_device() -> torch.device:
    """The first CUDA GPU when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Pooling(nn.Module):
    """Reduce token vectors ``(B, T, H)`` to one sentence vector ``(B, H)``, ignoring padding.

    ``mean`` and ``max`` use only the real tokens; ``cls`` takes the first token;
    ``attention`` learns one score per token and takes the softmax-weighted sum.
    """

    def __init__(self, hidden_size: int, mode: str = "mean") -> None:
        super().__init__()
        if mode not in POOLING_MODES:
            raise ValueError(f"pooling={mode!r} is not valid. Valid pooling modes are: {POOLING_MODES}.")
        self.mode = mode
        self.hidden_size = hidden_size
        self.scorer = nn.Linear(hidden_size, 1) if mode == "attention" else None

    def forward(self, token_embeddings: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.unsqueeze(-1).to(token_embeddings.dtype)  # (B, T, 1)
        if self.mode == "mean":
            summed = (token_embeddings * mask).sum(dim=1)  # (B, H)
            return summed / mask.sum(dim=1).clamp(min=1e-9)
        if self.mode == "cls":
            return token_embeddings[:, 0]
        if self.mode == "max":
            lowest = torch.finfo(token_embeddings.dtype).min
            return token_embeddings.masked_fill(mask == 0, lowest).amax(dim=1)
        scores = self.scorer(token_embeddings).masked_fill(mask == 0, float("-inf"))  # (B, T, 1)
        weights = scores.softmax(dim=1)
        return (weights * token_embeddings).sum(dim=1)


class SentenceEncoder(nn.Module):
    """A pretrained transformer plus pooling: sentences in, fixed-length vectors out.

    Example:
        >>> encoder = SentenceEncoder.from_pretrained("minilm")
        >>> encoder.encode(["A short one.", "A somewhat longer second sentence."]).shape
        torch.Size([2, 384])
    """

    def __init__(
        self,
        transformer: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        pooling: str = "mean",
        normalize: bool = False,
        max_length: int | None = None,
        backbone: str = DEFAULT_BACKBONE,
    ) -> None:
        super().__init__()
        drop_pooler(transformer)  # keeps the trainable-parameter counts honest and dead weights out of the optimiser
        self.transformer = transformer
        self.tokenizer = tokenizer
        self.pooling = Pooling(transformer.config.hidden_size, pooling)
        self.normalize = normalize
        self.max_length = max_length or min(tokenizer.model_max_length, transformer.config.max_position_embeddings)
        self.backbone = backbone

    @classmethod
    def from_pretrained(
        cls, backbone: str = DEFAULT_BACKBONE, *, device: str | torch.device | None = None, **kwargs
    ) -> SentenceEncoder:
        """Load a backbone by id, alias or folder onto ``device`` (default: a GPU if there is one).

        Other ``kwargs`` go to the constructor. Like ``transformers``, it returns the module in eval mode.
        """
        tokenizer, transformer = load_backbone(backbone)
        if kwargs.get("max_length") is None:
            kwargs["max_length"] = trained_max_length(backbone)
        return cls(transformer, tokenizer, backbone=backbone, **kwargs).to(device or default_device()).eval()

    @property
    def hidden_size(self) -> int:
        return self.pooling.hidden_size

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def tokenize(self, sentences: Sequence[str]) -> dict[str, torch.Tensor]:
        """Pad to the longest sentence in the batch (dynamic padding) and truncate to max_length."""
        check_sentences(sentences)
        return self.tokenizer(
            list(sentences), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        embeddings = self.pool(input_ids, attention_mask)  # (B, H)
        return nn.functional.normalize(embeddings, p=2, dim=-1) if self.normalize else embeddings

    def pool(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pooled, unnormalised sentence vectors ``(B, H)``."""
        # Only ids and mask: DistilBERT-family models take no token_type_ids, BERT defaults them to 0.
        tokens = self.transformer(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, H)
        return self.pooling(tokens, attention_mask)

    @torch.inference_mode()
    def encode(
        self,
        sentences: Sequence[str],
        *,
        batch_size: int = 64,
        normalize: bool | None = None,
        show_progress: bool | None = None,
        precision: str = "auto",
    ) -> torch.Tensor:
        """Embed sentences in batches of similar length; rows come back in input order.

        Args:
            sentences: Non-empty strings.
            batch_size: Sentences per forward pass.
            normalize: L2-normalise the vectors; ``None`` keeps the encoder's setting.
            show_progress: Progress bar; ``None`` shows it for more than 1,000 sentences.
            precision: ``fp32``, ``bf16`` or ``fp16`` (autocast), or ``auto``: bf16 on a GPU that supports it,
                fp32 elsewhere; see :func:`mtlib.precision.resolve_precision`. Training passes its own setting.

        Returns:
            A float32 CPU tensor of shape ``(len(sentences), hidden_size)``.
        """
        check_sentences(sentences)
        dtype = AUTOCAST_DTYPES.get(resolve_precision(precision, self.device))
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} should be a positive integer.")
        if not sentences:
            return torch.empty(0, self.hidden_size)
        was_training = self.training
        self.eval()
        # One tokenizer call for all sentences (the fast tokenizer spreads it over threads), then
        # sorting by token count so each batch is padded only to its own longest sentence.
        token_ids = self.tokenizer(list(sentences), truncation=True, max_length=self.max_length)["input_ids"]
        order = sorted(range(len(sentences)), key=lambda i: len(token_ids[i]))
        show = len(sentences) > 1000 if show_progress is None else show_progress
        chunks = []
        for start in tqdm(range(0, len(order), batch_size), disable=not show, desc="encode"):
            input_ids, attention_mask = self._pad([token_ids[i] for i in order[start : start + batch_size]])
            with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
                # results stay on the device until the end: no synchronisation per batch on a GPU
                chunks.append(self.pool(input_ids, attention_mask).float())
        self.train(was_training)
        embeddings = torch.empty(len(sentences), self.hidden_size)
        embeddings[order] = torch.cat(chunks).cpu()
        if self.normalize if normalize is None else normalize:
            embeddings = nn.functional.normalize(embeddings, p=2, dim=-1)
        return embeddings

    def _pad(self, token_ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-pad token id lists into ``(B, T)`` ids and attention mask on the encoder's device."""
        width = max(len(ids) for ids in token_ids)
        input_ids = torch.full((len(token_ids), width), self.tokenizer.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(token_ids), width), dtype=torch.long)
        for row, ids in enumerate(token_ids):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            attention_mask[row, : len(ids)] = 1
        return input_ids.to(self.device, non_blocking=True), attention_mask.to(self.device, non_blocking=True)


def check_sentences(sentences: Sequence[str]) -> None:
    """Raise a ValueError naming the first entry that is not a non-empty string."""
    if isinstance(sentences, str):
        raise ValueError("sentences should be a list of strings, not a single string: wrap it as [sentence].")
    for i, sentence in enumerate(sentences):
        if not isinstance(sentence, str):
            raise ValueError(f"sentences[{i}] is {type(sentence).__name__}, not a string.")
        if not sentence.strip():
            raise ValueError(f"sentences[{i}] is empty or whitespace only; remove it or give it text.")
