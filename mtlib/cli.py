"""Command line: ``python -m mtlib {embed,train,evaluate,predict,baselines} ...``.

Bad arguments and bad files end in one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import warnings
from pathlib import Path

import numpy as np

from mtlib.backbone import DEFAULT_BACKBONE
from mtlib.data import DataError
from mtlib.encoder import POOLING_MODES
from mtlib.losses import LOSS_WEIGHTINGS
from mtlib.train import SAMPLINGS, TrainConfig


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
    sentences = [line.strip() for line in text.splitlines() if line.strip()]
    if not sentences:
        raise ValueError(f"--input {args.input}: no sentences, every line is empty; give one sentence a line.")
    return sentences


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

    sentences = read_sentences(args)
    output = npy_path(args.output) if args.output else None
    encoder = SentenceEncoder.from_pretrained(args.model, pooling=args.pooling)
    embeddings = encoder.encode(sentences, batch_size=args.batch_size, normalize=True)
    print(f"embeddings: {tuple(embeddings.shape)}")
    if output:
        np.save(output, embeddings.numpy())
        print(f"saved to {output}")
    print("cosine similarity:")
    np.set_printoptions(precision=3, suppress=True, linewidth=160)
    print(np.asarray(embeddings @ embeddings.T))


def cmd_train(args: argparse.Namespace) -> None:
    from mtlib.train import train

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    config = TrainConfig(**{k: v for k, v in vars(args).items() if k in fields and v is not None})
    _, test = train(config)
    print(json.dumps({task: {k: round(m[k], 4) for k in ("accuracy", "macro_f1")} for task, m in test.items()}))
    print(f"results in {config.output_dir}: metrics.csv, test_metrics.json, model/")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from mtlib.data import load_dataset, load_half
    from mtlib.evaluate import evaluate_frame
    from mtlib.model import MultiTaskModel

    model = MultiTaskModel.load(args.model)
    frame = load_half(args.data, model.tasks, args.split) if args.split else load_dataset(args.data, model.tasks)
    results = evaluate_frame(model, frame, batch_size=args.batch_size)
    text = json.dumps(results, indent=2)
    if args.output:
        Path(args.output).write_text(text + "\n")
    print(text)


def cmd_predict(args: argparse.Namespace) -> None:
    from mtlib.model import MultiTaskModel

    sentences = read_sentences(args)
    model = MultiTaskModel.load(args.model)
    for sentence, prediction in zip(sentences, model.predict(sentences, batch_size=args.batch_size), strict=True):
        print(json.dumps({"text": sentence, **prediction}))


def cmd_baselines(args: argparse.Namespace) -> None:
    import pandas as pd

    from mtlib.baselines import run_baselines
    from mtlib.data import check_splits, load_dataset, load_half, split_dataset
    from mtlib.encoder import SentenceEncoder
    from mtlib.model import DEFAULT_TASKS

    splits = split_dataset(load_dataset(args.data, DEFAULT_TASKS), seed=args.seed)
    tasks = {task: DEFAULT_TASKS[task] for task in check_splits(splits, args.data)}  # the tasks with labels
    other = {"train": splits["train"], "test": load_half(args.out_of_style, tasks, "test")} if args.out_of_style else {}
    encoder = SentenceEncoder.from_pretrained(args.model)
    tables = {"test": run_baselines(splits, tasks, encoder=encoder)}
    if other:
        tables["out-of-style test"] = run_baselines(other, tasks, encoder=encoder)
    table = pd.concat(tables, names=["scored on"]).reset_index(level=0)
    if args.output:
        table.to_csv(args.output, index=False)
    print(table.round(4).to_string(index=False))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mtlib", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    embed = commands.add_parser("embed", help="print sentence embeddings' shape and cosine similarities")
    embed.add_argument("sentences", nargs="*")
    embed.add_argument("--input", help="file with one sentence a line, - for stdin")
    embed.add_argument("--output", help="save the embeddings as a .npy file")
    embed.add_argument("--model", default=DEFAULT_BACKBONE, help="backbone id, alias (minilm) or folder")
    embed.add_argument("--pooling", default="mean", choices=POOLING_MODES)
    embed.add_argument("--batch-size", type=int, default=64)
    embed.set_defaults(run=cmd_embed)

    train = commands.add_parser("train", help="train the multi-task model")
    train.add_argument("--data", required=True)
    train.add_argument("--output-dir", required=True)
    train.add_argument("--backbone")
    train.add_argument("--pooling", choices=POOLING_MODES)
    train.add_argument("--head", choices=("linear", "mlp"))
    train.add_argument("--freeze", help="none | all | backbone | head:<task> | layers:<k>")
    train.add_argument("--gradual-unfreeze", type=int, help="unfreeze one more layer every N epochs")
    train.add_argument("--layer-lr-decay", type=float, help="< 1: each lower layer's learning rate times this")
    train.add_argument(
        "--linear-probe", action="store_true", default=None, help="fit the heads on the frozen encoder first (LP-FT)"
    )
    train.add_argument(
        "--wise-alpha", type=float, help="< 1: interpolate the trained encoder towards the pretrained one (WiSE-FT)"
    )
    train.add_argument("--head-lr", type=float, help="learning rate of the heads (default 1e-3)")
    train.add_argument("--epochs", type=int)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--lr", type=float)
    train.add_argument("--loss-weighting", choices=LOSS_WEIGHTINGS)
    train.add_argument("--sampling", choices=SAMPLINGS)
    train.add_argument("--seed", type=int)
    train.add_argument("--train-fraction", type=float)
    train.add_argument("--no-progress", dest="progress", action="store_false", default=None, help="no progress bars")
    train.add_argument("--resume", action="store_true", default=None, help="continue the run in --output-dir")
    train.add_argument(
        "--overwrite", action="store_true", default=None, help="replace a run already in --output-dir"
    )
    train.set_defaults(run=cmd_train)

    evaluate = commands.add_parser("evaluate", help="score a saved model on a labelled CSV")
    evaluate.add_argument("--model", required=True)
    evaluate.add_argument("--data", required=True)
    evaluate.add_argument("--split", help="score only the rows whose split column has this value (dev or test)")
    evaluate.add_argument("--output")
    evaluate.add_argument("--batch-size", type=int, default=64)
    evaluate.set_defaults(run=cmd_evaluate)

    predict = commands.add_parser("predict", help="label sentences with a saved model, one JSON line each")
    predict.add_argument("sentences", nargs="*")
    predict.add_argument("--model", required=True)
    predict.add_argument("--input", help="file with one sentence a line, - for stdin")
    predict.add_argument("--batch-size", type=int, default=64)
    predict.set_defaults(run=cmd_predict)

    baselines = commands.add_parser("baselines", help="majority, TF-IDF and frozen-embedding baselines")
    baselines.add_argument("--data", required=True)
    baselines.add_argument("--model", default=DEFAULT_BACKBONE, help="backbone for the embedding baseline")
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
        except (DataError, ValueError, OSError) as err:
            print(f"error: {' '.join(str(err).split())}", file=sys.stderr)  # one line, even for multi-line messages
            return 2
    return 0
