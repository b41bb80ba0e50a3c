"""Command line: ``python -m mtlib {embed,train,evaluate,predict,export,baselines} ...``.

``train`` has one option per field of ``TrainConfig`` and its ``ModelConfig``, generated from the
dataclasses, with the field's comment as help; ``--config FILE`` (JSON or YAML) supplies any of them.
``--model`` is always a folder saved by ``MultiTaskModel.save``; ``--backbone`` a pretrained encoder.
Bad arguments and bad files end in one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import re
import sys
import types
import typing
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import yaml

from mtlib.config import (
    BACKENDS,
    DEFAULT_BACKBONE,
    POOLING_MODES,
    PRECISIONS,
    QUANTIZATIONS,
    ModelConfig,
    TrainConfig,
)


def read_sentences(args: argparse.Namespace) -> list[str]:
    """Sentences from the command line, or one a line from ``--input`` (``-`` for stdin)."""
    if args.input is None:
        if not args.sentences:
            raise ValueError("give sentences as arguments or --input FILE (one sentence a line, - for stdin).")
        return args.sentences
    if args.input == "-":
        if sys.stdin is None or sys.stdin.closed:  # started with stdin closed (<&-)
            raise ValueError("--input -: standard input is closed; pipe sentences in or pass --input FILE.")
        text = sys.stdin.read()
    elif not Path(args.input).is_file():
        raise FileNotFoundError(f"--input {args.input}: no such file.")
    else:
        text = Path(args.input).read_text(encoding="utf-8")
    # lines end at \n alone (\r\n too): str.splitlines would also cut at \f, \v, U+2028 and other separators
    # inside a line, and output line i would no longer answer input line i
    lines = [line.strip() for line in text.removesuffix("\n").split("\n")]
    kept = [any(c.isprintable() and not c.isspace() for c in line) for line in lines]  # NUL-only lines are blank too
    if not any(kept):
        raise ValueError(f"--input {args.input}: no sentences, every line is empty; give one sentence a line.")
    if blank := [number for number, keep in enumerate(kept, 1) if not keep]:
        shown = ", ".join(map(str, blank[:10])) + (", ..." if len(blank) > 10 else "")
        warnings.warn(f"--input {args.input}: skipped {len(blank)} line(s) with nothing printable (line {shown}); "
                      "every other line gets one output line, in order.", stacklevel=2)
    return [line for line, keep in zip(lines, kept, strict=True) if keep]


def npy_path(output: str) -> Path:
    """Where ``np.save`` will write: it adds ``.npy`` to a name without it, so say so up front."""
    path = Path(output)
    if path.is_dir():
        raise IsADirectoryError(f"--output {output} is a folder; give a file name, e.g. {path / 'embeddings.npy'}.")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"--output {output}: folder {path.parent} does not exist; create it first.")
    return path if path.suffix == ".npy" else path.with_name(path.name + ".npy")


def cmd_embed(args: argparse.Namespace) -> None:
    from mtlib.encoder import SentenceEncoder
    from mtlib.onnx import load_model

    sentences = read_sentences(args)
    output = npy_path(args.output) if args.output else None
    if args.model:  # a saved model's fine-tuned encoder, or an exported folder, with the pooling it was trained with
        if args.pooling:
            raise ValueError("--pooling applies to --backbone; a saved model embeds with the pooling it was trained "
                             "with, drop --pooling.")
        model = load_model(args.model, args.backend)
        encoder = model.encoder if args.backend == "torch" else model
    elif args.backend == "onnx":
        raise ValueError("--backend onnx embeds with an exported folder: pass --model FOLDER "
                         "(made by python -m mtlib export).")
    else:
        encoder = SentenceEncoder.from_pretrained(args.backbone, pooling=args.pooling or "mean")
    embeddings = encoder.encode(sentences, batch_size=args.batch_size, normalize=True)
    print(f"embeddings: {tuple(embeddings.shape)}")
    if output:
        np.save(output, embeddings.numpy())
        print(f"saved to {output}")
    print("cosine similarity:")
    np.set_printoptions(precision=3, suppress=True, linewidth=160)
    print(np.asarray(embeddings @ embeddings.T))


def field_help(cls: type) -> dict[str, str]:
    """Each field's end-of-line comment in the dataclass's source: the help of its option."""
    return dict(re.findall(r"^    (\w+): [^#\n]*#\s*(.*)$", inspect.getsource(cls), flags=re.MULTILINE))


def add_dataclass_options(parser: argparse.ArgumentParser, cls: type) -> None:
    """One ``--field-name`` option per field of ``cls`` (and of a nested dataclass), typed by its annotation.

    Options not given stay out of the namespace, so a ``--config`` file or the dataclass default applies.
    """
    hints, comments = typing.get_type_hints(cls), field_help(cls)
    for field in dataclasses.fields(cls):
        kind = hints[field.name]
        if dataclasses.is_dataclass(kind):
            add_dataclass_options(parser.add_argument_group(f"{kind.__name__} ({field.name})"), kind)
            continue
        optional = isinstance(kind, types.UnionType)  # X | None: X, or "none"
        if optional:
            kind = next(k for k in typing.get_args(kind) if k is not type(None))
        default = field.default_factory() if field.default is dataclasses.MISSING else field.default
        options = {"help": f"{comments.get(field.name, '')} (default: {default!r})", "default": argparse.SUPPRESS}
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(kind) is typing.Literal:  # a choice: argparse lists the values in --help
            options["choices"] = typing.get_args(kind)
        else:
            parse = json.loads if typing.get_origin(kind) is dict else kind
            options["type"] = or_none(parse) if optional else parse
        parser.add_argument(f"--{field.name.replace('_', '-')}", **options)


def or_none(parse: Callable[[str], typing.Any]) -> Callable[[str], typing.Any]:
    """``parse``, with ``none`` (any case) read as None: for the settings whose None has a meaning."""

    def parse_or_none(text: str) -> typing.Any:
        return None if text.strip().lower() == "none" else parse(text)

    parse_or_none.__name__ = getattr(parse, "__name__", "value")  # argparse names it in its errors
    return parse_or_none


def read_config_file(path: str) -> dict:
    """Settings from a JSON or YAML file: flat, or nested as ``train_config.json`` writes them."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"--config {path}: no such file.")
    try:
        values = yaml.safe_load(Path(path).read_text(encoding="utf-8"))  # YAML reads JSON too
    except yaml.YAMLError as err:
        raise ValueError(f"--config {path} is neither JSON nor YAML: {' '.join(str(err).split())}") from None
    if not isinstance(values, dict):
        raise ValueError(f"--config {path} should hold a mapping of setting names to values, e.g. epochs: 2.")
    nested = values.pop("model", {})
    if not isinstance(nested, dict):
        raise ValueError(f"--config {path}: model should be a mapping of model settings (backbone, pooling, head, "
                         f"dropout, max_length, tasks), got {type(nested).__name__} {nested!r}; e.g. model: "
                         "{backbone: minilm}, or give those settings at the top level.")
    return values | nested


def make_train_config(args: argparse.Namespace) -> TrainConfig:
    """File values, then command-line options over them, split between ``TrainConfig`` and ``ModelConfig``."""
    values = (read_config_file(args.config) if args.config else {}) | {
        k: v for k, v in vars(args).items() if k not in ("config", "run", "command")
    }
    model_keys = {f.name for f in dataclasses.fields(ModelConfig)}
    train_keys = {f.name for f in dataclasses.fields(TrainConfig)} - {"model"}
    if unknown := sorted(values.keys() - model_keys - train_keys):
        raise ValueError(f"--config {args.config}: unknown settings {unknown}; see python -m mtlib train --help.")
    model = ModelConfig(**{k: v for k, v in values.items() if k in model_keys})
    return TrainConfig(model=model, **{k: v for k, v in values.items() if k in train_keys})


def cmd_train(args: argparse.Namespace) -> None:
    from mtlib.train import train

    config = make_train_config(args)
    _, test = train(config)
    print(json.dumps({task: {k: round(m[k], 4) for k in ("accuracy", "macro_f1")} for task, m in test.items()}))
    print(f"results in {config.output_dir}: metrics.csv, test_metrics.json, model/")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from mtlib.data import load_dataset, load_half
    from mtlib.evaluate import evaluate_frame
    from mtlib.onnx import load_model

    if args.card and args.backend != "torch":
        raise ValueError("--card adds the metrics to a saved model's card; an exported ONNX folder has none. "
                         "Drop --card, or evaluate the saved model with --backend torch.")
    model = load_model(args.model, args.backend)
    frame = load_half(args.data, model.tasks, args.split) if args.split else load_dataset(args.data, model.tasks)
    results = evaluate_frame(model, frame, batch_size=args.batch_size, precision=args.mixed_precision)
    text = json.dumps(results, indent=2)
    if args.output:
        Path(args.output).write_text(text + "\n")
    if args.card:
        from mtlib.card import add_evaluation

        add_evaluation(args.model, f"{args.data} ({args.split or 'all'})", results)
    print(text)


def cmd_predict(args: argparse.Namespace) -> None:
    from mtlib.onnx import load_model

    sentences = read_sentences(args)
    model = load_model(args.model, args.backend)
    for sentence, prediction in zip(sentences, model.predict(sentences, batch_size=args.batch_size), strict=True):
        print(json.dumps({"text": sentence, **prediction}))


def cmd_export(args: argparse.Namespace) -> None:
    from mtlib.onnx import export_onnx

    folder = export_onnx(args.model, args.output, quantize=args.quantize)
    print(f"exported to {folder}; use it with --backend onnx --model {folder}")


def cmd_baselines(args: argparse.Namespace) -> None:
    import pandas as pd

    from mtlib.baselines import run_baselines
    from mtlib.data import check_splits, load_dataset, load_half, split_dataset
    from mtlib.encoder import SentenceEncoder
    from mtlib.model import DEFAULT_TASKS

    splits = split_dataset(load_dataset(args.data, DEFAULT_TASKS), seed=args.seed)
    tasks = {task: DEFAULT_TASKS[task] for task in check_splits(splits, args.data)}  # the tasks with labels
    other = {"train": splits["train"], "test": load_half(args.out_of_style, tasks, "test")} if args.out_of_style else {}
    encoder = SentenceEncoder.from_pretrained(args.backbone)
    tables = {"test": run_baselines(splits, tasks, encoder=encoder)}
    if other:
        tables["out-of-style test"] = run_baselines(other, tasks, encoder=encoder)
    table = pd.concat(tables, names=["scored on"]).reset_index(level=0)
    if args.output:
        table.to_csv(args.output, index=False)
    print(table.round(4).to_string(index=False))


MODEL_HELP = "folder written by MultiTaskModel.save (python -m mtlib train writes RUN/model)"
BACKEND_HELP = "torch: --model is a saved model; onnx: --model is a folder made by export"
BACKBONE_HELP = "pretrained encoder: Hugging Face id, alias (minilm) or folder"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mtlib", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    embed = commands.add_parser("embed", help="print sentence embeddings' shape and cosine similarities")
    embed.add_argument("sentences", nargs="*")
    embed.add_argument("--input", help="file with one sentence a line, - for stdin")
    embed.add_argument("--output", help="save the embeddings as a .npy file")
    source = embed.add_mutually_exclusive_group()
    source.add_argument("--model", help=f"embed with the fine-tuned encoder of a saved model: {MODEL_HELP}")
    source.add_argument("--backbone", default=DEFAULT_BACKBONE, help=f"{BACKBONE_HELP} (default: %(default)s)")
    embed.add_argument("--pooling", choices=POOLING_MODES, help="with --backbone (default: mean)")
    embed.add_argument("--backend", default="torch", choices=BACKENDS, help=BACKEND_HELP)
    embed.add_argument("--batch-size", type=int, default=64)
    embed.set_defaults(run=cmd_embed)

    train = commands.add_parser("train", help="train the multi-task model (every TrainConfig field is an option)")
    train.add_argument("--config", help="JSON or YAML file of settings (train_config.json of a run works); "
                       "options given here override it")
    add_dataclass_options(train, TrainConfig)
    train.set_defaults(run=cmd_train)

    evaluate = commands.add_parser("evaluate", help="score a saved model on a labelled CSV")
    evaluate.add_argument("--model", required=True, help=MODEL_HELP)
    evaluate.add_argument("--data", required=True)
    evaluate.add_argument("--split", help="score only the rows whose split column has this value (dev or test)")
    evaluate.add_argument("--output", help="save the metrics as JSON")
    evaluate.add_argument("--card", action="store_true",
                          help="also add the metrics to the model card (README.md) of the --model folder")
    evaluate.add_argument("--batch-size", type=int, default=128)
    evaluate.add_argument("--mixed-precision", default="auto", choices=PRECISIONS,
                          help="as TrainConfig.mixed_precision")
    evaluate.add_argument("--backend", default="torch", choices=BACKENDS, help=BACKEND_HELP)
    evaluate.set_defaults(run=cmd_evaluate)

    predict = commands.add_parser("predict", help="label sentences with a saved model, one JSON line each")
    predict.add_argument("sentences", nargs="*")
    predict.add_argument("--model", required=True, help=MODEL_HELP)
    predict.add_argument("--input", help="file with one sentence a line, - for stdin")
    predict.add_argument("--batch-size", type=int, default=64)
    predict.add_argument("--backend", default="torch", choices=BACKENDS, help=BACKEND_HELP)
    predict.set_defaults(run=cmd_predict)

    export = commands.add_parser("export", help="export a saved model to ONNX for ONNX Runtime (--backend onnx)")
    export.add_argument("--model", required=True, help="folder of a saved model, e.g. runs/default/model")
    export.add_argument("--output", required=True, help="new folder for the export, e.g. runs/default/onnx")
    export.add_argument("--quantize", choices=QUANTIZATIONS, help="int8: dynamic quantization of the weights")
    export.set_defaults(run=cmd_export)

    baselines = commands.add_parser("baselines", help="majority, TF-IDF and frozen-embedding baselines")
    baselines.add_argument("--data", required=True)
    baselines.add_argument("--backbone", default=DEFAULT_BACKBONE, help=f"for the embedding baseline: {BACKBONE_HELP}")
    baselines.add_argument("--seed", type=int, default=0)
    baselines.add_argument("--out-of-style", help="also score on the test half of this file (data/out_of_style.csv)")
    baselines.add_argument("--output", help="save the table as CSV")
    baselines.set_defaults(run=cmd_baselines)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings():  # restores the usual warning display on return
        warnings.showwarning = lambda message, *_, **__: print(f"warning: {message}", file=sys.stderr)
        try:
            args.run(args)
        except (ValueError, OSError) as err:  # mtlib.data.DataError is a ValueError
            print(f"error: {' '.join(str(err).split())}", file=sys.stderr)  # one line, even for multi-line messages
            return 2
    return 0
