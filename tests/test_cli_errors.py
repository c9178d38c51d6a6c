"""Bad input through the real command line: one line, exit code 2, never a traceback.

Each case runs ``python -m kdsearch`` in a subprocess and checks the exit code, that the one
error line holds the expected words, and that no summary.json was left behind."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import torch

from kdsearch.cli import main
from kdsearch.models import build_model

DIGITS = ["--dataset", "digits"]
SEARCH = ["search", "--teacher", "digits_resnet14", *DIGITS, "--steps", "2", "--quiet"]
TRAIN = ["train", "--student", "digits_resnet8", "--teacher", "digits_resnet14", *DIGITS,
         "--epochs", "1", "--quiet"]
CIFAR = [*SEARCH[:3], "--dataset", "cifar100", "--budget", "0.5x", "--no-download"]

USER_MODELS = """\
import torch.nn as nn


class Net(nn.Module):
    def __init__(self, num_classes=10, in_channels=1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 8, 3, padding=1)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x):
        return self.fc(self.conv(x).relu().mean((2, 3)))


class Gate(nn.Module):
    def forward(self, x):
        if x.sum() > 0:
            return x
        return -x


class Untraceable(Net):
    def __init__(self, num_classes=10, in_channels=1):
        super().__init__(num_classes, in_channels)
        self.gate = Gate()

    def forward(self, x):
        return super().forward(self.gate(x))


def seven_classes():
    return Net(7)


def broken(num_classes):
    raise ValueError("no weights for " + str(num_classes))


def not_a_model():
    return 3
"""


class Evil:
    """A checkpoint that carries pickled code."""

    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("bad")
    (d / "garbage.pt").write_bytes(b"not a checkpoint")
    torch.save(build_model("digits_resnet8", 10, 1).state_dict(), d / "other_arch.pt")
    full = build_model("digits_resnet14", 10, 1).state_dict()
    torch.save(full, d / "good.pt")
    (d / "truncated.pt").write_bytes((d / "good.pt").read_bytes()[:2000])
    torch.save({"state_dict": Evil()}, d / "code.pt")
    (d / "bad.json").write_text("{not json")
    (d / "bad_spec.json").write_text('{"format": "kdsearch-student/1", "teacher": {}}')
    (d / "unknown_key.yaml").write_text("constraints:\n  bogus: 1\n")
    (d / "wrong_type.yaml").write_text("search:\n  steps: many\n")
    (d / "stages.yaml").write_text("- {method: kd, epochs: two}\n")
    (d / "afile").write_text("")
    (d / "cifar").mkdir()
    (d / "cifar" / "cifar-100-python.tar.gz").write_bytes(b"\x1f\x8b junk")
    (d / "empty").mkdir()
    (d / "nets.py").write_text(USER_MODELS)
    (d / "broken.yaml").write_text("a: [1,\n b: 2\n")
    (d / "stages_map.yaml").write_text("method: kd\n")
    (d / "run_unknown.yaml").write_text("teacher: {model: digits_resnet14}\nbogus: 1\n")
    (d / "run_type.yaml").write_text("teacher: {model: digits_resnet14, train: {epochs: many}}\n"
                                     "search: {budgets: [0.5x]}\ndistill: {method: kd}\n")
    (d / "tune_unknown.yaml").write_text("base: {dataset: digits}\nparams: {}\nfoo: 1\n")
    (d / "tune_type.yaml").write_text(
        "base: {dataset: digits, teacher: {model: digits_resnet14}, search: {budgets: [0.3x]},"
        " distill: {method: kd}}\nparams:\n  search.options.decay: {type: float, low: high}\n")
    (d / "cut_run").mkdir()
    (d / "cut_run" / "checkpoint.pt").write_bytes((d / "truncated.pt").read_bytes())
    (d / "foreign_search").mkdir()
    (d / "foreign_search" / "search_checkpoint.pt").write_bytes((d / "good.pt").read_bytes())
    return d


CASES = {
    "unknown model": (["flops", "resnet65"], "did you mean: resnet56"),
    "unknown torchvision model": (["flops", "torchvision:resnet19"], "unknown torchvision model"),
    "unknown dataset": ([*SEARCH, "--dataset", "cifar1000", "--budget", "0.5x"], "cifar100"),
    "unknown method": ([*TRAIN, "--method", "kdd"], "did you mean: kd"),
    "malformed input size": (["flops", "resnet20", "--input-size", "3,32"], "C,H,W"),
    "budget zero": ([*SEARCH, "--budget", "0"], "positive"),
    "budget negative": ([*SEARCH, "--budget=-5M"], "not understood"),
    "budget garbage": ([*SEARCH, "--budget", "lots"], "not understood"),
    "budget above teacher": ([*SEARCH, "--budget", "10G"], "not below the teacher"),
    "budget fraction above 1": ([*SEARCH, "--budget", "1.5x"], "not below the teacher"),
    "budget below smallest student": ([*SEARCH, "--budget", "100"], "smallest student"),
    "budget like unknown": ([*SEARCH, "--budget", "like:resnet999"], "unknown model"),
    "subset too large": ([*SEARCH, "--budget", "0.5x", "--subset", "99999"], "subset"),
    "truncated checkpoint": ([*SEARCH, "--budget", "0.5x", "--teacher-weights", "{d}/truncated.pt"],
                             "truncated.pt"),
    "garbage checkpoint": ([*SEARCH, "--budget", "0.5x", "--teacher-weights", "{d}/garbage.pt"],
                           "garbage.pt"),
    "checkpoint with code": ([*SEARCH, "--budget", "0.5x", "--teacher-weights", "{d}/code.pt"],
                             "code.pt"),
    "checkpoint of another architecture": (
        [*SEARCH, "--budget", "0.5x", "--teacher-weights", "{d}/other_arch.pt"], "shape"),
    "missing checkpoint": ([*SEARCH, "--budget", "0.5x", "--teacher-weights", "{d}/none.pt"],
                           "none.pt"),
    "spec not json": (["flops", "{d}/bad.json"], "not valid JSON"),
    "spec invalid": (["flops", "{d}/bad_spec.json"], "teacher"),
    "missing spec": (["flops", "{d}/absent.json"], "no such file"),
    "preset unknown key": ([*SEARCH, "--budget", "0.5x", "--preset", "{d}/unknown_key.yaml"],
                           "unknown key 'bogus'"),
    "preset wrong type": ([*SEARCH, "--budget", "0.5x", "--preset", "{d}/wrong_type.yaml"],
                          "expected int"),
    "missing preset": ([*SEARCH, "--budget", "0.5x", "--preset", "{d}/none.yaml"], "none.yaml"),
    "stages wrong type": ([*TRAIN, "--stages", "{d}/stages.yaml"], "epochs"),
    "output is a file": ([*SEARCH, "--budget", "0.5x", "--out", "{d}/afile"], "not a directory"),
    "output not creatable": ([*SEARCH, "--budget", "0.5x", "--out", "/proc/kdsearch/out"],
                             "cannot create"),
    "corrupt archive": ([*SEARCH[:3], "--dataset", "cifar100", "--data-dir", "{d}/cifar",
                         "--budget", "0.5x"], "corrupt"),
    "teacher unknown dataset": (["teacher", "--model", "resnet8", "--dataset", "imagenet"],
                                "unknown dataset"),
    # the user's own models (FILE.py:NAME, package.module:NAME)
    "untraceable teacher names the line": (
        [*SEARCH, "--teacher", "{d}/nets.py:Untraceable", "--budget", "0.5x"],
        "in module 'gate' at nets.py:16 `if x.sum() > 0:`"),
    "own model file missing": (["flops", "{d}/absent.py:Net"], "absent.py: no such file"),
    "own model module missing": (["flops", "no_such_package.nets:Net"], "cannot import module"),
    "own model name missing": (["flops", "{d}/nets.py:Nope"], "no callable named 'Nope'"),
    "own model not a module": (["flops", "{d}/nets.py:not_a_model"],
                               "returned int, not an nn.Module"),
    "own model factory raises": ([*TRAIN, "--student", "{d}/nets.py:broken"],
                                 "nets.py:broken(num_classes=10) raised ValueError: no weights"),
    "own model wrong head": ([*TRAIN, "--student", "{d}/nets.py:seven_classes"],
                             "outputs 7 classes, not 10"),
    # data
    "missing data directory": ([*CIFAR, "--data-dir", "{d}/none"], "no such directory"),
    "data directory without data": ([*CIFAR, "--data-dir", "{d}/empty"], "no CIFAR-100 here"),
    # configs
    "run config unknown key": (["run", "--config", "{d}/run_unknown.yaml"], "unknown key 'bogus'"),
    "run config wrong type": (["run", "--config", "{d}/run_type.yaml"],
                              "teacher.train.epochs: expected int"),
    "config not YAML": (["run", "--config", "{d}/broken.yaml"], "not valid YAML at line 3"),
    "missing config": (["run", "--config", "{d}/none.yaml"], "cannot read config"),
    "preset not YAML": ([*SEARCH, "--budget", "0.5x", "--preset", "{d}/broken.yaml"],
                        "preset is not valid YAML"),
    "tune config unknown key": (["tune", "--config", "{d}/tune_unknown.yaml", "--trials", "1"],
                                "unknown key 'foo'"),
    "tune config wrong type": (["tune", "--config", "{d}/tune_type.yaml", "--trials", "1"],
                               "decay.low: expected a number"),
    "stages not a list": ([*TRAIN, "--stages", "{d}/stages_map.yaml"], "non-empty list"),
    # methods and training settings
    "unknown method option": ([*TRAIN, "--option", "bogus=1"], "method 'kd': unknown option"),
    "method option wrong type": ([*TRAIN, "--option", "temperature=hot"],
                                 "temperature: expected a number"),
    "unknown device": ([*TRAIN, "--device", "tpu7"], "unknown device"),
    "student weights of another architecture": (
        [*TRAIN, "--student-weights", "{d}/good.pt"], "does not fit"),
    # runs to resume, other commands
    "resume from a truncated checkpoint": ([*TRAIN, "--resume", "--out", "{d}/cut_run"],
                                           "truncated or corrupted"),
    "resume from a foreign checkpoint": (
        [*SEARCH, "--budget", "0.5x", "--resume", "--out", "{d}/foreign_search"],
        "not a kdsearch search checkpoint"),
    "show without a run": (["show", "{d}/empty"], "no kdsearch run"),
    "compare unknown student": (["compare", "--teacher", "digits_resnet14", *DIGITS,
                                 "--against", "resnet99"], "did you mean"),
}


def run_cli(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "kdsearch", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def case_argv(case: str, files: Path, cwd: Path) -> list[str]:
    argv = [a.replace("{d}", str(files)) for a in CASES[case][0]]
    if "--out" not in argv and argv[0] in ("search", "train", "teacher", "compare", "tune"):
        argv += ["--out", str(cwd / "out")]
    return argv


@pytest.fixture(scope="module")
def outcomes(request, files, tmp_path_factory) -> dict[str, tuple[Path, Any]]:
    """Every selected case run at once (each in its own folder): the cases are independent
    and mostly wait for Python to import torch, so running them together halves the time."""
    selected = [item.callspec.params["case"] for item in request.session.items
                if item.originalname == "test_bad_input_is_one_clear_line"]
    folders = {case: tmp_path_factory.mktemp("case") for case in selected}
    with ThreadPoolExecutor(max_workers=2 * (os.cpu_count() or 1)) as pool:
        futures = {case: pool.submit(run_cli, case_argv(case, files, cwd), cwd)
                   for case, cwd in folders.items()}
    return {case: (folders[case], future.result()) for case, future in futures.items()}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_clear_line(case, outcomes):
    cwd, result = outcomes[case]
    expected = CASES[case][1]
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert len(errors) == 1 and expected in errors[0], result.stderr
    assert not (cwd / "out" / "summary.json").exists()
    assert "pwned" not in result.stdout


def failing_flops(monkeypatch, error: BaseException) -> None:
    """Make ``kdsearch flops`` raise ``error`` once it runs."""
    from kdsearch.cli import build_parser
    from kdsearch.cli.registry import COMMANDS, Command

    build_parser()  # registers the commands
    original = COMMANDS.get("flops")

    def run(args):
        raise error

    monkeypatch.setitem(COMMANDS._items, "flops", Command(original.help, original.configure, run))


@pytest.mark.parametrize("error, expected", [
    (OSError(28, "No space left on device", "/runs/a/summary.json"),
     "kdsearch: error: /runs/a/summary.json: No space left on device"),
    (PermissionError(13, "Permission denied", "/runs/b"),
     "kdsearch: error: /runs/b: Permission denied"),
    (torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore"),
     "kdsearch: error: out of memory (CUDA out of memory. Tried to allocate 2.00 GiB); lower "
     "--batch-size"),
])
def test_system_errors_are_one_line_too(monkeypatch, capsys, error, expected):
    from kdsearch.cli import main

    failing_flops(monkeypatch, error)
    assert main(["flops", "resnet8"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(expected) and "\n" not in err


def test_debug_shows_the_traceback_and_bugs_are_not_hidden(monkeypatch):
    from kdsearch.cli import main

    failing_flops(monkeypatch, OSError(5, "Input/output error", "/runs/x"))
    monkeypatch.setenv("KDSEARCH_DEBUG", "1")
    with pytest.raises(OSError, match="Input/output error"):
        main(["flops", "resnet8"])
    monkeypatch.delenv("KDSEARCH_DEBUG")
    failing_flops(monkeypatch, RuntimeError("shape mismatch in a bug"))
    with pytest.raises(RuntimeError, match="a bug"):
        main(["flops", "resnet8"])


def test_only_training_commands_run_under_torchrun(monkeypatch, capsys):
    from kdsearch.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["flops", "resnet8"]) == 2
    assert capsys.readouterr().err.strip() == (
        "kdsearch: error: kdsearch flops runs as one process; under torchrun only train and "
        "teacher run (with DistributedDataParallel)")


def test_warnings_are_one_line_on_the_command_line(tmp_path, capsys):
    """A Python warning (recurrent finds nothing to tie in digits_resnet8) reads as one line,
    without the source line Python's default format adds."""
    code = main(["train", "--student", "digits_resnet8", "--teacher", "digits_resnet14",
                 "--method", "recurrent", "--dataset",
                 "digits", "--subset", "64", "--epochs", "1", "--quiet", "--out",
                 str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 0, err
    lines = [line for line in err.splitlines() if "recurrent" in line]
    assert lines == [lines[0]] and lines[0].startswith("kdsearch: warning: recurrent: ")


def test_a_misspelt_preset_is_an_error_not_the_generic_preset(capsys):
    assert main(["graph", "resnet20", "--preset", "resnet_cifar_depht"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("kdsearch: error: unknown preset 'resnet_cifar_depht'; did you mean: "
                   "resnet_cifar_depth, resnet_cifar?")
    assert main(["graph", "resnet20", "--preset", "generic"]) == 0  # a preset by name
