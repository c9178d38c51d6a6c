"""Name -> object registries, filled by decorators where the objects are defined."""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from kdsearch.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection with a decorator to fill it and helpful lookup errors.

    >>> MODELS = Registry("model")
    >>> @MODELS.register("tiny", family="demo")
    ... def tiny(num_classes=10): ...
    >>> MODELS.get("tiny") is tiny, MODELS.meta("tiny")["family"]
    (True, 'demo')
    """

    def __init__(self, kind: str, builtins: str | tuple[str, ...] = (), hint: str = ""):
        """``builtins``: the modules that define the built-in entries, imported on the first
        lookup (a package: each of its modules), so that a registry is complete wherever it
        is read, and adding a built-in is adding a file or a decorated definition. ``hint``
        ends the unknown-name error (what else the name may be)."""
        self.hint = hint
        self.kind = kind
        self._items: dict[str, T] = {}
        self._meta: dict[str, dict[str, Any]] = {}
        self._builtins = (builtins,) if isinstance(builtins, str) else tuple(builtins)
        self._loaded = not self._builtins

    def _load_builtins(self) -> None:
        if self._loaded:
            return
        self._loaded = True  # before importing: the modules register into this registry
        for name in self._builtins:
            module = importlib.import_module(name)
            for info in pkgutil.iter_modules(getattr(module, "__path__", [])):
                importlib.import_module(f"{name}.{info.name}")

    def register(self, name: str | None = None, **meta: Any) -> Callable[[T], T]:
        """Decorator: register the decorated object under ``name`` (default: its __name__)."""

        def add(obj: T) -> T:
            key = name or obj.__name__  # type: ignore[attr-defined]
            if key in self._items:
                raise ValueError(f"{self.kind} {key!r} is registered twice")
            self._items[key] = obj
            self._meta[key] = dict(meta)
            return obj

        return add

    def register_named(self, name: str, **meta: Any) -> Callable[[T], T]:
        """Decorator for a class: its ``name`` attribute set to ``name``, then registered
        (a distillation method, a selector: the class knows what it is called)."""

        def add(cls: T) -> T:
            cls.name = name  # type: ignore[attr-defined]
            return self.register(name, **meta)(cls)

        return add

    def get(self, name: str) -> T:
        self._load_builtins()
        if name not in self._items:
            message = unknown_name_message(self.kind, name, self.names())
            raise UnknownNameError(f"{message}; {self.hint}" if self.hint else message)
        return self._items[name]

    def meta(self, name: str) -> dict[str, Any]:
        self.get(name)
        return self._meta[name]

    def names(self) -> list[str]:
        self._load_builtins()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        self._load_builtins()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self._load_builtins()
        return len(self._items)


def unknown_name_message(kind: str, name: str, known: list[str]) -> str:
    """One line: the unknown name, close matches if any, else the known names."""
    close = difflib.get_close_matches(name, known, n=4, cutoff=0.5)
    if close:
        return f"unknown {kind} {name!r}; did you mean: {', '.join(close)}?"
    shown = ", ".join(known[:30]) + (", ..." if len(known) > 30 else "")
    return f"unknown {kind} {name!r}; known: {shown}"
