"""Reference points on the same split: majority class, TF-IDF + logistic regression, and
frozen sentence embeddings + logistic regression. A trained model has to beat all three.

Compared against the trained model in ``notebooks/04_training_loop.ipynb``.
"""

from __future__ import annotations

import pandas as pd
from sklearn.dummy import DummyClassifier
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from mtlib.data import DataError
from mtlib.encoder import SentenceEncoder
from mtlib.evaluate import task_metrics


def run_baselines(
    splits: dict[str, pd.DataFrame], tasks: dict[str, list[str]], *, encoder: SentenceEncoder | None = None
) -> pd.DataFrame:
    """Fit each baseline on the train split and score it on the test split.

    Args:
        splits: ``train`` and ``test`` DataFrames from :func:`mtlib.data.split_dataset`.
        tasks: Labels per task.
        encoder: Frozen sentence encoder for the embedding baseline; ``None`` skips it.

    Returns:
        One row per baseline and task: accuracy, macro-F1 and the number of test rows.
    """
    train, test = splits["train"], splits["test"]
    # a task needs labelled rows on both sides: a file may label only some tasks
    scored = [t for t in tasks if t in train and t in test and train[t].notna().any() and test[t].notna().any()]
    if not scored:
        raise DataError(f"no task of {list(tasks)} has labelled rows in both the train and the test split.")
    features = {"majority": (train["text"], test["text"]), "tfidf_logreg": (train["text"], test["text"])}
    if encoder is not None:
        features["embedding_logreg"] = (
            encoder.encode(train["text"].tolist(), show_progress=False).numpy(),
            encoder.encode(test["text"].tolist(), show_progress=False).numpy(),
        )
    rows = []
    for name, (x_train, x_test) in features.items():
        for task in scored:
            labels = tasks[task]
            fit_rows, test_rows = train[task].notna().to_numpy(), test[task].notna().to_numpy()
            classifier = make_classifier(name)
            classifier.fit(x_train[fit_rows], train[task][fit_rows].map(labels.index))
            predicted = classifier.predict(x_test[test_rows])
            metrics = task_metrics(test[task][test_rows].map(labels.index).tolist(), predicted.tolist(), labels)
            rows.append({"baseline": name, "task": task, **metrics})
    return pd.DataFrame(rows)


def make_classifier(name: str):
    if name == "majority":
        return DummyClassifier(strategy="most_frequent")
    if name == "tfidf_logreg":
        return make_pipeline(
            TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1), LogisticRegression(C=10.0, max_iter=2000)
        )
    return LogisticRegression(C=1.0, max_iter=2000)
