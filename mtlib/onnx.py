"""ONNX Runtime inference: a saved model exported as one graph, run on a CPU without the PyTorch model code.

The graph takes token ids and attention mask and returns the pooled sentence embedding and every task's
logits, so ``predict``, ``evaluate`` and ``embed`` all run one forward pass of it. An exported folder holds

- ``model.onnx``: the graph (fp32, or with int8 weights after dynamic quantization);
- the tokenizer files;
- ``config.json``: tasks and labels, pooling, normalisation, maximum length, and the sha256 of every other file.

    python -m mtlib export --model runs/default/model --output runs/default/onnx [--quantize int8]
    python -m mtlib predict --backend onnx --model runs/default/onnx "Shares slid on Friday."
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mtlib.backbone import sha256_of
from mtlib.checkpoint import naming_a_full_disk
from mtlib.config import BACKENDS, QUANTIZATIONS
from mtlib.encoder import check_sentences
from mtlib.model import CONFIG_FILE, MultiTaskModel, check_files, label_predictions

GRAPH_FILE = "model.onnx"
INPUTS = ("input_ids", "attention_mask")
EMBEDDING = "sentence_embedding"
CONFIG_KEYS = ("tasks", "pooling", "normalize", "max_length", "hidden_size", "quantize", "files")
REQUIRED_FILES = (GRAPH_FILE, "tokenizer.json", "tokenizer_config.json")
LABELS_KEY = "mtlib_tasks"  # graph metadata: the task and label lists the logits are in the order of


class ExportGraph(nn.Module):
    """The model as ONNX Runtime runs it: token ids in; the unnormalised pooled embedding and each task's logits out.

    Dropout is off (eval mode), so the graph is the model's inference path and nothing else.
    """

    def __init__(self, model: MultiTaskModel) -> None:
        super().__init__()
        self.model = model
        self.eval()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        embedding = self.model.encoder.pool(input_ids, attention_mask)
        return (embedding, *self.model.classify(embedding).values())


def output_names(tasks: Sequence[str]) -> list[str]:
    return [EMBEDDING, *(f"logits_{task}" for task in tasks)]


def export_onnx(model_dir: str | Path, output: str | Path, *, quantize: str | None = None) -> Path:
    """Export the model saved in ``model_dir`` to the new folder ``output``; ``quantize="int8"`` for int8 weights.

    The ``torch.export``-based exporter traces the model once, with batch size and sequence length dynamic.
    """
    if quantize not in (None, *QUANTIZATIONS):
        raise ValueError(f"quantize={quantize!r} is not valid. Valid quantizations are: {QUANTIZATIONS} (or None).")
    check_new_folder(output)
    if quantize:
        with tempfile.TemporaryDirectory() as tmp:
            return quantize_int8(export_onnx(model_dir, Path(tmp) / "fp32"), output)
    model = MultiTaskModel.load(model_dir, device="cpu")
    with new_folder(output) as folder, naming_a_full_disk(folder, "export again."):
        write_graph(model, folder)
    return Path(output)


@contextlib.contextmanager
def new_folder(output: str | Path) -> Iterator[Path]:
    """A hidden folder beside ``output`` to write into, renamed to ``output`` only once it is complete.

    An export that fails or is interrupted leaves no ``output`` to delete by hand; the hidden folder of one
    killed outright (``kill -9``) is removed by the next export to the same ``output``.
    """
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        yield partial
        check_new_folder(output)  # nothing appeared there meanwhile
        if output.is_dir():
            output.rmdir()  # empty (checked): os.replace cannot replace a folder
        os.replace(partial, output)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def write_graph(model: MultiTaskModel, output: Path) -> None:
    """The graph, the tokenizer and ``config.json`` of ``model`` in the folder ``output``."""
    example = model.encoder.tokenize(["An example sentence to trace.", "And a second one."])
    batch, length = torch.export.Dim("batch"), torch.export.Dim("sequence")
    with quiet("torch.onnx"):
        torch.onnx.export(
            ExportGraph(model),
            (example["input_ids"], example["attention_mask"]),
            output / GRAPH_FILE,
            input_names=list(INPUTS),
            output_names=output_names(model.tasks),
            dynamic_shapes={name: {0: batch, 1: length} for name in INPUTS},
            dynamo=True,
            external_data=False,  # one self-contained file: MiniLM is about 90 MB, far below protobuf's 2 GB limit
            verbose=False,
        )
    bind_labels(output / GRAPH_FILE, model.tasks)
    model.encoder.tokenizer.save_pretrained(output)
    config = {
        "tasks": model.tasks,
        "pooling": model.encoder.pooling.mode,
        "normalize": model.encoder.normalize,
        "max_length": model.encoder.max_length,
        "hidden_size": model.encoder.hidden_size,
        "quantize": None,
        "backbone": model.encoder.backbone,
    }
    write_config(output, config)


def bind_labels(graph: Path, tasks: dict[str, list[str]]) -> None:
    """Store the task and label lists in the graph's metadata, where :meth:`OnnxModel.load` compares them with
    ``config.json``: a reordered label list there would otherwise relabel every prediction."""
    import onnx

    proto = onnx.load(graph)
    onnx.helper.set_model_props(proto, {LABELS_KEY: json.dumps(tasks)})
    onnx.save(proto, graph)


@contextlib.contextmanager
def quiet(logger_name: str) -> Iterator[None]:
    """Hide notes that need no action: torch.onnx's (torchvision absent, axis names shared by two inputs) and
    the quantizer's advice to pre-process the graph (tried: same weights quantized, same speed)."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*axis name")
        warnings.filterwarnings("ignore", message=".*LeafSpec")
        try:
            yield
        finally:
            logger.setLevel(level)


def quantize_int8(source: str | Path, output: str | Path) -> Path:
    """A copy of the exported folder ``source`` in the new folder ``output`` with int8 weights.

    ONNX Runtime's dynamic quantization: the weights of every MatMul and the embedding tables stored as int8,
    the activations quantized per batch at run time. Weights get a scale per output channel: with one scale
    per tensor the default model's int8 embeddings fell to a mean cosine of 0.982 with fp32 (0.997 per channel).
    It suits CPUs with VNNI instructions (``avx512_vnni``, ``avx_vnni``) best.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    source, output = Path(source), Path(output)
    config = read_onnx_config(source)
    if config["quantize"]:
        raise ValueError(f"{source} is already quantized ({config['quantize']}); quantize the fp32 export.")
    check_new_folder(output)
    with new_folder(output) as folder, naming_a_full_disk(folder, "quantize again."):
        shutil.copytree(source, folder, ignore=shutil.ignore_patterns(GRAPH_FILE, CONFIG_FILE), dirs_exist_ok=True)
        with quiet("root"):
            quantize_dynamic(source / GRAPH_FILE, folder / GRAPH_FILE, weight_type=QuantType.QInt8, per_channel=True)
        bind_labels(folder / GRAPH_FILE, config["tasks"])
        write_config(folder, config | {"quantize": "int8"})
    return output


def check_new_folder(folder: str | Path) -> None:
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise FileExistsError(f"--output {folder} already exists and is not empty; remove it or choose another.")


def write_config(folder: Path, config: dict) -> None:
    """``config.json`` with the sha256 of every other file in ``folder``, checked when it is loaded."""
    files = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name != CONFIG_FILE)
    config = config | {"files": {name: sha256_of(folder / name) for name in files}}
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")


class OnnxModel:
    """An exported model on ONNX Runtime's CPU provider, with the inference methods of the PyTorch classes:
    ``predict_logits`` and ``predict`` as :class:`MultiTaskModel`, ``encode`` as :class:`SentenceEncoder`.

    Example:
        >>> model = OnnxModel.load("runs/default/onnx")
        >>> model.predict(["Shares slid on Friday."])[0]["topic"]["label"]
        'Business'
    """

    def __init__(self, session, tokenizer, config: dict) -> None:
        self.session, self.tokenizer = session, tokenizer
        self.tasks: dict[str, list[str]] = config["tasks"]
        self.pooling, self.normalize, self.quantize = config["pooling"], config["normalize"], config["quantize"]
        self.max_length, self.hidden_size = config["max_length"], config["hidden_size"]

    @classmethod
    def load(cls, folder: str | Path, *, threads: int | None = None) -> OnnxModel:
        """Open an exported folder after checking every file against its sha256.

        ``threads``: ONNX Runtime's threads per operator; ``None`` follows ``OMP_NUM_THREADS`` (which ONNX
        Runtime itself ignores) so one setting limits both backends, and all cores when it is unset.
        """
        import onnxruntime
        from transformers import AutoTokenizer

        folder = Path(folder)
        config = read_onnx_config(folder)
        check_files(folder, config["files"])
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = omp_threads() if threads is None else threads
        session = onnxruntime.InferenceSession(folder / GRAPH_FILE, options, providers=["CPUExecutionProvider"])
        bound = session.get_modelmeta().custom_metadata_map.get(LABELS_KEY)
        if bound is None or json.loads(bound) != config["tasks"]:
            raise ValueError(
                f"the tasks and labels in {folder / CONFIG_FILE} ({config['tasks']}) are not those the graph "
                f"{folder / GRAPH_FILE} was exported with: config.json was edited (a reordered label list would "
                "relabel every prediction). Restore it, or export again."
            )
        return cls(session, AutoTokenizer.from_pretrained(folder, local_files_only=True), config)

    def run(self, sentences: Sequence[str], *, batch_size: int = 64) -> dict[str, np.ndarray]:
        """Every output of the graph for ``sentences``, in input order.

        Sentences are batched by length (by characters, a close stand-in for tokens) so each batch is
        padded only to its own longest sentence.
        """
        check_sentences(sentences)
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} should be a positive integer.")
        names = output_names(self.tasks)
        if not sentences:
            widths = [self.hidden_size, *(len(labels) for labels in self.tasks.values())]
            return {name: np.empty((0, width), np.float32) for name, width in zip(names, widths, strict=True)}
        order = np.argsort([len(s) for s in sentences], kind="stable")
        batches = []
        for start in range(0, len(order), batch_size):
            tokens = self.tokenizer(
                [sentences[i] for i in order[start : start + batch_size]],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="np",
            )
            batches.append(self.session.run(names, {name: tokens[name].astype(np.int64) for name in INPUTS}))
        inverse = np.argsort(order)
        return {name: np.concatenate([batch[i] for batch in batches])[inverse] for i, name in enumerate(names)}

    def predict_logits(self, sentences: Sequence[str], *, batch_size: int = 64) -> dict[str, torch.Tensor]:
        outputs = self.run(sentences, batch_size=batch_size)
        return {task: torch.from_numpy(outputs[f"logits_{task}"]) for task in self.tasks}

    def predict(self, sentences: Sequence[str], *, batch_size: int = 64) -> list[dict[str, dict]]:
        """Each sentence's label and class probabilities for every task, as :meth:`MultiTaskModel.predict`."""
        return label_predictions(self.tasks, self.predict_logits(sentences, batch_size=batch_size))

    def encode(
        self, sentences: Sequence[str], *, batch_size: int = 64, normalize: bool | None = None
    ) -> torch.Tensor:
        """Sentence embeddings ``(len(sentences), hidden_size)``, as :meth:`SentenceEncoder.encode`."""
        embeddings = torch.from_numpy(self.run(sentences, batch_size=batch_size)[EMBEDDING])
        if self.normalize if normalize is None else normalize:
            embeddings = nn.functional.normalize(embeddings, p=2, dim=-1)
        return embeddings


def omp_threads() -> int:
    """``$OMP_NUM_THREADS`` as a thread count for ONNX Runtime; 0 (all cores) when unset, empty or not a count."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdigit() else 0


def read_onnx_config(folder: Path) -> dict:
    """``config.json`` of an exported folder, refused with the command that writes one when it is not."""
    path = folder / CONFIG_FILE
    if not (folder / GRAPH_FILE).is_file() or not path.is_file():
        raise FileNotFoundError(
            f"{folder} has no {GRAPH_FILE} and {CONFIG_FILE}: --backend onnx needs a folder written by "
            f"python -m mtlib export --model runs/NAME/model --output {folder}"
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}): it is truncated or altered; export again.") from err
    missing = [key for key in CONFIG_KEYS if key not in config] if isinstance(config, dict) else list(CONFIG_KEYS)
    if not missing:
        files = config["files"] if isinstance(config["files"], dict) else {}
        missing = [f"files[{name!r}]" for name in REQUIRED_FILES if name not in files]
    if missing:
        raise ValueError(f"{path} lacks {', '.join(map(str, missing))} ('files' is the sha256 of every file the "
                         "export needs): it was not written by python -m mtlib export, or was edited; export again.")
    return config


def check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not valid. Valid backends are: {BACKENDS}.")


def load_model(folder: str | Path, backend: str = "torch") -> MultiTaskModel | OnnxModel:
    """A saved model (``backend="torch"``) or an exported folder (``"onnx"``), for ``predict`` and ``evaluate``."""
    check_backend(backend)
    return OnnxModel.load(folder) if backend == "onnx" else MultiTaskModel.load(folder)

