"""Load and save model weights, failing with one readable line instead of a traceback.

Checkpoints are read with ``torch.load(weights_only=True)``: tensors and plain containers
only, so a file that would run code when unpickled is refused. The common wrappers
(``{"model": sd}``, ``{"state_dict": sd}``, ``{"net": sd}``, as written by RepDistiller,
mdistiller and most training scripts) and a DataParallel ``module.`` prefix are accepted.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from kdsearch.errors import KdsearchError, first_line
from kdsearch.io import save_torch

WRAPPER_KEYS = ("model", "state_dict", "net")
PARALLEL_PREFIX = "module."
SHOWN_PER_KIND = 3  # keys listed per kind of difference in an error message
OPTIONAL_SUFFIXES = ("num_batches_tracked",)  # BN counters absent from old checkpoints

StateDict = Mapping[str, torch.Tensor]


def save_weights(model: nn.Module, path: str | Path) -> Path:
    """Write ``model``'s state_dict (on CPU) to ``path`` atomically; returns the path."""
    state = {key: value.detach().cpu() for key, value in model.state_dict().items()}
    return save_torch(path, state)


def load_weights(
    model: nn.Module,
    path_or_state_dict: str | Path | Mapping[str, Any],
    model_name: str | None = None,
) -> None:
    """Load a checkpoint file or state_dict into ``model`` in place, all keys or nothing.

    Raises :class:`KdsearchError` (one line) when the file is missing, unreadable,
    truncated, holds pickled code, is not a state_dict, or does not fit the model: the
    message lists missing keys, unexpected keys and shape mismatches, with counts.
    ``model_name`` (default: the model's class name) is only used in that message.
    """
    if isinstance(path_or_state_dict, Mapping):
        source, content = "state_dict", path_or_state_dict
    else:
        source, content = str(path_or_state_dict), read_checkpoint(path_or_state_dict)
    state = strip_parallel_prefix(unwrap_state_dict(content, source))
    problems = describe_mismatch(state, model.state_dict())
    if problems:
        name = model_name or type(model).__name__
        raise KdsearchError(f"checkpoint {source} does not fit {name}: {problems}")
    model.load_state_dict(state, strict=True)


def read_checkpoint(path: str | Path, map_location: Any = "cpu") -> Any:
    """``torch.load`` with ``weights_only=True``; every failure is a one-line error."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise KdsearchError(f"{path}: no such file") from None
    except OSError as err:
        raise KdsearchError(f"{path}: cannot read ({err.strerror or err})") from None
    except pickle.UnpicklingError as err:
        raise KdsearchError(
            f"{path} is not a plain weights file: {_unpickling_reason(err)}"
        ) from None
    except Exception as err:  # torch raises many types for a damaged file
        reason = first_line(err)
        raise KdsearchError(
            f"{path}: not a readable PyTorch checkpoint (truncated or corrupted?): {reason}"
        ) from None


def unwrap_state_dict(content: Any, source: str) -> StateDict:
    """The state_dict inside ``content``: itself, or under one of :data:`WRAPPER_KEYS`."""
    if not isinstance(content, Mapping):
        raise KdsearchError(f"{source} holds a {type(content).__name__!r} object, not a state_dict")
    for key in WRAPPER_KEYS:
        if isinstance(content.get(key), Mapping):
            content = content[key]
            break
    not_tensors = [k for k, v in content.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        shown = ", ".join(map(str, list(content)[:5]))
        raise KdsearchError(
            f"{source} is not a state_dict: {len(not_tensors)} entries are not tensors "
            f"(e.g. {not_tensors[0]!r}); keys: {shown}"
        )
    return content


def strip_parallel_prefix(state: StateDict) -> dict[str, torch.Tensor]:
    """Drop the ``module.`` prefix that ``nn.DataParallel`` puts on every key."""
    return {k.removeprefix(PARALLEL_PREFIX): v for k, v in state.items()}


def describe_mismatch(checkpoint: StateDict, expected: StateDict) -> str:
    """'' if ``checkpoint`` fits ``expected`` exactly, else a one-line summary of differences."""
    missing = [k for k in expected if k not in checkpoint and not k.endswith(OPTIONAL_SUFFIXES)]
    unexpected = [k for k in checkpoint if k not in expected]
    mismatched = [
        f"{k}: checkpoint {list(v.shape)} vs model {list(expected[k].shape)}"
        for k, v in checkpoint.items()
        if k in expected and v.shape != expected[k].shape
    ]
    parts = [
        _summarise(missing, "missing key", "missing keys"),
        _summarise(unexpected, "unexpected", "unexpected"),
        _summarise(mismatched, "shape mismatch", "shape mismatches"),
    ]
    return ", ".join(part for part in parts if part)


def _summarise(items: list[str], singular: str, plural: str) -> str:
    """'2 missing keys (a, b)', eliding past :data:`SHOWN_PER_KIND`; '' for no items."""
    if not items:
        return ""
    shown = ", ".join(items[:SHOWN_PER_KIND]) + (", ..." if len(items) > SHOWN_PER_KIND else "")
    return f"{len(items)} {singular if len(items) == 1 else plural} ({shown})"


def _unpickling_reason(err: pickle.UnpicklingError) -> str:
    found = re.search(r"GLOBAL (\S+)", str(err))
    if found:
        return (
            f"it references code ({found.group(1)}), and only tensors and plain containers "
            "are loaded (weights_only=True)"
        )
    return "its pickle data cannot be read with weights_only=True (corrupted, or not torch.save?)"
