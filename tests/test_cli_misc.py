"""Small command-line behaviours: --version, a closed pipe, negative values, schedule text."""

from __future__ import annotations

import subprocess
import sys

import pytest

from kdsearch import __version__
from kdsearch.cli import main
from kdsearch.distill.config import TrainConfig


def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"kdsearch {__version__}"


@pytest.mark.slow
def test_a_closed_pipe_ends_quietly():
    """`kdsearch graph resnet20 --json | head -c 300`: no error, exit 0."""
    process = subprocess.Popen([sys.executable, "-m", "kdsearch", "graph", "resnet20", "--json"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert len(process.stdout.read(300)) == 300
    process.stdout.close()
    err = process.stderr.read().decode()
    assert process.wait() == 0 and err == ""


def test_a_negative_budget_is_named(tmp_path, capsys):
    assert main(["search", "--teacher", "digits_resnet8", "--dataset", "digits", "--budget",
                 "-5M", "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "expected one argument" not in err and "-5M" in err


@pytest.mark.parametrize("epochs, text", [
    (1, "lr 0.05, constant over 1 epoch"),
    (4, "lr 0.05, x0.1 after epochs 2, 3 of 4"),
    (3, "lr 0.05, x0.1 after epochs 2 (x2) of 3"),
    (240, "lr 0.05, x0.1 after epochs 150, 180, 210 of 240"),
])
def test_schedule_text_names_each_decay_once(epochs, text):
    assert TrainConfig(epochs=epochs).schedule_text().startswith(text)


def test_demo_run_and_compare_accept_resume():
    """After an interrupt they say "rerun with --resume": the flag must be accepted."""
    from kdsearch.cli import build_parser

    parser = build_parser()
    for argv in (["demo", "--resume"], ["run", "--config", "x.yaml", "--resume"],
                 ["compare", "--teacher", "t", "--dataset", "digits", "--against", "s",
                  "--out", "o", "--resume"]):
        assert parser.parse_args(argv).resume


def test_dir_kdsearch_lists_the_public_names():
    import kdsearch

    names = dir(kdsearch)
    assert "evaluate" in names and "search_student" in names
    assert not {"Any", "annotations", "importlib"} & set(names)


def test_eval_command_matches_an_independent_float32_loop(tmp_path, capsys):
    import json

    import torch

    from kdsearch.data import load_dataset
    from kdsearch.models import build_model

    torch.manual_seed(0)
    model = build_model("digits_resnet8", 10, 1)
    torch.save(model.state_dict(), tmp_path / "w.pt")
    assert main(["eval", "digits_resnet8", "--weights", str(tmp_path / "w.pt"), "--dataset",
                 "digits", "--no-amp", "--teacher", "digits_resnet8", "--teacher-weights",
                 str(tmp_path / "w.pt"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    data = load_dataset("digits")
    mean = torch.tensor(data.mean).view(1, -1, 1, 1)
    std = torch.tensor(data.std).view(1, -1, 1, 1)
    with torch.no_grad():
        logits = model.eval()((data.test_images.float() / 255 - mean) / std)
    expected = 100.0 * float((logits.argmax(1) == data.test_labels).float().mean())
    assert report["accuracy"] == pytest.approx(expected, abs=1e-6)
    assert report["teacher_accuracy"] == report["accuracy"]
    assert report["kl_to_teacher"] == pytest.approx(0.0, abs=1e-6)
    assert report["macs"] > 0 and report["images"] == len(data.test_labels)


def test_a_student_json_is_taken_wherever_a_model_is(tmp_path, capsys, monkeypatch):
    """graph, flops, teacher --model and search --teacher take a student.json; a student
    searched inside a searched student is rebuilt from its spec alone, from any folder."""
    import json

    first, second = tmp_path / "first", tmp_path / "second"
    digits = ["--dataset", "digits", "--subset", "128", "--threads", "1", "--quiet"]
    assert main(["search", "--teacher", "digits_resnet14", *digits, "--budget", "0.5x",
                 "--steps", "2", "--out", str(first)]) == 0
    spec = str(first / "student.json")
    assert main(["graph", spec]) == 0
    assert main(["teacher", "--model", spec, *digits, "--epochs", "1",
                 "--out", str(tmp_path / "teacher")]) == 0
    assert main(["search", "--teacher", spec, "--teacher-weights",
                 str(tmp_path / "teacher" / "teacher.pt"), *digits, "--budget", "0.5x",
                 "--steps", "2", "--out", str(second)]) == 0
    nested = json.loads((second / "student.json").read_text())
    assert nested["teacher"]["model"] == str(first.resolve() / "student.json")
    monkeypatch.chdir(tmp_path / "teacher")  # the spec names its teacher by absolute path
    capsys.readouterr()
    assert main(["flops", str(second / "student.json"), "--json"]) == 0
    counted = json.loads(capsys.readouterr().out)
    summary = json.loads((second / "summary.json").read_text())
    assert counted["macs"] == summary["student"]["macs"]


@pytest.mark.parametrize("command", [
    ["train", "--student", "digits_resnet8", "--teacher", "digits_resnet14"],
    ["teacher", "--model", "digits_resnet8"],
])
def test_a_finished_run_is_refused_the_same_way_with_or_without_resume(tmp_path, capsys,
                                                                         command):
    """Was "already holds a run ... pass --resume", then with --resume "nothing to resume";
    a folder with only a summary.json was even trained over. Now one line, before the data
    loads, saying what to do."""
    (tmp_path / "summary.json").write_text("{}")
    argv = [*command, "--dataset", "digits", "--epochs", "1", "--quiet", "--out", str(tmp_path)]
    errors = []
    for extra in ([], ["--resume"]):
        assert main([*argv, *extra]) == 2
        errors.append(capsys.readouterr().err.strip())
    assert errors[0] == errors[1] == (
        f"kdsearch: error: {tmp_path} holds a finished run (summary.json): nothing to train or "
        "resume; choose another --out, or delete the folder to train again")
    assert (tmp_path / "summary.json").read_text() == "{}"
