"""The model card, ``README.md`` in a saved model folder, built with ``huggingface_hub``'s ``ModelCard``.

The YAML metadata (what the hub indexes: base model, tasks, evaluation results) comes from
``ModelCardData``; the text below it gives the model, its tasks and labels, the training data and recipe,
the metrics with the set they were measured on, intended use and limitations.
"""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from mtlib.backbone import ALIASES
from mtlib.config import ModelConfig

RECIPE_KEYS = ("epochs", "batch_size", "lr", "head_lr", "weight_decay", "warmup_ratio", "freeze", "loss_weighting",
               "sampling", "train_fraction", "linear_probe", "wise_alpha", "seed", "mixed_precision")
TRAINING_KEYS = ("data", "data_sha256", *RECIPE_KEYS)
# Scored outside the project on real English text (about 2,400 sentences per task, balanced by class), for the
# default recipe trained on this version of data/sentences.csv (the README's "On real text").
REAL_TEXT = {
    "data_sha256": "620d21f5fc1954b4e572dc02d7c653d087340423fee71cf2474aefea68009b24",
    "summary": "topic accuracy 0.828 on news titles and lead sentences (titles 0.777), sentiment macro-F1 0.693 "
               "(financial news 0.870, tweets 0.577, with Neutral tweets recalled 0.33)",
}


def hub_id(backbone: str) -> str | None:
    """The backbone's Hugging Face id, or ``None`` for a local folder (the hub knows nothing of it)."""
    backbone = ALIASES.get(backbone, backbone)
    return None if Path(backbone).exists() or backbone.count("/") > 1 else backbone


def model_card(
    config: ModelConfig, *, training: dict | None = None, evaluations: dict[str, dict] | None = None
) -> ModelCard:
    """The card of a model described by ``config``.

    Args:
        config: The saved model's settings.
        training: ``asdict(TrainConfig)`` plus ``data_sha256``, or ``None`` when the model was not trained by
            :func:`mtlib.train.train`.
        evaluations: Set name (e.g. ``"test split"``) -> task -> metrics with ``accuracy``, ``macro_f1`` and ``n``.
    """
    evaluations = evaluations or {}
    data = ModelCardData(
        model_name=f"mtlib multi-task classifier on {config.backbone}",
        base_model=hub_id(config.backbone),
        library_name="mtlib",
        pipeline_tag="text-classification",
        language="en",
        tags=["sentence-transformers", "multi-task", "text-classification", *config.tasks],
        eval_results=[
            # the hub groups results by task type and dataset type and config: the set and the task go there
            EvalResult(task_type="text-classification", task_name=task, dataset_type=name.replace(" ", "-"),
                       dataset_name=name, dataset_config=task, metric_type=metric, metric_value=round(m[metric], 4))
            for name, per_task in evaluations.items() for task, m in per_task.items()
            for metric in ("accuracy", "macro_f1")
        ] or None,
        mtlib={  # what add_evaluation needs to render the card again with one more set
            "training": None if training is None else {key: training.get(key) for key in TRAINING_KEYS},
            "evaluations": {name: {task: {key: m[key] for key in ("accuracy", "macro_f1", "n")}
                                   for task, m in per_task.items()} for name, per_task in evaluations.items()},
        },
    )
    text = "\n".join([
        "---", data.to_yaml(), "---", "",
        f"# Multi-task sentence classifier on {config.backbone}", "",
        f"A sentence encoder ({config.backbone}, {config.pooling} pooling, at most {config.max_length} tokens) "
        f"shared by one {config.head} head per task (dropout {config.dropout}). Load it with "
        "`MultiTaskModel.load(folder)` or `python -m mtlib predict --model FOLDER`; with mean, cls or max pooling "
        "the folder is also a sentence-transformers model, so `SentenceTransformer(folder)` gives the fine-tuned "
        "sentence embeddings (L2-normalised).", "",
        "## Tasks and labels", "",
        *[f"- **{task}**: {', '.join(labels)}" for task, labels in config.tasks.items()], "",
        "## Training data and recipe", "",
        *training_section(training), "",
        "## Metrics", "",
        *metrics_section(evaluations), "",
        "## Intended use", "",
        "Labelling short English sentences (news headlines and reports, financial news, social posts) with the "
        "tasks above, and as a worked example of multi-task fine-tuning. Each prediction comes with class "
        "probabilities.", "",
        "## Limitations", "",
        "- It knows only the labels above; every sentence gets one of them, even when none fits.",
        "- The training sentences were written for the project to imitate real registers, not sampled from real "
        "streams; the scores above are on text written the same way and are higher than on real text.",
        *real_text_line(training),
        f"- Sentences longer than {config.max_length} tokens are truncated. English only.", "",
    ])
    return ModelCard(text)


def training_section(training: dict | None) -> list[str]:
    if training is None:
        return ["Not recorded: the model was saved outside `mtlib.train.train`."]
    return [
        f"Trained on `{training['data']}` (sha256 `{training.get('data_sha256', 'not recorded')}`), split 70/15/15 "
        f"into train, validation and test with seed {training['seed']} (stratified on the labels); early stopping "
        "on mean validation macro-F1.", "",
        "| setting | value |", "|---|---|",
        *[f"| {key} | {training[key]!r} |" for key in RECIPE_KEYS],
    ]


def metrics_section(evaluations: dict[str, dict]) -> list[str]:
    if not evaluations:
        return ["Not recorded."]
    return [
        "Scored with the weights saved here, once per set:", "",
        "| set | task | accuracy | macro-F1 | sentences |", "|---|---|---|---|---|",
        *[f"| {name} | {task} | {m['accuracy']:.4f} | {m['macro_f1']:.4f} | {m['n']} |"
          for name, per_task in evaluations.items() for task, m in per_task.items()],
    ]


def real_text_line(training: dict | None) -> list[str]:
    if training is None or training.get("data_sha256") != REAL_TEXT["data_sha256"]:
        return ["- Check it on a labelled sample of your own text before relying on it."]
    return [f"- On real English text from outside the project, the default recipe on this data scored "
            f"{REAL_TEXT['summary']}. Check it on a labelled sample of your own text before relying on it."]


def add_evaluation(folder: str | Path, name: str, metrics: dict[str, dict]) -> None:
    """Add (or replace) the metrics of the evaluation set ``name`` in the card of a saved model folder."""
    from mtlib.model import CARD_FILE, MODEL_KEYS, read_config

    path = Path(folder) / CARD_FILE
    record = ModelCard.load(path).data.to_dict().get("mtlib") or {}
    config = ModelConfig(**{key: value for key, value in read_config(Path(folder)).items() if key in MODEL_KEYS})
    evaluations = record.get("evaluations", {}) | {name: metrics}
    model_card(config, training=record.get("training"), evaluations=evaluations).save(path)
