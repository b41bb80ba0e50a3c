"""The model card, ``README.md`` in a saved model folder, in the Hugging Face model-card layout.

YAML metadata first (what the hub indexes), then: the model, its tasks and labels, the training data
and recipe, the test metrics with the set they were measured on, intended use and limitations.
"""

from __future__ import annotations

from mtlib.config import ModelConfig

RECIPE_KEYS = ("epochs", "batch_size", "lr", "head_lr", "weight_decay", "warmup_ratio", "freeze", "loss_weighting",
               "sampling", "train_fraction", "linear_probe", "wise_alpha", "seed", "mixed_precision")


def model_card(config: ModelConfig, *, training: dict | None = None, metrics: dict | None = None) -> str:
    """Markdown for ``README.md``; ``training`` is ``asdict(TrainConfig)``, ``metrics`` the test metrics per task."""
    lines = [
        "---",
        "library_name: mtlib",
        "pipeline_tag: text-classification",
        f"base_model: {config.backbone}",
        "tags: [sentence-transformers, multi-task, text-classification]",
        "---",
        "",
        f"# Multi-task sentence classifier on {config.backbone}",
        "",
        f"A sentence encoder ({config.backbone}, {config.pooling} pooling, at most {config.max_length} tokens) "
        f"shared by one {config.head} head per task (dropout {config.dropout}). Load it with "
        "`MultiTaskModel.load(folder)` or `python -m mtlib predict --model FOLDER`.",
        "",
        "## Tasks and labels",
        "",
        *[f"- **{task}**: {', '.join(labels)}" for task, labels in config.tasks.items()],
        "",
        "## Training data and recipe",
        "",
    ]
    if training is None:
        lines.append("Not recorded: the model was saved outside `mtlib.train.train`.")
    else:
        lines += [
            f"Trained on `{training['data']}`, split 70/15/15 into train, validation and test with seed "
            f"{training['seed']} (stratified on the labels); early stopping on mean validation macro-F1.",
            "",
            "| setting | value |",
            "|---|---|",
            *[f"| {key} | {training[key]!r} |" for key in RECIPE_KEYS],
        ]
    lines += ["", "## Metrics", ""]
    if metrics is None:
        lines.append("Not recorded.")
    else:
        lines += [
            f"On the held-out test split of `{training['data'] if training else 'the training file'}`, "
            "scored once with the best validation weights:",
            "",
            "| task | accuracy | macro-F1 | sentences |",
            "|---|---|---|---|",
            *[f"| {task} | {m['accuracy']:.4f} | {m['macro_f1']:.4f} | {m['n']} |" for task, m in metrics.items()],
        ]
    lines += [
        "",
        "## Intended use",
        "",
        "Labelling short English sentences (news-like text) with the tasks above, and as a worked example of "
        "multi-task fine-tuning. Each prediction comes with class probabilities.",
        "",
        "## Limitations",
        "",
        "- It knows only the labels above; every sentence gets one of them, even when none fits.",
        "- Scores are from one test split in the training data's style; expect lower scores on other registers "
        "(social posts, headlines) and check on your own labelled sample before relying on it.",
        f"- Sentences longer than {config.max_length} tokens are truncated.",
        "",
    ]
    return "\n".join(lines)

