import collections
import hashlib
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.feature_extraction.text import CountVectorizer

from mtlib.baselines import run_baselines
from mtlib.data import (
    OUT_OF_STYLE_HALVES,
    Collator,
    DataError,
    LengthGroupedBatches,
    SentenceDataset,
    find_leaks,
    load_dataset,
    load_half,
    normalize_text,
    split_dataset,
)
from mtlib.model import DEFAULT_TASKS

DATA = "data/sentences.csv"


@pytest.fixture(scope="module")
def frame():
    return load_dataset(DATA, DEFAULT_TASKS)


@pytest.fixture(scope="module")
def splits(frame):
    return split_dataset(frame, seed=0)


def test_size_and_cells(frame):
    assert len(frame) >= 5500
    cells = frame.groupby(["topic", "sentiment"]).size()
    assert len(cells) == 15
    assert cells.min() >= 250
    assert set(frame["topic"].dropna()) == set(DEFAULT_TASKS["topic"])
    assert set(frame["sentiment"]) == set(DEFAULT_TASKS["sentiment"])
    assert frame["sentiment"].notna().all()
    assert frame["topic"].isna().sum() >= 300  # about none of the five topics: trains the sentiment head only


WEEKDAY = r"\b(?:Mon|Tues|Wednes|Thurs|Fri|Satur|Sun)day\b"


def cue_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Surface features that must not give the sentiment away, one boolean column each."""
    text = frame["text"]
    return pd.DataFrame({
        "digit": text.str.contains(r"\d"),
        "will": text.str.contains(r"\bwill\b", case=False),
        "question": text.str.rstrip().str.endswith("?"),
        "weekday": text.str.contains(WEEKDAY),
        "exclamation": text.str.contains("!"),
        "first person": text.str.contains(r"\b(?:I|my|we|our)\b"),
    })


def test_neutral_is_not_told_by_form(frame):
    cues, neutral = cue_table(frame), frame["sentiment"] == "Neutral"
    digit_share = cues["digit"].groupby(frame["sentiment"]).mean()
    for other in ("Negative", "Positive"):
        assert abs(digit_share["Neutral"] - digit_share[other]) < 0.15, digit_share
    assert neutral[cues["will"]].mean() < 0.60
    rule = cues[["digit", "will", "question", "weekday"]].any(axis=1)  # "a cue means Neutral"
    assert neutral[rule].mean() < 0.45
    for cue in ("exclamation", "question", "first person"):  # present in every class
        assert (cues[cue].groupby(frame["sentiment"]).sum() >= 20).all(), cue


def test_lengths_and_openings(frame):
    words = frame["text"].str.split().str.len()
    assert words.min() >= 3 and words.max() <= 50
    openings = collections.Counter(" ".join(normalize_text(t).split()[:3]) for t in frame["text"])
    assert openings.most_common(1)[0][1] <= 0.01 * len(frame)


def test_no_duplicates_after_normalisation(frame):
    assert frame["text"].map(normalize_text).is_unique


def test_split_is_stratified_70_15_15(frame, splits):
    assert sum(len(part) for part in splits.values()) == len(frame)
    for (topic, sentiment), cell in frame.groupby(["topic", "sentiment"]):
        n = len(cell)
        for name, fraction in [("train", 0.70), ("validation", 0.15), ("test", 0.15)]:
            part = splits[name]
            count = ((part["topic"] == topic) & (part["sentiment"] == sentiment)).sum()
            assert abs(count - fraction * n) <= 1, (topic, sentiment, name, count, n)


def test_split_has_no_leaks(splits):
    report = find_leaks(splits)
    assert report.exact == []
    assert report.near == []


def test_leak_check_finds_planted_leaks():
    splits = {
        "train": pd.DataFrame({"text": ["Shares rose 3% on Monday after the results", "Hello there."]}),
        "test": pd.DataFrame({"text": ["shares rose 3% on monday, after the results!",
                                       "Shares rose 3% on Monday after the strong results"]}),
    }
    report = find_leaks(splits)
    assert len(report.exact) == 1
    assert any(j >= 0.8 for *_, j in report.near)


SPLIT_HASH = (
    "import hashlib; from mtlib.data import load_dataset, split_dataset; from mtlib.model import DEFAULT_TASKS; "
    "s = split_dataset(load_dataset('data/sentences.csv', DEFAULT_TASKS), seed=7); "
    "print(hashlib.sha256('|'.join(n + ':' + '\\n'.join(p['text']) for n, p in s.items()).encode()).hexdigest())"
)


def test_split_identical_in_two_processes(frame):
    runs = [subprocess.run([sys.executable, "-c", SPLIT_HASH], capture_output=True, text=True, check=True).stdout
            for _ in range(2)]
    here = split_dataset(frame, seed=7)
    expected = hashlib.sha256("|".join(n + ":" + "\n".join(p["text"]) for n, p in here.items()).encode()).hexdigest()
    assert runs[0].strip() == runs[1].strip() == expected
    assert not split_dataset(frame, seed=8)["test"]["text"].equals(here["test"]["text"])


def test_data_is_not_trivial(splits):
    # If TF-IDF + logistic regression reached 0.97 macro-F1 on both tasks, the sentences would be formulaic.
    table = run_baselines(splits, DEFAULT_TASKS)
    tfidf = table[table["baseline"] == "tfidf_logreg"].set_index("task")["macro_f1"]
    assert tfidf.min() < 0.97


def write(tmp_path, text: str | bytes, name="bad.csv"):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("sentence,topic\nHello there,Sports\n", r"missing column 'text'"),
        ("text,topic\nGoal in the last minute,Football\n", r"row 2, column 'topic': unknown label 'Football'; allowed"),
        ("text,topic\nGoal!,Sports\n  ,Sports\n", r"row 3, column 'text': empty text"),
        ("text,topic\nGoal!,Sports\nWhat a game,Sports\ngoal,Sports\n", r"row 4, column 'text': duplicate of row 2"),
        (b"text,topic\nGoal!,Sports\nCaf\xe9 owner scores,Sports\n", r"row 3: bytes that are not UTF-8"),
    ],
)
def test_malformed_csv_errors(tmp_path, content, message):
    path = write(tmp_path, content)
    with pytest.raises(DataError, match=message):
        load_dataset(path, DEFAULT_TASKS)


@pytest.mark.parametrize("content", ["sentence,topic\nHi,Sports\n", "text,topic\nGoal!,Sports\nGoal!,Sports\n",
                                     b"text,topic\n\xff\xfe,Sports\n"])
def test_malformed_csv_through_cli_is_one_line(tmp_path, content):
    path = write(tmp_path, content)
    result = subprocess.run([sys.executable, "-m", "mtlib", "baselines", "--data", str(path)],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert str(path) in result.stderr


def test_empty_label_means_no_label(tmp_path, tokenizer):
    path = write(tmp_path, "text,topic,sentiment\nThe match starts at 8pm,Sports,\nWhat a lovely film,,Positive\n")
    frame = load_dataset(path, DEFAULT_TASKS)
    assert frame["sentiment"].isna().tolist() == [True, False]
    batch = Collator(tokenizer, 32)([*SentenceDataset(frame, DEFAULT_TASKS)])
    assert batch["labels_sentiment"].tolist() == [-100, 2]
    assert batch["labels_topic"].tolist() == [0, -100]
    assert batch["input_ids"].shape[0] == 2


def test_dynamic_and_fixed_padding(tokenizer):
    frame = pd.DataFrame({"text": ["Short one.", "A rather longer sentence with many more words in it."],
                          "topic": ["Sports", "Politics"]})
    items = [*SentenceDataset(frame, DEFAULT_TASKS)]
    batch = Collator(tokenizer, 128)(items)
    assert batch["input_ids"].shape[1] == batch["attention_mask"].sum(1).max() < 128
    fixed = Collator(tokenizer, 128, pad_to_max_length=True)(items)
    assert fixed["input_ids"].shape == (2, 128)
    assert torch.equal(fixed["attention_mask"].sum(1), batch["attention_mask"].sum(1))


def test_length_grouped_batches_cover_every_row_once():
    lengths = [i % 17 for i in range(103)]
    sampler = LengthGroupedBatches(lengths, 8, seed=1, pool_batches=3)
    epoch0 = list(sampler)
    assert sorted(i for b in epoch0 for i in b) == list(range(103))
    assert list(sampler) == epoch0
    sampler.set_epoch(1)
    assert list(sampler) != epoch0


OUT_OF_STYLE = "data/out_of_style.csv"


def test_out_of_style_set_is_labelled_halved_and_apart(frame):
    halves = {half: load_half(OUT_OF_STYLE, DEFAULT_TASKS, half) for half in OUT_OF_STYLE_HALVES}
    assert sum(len(part) for part in halves.values()) >= 1500
    assert abs(len(halves["dev"]) - len(halves["test"])) <= 0.02 * len(frame)
    for part in halves.values():
        assert part["sentiment"].notna().all() and part["topic"].isna().any()  # rows without a topic too
        assert set(part["topic"].dropna()) == set(DEFAULT_TASKS["topic"])
        assert set(part["sentiment"]) == set(DEFAULT_TASKS["sentiment"])
    raw = pd.read_csv(OUT_OF_STYLE)
    assert raw.groupby(["split", "register"]).size().min() >= 100  # every register in both halves
    # never trained on: no sentence of it, exact or near, is in the training data or in the other half
    report = find_leaks({"sentences": frame, **halves})
    assert report.exact == [] and report.near == []


def char_5gram_near_duplicates(rows: pd.Series, reference: pd.Series, threshold: float = 0.4) -> np.ndarray:
    """Which rows have a reference row with character 5-gram Jaccard similarity above ``threshold``."""
    grams = CountVectorizer(analyzer="char", ngram_range=(5, 5), binary=True).fit(pd.concat([rows, reference]))
    a, b = grams.transform(rows), grams.transform(reference)
    size_a, size_b = np.asarray(a.sum(axis=1)).ravel(), np.asarray(b.sum(axis=1)).ravel()
    shared = (a @ b.T).toarray()
    return (shared / (size_a[:, None] + size_b[None, :] - shared) > threshold).any(axis=1)


def shares_an_opening(rows: pd.Series, reference: pd.Series) -> np.ndarray:
    """Which rows begin with the same three words (normalised) as some reference row."""
    opening = lambda text: " ".join(normalize_text(text).split()[:3])  # noqa: E731
    return rows.map(opening).isin(set(reference.map(opening))).to_numpy()


def test_out_of_style_set_is_independent_of_the_training_text():
    """Written apart, it is no closer to the training text than training rows are to each other.

    The comparison is a held-out part of the training file with the set's size and register mix; the set and the
    held-out part are both scored against the rest of the training file.
    """
    training = pd.read_csv(DATA, dtype=str, keep_default_na=False)
    evaluation = pd.read_csv(OUT_OF_STYLE, dtype=str, keep_default_na=False)
    held_out = pd.concat([training[training["register"] == register].sample(n=n, random_state=0)
                          for register, n in evaluation["register"].value_counts().items()])
    rest = training.drop(held_out.index)["text"]
    for measure in (char_5gram_near_duplicates, shares_an_opening):
        ours, baseline = measure(evaluation["text"], rest).mean(), measure(held_out["text"], rest).mean()
        assert ours <= 1.5 * baseline, (measure.__name__, ours, baseline)


def test_load_half_errors(tmp_path):
    with pytest.raises(DataError, match="no 'split' column"):
        load_half(DATA, DEFAULT_TASKS, "dev")
    path = write(tmp_path, "text,topic,split\nGoal!,Sports,dev\n")
    with pytest.raises(DataError, match=r"no rows with split='test'; values found: \['dev'\]"):
        load_half(path, DEFAULT_TASKS, "test")


def test_rows_without_a_topic_through_baselines(tmp_path, small_csv):
    frame = load_dataset(small_csv, DEFAULT_TASKS)
    frame.loc[frame.index[::5], "topic"] = None
    splits = split_dataset(frame, seed=0)
    table = run_baselines(splits, DEFAULT_TASKS).set_index(["baseline", "task"])
    test = splits["test"]
    assert table.loc[("tfidf_logreg", "topic"), "n"] == test["topic"].notna().sum() < len(test)
    assert table.loc[("tfidf_logreg", "sentiment"), "n"] == len(test)
