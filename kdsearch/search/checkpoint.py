"""``search_checkpoint.pt``: periodic writes during the gated search and the checks that
guard a resume.

A checkpoint holds ``format``, ``step`` (steps completed), ``seconds`` (the search's wall
time up to that step, over every run that resumed it), ``settings`` (what must not change
across a resume), ``search`` (:meth:`GatedSearch.state_dict`: the gated network with its
gates, both optimisers, ``lam``, ``last_alive``, ``costs``, the last KL) and the global RNG
state. Tensors and plain Python values only, so it loads with ``weights_only=True``.

Why a resume is exact: step ``s`` uses batch ``s % len(batches)`` of epoch
``s // len(batches)``, and a batch depends only on ``(seed, epoch)``
(:class:`~kdsearch.data.DeviceBatches`); everything else the step reads is in the checkpoint.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from kdsearch.errors import KdsearchError
from kdsearch.io import read_jsonl, save_torch, write_text
from kdsearch.models.checkpoint import read_checkpoint
from kdsearch.search.config import SearchConfig

CHECKPOINT = "search_checkpoint.pt"
CHECKPOINT_FORMAT = "kdsearch-search-checkpoint/1"


class SearchInterrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM stopped the search after a step; the checkpoint holds that step."""


class SearchCheckpoints:
    """Writes ``path`` every ``every`` steps, at the last step and when asked (a signal).

    ``seconds_before`` is the wall time earlier runs spent on this search (what
    :func:`restore` returned); :meth:`seconds` adds this run's, counted from ``started``
    (a ``time.perf_counter()`` value; default: now).
    """

    def __init__(self, path: Path, search, settings: dict[str, Any], every: int,
                 saved_step: int = 0, seconds_before: float = 0.0,
                 started: float | None = None):
        self.path, self.search, self.settings = path, search, settings
        self.every, self.saved_step = max(1, every), saved_step
        self.seconds_before = seconds_before
        self.started = time.perf_counter() if started is None else started

    def seconds(self) -> float:
        """The search's wall time so far, over this run and every run it resumed."""
        return self.seconds_before + time.perf_counter() - self.started

    def step_done(self, done: int, last: bool = False) -> None:
        if done % self.every == 0 or last:
            self.write(done)

    def write(self, done: int) -> None:
        if done == self.saved_step and self.path.exists():
            return
        state = {"format": CHECKPOINT_FORMAT, "step": done, "seconds": self.seconds(),
                 "settings": self.settings,
                 "search": self.search.state_dict(), "rng": rng_state(self.search.device)}
        save_torch(self.path, state)
        self.saved_step = done

    def where(self) -> str:
        if self.path.exists():
            return f"{self.path} holds step {self.saved_step}"
        return "no checkpoint was written"


def rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """The global RNG state (the search step draws nothing from it for plain CNNs; dropout
    in a torchvision teacher would)."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def restore(path: Path, log: Path, search, settings: dict[str, Any],
            resume: bool) -> tuple[int, float]:
    """Load ``path`` into ``search`` when resuming; return the steps already done and the
    wall seconds they took (0 for a checkpoint written before ``seconds`` was recorded).

    Log lines past the checkpoint's step (written before a kill) are dropped. Without
    ``resume``, an existing checkpoint is a :class:`KdsearchError` (nothing is overwritten).
    """
    if not resume:
        refuse_unfinished(path)
    if resume and not path.exists() and (path.parent / "summary.json").exists():
        raise KdsearchError(f"{path.parent} holds a finished search (summary.json): nothing "
                            "to resume; choose another --out to search again")
    if not resume or not path.exists():
        log.unlink(missing_ok=True)
        return 0, 0.0
    state = read_checkpoint(path, map_location=search.device)
    check_resumable(state, settings, path)
    search.load_state_dict(state["search"])
    set_rng_state(state["rng"], search.device)
    done = int(state["step"])
    if log.exists():
        kept = [record for record in read_jsonl(log) if record["step"] < done]
        write_text(log, "".join(json.dumps(record) + "\n" for record in kept))
    return done, float(state.get("seconds", 0.0))


def refuse_unfinished(path: Path) -> None:
    if path.exists():
        raise KdsearchError(
            f"{path.parent} holds an unfinished search ({path.name}); pass --resume to "
            "continue it, or choose another --out")


def check_resumable(state: dict, settings: dict[str, Any], path: Path) -> None:
    """Raise :class:`KdsearchError` unless ``state`` was made with the same settings."""
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise KdsearchError(f"{path} is not a kdsearch search checkpoint")
    saved = state["settings"]
    conflicts = [f"{key}: {saved.get(key)!r} -> {value!r}" for key, value in settings.items()
                 if saved.get(key) != value]
    if conflicts:
        raise KdsearchError(
            f"cannot resume {path}: settings differ ({'; '.join(conflicts)}); use the original "
            "settings or another --out")


def resume_settings(teacher: str, dataset, budget_macs: int, seed: int,
                    config: dict[str, Any], constraints: dict[str, Any],
                    numerics: str = "float32") -> dict[str, Any]:
    """What must be equal for a resume to continue the same search (plain values only),
    the numerics it ran with included."""
    plain = json.loads(json.dumps({
        "dataset": dataset.name, "train_images": len(dataset.train_labels),
        **{f"config.{k}": v for k, v in config.items() if k not in SearchConfig.RESUMABLE},
        **{f"constraints.{k}": v for k, v in constraints.items()}}))
    return {"teacher": teacher, "budget_macs": int(budget_macs), "seed": int(seed),
            "numerics": numerics, **plain}
