"""Atomic file writes: a reader never sees a half-written result file.

Every result file kdsearch writes goes through these helpers: the content is written to a
temporary file in the same directory, flushed to disk, then renamed over the target.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

from kdsearch.errors import KdsearchError, first_line


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


UMASK = _read_umask()  # read once, at import (os.umask can only be read by setting it)


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(file)`` on a temporary file, then rename it to ``path``; the file gets
    the permissions the umask gives a new file (as ``open(path, "w")`` would)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.chmod(f.fileno(), 0o666 & ~UMASK)  # mkstemp's 0600 would hide it from others
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | Path, obj: Any) -> Path:
    data = (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode()
    return atomic_write(path, lambda f: f.write(data))


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode()))


def save_torch(path: str | Path, obj: Any) -> Path:
    return atomic_write(path, lambda f: torch.save(obj, f))


def copy_file(source: str | Path, path: str | Path) -> Path:
    """Copy ``source`` to ``path`` atomically."""
    data = Path(source).read_bytes()
    return atomic_write(path, lambda f: f.write(data))


def read_json(path: str | Path) -> Any:
    """Read a JSON file; a missing or malformed file is a user error naming the file."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise KdsearchError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise KdsearchError(f"{path}: not valid JSON ({err})") from None


def read_yaml(path: str | Path, what: str) -> Any:
    """Read a YAML file with ``safe_load``; an unreadable or malformed ``what`` names the file."""
    import yaml

    path = Path(path)
    try:
        return yaml.safe_load(path.read_text())
    except OSError as err:
        raise KdsearchError(f"{path}: cannot read {what} ({err.strerror})") from None
    except UnicodeDecodeError:
        raise KdsearchError(f"{path}: {what} is not UTF-8 text") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(err, "problem", None) or first_line(err)
        raise KdsearchError(f"{path}: {what} is not valid YAML{where} ({problem})") from None


def append_jsonl(path: str | Path, record: dict) -> None:
    """Append one JSON line (a log: a torn last line is tolerated by :func:`read_jsonl`)."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def read_jsonl(path: str | Path) -> list[dict]:
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line torn by a kill: everything before it is intact
    return records


def ensure_out_dir(path: str | Path) -> Path:
    """Create an output directory, or fail with one line if it cannot be one."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise KdsearchError(f"{path}: output path exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise KdsearchError(f"{path}: cannot create output directory ({err.strerror})") from None
    if not os.access(path, os.W_OK):
        raise KdsearchError(f"{path}: output directory is not writable")
    return path
