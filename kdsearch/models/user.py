"""Models the user defines in their own code: ``FILE.py:NAME`` or ``package.module:NAME``.

``NAME`` is an ``nn.Module`` subclass or a function that returns a module. It is called
with the keyword arguments it accepts among ``num_classes`` and ``in_channels`` (the
zoo's convention), so one factory serves every dataset; a factory that takes neither is
called bare and its model keeps its own head. A file may also call
:func:`kdsearch.graph.register_leaf_module` to keep an untraceable block opaque.

Naming a file runs it, as ``python FILE.py`` would (its folder goes on ``sys.path``, so it can
import its neighbours): name only code you trust.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from types import ModuleType

import torch.nn as nn

from kdsearch.errors import KdsearchError, first_line


def is_user_model(name: str) -> bool:
    """Whether ``name`` points into user code (``FILE.py:NAME``, ``package.module:NAME``)."""
    source, sep, attr = name.rpartition(":")
    return bool(sep and source and attr) and not name.startswith("torchvision:")


def portable_name(name: str) -> str:
    """``name`` with a ``FILE.py`` (or a student.json taken as a teacher) made absolute, so a
    spec naming it works from anywhere."""
    if name.endswith(".json"):
        return str(Path(name).expanduser().resolve())
    source, _, attr = name.rpartition(":")
    if is_user_model(name) and source.endswith(".py"):
        return f"{Path(source).expanduser().resolve()}:{attr}"
    return name


def build_user_model(name: str, num_classes: int | None = None,
                     in_channels: int | None = None) -> nn.Module:
    """Import ``name``'s module, call its factory, and check that a module came back."""
    source, _, attr = name.rpartition(":")
    factory = getattr(_import(source), attr, None)
    if not callable(factory):
        raise KdsearchError(f"{name}: {source} has no callable named {attr!r}")
    offered = {"num_classes": num_classes, "in_channels": in_channels}
    kwargs = {key: value for key, value in offered.items()
              if value is not None and _accepts(factory, key)}
    for key, option in (("num_classes", "--num-classes"), ("in_channels", "--input-size")):
        if key not in kwargs and _requires(factory, key):
            raise KdsearchError(f"{name} needs {key}: give it with {option} (or a dataset)")
    try:
        model = factory(**kwargs)
    except Exception as err:  # the user's code: report it as theirs, on one line
        raise KdsearchError(f"{name}({_call_text(kwargs)}) raised {type(err).__name__}: "
                            f"{first_line(err)}") from err
    if not isinstance(model, nn.Module):
        raise KdsearchError(f"{name} returned {type(model).__name__}, not an nn.Module")
    return model


def _import(source: str) -> ModuleType:
    if source.endswith(".py"):
        return _import_file(Path(source))
    try:
        return importlib.import_module(source)
    except ModuleNotFoundError as err:
        raise KdsearchError(f"cannot import module {source!r} ({err}); a file needs the "
                            ".py suffix") from None
    except Exception as err:
        raise KdsearchError(f"importing {source} raised {type(err).__name__}: "
                            f"{first_line(err)}") from err


def _import_file(path: Path) -> ModuleType:
    path = path.expanduser().resolve()
    if not path.is_file():
        raise KdsearchError(f"{path}: no such file")
    # one module per file, imported once: its leaf registrations and classes stay unique
    key = "kdsearch_user_" + hashlib.sha1(str(path).encode()).hexdigest()[:12]
    if key in sys.modules:
        return sys.modules[key]
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(key, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        del sys.modules[key]
        raise KdsearchError(f"{path}: importing it raised {type(err).__name__}: "
                            f"{first_line(err)}") from err
    return module


def _parameters(factory) -> list[inspect.Parameter]:
    try:
        return list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):  # builtins without a signature
        return []


def _accepts(factory, keyword: str) -> bool:
    return any((p.name == keyword and p.kind is not p.POSITIONAL_ONLY)
               or p.kind is p.VAR_KEYWORD for p in _parameters(factory))


def _requires(factory, keyword: str) -> bool:
    return any(p.name == keyword and p.default is p.empty for p in _parameters(factory))


def _call_text(kwargs: dict) -> str:
    return ", ".join(f"{key}={value}" for key, value in kwargs.items())
