"""The one validator: every annotation it reads, nested sections, given values, messages."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import pytest

from kdsearch.errors import KdsearchError
from kdsearch.settings import check_values, from_mapping, given


@dataclass
class Leaf:
    flag: bool = False
    count: int = 1
    rate: float = 0.5
    name: str = "a"
    mode: Literal["fresh", "search"] = "fresh"
    limit: int | None = None
    names: tuple[str, ...] = ()
    fractions: tuple[float, ...] = (0.5,)
    items: list[int] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.count < 1:
            raise KdsearchError(f"count must be at least 1, not {self.count}")


@dataclass
class Section:
    leaf: Leaf = field(default_factory=Leaf)
    label: str | None = None
    # Leaf values beside the section's own keys; only those given
    settings: dict[str, Any] = field(default_factory=dict,
                                     metadata=given(Leaf, only=("count", "rate"), inline=True))


@dataclass
class Top:
    section: Section
    overrides: dict[str, Any] = field(default_factory=dict, metadata=given(Leaf))
    parts: list[Leaf] | str | None = None


def error(cls, values, **kw) -> str:
    with pytest.raises(KdsearchError) as err:
        from_mapping(cls, values, "where", **kw)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_each_type_is_checked_and_converted():
    leaf = from_mapping(Leaf, {"flag": True, "count": 3, "rate": 2, "name": "b", "mode": "search",
                               "limit": 4, "names": ["x", "y"], "fractions": [1, 0.25],
                               "items": (1, 2), "extra": {"k": [1]}}, "where")
    assert leaf == Leaf(True, 3, 2.0, "b", "search", 4, ("x", "y"), (1.0, 0.25), [1, 2],
                        {"k": [1]})
    assert isinstance(leaf.rate, float) and isinstance(leaf.fractions[0], float)
    assert from_mapping(Leaf, {"names": "x"}, "where").names == ("x",)  # one name


@pytest.mark.parametrize(("values", "message"), [
    ({"flag": "yes"}, "where: flag: expected bool, got 'yes'"),
    ({"count": True}, "where: count: expected int, got True"),
    ({"count": 1.5}, "where: count: expected int, got 1.5"),
    ({"rate": "fast"}, "where: rate: expected a number, got 'fast'"),
    ({"rate": False}, "where: rate: expected a number, got False"),
    ({"name": 3}, "where: name: expected str, got 3"),
    ({"mode": "teacher"}, "where: mode: expected one of fresh, search, got 'teacher'"),
    ({"limit": "x"}, "where: limit: expected int, got 'x'"),
    ({"names": [1]}, "where: names[0]: expected str, got 1"),
    ({"names": 3}, "where: names: expected a list, got 3"),
    ({"items": ["a"]}, "where: items[0]: expected int, got 'a'"),
    ({"extra": [1]}, "where: extra: expected a mapping, got [1]"),
    ({"count": 0}, "where: count must be at least 1, not 0"),  # the class's own check
])
def test_wrong_types_are_one_line_naming_the_key(values, message):
    assert error(Leaf, values) == message


def test_none_is_a_value_only_where_the_type_takes_it():
    assert from_mapping(Leaf, {"limit": None}, "where").limit is None
    assert error(Leaf, {"count": None}) == "where: count: expected int, got None"
    # an empty section is its default, or missing when required
    assert from_mapping(Section, {"leaf": None}, "where").leaf == Leaf()
    assert error(Top, {"section": None}) == "where: 'section' is required"


def test_unknown_keys_list_the_allowed_ones():
    assert error(Section, {"lable": "x"}) == (
        "where: unknown key 'lable' (allowed: count, label, leaf, rate); did you mean 'label'?")
    assert error(Leaf, {"bogus": 1}, kind="option").startswith(
        "where: unknown option 'bogus' (allowed: count, extra, flag, fractions, items,")
    assert error(Leaf, [1]) == "where: expected a mapping, got [1]"


def test_nested_sections_extend_the_key_path():
    top = from_mapping(Top, {"section": {"leaf": {"count": 2}, "label": "x"}}, "config")
    assert top.section == Section(Leaf(count=2), "x")
    assert error(Top, {"section": {"leaf": {"count": "x"}}}) == (
        "where: section.leaf.count: expected int, got 'x'")
    assert error(Top, {"section": {"leaf": {"cnt": 1}}}).startswith(
        "where: section.leaf: unknown key 'cnt'")
    assert error(Top, {"section": {"leaf": {"count": 0}}}) == (
        "where: section.leaf: count must be at least 1, not 0")
    assert error(Top, {"section": {}, "parts": [{}, {"rate": "x"}]}) == (
        "where: parts[1].rate: expected a number, got 'x'")  # the item's error, not the union's
    assert error(Top, {"section": {}, "parts": 3}) == (
        "where: parts: expected a list or str, got 3")


def test_given_values_keep_only_the_keys_set():
    top = from_mapping(Top, {"section": {"count": 2, "label": "x"}, "overrides": {"rate": 1}},
                       "where")
    assert top.section.settings == {"count": 2} and top.overrides == {"rate": 1.0}
    assert error(Top, {"section": {}, "overrides": {"count": "x"}}) == (
        "where: overrides.count: expected int, got 'x'")
    assert error(Top, {"section": {"count": 0}}) == (
        "where: section: count must be at least 1, not 0")  # built once to run its checks
    assert error(Top, {"section": {"name": "b"}}).startswith(
        "where: section: unknown key 'name'")  # only count and rate beside


def test_base_values_are_kept():
    base = Leaf(count=5, name="b")
    assert from_mapping(Leaf, {"rate": 1}, "where", base=base) == Leaf(count=5, rate=1.0,
                                                                       name="b")


def test_strings_are_parsed_when_asked():
    text = {"flag": "true", "count": "4", "rate": "0.1", "name": "4", "limit": "3",
            "fractions": "[0.5, 1]", "items": "[1, 2]"}
    leaf = from_mapping(Leaf, text, "where", parse_strings=True)
    assert (leaf.flag, leaf.count, leaf.rate, leaf.name, leaf.limit) == (True, 4, 0.1, "4", 3)
    assert leaf.fractions == (0.5, 1.0) and leaf.items == [1, 2]
    assert from_mapping(Leaf, {"flag": "No"}, "where", parse_strings=True).flag is False
    assert error(Leaf, {"count": "4.0"}, parse_strings=True) == (
        "where: count: expected int, got '4.0'")
    assert error(Leaf, {"rate": "hot"}, parse_strings=True) == (
        "where: rate: expected a number, got 'hot'")
    assert error(Leaf, {"count": "4"}) == "where: count: expected int, got '4'"  # not asked


def test_check_values_returns_the_given_keys_only():
    assert check_values(Leaf, {"count": 2}, "config", path="leaf") == {"count": 2}
    with pytest.raises(KdsearchError, match=r"^config: leaf.rate: expected a number"):
        check_values(Leaf, {"rate": "x"}, "config", path="leaf")
    with pytest.raises(KdsearchError, match="unknown key 'name' \\(allowed: count\\)"):
        check_values(Leaf, {"name": "x"}, "config", only=["count"])
