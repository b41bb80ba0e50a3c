"""One run per output folder, and checkpoints through ``Accelerator.save_state`` that a kill cannot corrupt.

Each finished epoch is saved whole into ``checkpoints/epoch-N/`` (weights, optimizer, schedule and random
states through Accelerate; the run's own state, such as the best weights so far, in ``run_state.safetensors``);
only then does ``checkpoint.json``, replaced in one atomic rename, point at it. A run killed mid-write leaves
the pointer on the last good epoch. ``checkpoint.json`` also records the settings, the data's sha256 and the
sha256 of every checkpoint file, so ``--resume`` refuses another run's or a damaged checkpoint. Nothing is
registered with ``accelerator.register_for_checkpointing`` (Accelerate reads those files with pickle, which
can run code), and every file Accelerate reads with pickle is opened with ``weights_only=True`` first.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import json
import os
import pickle
import shutil
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import load as safe_torch_load
from filelock import FileLock, Timeout
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from mtlib.backbone import sha256_of
from mtlib.config import TrainConfig

POINTER_FILE, CHECKPOINTS_DIR, RUN_STATE_FILE = "checkpoint.json", "checkpoints", "run_state.safetensors"
RUN_FILES = ("metrics.csv", POINTER_FILE, CHECKPOINTS_DIR, "model", "test_metrics.json", "train_config.json")
LOCK_FILE = ".run.lock"  # held while a run writes the folder
# a run folder may be moved and a data file renamed (its sha256 is compared instead); the rest must match
MAY_CHANGE_ON_RESUME = ("resume", "progress", "overwrite", "output_dir", "data")
POINTER_KEYS = ("folder", "epoch", "config", "data", "files")


FULL_DISK_BYTES = 64 * 2**20  # free space below which a failed write is put down to a full disk


@contextlib.contextmanager
def naming_a_full_disk(folder: Path, then: str) -> Iterator[None]:
    """Turn a write that failed for want of space into one ``OSError`` that says so and what to do ``then``.

    ``torch.save`` reports a full disk as a C++ ``RuntimeError`` that never names it, and safetensors as a
    ``SafetensorError``; the free space left on ``folder``'s disk tells them apart from other failures.
    """
    try:
        yield
    except (OSError, RuntimeError, SafetensorError) as err:
        probe = next((p for p in (folder, *folder.parents) if p.exists()), Path("."))
        free = shutil.disk_usage(probe).free
        if getattr(err, "errno", None) != errno.ENOSPC and free >= FULL_DISK_BYTES:
            raise
        raise OSError(errno.ENOSPC, f"the disk is full: writing {folder} failed with {free / 2**20:.0f} MiB "
                      f"left on its device (no space left on device). Free some space, then {then}") from err


def one_run_per_folder(train: Callable) -> Callable:
    """Decorate ``train(config, ...)``: hold ``output_dir/.run.lock`` while it runs (main process only), so a
    second run into the same folder, from this process or another, is refused at once instead of mixing its
    log and weights with the first run's. The operating system drops the lock of a killed run."""

    @functools.wraps(train)
    def locked(config: TrainConfig, *args, **kwargs):
        config.validate()
        if not PartialState().is_main_process:
            return train(config, *args, **kwargs)
        out = Path(config.output_dir)
        created = out  # the outermost folder this run creates, if any
        while not created.parent.exists():
            created = created.parent
        created = None if out.exists() else created
        out.mkdir(parents=True, exist_ok=True)
        lock = FileLock(out / LOCK_FILE, timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise ValueError(
                f"output_dir={str(out)!r} is being written by another run that is still going ({out / LOCK_FILE} "
                "is locked). Wait for it to finish, or choose another output_dir."
            ) from None
        try:
            return train(config, *args, **kwargs)
        finally:
            lock.release()
            if created and [p.name for p in out.iterdir()] == [LOCK_FILE]:  # stopped before writing anything
                shutil.rmtree(created)

    return locked


def run_settings(config: TrainConfig) -> dict:
    """The settings a resumed run must share with the run it continues, model fields included, by name."""
    settings = dataclasses.asdict(config)
    settings |= settings.pop("model")
    return {k: v for k, v in settings.items() if k not in MAY_CHANGE_ON_RESUME}


def check_run_folder(config: TrainConfig, data_sha256: str) -> Path | None:
    """The checkpoint folder to resume from, or ``None`` for a new run; one folder never mixes two runs.

    A new run into a folder holding another is refused unless ``overwrite``; ``resume`` needs a
    checkpoint written with the same settings and the same data, with every file intact.
    """
    out = Path(config.output_dir)
    if not config.resume:
        found = [name for name in RUN_FILES if (out / name).exists()]
        if found and not config.overwrite:
            raise ValueError(
                f"output_dir={str(out)!r} already holds a run ({', '.join(found)}). Pass --resume (resume=True) "
                "to continue it, --overwrite (overwrite=True) to replace it, or choose another output_dir."
            )
        return None
    pointer = out / POINTER_FILE
    if not pointer.is_file():
        raise FileNotFoundError(
            f"resume=True but {pointer} does not exist: no finished epoch to resume in {out}. "
            "Train without --resume (with --overwrite if the folder holds an older run)."
        )
    if not (out / "metrics.csv").is_file():
        raise FileNotFoundError(f"{out / 'metrics.csv'} is missing, so the run cannot be continued; use --overwrite.")
    state = read_pointer(pointer)
    old, new = state["config"], run_settings(config)
    changed = [k for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)]
    changes = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed]
    if state["data"]["sha256"] != data_sha256:
        changes.append(
            f"data: {state['data']['path']!r} -> {config.data!r} "
            f"(sha256 {state['data']['sha256'][:12]}... -> {data_sha256[:12]}...)"
        )
    if changes:
        raise ValueError(
            f"resume=True but the run in {out} was started with other settings: {'; '.join(changes)}. "
            "Resume with the original settings, or start a new run (--overwrite or another output_dir)."
        )
    folder = out / state["folder"]
    for name, expected in state["files"].items():
        if not (folder / name).is_file() or sha256_of(folder / name) != expected:
            raise ValueError(
                f"{folder / name} is missing or does not match the sha256 in {pointer}: the checkpoint is truncated "
                "or corrupt, perhaps from a full disk. Start the run again with --overwrite (overwrite=True)."
            )
    return folder


def read_pointer(path: Path) -> dict:
    """``checkpoint.json``, or one error saying the run must start again if it is damaged or foreign."""
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(
            f"{path} cannot be read ({type(err).__name__}): it is truncated or corrupt. "
            "Start the run again with --overwrite (overwrite=True)."
        ) from err
    if not isinstance(state, dict) or not set(POINTER_KEYS) <= state.keys():
        raise ValueError(
            f"{path} does not record the run's settings (an older mtlib wrote it, or another program), so "
            "it cannot be checked against this run. Start the run again with --overwrite (overwrite=True)."
        )
    return state


def save_checkpoint(
    accelerator: Accelerator, out: Path, epoch: int, record: dict, run_state: dict[str, torch.Tensor]
) -> None:
    """Save the whole training state of ``epoch``, then point ``checkpoint.json`` at it in one rename.

    ``record`` (settings, data, learned loss weights, early-stopping counters) is stored in ``checkpoint.json``
    beside the pointer; ``run_state`` (tensors such as the best weights so far) in ``run_state.safetensors``.
    """
    name = f"{CHECKPOINTS_DIR}/epoch-{epoch}"
    folder = out / name
    if accelerator.is_main_process and folder.exists():  # left by a run killed while writing this epoch
        shutil.rmtree(folder)
    accelerator.wait_for_everyone()
    with naming_a_full_disk(folder, "continue the run with --resume (resume=True)."):
        accelerator.save_state(str(folder))
        if accelerator.is_main_process:
            save_file({k: v.detach().cpu().contiguous() for k, v in run_state.items()}, folder / RUN_STATE_FILE)
    if accelerator.is_main_process:
        files = {p.relative_to(folder).as_posix(): sha256_of(p) for p in sorted(folder.rglob("*")) if p.is_file()}
        tmp = out / f"{POINTER_FILE}.tmp"
        tmp.write_text(json.dumps({"folder": name, "epoch": epoch, **record, "files": files}, indent=2) + "\n")
        os.replace(tmp, out / POINTER_FILE)  # the moment the new checkpoint replaces the old one
        for old in (out / CHECKPOINTS_DIR).iterdir():
            if old != folder:
                shutil.rmtree(old)
    accelerator.wait_for_everyone()


def load_checkpoint(accelerator: Accelerator, folder: Path) -> dict[str, torch.Tensor]:
    """Restore Accelerate's state from ``folder`` and return the run's own tensors (``run_state``).

    Accelerate reads its ``.bin`` and ``.pkl`` files with pickle; each is opened first with
    ``weights_only=True`` (tensors, numbers and numpy arrays only), so a file that would run code is refused
    here, with one error, before anything reads it in full.
    """
    for path in sorted(folder.iterdir()):
        if path.suffix in (".bin", ".pkl", ".pt", ".pth"):
            try:
                with warnings.catch_warnings():  # torch's note on an unusual pickle protocol: the error says enough
                    warnings.simplefilter("ignore")
                    safe_torch_load(path, map_location="cpu")
            except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
                raise ValueError(
                    f"{path} is not a plain tensor file ({type(err).__name__}): it holds objects that loading "
                    "would have to run code for, so it is refused. The checkpoint was tampered with or not written "
                    "by mtlib; start the run again with --overwrite (overwrite=True)."
                ) from None
    if not (folder / RUN_STATE_FILE).is_file():
        raise ValueError(f"{folder} has no {RUN_STATE_FILE}: an older mtlib wrote this checkpoint. "
                         "Start the run again with --overwrite (overwrite=True).")
    accelerator.load_state(str(folder))
    return load_file(folder / RUN_STATE_FILE)
