"""Every bad input or damaged file ends in one clear error: no traceback, no silent wrong answer."""

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time

import pandas as pd
import pytest
from conftest import cli_error

import mtlib.train
from mtlib.cli import main
from mtlib.config import ModelConfig, TrainConfig
from mtlib.data import DataError, load_dataset
from mtlib.model import DEFAULT_TASKS, MultiTaskModel
from mtlib.train import train


def settings(data, out, backbone, **overrides) -> TrainConfig:
    fast = {"epochs": 1, "batch_size": 16, "lr": 1e-3, "progress": False}
    model_fields = {f for f in ModelConfig.__dataclass_fields__ if f in overrides}
    model = ModelConfig(backbone=backbone, **{f: overrides.pop(f) for f in model_fields})
    return TrainConfig(data=str(data), output_dir=str(out), model=model, **(fast | overrides))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, small_csv, tiny_bert_dir):
    """A finished one-epoch run; tests copy it before changing anything."""
    out = tmp_path_factory.mktemp("finished") / "run"
    train(settings(small_csv, out, tiny_bert_dir))
    return out


@pytest.fixture
def run_copy(finished_run, tmp_path):
    return shutil.copytree(finished_run, tmp_path / "run")


@pytest.fixture
def saved_model(tiny_model, tmp_path):
    return tiny_model.save(tmp_path / "model")


def write_csv(tmp_path, frame: pd.DataFrame, name: str):
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


# 1. A model folder is checked whole: a missing or altered file is one error naming it.

def test_missing_tokenizer_file_is_refused(saved_model, capsys):
    (saved_model / "backbone" / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"backbone/tokenizer\.json is missing"):
        MultiTaskModel.load(saved_model)
    assert "tokenizer.json is missing" in cli_error(["predict", "--model", saved_model, "What a goal!"], capsys)


def test_altered_tokenizer_file_is_refused(saved_model):
    path = saved_model / "backbone" / "tokenizer.json"
    path.write_text(path.read_text().replace("[UNK]", "[UNKNOWN]"))
    with pytest.raises(ValueError, match=r"tokenizer\.json does not match the sha256"):
        MultiTaskModel.load(saved_model)


def test_folder_without_backbone_names_the_missing_file(saved_model, capsys):
    shutil.rmtree(saved_model / "backbone")
    err = cli_error(["predict", "--model", saved_model, "What a goal!"], capsys)
    assert "backbone/config.json is missing" in err and "Repo id" not in err


def test_config_without_manifest_says_resave(saved_model, capsys):
    config = json.loads((saved_model / "config.json").read_text())
    del config["files"]
    (saved_model / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"lacks 'files'.*Re-save"):
        MultiTaskModel.load(saved_model)
    assert "incomplete" in cli_error(["predict", "--model", saved_model, "hi"], capsys)


def test_weights_that_do_not_fit_the_config(saved_model, capsys):
    config = json.loads((saved_model / "config.json").read_text())
    config["head"] = "mlp"  # the weights are a linear head's
    (saved_model / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="do not fit the model described in"):
        MultiTaskModel.load(saved_model)
    cli_error(["evaluate", "--model", saved_model, "--data", "data/sentences.csv"], capsys)


# 2. and 3. Resume rules, and one run per folder.

def test_new_run_into_a_run_folder_is_refused(run_copy, small_csv, tiny_bert_dir):
    before = (run_copy / "metrics.csv").read_text()
    expected = r"already holds a run \(metrics\.csv, checkpoint\.json, checkpoints, model.*--overwrite"
    with pytest.raises(ValueError, match=expected):
        train(settings(small_csv, run_copy, tiny_bert_dir, lr=5e-4))
    assert (run_copy / "metrics.csv").read_text() == before


def test_killed_new_run_never_resumes_the_old_checkpoint(run_copy, tmp_path, small_csv, tiny_bert_dir, monkeypatch):
    other = write_csv(tmp_path, pd.read_csv(small_csv).iloc[::-1], "other.csv")  # other data, same rows reversed

    def killed(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(mtlib.train, "compute_losses", killed)
    with pytest.raises(KeyboardInterrupt):  # killed before its first checkpoint
        train(settings(other, run_copy, tiny_bert_dir, lr=5e-4, overwrite=True))
    monkeypatch.undo()
    with pytest.raises(FileNotFoundError, match=r"resume=True but .*checkpoint\.json does not exist"):
        train(settings(other, run_copy, tiny_bert_dir, lr=5e-4, resume=True))


def test_resume_with_other_settings_names_each_change(run_copy, tmp_path, small_csv, tiny_bert_dir):
    other = write_csv(tmp_path, pd.read_csv(small_csv).head(200), "other.csv")
    changed = settings(other, run_copy, tiny_bert_dir, resume=True, lr=5e-4, batch_size=32)
    changed.epochs = 3
    with pytest.raises(ValueError, match="other settings") as info:
        train(changed)
    message = str(info.value)
    for change in ("batch_size: 16 -> 32", "epochs: 1 -> 3", "lr: 0.001 -> 0.0005", f"-> {str(other)!r}"):
        assert change in message


def test_resume_same_settings_moved_data_file_is_fine(run_copy, tmp_path, small_csv, tiny_bert_dir):
    log, test = (run_copy / "metrics.csv").read_text(), json.loads((run_copy / "test_metrics.json").read_text())
    copy = shutil.copy(small_csv, tmp_path / "renamed.csv")  # same content: the same run
    _, resumed = train(settings(copy, run_copy, tiny_bert_dir, resume=True))
    # every epoch was already done: the run goes on from its checkpoint to the same test of the same weights
    assert (run_copy / "metrics.csv").read_text() == log
    assert json.loads(json.dumps(resumed)) == test


def test_resume_other_head_through_cli(run_copy, small_csv, tiny_bert_dir, capsys):
    err = cli_error(["train", "--data", small_csv, "--output-dir", run_copy, "--backbone", tiny_bert_dir,
                     "--epochs", 1, "--batch-size", 16, "--lr", 1e-3, "--resume", "--head", "mlp"], capsys)
    assert "head: 'linear' -> 'mlp'" in err


def test_resume_without_checkpoint(tmp_path, small_csv, tiny_bert_dir, capsys):
    err = cli_error(["train", "--data", small_csv, "--output-dir", tmp_path / "new", "--backbone", tiny_bert_dir,
                     "--resume"], capsys)
    assert "checkpoint.json does not exist" in err


def test_truncated_checkpoint(run_copy, small_csv, tiny_bert_dir, capsys):
    weights = run_copy / "checkpoints" / "epoch-0" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        train(settings(small_csv, run_copy, tiny_bert_dir, resume=True))
    cli_error(["train", "--data", small_csv, "--output-dir", run_copy, "--backbone", tiny_bert_dir, "--epochs", 1,
               "--batch-size", 16, "--lr", 1e-3, "--resume"], capsys)


def test_overwrite_replaces_the_run(run_copy, small_csv, tiny_bert_dir):
    train(settings(small_csv, run_copy, tiny_bert_dir, lr=5e-4, overwrite=True))
    log = pd.read_csv(run_copy / "metrics.csv")
    assert len(log) == 4 and (log["epoch"] == 0).all()


# 4. Single-task files work end to end; a task without labels is left out.

@pytest.fixture(scope="module")
def topic_only(small_csv, tmp_path_factory):
    return write_csv(tmp_path_factory.mktemp("topic"), pd.read_csv(small_csv)[["text", "topic"]], "topic.csv")


@pytest.fixture(scope="module")
def empty_sentiment(small_csv, tmp_path_factory):
    frame = pd.read_csv(small_csv).assign(sentiment="")
    return write_csv(tmp_path_factory.mktemp("empty"), frame, "empty_sentiment.csv")


def test_single_task_file_trains_evaluates_and_predicts(topic_only, tmp_path, tiny_bert_dir, capsys):
    model, test = train(settings(topic_only, tmp_path / "run", tiny_bert_dir))
    assert set(test) == {"topic"} and set(model.tasks) == {"topic"}
    assert set(pd.read_csv(tmp_path / "run" / "metrics.csv")["task"]) == {"topic"}
    assert main(["evaluate", "--model", str(tmp_path / "run" / "model"), "--data", str(topic_only)]) == 0
    assert set(json.loads(capsys.readouterr().out)) == {"topic"}
    assert main(["predict", "--model", str(tmp_path / "run" / "model"), "What a goal!"]) == 0
    assert set(json.loads(capsys.readouterr().out)) == {"text", "topic"}


def test_empty_task_column_is_left_out(empty_sentiment, tmp_path, tiny_bert_dir, saved_model, capsys):
    with pytest.warns(UserWarning, match=r"no labels in column\(s\) \['sentiment'\]; training \['topic'\] only"):
        _, test = train(settings(empty_sentiment, tmp_path / "run", tiny_bert_dir))
    assert set(test) == {"topic"}
    assert main(["evaluate", "--model", str(saved_model), "--data", str(empty_sentiment)]) == 0  # a two-task model
    assert set(json.loads(capsys.readouterr().out)) == {"topic"}


@pytest.mark.parametrize("fixture", ["topic_only", "empty_sentiment"])
def test_single_task_baselines(fixture, request, tiny_bert_dir, capsys):
    path = request.getfixturevalue(fixture)
    assert main(["baselines", "--data", str(path), "--backbone", tiny_bert_dir]) == 0
    table = capsys.readouterr().out
    assert "topic" in table and "sentiment" not in table


def test_no_labels_at_all(tmp_path, small_csv, tiny_bert_dir, capsys):
    path = write_csv(tmp_path, pd.read_csv(small_csv).assign(topic="", sentiment=""), "unlabelled.csv")
    with pytest.raises(DataError, match="no labelled rows"):
        train(settings(path, tmp_path / "run", tiny_bert_dir))
    assert "no labelled rows" in cli_error(["baselines", "--data", path, "--backbone", tiny_bert_dir], capsys)


# 5. A hub that accepts connections and never answers: the offline message within the time limit.

def test_silent_hub_gives_offline_message_in_time(tmp_path):
    server = socket.create_server(("127.0.0.1", 0))
    accepted = []

    def accept_and_never_answer():
        while True:
            accepted.append(server.accept()[0])

    threading.Thread(target=accept_and_never_answer, daemon=True).start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env |= {"HF_ENDPOINT": f"https://127.0.0.1:{server.getsockname()[1]}", "HF_HOME": str(tmp_path),
            "MTLIB_HUB_TIMEOUT": "1"}
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "mtlib", "embed", "--backbone", "org/none", "hi"], env=env,
                            capture_output=True, text=True, timeout=120)
    seconds = time.monotonic() - started
    server.close()
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ") and "did not answer within 1 s" in result.stderr
    assert accepted, "the hub named by HF_ENDPOINT (with its port) was never asked"
    assert seconds < 30  # Python and torch start in about 5 s of that


def test_bad_hub_timeout(monkeypatch, capsys):
    monkeypatch.setenv("MTLIB_HUB_TIMEOUT", "soon")
    assert "MTLIB_HUB_TIMEOUT='soon'" in cli_error(["embed", "--backbone", "org/none", "hi"], capsys)


# 6. One line instead of a traceback, and messages that say what is wrong.

@pytest.mark.parametrize("command", ["train", "baselines"])
@pytest.mark.parametrize(("rows", "message"), [(0, "no data rows, only the header"),
                                               (1, "1 data row; training needs at least 4")])
def test_tiny_csv(command, rows, message, tmp_path, small_csv, tiny_bert_dir, capsys):
    path = write_csv(tmp_path, pd.read_csv(small_csv).head(rows), "tiny.csv")
    args = ["--output-dir", tmp_path / "run", "--backbone", tiny_bert_dir] if command == "train" else []
    err = cli_error([command, "--data", path, *args], capsys)
    assert str(path) in err and message in err


def test_closed_stdin(tiny_bert_dir):
    result = subprocess.run(["sh", "-c", 'exec "$0" -m mtlib embed --input - --backbone "$1" <&-', sys.executable,
                             tiny_bert_dir], capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr == "error: --input -: standard input is closed; pipe sentences in or pass --input FILE.\n"


def test_empty_input_file(tmp_path, tiny_bert_dir, capsys):
    (tmp_path / "blank.txt").write_text("\n  \n")
    cli_error(["embed", "--input", tmp_path / "blank.txt", "--backbone", tiny_bert_dir], capsys)


# 7. Silent bad runs and small lies.

def test_tiny_train_fraction_is_refused_before_training(tmp_path, small_csv, tiny_bert_dir, monkeypatch):
    monkeypatch.setattr(mtlib.train, "build_model", lambda *a, **k: pytest.fail("built a model"))
    with pytest.raises(ValueError, match=r"train_fraction=0.001 leaves 0 training rows \(of 210\); raise it to at "
                                         r"least 0.0714"):
        train(settings(small_csv, tmp_path / "run", tiny_bert_dir, train_fraction=0.001))
    frame = pd.read_csv(small_csv)[["text", "topic"]]
    few_politics = write_csv(tmp_path, frame.drop(frame.index[frame["topic"] == "Politics"][8:]), "few.csv")
    with pytest.raises(ValueError, match=r"leaves no training rows with topic='Politics'; raise it to at least 0.167"):
        train(settings(few_politics, tmp_path / "run", tiny_bert_dir, train_fraction=0.05))  # 0.05 * 6 rounds to 0


def test_rare_label_cannot_be_stratified(tmp_path, small_csv, tiny_bert_dir):
    frame = pd.read_csv(small_csv)
    frame = frame[(frame["topic"] != "Politics") | (frame.index.isin(frame.index[frame["topic"] == "Politics"][:2]))]
    path = write_csv(tmp_path, frame, "rare.csv")
    with pytest.raises(DataError, match=r"label 'Politics': 2 rows, too few to stratify"):
        train(settings(path, tmp_path / "run", tiny_bert_dir))


def test_row_numbers_count_quoted_newlines_and_blank_lines(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text('text,topic\nGoal!,Sports\n"A quoted\nnewline",Sports\n\n\nWhat a game,Sports\nBad one,Football\n')
    with pytest.raises(DataError, match=r"row 8, column 'topic': unknown label 'Football'"):
        load_dataset(path, DEFAULT_TASKS)


def test_embed_output_says_where_it_wrote(tmp_path, tiny_bert_dir, capsys):
    err = cli_error(["embed", "hi", "--backbone", tiny_bert_dir, "--output", tmp_path], capsys)
    assert "is a folder" in err and not (tmp_path.parent / f"{tmp_path.name}.npy").exists()
    assert main(["embed", "hi", "--backbone", tiny_bert_dir, "--output", str(tmp_path / "vectors")]) == 0
    assert f"saved to {tmp_path / 'vectors.npy'}" in capsys.readouterr().out
    assert (tmp_path / "vectors.npy").is_file()


@pytest.mark.parametrize(("field", "value"), [("patience", 0), ("dropout", 1.5), ("mixed_precision", "half")])
def test_bad_settings_are_refused_up_front(field, value, tmp_path, small_csv, tiny_bert_dir):
    with pytest.raises(ValueError, match=f"{field}="):
        settings(small_csv, tmp_path / "run", tiny_bert_dir, **{field: value})
