"""Every setting is checked when the config is made, and the command line is generated from the dataclasses."""

import dataclasses
import json

import pytest
import yaml

from mtlib.cli import build_parser, make_train_config
from mtlib.config import ModelConfig, TrainConfig

BAD_MODEL = {
    "backbone": "",
    "pooling": "median",
    "head": "transformer",
    "dropout": 1.0,
    "max_length": 0,
    "tasks": {"topic": ["Sports"]},
}
BAD_TRAIN = {
    "data": None,
    "output_dir": " ",
    "model": {"pooling": "mean"},  # a dict is converted, so a wrong type is checked through validate below
    "pad_to_max_length": "yes",
    "freeze": "head:genre",
    "gradual_unfreeze": -1,
    "layer_lr_decay": 0.0,
    "linear_probe": 1,
    "wise_alpha": 1.5,
    "epochs": 0,
    "batch_size": 2.5,
    "lr": 0.0,
    "head_lr": -1e-3,
    "log_var_lr": 0.0,
    "weight_decay": -0.1,
    "warmup_ratio": 1.5,
    "max_grad_norm": -1.0,
    "loss_weighting": "learned",
    "task_weights": {"topic": 1.0},
    "sampling": "random",
    "temperature": 0,
    "patience": 0,
    "seed": -1,
    "train_fraction": 0,
    "cache_embeddings": "no",
    "mixed_precision": "half",
    "resume": None,
    "progress": 1,
    "overwrite": "true",
}


def test_every_field_has_a_bad_value_below():
    assert set(BAD_MODEL) == {f.name for f in dataclasses.fields(ModelConfig)}
    assert set(BAD_TRAIN) == {f.name for f in dataclasses.fields(TrainConfig)}


@pytest.mark.parametrize(("field", "value"), BAD_MODEL.items())
def test_bad_model_setting_names_field_value_range_and_default(field, value):
    with pytest.raises(ValueError, match=rf"^{field}=.* is not valid: it should be .*e\.g\. the default"):
        ModelConfig(**{field: value})


@pytest.mark.parametrize(("field", "value"), [(k, v) for k, v in BAD_TRAIN.items() if k != "model"])
def test_bad_train_setting_names_field_value_range_and_default(field, value):
    with pytest.raises(ValueError, match=rf"^{field}=.* is not valid: it should be .*--{field.replace('_', '-')}"):
        TrainConfig(**{field: value})


def test_a_field_changed_after_construction_is_checked_again():
    config = TrainConfig()
    config.model = "minilm"
    with pytest.raises(ValueError, match=r"^model='minilm' is not valid: it should be a ModelConfig"):
        config.validate()


@pytest.mark.parametrize(("settings", "message"), [
    ({"linear_probe": True, "model": ModelConfig(head="mlp")}, "linear_probe=True needs head='linear'"),
    ({"gradual_unfreeze": 1, "freeze": "backbone"}, "cannot be combined with freeze='backbone'"),
    ({"resume": True, "overwrite": True}, "pass one of them"),
    ({"loss_weighting": "equal", "task_weights": {"topic": 1.0, "sentiment": 0.0}}, "with loss_weighting='fixed'"),
])
def test_settings_that_contradict_each_other(settings, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**settings)


def test_model_config_round_trips_through_json():
    config = TrainConfig(model=ModelConfig(pooling="attention", max_length=64), epochs=2)
    assert TrainConfig(**json.loads(json.dumps(dataclasses.asdict(config)))) == config


def parse_train(*args) -> TrainConfig:
    return make_train_config(build_parser().parse_args(["train", *map(str, args)]))


def test_every_field_is_an_option_with_its_comment_as_help():
    help_text = " ".join(build_parser()._subparsers._group_actions[0].choices["train"].format_help().split())
    for cls in (ModelConfig, TrainConfig):
        for field in dataclasses.fields(cls):
            if field.name != "model":
                assert f"--{field.name.replace('_', '-')}" in help_text
    assert "stop after this many epochs without a better mean validation macro-F1" in help_text
    assert "mean | cls | max | attention" in help_text


def test_options_reach_both_dataclasses():
    config = parse_train("--pooling", "attention", "--head-lr", 0.01, "--no-progress", "--linear-probe",
                         "--tasks", '{"topic": ["a", "b"]}', "--max-grad-norm", 0)
    assert config.model.pooling == "attention" and config.model.tasks == {"topic": ["a", "b"]}
    assert (config.head_lr, config.progress, config.linear_probe, config.max_grad_norm) == (0.01, False, True, 0.0)
    assert config.epochs == TrainConfig().epochs  # not given: the dataclass default


def test_none_where_the_help_allows_it():
    config = parse_train("--head-lr", "none", "--log-var-lr", "None", "--max-length", "NONE")
    assert (config.head_lr, config.log_var_lr, config.model.max_length) == (None, None, None)
    assert parse_train("--max-length", "64").model.max_length == 64
    with pytest.raises(SystemExit):  # a setting that cannot be None still refuses it
        parse_train("--lr", "none")


@pytest.mark.parametrize("suffix", ["json", "yaml"])
def test_config_file_and_options_over_it(tmp_path, suffix):
    settings = {"epochs": 2, "lr": 5e-5, "model": {"head": "mlp", "dropout": 0.2}}
    path = tmp_path / f"settings.{suffix}"
    path.write_text(json.dumps(settings) if suffix == "json" else yaml.safe_dump(settings))
    config = parse_train("--config", path, "--lr", 1e-4)
    assert (config.epochs, config.lr, config.model.head, config.model.dropout) == (2, 1e-4, "mlp", 0.2)


def test_a_runs_train_config_json_is_a_config_file(tmp_path):
    original = TrainConfig(epochs=3, model=ModelConfig(pooling="max"), output_dir=str(tmp_path / "run"))
    path = tmp_path / "train_config.json"
    path.write_text(json.dumps(dataclasses.asdict(original)))
    assert parse_train("--config", path) == original


def test_unknown_setting_in_config_file(tmp_path):
    path = tmp_path / "settings.yaml"
    path.write_text("epochs: 2\nepoch: 3\n")
    with pytest.raises(ValueError, match=r"unknown settings \['epoch'\]"):
        parse_train("--config", path)
