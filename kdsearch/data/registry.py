"""The dataset registry and :func:`load_dataset`, the one way commands get their data.

Loaders register where they are defined and take, as keyword-only arguments, only the
options they honour::

    @register_dataset("synthetic")
    def load_synthetic(*, input_size=None, num_classes=None) -> ImageDataset: ...

:func:`load_dataset` passes each loader the options its signature names. ``data_dir`` and
``download`` are dropped silently for loaders that need no files; any other option a loader
does not take (``input_size`` for ``cifar100``) is a :class:`KdsearchError` naming the
datasets that do take it.
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Any

import torch

from kdsearch.data.base import ImageDataset
from kdsearch.errors import KdsearchError
from kdsearch.registry import Registry

DATASETS: Registry = Registry("dataset", builtins=(
    "kdsearch.data.cifar", "kdsearch.data.digits", "kdsearch.data.imagefolder",
    "kdsearch.data.synthetic"))
register_dataset = DATASETS.register

# Options about where files live: meaningless, hence ignored, for loaders without files.
_FILE_OPTIONS = frozenset({"data_dir", "download"})


def load_dataset(
    name: str,
    *,
    data_dir: str | Path | None = None,
    subset: int | None = None,
    seed: int = 0,
    download: bool = True,
    input_size: tuple[int, int, int] | None = None,
    num_classes: int | None = None,
    **options: Any,
) -> ImageDataset:
    """Load dataset ``name``; with ``subset=N`` keep a seeded random N images of its train split.

    ``seed`` only chooses the subset; each dataset's own train/test split is fixed. Extra
    ``options`` go to the loader as they are (e.g. ``num_train=64`` for ``synthetic``).
    Raises :class:`UnknownNameError` for an unknown name and :class:`KdsearchError` for an
    option the loader does not take or a bad ``subset``.
    """
    _import_loaders()
    loader = DATASETS.get(name)
    requested = dict(
        data_dir=data_dir, download=download, input_size=input_size, num_classes=num_classes
    )
    dataset = loader(**loader_arguments(name, {**requested, **options}))
    if subset is not None:
        dataset = train_subset(dataset, subset, seed)
    return dataset


def dataset_names() -> list[str]:
    """The registered dataset names, sorted."""
    _import_loaders()
    return DATASETS.names()


def loader_arguments(name: str, requested: dict[str, Any]) -> dict[str, Any]:
    """The subset of ``requested`` that dataset ``name``'s loader takes, ``None`` values dropped.

    Raises :class:`KdsearchError` for a non-``None`` option the loader does not take, unless it
    is a file option (``data_dir``, ``download``).
    """
    accepted = _keyword_names(DATASETS.get(name))
    arguments = {}
    for key, value in requested.items():
        if key in accepted:
            if value is not None:
                arguments[key] = value
        elif value is not None and key not in _FILE_OPTIONS:
            takers = [other for other in DATASETS if key in _keyword_names(DATASETS.get(other))]
            where = ", ".join(takers) if takers else "no dataset"
            raise KdsearchError(f"dataset {name!r} does not take {key} (taken by: {where})")
    return arguments


def train_subset(dataset: ImageDataset, size: int, seed: int) -> ImageDataset:
    """A copy of ``dataset`` keeping ``size`` random train images (chosen by ``seed``).

    The kept images stay in their original relative order; the test split is untouched.
    ``size`` must be an int in ``1..len(train split)``, else :class:`KdsearchError`.
    """
    available = len(dataset.train_labels)
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= available:
        raise KdsearchError(
            f"subset must be an integer from 1 to {available} "
            f"(the {dataset.name} train split), not {size!r}"
        )
    generator = torch.Generator().manual_seed(seed)
    keep = torch.randperm(available, generator=generator)[:size].sort().values
    return dataclasses.replace(
        dataset, train_images=dataset.train_images[keep], train_labels=dataset.train_labels[keep]
    )


def _keyword_names(loader: Any) -> set[str]:
    """Names of the keyword arguments ``loader`` accepts."""
    kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    parameters = inspect.signature(loader).parameters.values()
    return {p.name for p in parameters if p.kind in kinds}


def _import_loaders() -> None:
    """Import the built-in loader modules (they register themselves)."""
    import kdsearch.data.cifar
    import kdsearch.data.digits
    import kdsearch.data.imagefolder
    import kdsearch.data.synthetic  # noqa: F401
