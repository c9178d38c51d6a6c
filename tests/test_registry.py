"""Registries fill themselves: built-ins are imported on the first lookup."""

from __future__ import annotations

import importlib
import sys


def test_a_registry_imports_its_builtins_on_the_first_lookup(tmp_path, monkeypatch):
    """Adding a built-in is adding a module to the package a registry names."""
    (tmp_path / "plugs").mkdir()
    (tmp_path / "plugs" / "__init__.py").write_text("")
    (tmp_path / "registry_of_plugs.py").write_text(
        "from kdsearch.registry import Registry\nPLUGS = Registry('plug', builtins='plugs')\n")
    for name in ("one", "two"):
        (tmp_path / "plugs" / f"{name}.py").write_text(
            f"from registry_of_plugs import PLUGS\n\n@PLUGS.register()\ndef {name}():\n"
            "    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    plugs = importlib.import_module("registry_of_plugs").PLUGS
    assert "plugs.one" not in sys.modules
    assert plugs.names() == ["one", "two"] and "two" in plugs and len(plugs) == 2
