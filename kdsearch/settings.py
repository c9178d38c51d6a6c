"""Dataclasses from mappings: the one checker of config files and method options.

:func:`from_mapping` builds a dataclass from a mapping (a YAML section, a method's
options), checking every key against the fields and every value against its field's
annotation: ``bool``, ``int``, ``float`` (an int is taken), ``str``, ``Literal[...]``,
``X | None`` and other unions, ``list[X]`` and ``tuple[X, ...]`` (a lone string is a list
of one string), ``dict[str, X]``, ``Any`` and dataclasses (a nested section, checked in
turn). A missing or empty (``null``) section is its default. A field marked with
:func:`given` holds only the values given for another dataclass (a search's settings,
a stage's training settings). Errors are one line that names the key::

    config: search.steps: expected int, got 'x'
    config: search: unknown key 'stepz' (allowed: budgets, ...)
"""

from __future__ import annotations

import dataclasses
import difflib
import types
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from kdsearch.errors import KdsearchError

GIVEN = "kdsearch.settings.given"  # field metadata: (dataclass, allowed fields, inline)
TRUE, FALSE = ("true", "yes", "1"), ("false", "no", "0")


@dataclasses.dataclass
class NoOptions:
    """The options of a component (a distillation method, a selector) that has none."""


def given(cls: type, *, only: tuple[str, ...] | None = None,
          inline: bool = False) -> dict[str, Any]:
    """The metadata of a field holding the values given for ``cls``'s fields
    (``field(default_factory=dict, metadata=given(Cls))``): a dict of the keys set (not
    every default), each checked against ``cls``, the whole built once (``cls(**values)``)
    for the checks of its ``__post_init__``. ``only``: the fields of ``cls`` allowed;
    ``inline``: the values sit beside the section's own keys, not under the field's name."""
    return {GIVEN: (cls, only, inline)}


def from_mapping(cls: type, values: Any, where: str, base: Any = None, *,
                 parse_strings: bool = False, kind: str = "key") -> Any:
    """``cls(**values)`` over ``base`` (default: ``cls``'s defaults), every key and value
    checked; :class:`KdsearchError` otherwise, and for what ``cls`` itself refuses.

    ``where`` starts each error (a file, ``config``, ``method 'kd'``) and the key path
    follows it. ``parse_strings``: text (the command line's ``KEY=VALUE``) is read as the
    field's type (``"4"``, ``"true"``; YAML for lists and mappings). ``kind`` names the keys
    in the unknown-key error (``unknown option 'x'``).
    """
    return _build(cls, values, _At(where, "", parse_strings, kind), base)


def check_values(cls: type, values: Any, where: str, *, path: str = "",
                 only: tuple[str, ...] | list[str] | None = None) -> dict[str, Any]:
    """The values of ``values`` checked against ``cls``'s fields (``only`` those), as a
    dict of the keys given; errors name ``where: path.key``. Nothing is built."""
    return _check(cls, values, _At(where, path), only=only)


@dataclasses.dataclass(frozen=True)
class _At:
    """Where a value sits, for messages (``where: path``), and how to read it."""

    where: str
    path: str = ""
    parse: bool = False  # text is read as the expected type
    kind: str = "key"

    def key(self, key: Any) -> _At:
        return dataclasses.replace(self, path=f"{self.path}.{key}" if self.path else str(key))

    def item(self, index: int) -> _At:
        return dataclasses.replace(self, path=f"{self.path}[{index}]")

    def fail(self, text: Any) -> KdsearchError:
        return KdsearchError(f"{self.where}: {self.path}: {text}" if self.path
                             else f"{self.where}: {text}")


def _build(cls: type, values: Any, at: _At, base: Any = None) -> Any:
    checked = _check(cls, values, at, base=base)
    if base is None:
        missing = [f.name for f in dataclasses.fields(cls) if f.init and f.name not in checked
                   and f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING]
        if missing:
            raise at.fail(f"{missing[0]!r} is required")
    try:
        return dataclasses.replace(base, **checked) if base is not None else cls(**checked)
    except KdsearchError as err:  # what __post_init__ refuses (ranges, names)
        raise at.fail(err) from None


def _check(cls: type, values: Any, at: _At, only=None, base: Any = None) -> dict[str, Any]:
    if not isinstance(values, dict):
        raise at.fail(f"expected a mapping, got {values!r}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)
              if f.init and (only is None or f.name in only)}
    inline = next((f for f in fields.values() if f.metadata.get(GIVEN, (0, 0, False))[2]), None)
    beside = _names(*inline.metadata[GIVEN][:2]) if inline else []
    own = [name for name in fields if inline is None or name != inline.name]
    checked, rest = {}, {}
    for key, value in values.items():
        if key in own:
            if value is None and _section(fields[key], hints[key]):
                continue  # an empty section: its default
            nested = getattr(base, key) if base is not None else None
            checked[key] = _field(fields[key], hints[key], value, at.key(key), nested)
        elif key in beside:
            rest[key] = value
        else:
            raise at.fail(unknown_key(at.kind, key, sorted([*own, *beside])))
    if inline is not None:
        checked[inline.name] = _given(inline.metadata[GIVEN], rest, at)
    return checked


def unknown_key(kind: str, key: str, allowed: list[str]) -> str:
    """One line: the unknown key, every allowed one, and the closest if one is close."""
    close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown {kind} {key!r} (allowed: {', '.join(allowed)}){hint}"


def _names(cls: type, only) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.init and (only is None or f.name in only)]


def _section(field: dataclasses.Field, hint: Any) -> bool:
    """A mapping-valued field that does not take None (None there means "not given")."""
    return GIVEN in field.metadata or dataclasses.is_dataclass(hint) or \
        (get_origin(hint) or hint) is dict


def _field(field: dataclasses.Field, hint: Any, value: Any, at: _At, base: Any) -> Any:
    if GIVEN in field.metadata:
        return _given(field.metadata[GIVEN], value, at)
    return _value(value, hint, at, base)


def _given(spec: tuple, values: Any, at: _At) -> dict[str, Any]:
    cls, only, _ = spec
    checked = _check(cls, values, at, only=only)
    try:
        cls(**checked)  # the class's own checks (ranges)
    except KdsearchError as err:
        raise at.fail(err) from None
    return checked


def _value(value: Any, hint: Any, at: _At, base: Any = None) -> Any:
    origin = get_origin(hint) or hint
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        return _union(value, hint, at)
    if origin is Literal:
        if value in get_args(hint):
            return value
        raise at.fail(f"expected {_describe(hint)}, got {value!r}")
    if at.parse and isinstance(value, str) and hint is not str:
        value = _from_text(value.strip(), hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, at, base)
    if origin in (list, tuple):
        return _sequence(value, hint, at)
    if origin is dict:
        if not isinstance(value, dict):
            raise at.fail(f"expected a mapping, got {value!r}")
        kind = get_args(hint)[1] if get_args(hint) else Any
        return {key: _value(item, kind, at.key(key)) for key, item in value.items()}
    if _is(value, hint):
        return float(value) if hint is float else value
    raise at.fail(f"expected {_describe(hint)}, got {value!r}")


def _is(value: Any, kind: type) -> bool:
    """``isinstance``, except that a bool is no number and an int is a float."""
    if isinstance(value, bool) and kind is not bool:
        return False
    return isinstance(value, int | float) if kind is float else isinstance(value, kind)


def _from_text(text: str, hint: Any) -> Any:
    """``text`` read as ``hint`` (what the command line gives); ``text`` when unreadable."""
    if hint is bool:
        lower = text.lower()
        return True if lower in TRUE else False if lower in FALSE else text
    try:
        if hint in (int, float):
            return int(text, 10) if hint is int else float(text)
        loaded = yaml.safe_load(text)
    except (ValueError, yaml.YAMLError):
        return text
    return loaded if isinstance(loaded, list | dict) else text


def _sequence(value: Any, hint: Any, at: _At) -> list | tuple:
    item = (get_args(hint) or (Any,))[0]
    if isinstance(value, str) and item is str:
        value = [value]  # one name
    if not isinstance(value, list | tuple):
        raise at.fail(f"expected a list, got {value!r}")
    items = [_value(v, item, at.item(i)) for i, v in enumerate(value)]
    return tuple(items) if (get_origin(hint) or hint) is tuple else items


def _union(value: Any, hint: Any, at: _At) -> Any:
    options = [kind for kind in get_args(hint) if kind is not type(None)]
    if value is None and len(options) < len(get_args(hint)):
        return None
    errors = []
    for kind in options:
        try:
            return _value(value, kind, at)
        except KdsearchError as err:
            errors.append(err)
    for kind, err in zip(options, errors, strict=True):
        if _shaped(value, kind):  # a list of bad items: the item's error
            raise err
    raise at.fail(f"expected {_describe(hint)}, got {value!r}")


def _shaped(value: Any, hint: Any) -> bool:
    origin = get_origin(hint) or hint
    if dataclasses.is_dataclass(hint) or origin is dict:
        return isinstance(value, dict)
    return origin in (list, tuple) and isinstance(value, list | tuple)


def _describe(hint: Any) -> str:
    origin = get_origin(hint) or hint
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(kind) for kind in get_args(hint) if kind is not type(None))
    if origin is Literal:
        return "one of " + ", ".join(map(str, get_args(hint)))
    if hint is float:
        return "a number"
    if origin in (list, tuple):
        return "a list"
    if origin is dict or dataclasses.is_dataclass(hint):
        return "a mapping"
    return getattr(hint, "__name__", str(hint))
