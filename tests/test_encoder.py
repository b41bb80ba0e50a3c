import time

import pytest
import torch
from sentence_transformers import SentenceTransformer

import mtlib.backbone
from mtlib.backbone import load_backbone, resolve_backbone
from mtlib.encoder import POOLING_MODES, Pooling, SentenceEncoder

SENTENCES = [
    "Rates held.",
    "The central bank kept its benchmark rate at 4.5 per cent on Thursday, citing stubborn services inflation, "
    "a weaker currency and a labour market that has cooled more slowly than its economists expected in spring.",
    "What a finish!",
    "Patch 2.1 fixes the crash when you pair a second controller.",
]


@pytest.fixture(scope="module")
def minilm():
    return SentenceEncoder.from_pretrained("minilm", normalize=True)


def test_matches_sentence_transformers(minilm):
    reference = SentenceTransformer(resolve_backbone("minilm"), device="cpu")
    expected = reference.encode(SENTENCES, convert_to_tensor=True, normalize_embeddings=True)
    ours = minilm.encode(SENTENCES, batch_size=4)  # one batch: short sentences carry lots of padding
    assert ours.shape == (4, 384)
    assert torch.allclose(ours, expected, atol=1e-5)


def test_mean_pooling_ignores_padding():
    tokens = torch.randn(2, 5, 3)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1]])
    pooled = Pooling(3, "mean")(tokens, mask)
    assert torch.allclose(pooled[0], tokens[0, :2].mean(0))
    assert torch.allclose(pooled[1], tokens[1].mean(0))
    assert torch.allclose(Pooling(3, "max")(tokens, mask)[0], tokens[0, :2].amax(0))
    assert torch.equal(Pooling(3, "cls")(tokens, mask), tokens[:, 0])


def test_attention_pooling_gives_padding_no_weight():
    pooling = Pooling(3, "attention")
    tokens = torch.randn(1, 4, 3)
    mask = torch.tensor([[1, 1, 0, 0]])
    changed = tokens.clone()
    changed[0, 2:] = 100.0  # padding positions may hold anything
    assert torch.allclose(pooling(tokens, mask), pooling(changed, mask))


@pytest.mark.parametrize("pooling", POOLING_MODES)
def test_tiny_backbones_every_pooling(tiny_backbone_dir, pooling):
    encoder = SentenceEncoder.from_pretrained(tiny_backbone_dir, pooling=pooling)
    embeddings = encoder.encode(SENTENCES, batch_size=2)
    assert embeddings.shape == (len(SENTENCES), 32)
    # rows come back in input order although encode batches them by length
    one_by_one = torch.cat([encoder.encode([s]) for s in SENTENCES])
    assert torch.allclose(embeddings, one_by_one, atol=1e-5)


def test_bad_input(tiny_bert_dir):
    encoder = SentenceEncoder.from_pretrained(tiny_bert_dir)
    assert encoder.encode([]).shape == (0, 32)
    for bad, index in [(["fine", ""], 1), (["   "], 0), (["ok", None], 1), ([3], 0)]:
        with pytest.raises(ValueError, match=rf"sentences\[{index}\]"):
            encoder.encode(bad)
    with pytest.raises(ValueError, match="single string"):
        encoder.encode("a sentence")
    long = encoder.encode(["word " * 5000])  # truncated to the model's maximum, not an error
    assert long.shape == (1, 32)
    assert encoder.tokenize(["word " * 5000])["input_ids"].shape[1] == encoder.max_length


def test_unknown_model_fails_fast():
    started = time.perf_counter()
    with pytest.raises(OSError, match="no-such-org/no-such-model-xyz"):
        load_backbone("no-such-org/no-such-model-xyz")
    assert time.perf_counter() - started < 10


def test_hash_mismatch_is_refused(monkeypatch):
    monkeypatch.setattr(mtlib.backbone, "MINILM_SHA256", "0" * 64)
    with pytest.raises(ValueError, match="sha256"):
        load_backbone("minilm")
