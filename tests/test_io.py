"""Result files are written atomically: a reader sees the old file or the new one, whole."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import kdsearch
from kdsearch.io import append_jsonl, read_jsonl, write_json, write_text

PACKAGE = Path(kdsearch.__file__).parent
# direct writes that would leave a half-written file behind when the process dies mid-way
DIRECT_WRITE = re.compile(r"\.write_text\(|\.write_bytes\(|torch\.save\(|\.savefig\(|shutil\.copy|"
                          r"open\([^)]*[\"'][wx]b?[\"']")


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = write_json(tmp_path / "summary.json", {"acc": 1.0})

    class Unserialisable:
        pass

    with pytest.raises(TypeError):
        write_json(path, {"acc": Unserialisable()})
    assert path.read_text() == '{\n  "acc": 1.0\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_a_torn_last_log_line_is_dropped(tmp_path):
    log = tmp_path / "log.jsonl"
    append_jsonl(log, {"step": 1})
    append_jsonl(log, {"step": 2})
    with log.open("a") as f:
        f.write('{"step": 3, "lo')  # the process died here
    assert read_jsonl(log) == [{"step": 1}, {"step": 2}]


def test_every_file_kdsearch_writes_goes_through_kdsearch_io():
    offenders = []
    for source in sorted(PACKAGE.rglob("*.py")):
        if source.name == "io.py" and source.parent == PACKAGE:
            continue
        for number, line in enumerate(source.read_text().splitlines(), 1):
            if DIRECT_WRITE.search(line) and "atomic_write(" not in line:
                offenders.append(f"{source.relative_to(PACKAGE)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_write_text_replaces_whole(tmp_path):
    path = write_text(tmp_path / "table.md", "old\n")
    write_text(path, "new\n")
    assert path.read_text() == "new\n"


def test_every_package_folder_is_a_regular_package():
    """A folder without __init__.py is a namespace package, which a wheel leaves out."""
    folders = {source.parent for source in PACKAGE.rglob("*.py")}
    assert sorted(str(f.relative_to(PACKAGE)) for f in folders
                  if not (f / "__init__.py").exists()) == []


def test_the_public_names_resolve():
    assert Path(kdsearch.__file__).parent == PACKAGE
    for name in kdsearch.__all__:
        assert getattr(kdsearch, name) is not None, name


@pytest.mark.slow
def test_a_wheel_holds_every_module_and_the_presets(tmp_path):
    """What ``pip install kdsearch`` gets (not an editable checkout): all code, all presets."""
    import importlib.util
    import shutil
    import subprocess
    import sys
    import zipfile

    root, source = PACKAGE.parent, tmp_path / "source"  # built from a copy: no build/ left
    for name in ("kdsearch", "search_spaces"):
        shutil.copytree(root / name, source / name,
                        ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, source / name)
    offline = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", *offline,
                            "-w", str(tmp_path), str(source)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    (wheel,) = tmp_path.glob("kdsearch-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {str(p.relative_to(root)) for p in PACKAGE.rglob("*.py")}
    assert modules <= names, sorted(modules - names)
    presets = {p.name for p in (root / "search_spaces").glob("*.yaml")}
    shipped = {Path(n).name for n in names if "/share/kdsearch/search_spaces/" in n}
    assert presets and shipped == presets
