"""``checkpoint.pt``: periodic writes during training and the checks that guard a resume.

A checkpoint holds ``format``, ``epoch``, ``method_name``, ``method_options``, ``method``
(the method's whole state_dict), ``optimizer`` and ``config``; see
:mod:`kdsearch.distill.trainer` for why no RNG state is needed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from kdsearch.distill.config import TrainConfig, resume_conflicts
from kdsearch.errors import KdsearchError
from kdsearch.io import read_jsonl, save_torch, write_text
from kdsearch.models.checkpoint import read_checkpoint

CHECKPOINT_FORMAT = "kdsearch-train-checkpoint/1"


class Checkpoints:
    """Writes ``checkpoint.pt`` every ``checkpoint_every`` epochs and at the last epoch.

    In between, the state of the latest completed epoch is kept as an in-memory copy, which
    :meth:`save_pending` writes when training stops early (signal, divergence, error).
    """

    def __init__(self, path: Path, method, optimizer, config: TrainConfig, saved_epoch: int,
                 runtime):
        self.path, self.method, self.optimizer, self.config = path, method, optimizer, config
        self.numerics = runtime.numerics.name
        self.saved_epoch = saved_epoch
        self.pending: dict | None = None

    def epoch_done(self, epoch: int) -> None:
        state = self.state(epoch)
        if epoch % self.config.checkpoint_every == 0 or epoch == self.config.epochs:
            self.write(state)
        else:
            self.pending = clone_tensors(state)

    def save_pending(self) -> int:
        """Write the in-memory copy if it is newer than the file; return the epoch on disk."""
        if self.pending is not None:
            self.write(self.pending)
        return self.saved_epoch

    def state(self, epoch: int) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "epoch": epoch,
            "method_name": self.method.name,
            "method_options": dict(self.method.options),
            "method": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "config": self.config.as_dict(),
            "numerics": self.numerics,
        }

    def write(self, state: dict[str, Any]) -> None:
        save_torch(self.path, state)
        self.saved_epoch, self.pending = state["epoch"], None


def clone_tensors(obj: Any) -> Any:
    """A copy of nested dicts/lists/tuples with every tensor cloned (detached)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {key: clone_tensors(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(clone_tensors(value) for value in obj)
    return obj


def restore(checkpoint: Path, metrics: Path, method, optimizer, config, resume, runtime) -> int:
    """Load ``checkpoint`` into ``method``/``optimizer`` when resuming; return epochs done.

    Metrics lines past the checkpoint's epoch (written before a kill) are dropped. Without
    ``resume``, an existing run is a :class:`KdsearchError` (nothing is overwritten).
    """
    if not resume:
        existing = [path.name for path in (checkpoint, metrics) if path.exists()]
        if existing:
            raise KdsearchError(
                f"{checkpoint.parent} already holds a run ({', '.join(existing)}); "
                "pass --resume to continue it, or choose another output directory"
            )
        return 0
    done = 0
    if checkpoint.exists():
        state = read_checkpoint(checkpoint, map_location=runtime.device)
        check_resumable(state, method, config, checkpoint, runtime.numerics.name)
        method.load_state_dict(state["method"])
        optimizer.load_state_dict(state["optimizer"])
        done = state["epoch"]
    if metrics.exists():
        kept = [record for record in read_jsonl(metrics) if record["epoch"] <= done]
        write_text(metrics, "".join(json.dumps(record) + "\n" for record in kept))
    return done


def check_resumable(state: dict, method, config: TrainConfig, path: Path,
                    numerics: str) -> None:
    """Raise :class:`KdsearchError` unless ``state`` was made by the same method and settings,
    with the same numerics (bf16 or float32, memory format)."""
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise KdsearchError(f"{path} is not a kdsearch training checkpoint")
    conflicts = resume_conflicts(state["config"], config)
    if state["method_name"] != method.name:
        conflicts.append(f"method: {state['method_name']!r} -> {method.name!r}")
    if state["method_options"] != dict(method.options):
        conflicts.append(f"method options: {state['method_options']} -> {dict(method.options)}")
    if state.get("numerics", numerics) != numerics:
        conflicts.append(f"numerics: {state['numerics']!r} -> {numerics!r} (see --no-amp)")
    if conflicts:
        raise KdsearchError(
            f"cannot resume {path}: settings differ ({'; '.join(conflicts)}); "
            "use the original settings or another output directory"
        )

