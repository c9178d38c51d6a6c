"""Bad input through the real command line: one line, exit code 2, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kdsearch.models import build_model

DIGITS = ["--dataset", "digits"]
SEARCH = ["search", "--teacher", "digits_resnet14", *DIGITS, "--steps", "2", "--quiet"]
TRAIN = ["train", "--student", "digits_resnet8", "--teacher", "digits_resnet14", *DIGITS,
         "--epochs", "1", "--quiet"]


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
}


def run_cli(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "kdsearch", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_clear_line(case, files, tmp_path):
    argv, expected = CASES[case]
    argv = [a.replace("{d}", str(files)) for a in argv]
    if "--out" not in argv and argv[0] in ("search", "train", "teacher"):
        argv += ["--out", str(tmp_path / "out")]
    result = run_cli(argv, tmp_path)
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert len(errors) == 1 and expected in errors[0], result.stderr
    assert not (tmp_path / "out" / "summary.json").exists()
    assert "pwned" not in result.stdout
