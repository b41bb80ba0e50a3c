"""Shared fixtures: tiny randomly initialised BERT and DistilBERT backbones, saved as folders."""

from __future__ import annotations

import copy
import importlib.util

import pandas as pd
import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertModel, DistilBertConfig, DistilBertModel

from mtlib.backbone import resolve_backbone
from mtlib.cli import main
from mtlib.encoder import SentenceEncoder
from mtlib.model import DEFAULT_TASKS, MultiTaskModel

DATA = "data/sentences.csv"


def load_experiment(name: str):
    """``experiments/NAME.py`` as a module: experiments/ is a folder of scripts, not a package."""
    spec = importlib.util.spec_from_file_location(name, f"experiments/{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cli_error(args, capsys) -> str:
    """Run the CLI in this process; it must exit 2 with one ``error: ...`` line on stderr."""
    capsys.readouterr()
    assert main([str(a) for a in args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.fixture(scope="session")
def tokenizer():
    # The packaged MiniLM tokenizer: BERT's uncased WordPiece vocabulary, offline.
    return AutoTokenizer.from_pretrained(resolve_backbone("minilm"))


def tiny_transformer(kind: str):
    torch.manual_seed(0)
    if kind == "distilbert":
        return DistilBertModel(DistilBertConfig(vocab_size=30522, dim=32, n_layers=2, n_heads=2, hidden_dim=37,
                                                max_position_embeddings=128))
    return BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=37, max_position_embeddings=128))


@pytest.fixture(scope="session", params=["bert", "distilbert"])
def tiny_backbone_dir(request, tmp_path_factory, tokenizer):
    """A folder holding a tiny random backbone and the tokenizer: loads like any hub model."""
    folder = tmp_path_factory.mktemp(f"tiny-{request.param}")
    tiny_transformer(request.param).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory, tokenizer):
    folder = tmp_path_factory.mktemp("tiny-bert")
    tiny_transformer("bert").save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def _tiny_model(tiny_bert_dir):
    torch.manual_seed(0)
    return MultiTaskModel(SentenceEncoder.from_pretrained(tiny_bert_dir), DEFAULT_TASKS)


@pytest.fixture
def tiny_model(_tiny_model):
    """A fresh copy per test, so tests cannot leak state into each other."""
    return copy.deepcopy(_tiny_model)


@pytest.fixture(scope="session")
def small_csv(tmp_path_factory):
    """300 rows of the shipped data, 20 per (topic, sentiment) cell: enough to train a tiny model."""
    frame = pd.read_csv(DATA)
    small = frame.groupby(["topic", "sentiment"]).head(20)
    path = tmp_path_factory.mktemp("data") / "small.csv"
    small.to_csv(path, index=False)
    return str(path)
