"""Task 2: one shared sentence encoder, one classification head per task.

Tasks and their labels are configuration (a dict), so a third task needs no code change.
Introduced in ``notebooks/02_multi_task_heads.ipynb``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import safetensors
import torch
from safetensors.torch import save_file
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer

from mtlib.backbone import sha256_of
from mtlib.card import model_card
from mtlib.config import DEFAULT_BACKBONE, DEFAULT_TASKS, HEAD_TYPES, ModelConfig
from mtlib.encoder import SentenceEncoder, default_device

CONFIG_FILE, HEADS_FILE, BACKBONE_DIR, CARD_FILE = "config.json", "heads.safetensors", "backbone", "README.md"
TRANSFORMER_WEIGHTS, TRANSFORMER_PREFIX = "model.safetensors", "encoder.transformer."
ST_POOLING_MODES = {"mean": "mean", "cls": "cls", "max": "max"}  # mtlib's name -> sentence-transformers' name
MODEL_KEYS = tuple(f.name for f in dataclasses.fields(ModelConfig))


def make_head(in_features: int, num_labels: int, *, head: str = "linear", dropout: float = 0.1) -> nn.Sequential:
    """Dropout + linear by default; ``mlp`` adds one hidden layer of the same width with GELU."""
    if head not in HEAD_TYPES:
        raise ValueError(f"head={head!r} is not valid. Valid head types are: {HEAD_TYPES}.")
    if head == "linear":
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, num_labels))
    return nn.Sequential(
        nn.Dropout(dropout),
        nn.Linear(in_features, in_features),
        nn.GELU(),
        nn.Dropout(dropout),
        nn.Linear(in_features, num_labels),
    )


class MultiTaskModel(nn.Module):
    """A shared :class:`SentenceEncoder` and an ``nn.ModuleDict`` of heads keyed by task name.

    Example:
        >>> model = MultiTaskModel.from_pretrained("minilm")
        >>> logits = model(**model.encoder.tokenize(["Stocks slid on Friday."]))
        >>> {task: tuple(x.shape) for task, x in logits.items()}
        {'topic': (1, 5), 'sentiment': (1, 3)}
    """

    def __init__(
        self,
        encoder: SentenceEncoder,
        tasks: dict[str, Sequence[str]] | None = None,
        *,
        head: str = "linear",
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        tasks = DEFAULT_TASKS if tasks is None else tasks
        if not tasks:
            raise ValueError("tasks is empty: give at least one task, e.g. {'topic': ['Sports', 'Business']}.")
        for task, labels in tasks.items():
            if len(labels) < 2 or len(set(labels)) != len(labels):
                raise ValueError(f"Task {task!r} needs at least two distinct labels, got {list(labels)}.")
        self.encoder = encoder
        self.tasks = {task: list(labels) for task, labels in tasks.items()}
        self.head_type, self.dropout = head, dropout
        self.heads = nn.ModuleDict(
            {
                task: make_head(encoder.hidden_size, len(labels), head=head, dropout=dropout)
                for task, labels in tasks.items()
            }
        )

    @classmethod
    def from_pretrained(
        cls,
        backbone: str = DEFAULT_BACKBONE,
        tasks: dict[str, Sequence[str]] | None = None,
        *,
        pooling: str = "mean",
        head: str = "linear",
        dropout: float = 0.1,
        max_length: int | None = None,
        device: str | torch.device | None = None,
    ) -> MultiTaskModel:
        """A new model on a pretrained backbone, heads freshly initialised, on ``device`` (default: GPU if any),
        in eval mode; the training loop switches it to training mode."""
        encoder = SentenceEncoder.from_pretrained(backbone, pooling=pooling, max_length=max_length, device=device)
        return cls(encoder, tasks, head=head, dropout=dropout).to(encoder.device).eval()

    @classmethod
    def from_config(cls, config: ModelConfig, *, device: str | torch.device | None = None) -> MultiTaskModel:
        """A new model as ``config`` describes it, heads freshly initialised."""
        return cls.from_pretrained(**dataclasses.asdict(config), device=device)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        embeddings: torch.Tensor | None = None,
        **_: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Logits per task. The encoder runs once and every head reads the same sentence vectors;
        pass ``embeddings`` cached from a frozen encoder to skip it. Extra keys (labels) are ignored."""
        if embeddings is None:
            embeddings = self.encoder(input_ids, attention_mask)  # (B, H)
        return self.classify(embeddings)

    def classify(self, embeddings: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits ``(B, num_labels)`` per task from sentence vectors ``(B, H)``: the heads alone."""
        return {task: head(embeddings) for task, head in self.heads.items()}

    @torch.inference_mode()
    def predict_logits(
        self,
        sentences: Sequence[str],
        *,
        batch_size: int = 64,
        precision: str = "auto",
        show_progress: bool | None = None,
    ) -> dict[str, torch.Tensor]:
        """Logits per task as float32 CPU tensors; ``precision`` and ``show_progress`` as in
        :meth:`SentenceEncoder.encode`."""
        was_training = self.training
        self.eval()
        embeddings = self.encoder.encode(
            sentences, batch_size=batch_size, precision=precision, show_progress=show_progress
        )
        logits = self.classify(embeddings.to(self.encoder.device))
        self.train(was_training)
        return {task: x.float().cpu() for task, x in logits.items()}

    def predict(
        self, sentences: Sequence[str], *, batch_size: int = 64, precision: str = "auto"
    ) -> list[dict[str, dict]]:
        """Each sentence's label and class probabilities for every task (see :func:`label_predictions`)."""
        logits = self.predict_logits(sentences, batch_size=batch_size, precision=precision)
        return label_predictions(self.tasks, logits)

    @property
    def config(self) -> ModelConfig:
        """What :meth:`save` writes to ``config.json``; ``max_length`` is the one in use."""
        return ModelConfig(
            backbone=self.encoder.backbone,
            pooling=self.encoder.pooling.mode,
            head=self.head_type,
            dropout=self.dropout,
            max_length=self.encoder.max_length,
            tasks=self.tasks,
        )

    def save(
        self, folder: str | Path, *, training: dict | None = None, evaluations: dict[str, dict] | None = None
    ) -> Path:
        """Write the model folder: ``backbone/``, ``heads.safetensors``, ``config.json`` and a model card.

        ``backbone/`` is the fine-tuned transformer as ``transformers`` saves it (config, safetensors weights,
        tokenizer); with ``modules.json`` and the pooling config beside it, the folder is also a
        sentence-transformers model: ``SentenceTransformer(folder)`` embeds as ``mtlib embed --model`` does
        (``attention`` pooling, which sentence-transformers lacks, leaves that layout out).
        ``heads.safetensors`` holds the heads (and a learned pooling), with the task and label lists in its
        metadata, so a ``config.json`` whose labels were reordered is refused instead of relabelling every
        prediction. ``config.json`` holds the :class:`ModelConfig` and the sha256 of every file the model
        needs, so :meth:`load` refuses a folder with a file missing or altered. ``README.md`` is the model
        card, with the training settings and the metrics of ``evaluations`` (set name -> metrics per task).
        """
        import accelerate
        import transformers

        folder = Path(folder)
        backbone = folder / BACKBONE_DIR
        backbone.mkdir(parents=True, exist_ok=True)
        self.encoder.transformer.save_pretrained(backbone)
        written = set(self.encoder.tokenizer.save_pretrained(backbone))
        heads = {name: t.detach().cpu().contiguous() for name, t in self.state_dict().items()
                 if not name.startswith(TRANSFORMER_PREFIX)}
        save_file(heads, folder / HEADS_FILE, metadata={"tasks": json.dumps(self.tasks)})
        files = [HEADS_FILE, f"{BACKBONE_DIR}/config.json", f"{BACKBONE_DIR}/{TRANSFORMER_WEIGHTS}"]
        files += sorted(Path(f).relative_to(folder).as_posix() for f in written if Path(f).is_file())
        config = dataclasses.asdict(self.config) | {
            "files": {name: sha256_of(folder / name) for name in files},
            "versions": {
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "accelerate": accelerate.__version__,
            },
        }
        write_sentence_transformers_layout(folder, self.encoder)
        (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        model_card(self.config, training=training, evaluations=evaluations).save(folder / CARD_FILE)
        return folder

    @classmethod
    def load(cls, folder: str | Path, *, device: str | torch.device | None = None) -> MultiTaskModel:
        """Rebuild a saved model offline onto ``device`` (default: GPU if any); no pickle is read.

        Every file listed in ``config.json`` is checked against its sha256 first, and the task and label
        lists of ``config.json`` against those the heads were saved with.

        Raises:
            FileNotFoundError: the folder, ``config.json`` or a listed file is missing.
            ValueError: a file is altered or truncated, or ``config.json`` is not one that :meth:`save` wrote.
        """
        folder = Path(folder)
        manifest = read_config(folder)
        check_files(folder, manifest["files"])
        config = ModelConfig(**{key: manifest[key] for key in MODEL_KEYS})
        transformer_state, _ = read_weights(folder / BACKBONE_DIR / TRANSFORMER_WEIGHTS)
        heads_state, metadata = read_weights(folder / HEADS_FILE)
        if json.loads((metadata or {}).get("tasks", "null")) != config.tasks:
            raise ValueError(
                f"the tasks and labels in {folder / CONFIG_FILE} ({config.tasks}) are not those the heads in "
                f"{folder / HEADS_FILE} were trained with: config.json was edited (a reordered label list would "
                "relabel every prediction). Restore the original config.json or re-save the model."
            )
        state = {TRANSFORMER_PREFIX + name: t for name, t in transformer_state.items()} | heads_state
        transformer = AutoModel.from_config(AutoConfig.from_pretrained(folder / BACKBONE_DIR, local_files_only=True))
        tokenizer = AutoTokenizer.from_pretrained(folder / BACKBONE_DIR, local_files_only=True)
        encoder = SentenceEncoder(
            transformer, tokenizer, pooling=config.pooling, max_length=config.max_length, backbone=config.backbone
        )
        model = cls(encoder, config.tasks, head=config.head, dropout=config.dropout)
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            missing, unexpected = sorted(model.state_dict().keys() - state), sorted(state.keys() - model.state_dict())
            raise ValueError(
                f"the weights in {folder} do not fit the model described in {folder / CONFIG_FILE} "
                f"(missing: {missing[:3]}, unexpected: {unexpected[:3]}, or tensors of other shapes): "
                "config.json was edited or comes from another model; re-save the model."
            ) from err
        return model.to(device or default_device()).eval()


def read_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str] | None]:
    """The tensors and metadata of a safetensors file, or one error saying it is damaged."""
    try:
        with safetensors.safe_open(path, "pt") as f:
            return {name: f.get_tensor(name) for name in f.keys()}, f.metadata()
    except safetensors.SafetensorError as err:
        raise ValueError(f"{path} cannot be read ({err}): it is truncated or corrupt.") from err


def write_sentence_transformers_layout(folder: Path, encoder: SentenceEncoder) -> None:
    """``modules.json``, ``1_Pooling/`` and ``backbone/sentence_bert_config.json``: the files sentence-transformers
    reads to stack the transformer in ``backbone/``, the pooling and L2 normalisation (as ``mtlib embed``)."""
    if encoder.pooling.mode not in ST_POOLING_MODES:
        return
    from sentence_transformers.base.modules.normalize import Normalize
    from sentence_transformers.base.modules.transformer import Transformer
    from sentence_transformers.sentence_transformer.modules.pooling import Pooling

    (folder / "1_Pooling").mkdir(exist_ok=True)
    Pooling(encoder.hidden_size, pooling_mode=ST_POOLING_MODES[encoder.pooling.mode]).save(str(folder / "1_Pooling"))
    (folder / BACKBONE_DIR / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": encoder.max_length, "do_lower_case": False}, indent=2) + "\n"
    )
    stack = [(BACKBONE_DIR, Transformer), ("1_Pooling", Pooling), ("2_Normalize", Normalize)]
    modules = [{"idx": i, "name": str(i), "path": path, "type": f"{kind.__module__}.{kind.__qualname__}"}
               for i, (path, kind) in enumerate(stack)]
    (folder / "modules.json").write_text(json.dumps(modules, indent=2) + "\n")


def label_predictions(tasks: dict[str, list[str]], logits: dict[str, torch.Tensor]) -> list[dict[str, dict]]:
    """Logits ``(N, num_labels)`` per task as one dict per sentence:
    ``{task: {"label": str, "probabilities": {label: float}}}``."""
    probabilities = {task: x.softmax(-1) for task, x in logits.items()}
    rows = len(next(iter(probabilities.values())))
    return [
        {
            task: {
                "label": tasks[task][int(p[i].argmax())],
                "probabilities": {label: round(float(v), 6) for label, v in zip(tasks[task], p[i], strict=True)},
            }
            for task, p in probabilities.items()
        }
        for i in range(rows)
    ]


CONFIG_KEYS = (*MODEL_KEYS, "files")
REQUIRED_FILES = (HEADS_FILE, f"{BACKBONE_DIR}/config.json", f"{BACKBONE_DIR}/{TRANSFORMER_WEIGHTS}",
                  f"{BACKBONE_DIR}/tokenizer.json", f"{BACKBONE_DIR}/tokenizer_config.json")


def read_config(folder: Path) -> dict:
    """``config.json`` of a saved model, refused unless it has every key :meth:`MultiTaskModel.save` writes."""
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{folder} has no {CONFIG_FILE}: pass the folder written by MultiTaskModel.save.")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}): it is truncated or altered; re-save the model.") from err
    if not isinstance(config, dict):
        config = {}
    missing = [repr(key) for key in CONFIG_KEYS if key not in config]
    if not missing:
        missing = [f"files[{name!r}]" for name in REQUIRED_FILES if name not in config["files"]]
    if missing:
        raise ValueError(
            f"{path} lacks {', '.join(missing)} ('files' is the sha256 of every file the model needs): "
            "the folder is incomplete, from an older mtlib or from elsewhere. Re-save the model with "
            "MultiTaskModel.save, or train it again (python -m mtlib train writes a complete folder)."
        )
    return config


def check_files(folder: Path, files: dict[str, str]) -> None:
    """Raise naming the first file of the manifest that is missing or whose sha256 differs."""
    for name, expected in files.items():
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing: the saved model is incomplete; copy the whole folder again or re-save it."
            )
        if sha256_of(path) != expected:
            raise ValueError(
                f"{path} does not match the sha256 in {folder / CONFIG_FILE}: it is truncated or altered; "
                "copy the whole folder again or re-save the model."
            )
