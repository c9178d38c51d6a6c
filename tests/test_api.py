"""The Python API as the README shows it: its example runs as written."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

import kdsearch

README = Path(kdsearch.__file__).resolve().parents[1] / "README.md"


def readme_python_block(section: str) -> str:
    """The first ```python block under the README heading ``## {section}``."""
    text = README.read_text()
    start = text.index(f"\n## {section}\n")
    block = re.search(r"^```python\n(.*?)^```$", text[start:], re.S | re.M)
    assert block, f"no python block under '## {section}'"
    return block.group(1)


def test_no_public_name_is_hidden_by_a_submodule_of_that_name():
    """Importing a submodule sets the package attribute of its name: a public function of
    the same name (``kdsearch.evaluate``, which once lived in ``kdsearch/evaluate.py``) would
    become the module once ``search_student`` ran."""
    importlib.import_module("kdsearch.student.run")
    for name in kdsearch.__all__:
        assert not isinstance(getattr(kdsearch, name), type(kdsearch)), name
    from kdsearch.evaluation import evaluate

    assert kdsearch.evaluate is evaluate


@pytest.mark.slow
def test_the_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # it writes runs/search
    namespace: dict = {}
    exec(compile(readme_python_block("Python API"), str(README), "exec"), namespace)
    assert "SearchResult(" in capsys.readouterr().out
    assert (tmp_path / "runs" / "search" / "summary.json").is_file()
    assert sum(p.numel() for p in namespace["found"].parameters()) > 0


def test_one_call_gives_the_api_the_cli_thread_policy(monkeypatch):
    """``kdsearch.set_threads()``, the README example's first call, is the CLI's own helper."""
    import torch

    from kdsearch.numerics import set_threads

    assert kdsearch.set_threads is set_threads
    assert "kdsearch.set_threads()" in readme_python_block("Python API")
    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    try:
        assert kdsearch.set_threads() == 3 and torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
