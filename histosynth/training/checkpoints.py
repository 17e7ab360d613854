"""Resumable training checkpoints: `<folder>/step-NNNNNNNN/`, accelerate's `save_state` (modules, optimizers, LR
schedulers, EMA, each process's RNG states, a step's further states) plus our trainer_state.json (step, settings,
precision, the loss log). A checkpoint is written to a hidden partial folder and renamed into place, so a crash
while saving never leaves a half checkpoint that looks complete."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from histosynth.checked_files import check_safetensors_file, read_json_object
from histosynth.errors import UserFacingError

if TYPE_CHECKING:
    from accelerate import Accelerator

CHECKPOINT_PREFIX = "step-"
STATE_FILE = "trainer_state.json"


class TrainingStateError(UserFacingError, ValueError):
    """A training checkpoint is incomplete or damaged; the message names the file and the problem."""


def read_state(path: Path) -> dict[str, Any]:
    """A checkpoint's trainer_state.json; a missing, unreadable or invalid file raises TrainingStateError naming it."""
    return read_json_object(path, TrainingStateError)


def latest_checkpoint(folder: Path | str) -> Path | None:
    """The newest complete checkpoint (step-NNNNNNNN with a trainer_state.json) under `folder`, if any."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    done = sorted(p for p in folder.glob(f"{CHECKPOINT_PREFIX}*") if (p / STATE_FILE).is_file())
    return done[-1] if done else None


def save_checkpoint(accelerator: Accelerator, folder: Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Write checkpoint `step` (accelerate's state plus `state` as trainer_state.json) and keep the newest `keep`.

    Every process writes its part (its RNG states) into one shared hidden folder that the main process then
    renames into place; histosynth.atomic's per-process partial folders cannot hold a multi-process write, so the
    rename is done here by hand.
    """
    final = folder / f"{CHECKPOINT_PREFIX}{step:08d}"
    partial = folder / f".{final.name}.partial"
    if accelerator.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (partial / STATE_FILE).write_text(json.dumps({"step": step, **state}), encoding="utf-8")
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)
        old = sorted(p for p in folder.glob(f"{CHECKPOINT_PREFIX}*") if p != final)
        for stale in old[: max(0, len(old) - max(0, keep - 1))]:
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator: Accelerator, checkpoint: Path) -> dict[str, Any]:
    """Restore a training checkpoint into what `accelerator` prepared and registered; returns its trainer state.
    A damaged one raises TrainingStateError naming it."""
    state = read_state(checkpoint / STATE_FILE)
    if not isinstance(state.get("step"), int) or state["step"] < 0:
        raise TrainingStateError(f"{checkpoint / STATE_FILE}: no step count; the checkpoint is damaged")
    for weights in sorted(checkpoint.glob("*.safetensors")):
        check_safetensors_file(weights, TrainingStateError)
    try:
        accelerator.load_state(str(checkpoint))
    except Exception as err:  # safetensors, pickle and torch each raise their own types for a damaged file
        reason = (str(err).strip().splitlines() or [""])[0]
        raise TrainingStateError(f"{checkpoint}: cannot resume from this training checkpoint ({type(err).__name__}: "
                                 f"{reason}); delete it to resume from an earlier one, or train without --resume") from err
    return state
