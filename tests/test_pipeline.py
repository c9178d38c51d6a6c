"""``kdsearch run``: the config checks, a tiny run end to end, and a re-run that skips it all."""

from __future__ import annotations

import copy
import json

import pytest
import yaml

import kdsearch.cli.run  # noqa: F401  (registers the command)
from kdsearch.cli import main
from kdsearch.errors import KdsearchError
from kdsearch.pipeline import check_config, parse_config, run_pipeline, train_teacher

TINY = {
    "dataset": "digits",
    "teacher": {"model": "digits_resnet14", "train": {"epochs": 1}},
    "search": {"budgets": ["0.5x"], "steps": 3},
    "distill": {"method": "kd", "epochs": 1, "options": {"temperature": 2}},
    "compare": {"against": ["digits_resnet8"], "seeds": 1},
    "show": True,
    "device": "cpu",
}


def changed(path: str, value, config: dict | None = None) -> dict:
    config = copy.deepcopy(config or TINY)
    *parents, leaf = path.split(".")
    node = config
    for key in parents:
        node = node[key]
    node[leaf] = value
    return config


# -- the config -------------------------------------------------------------------------------
def test_defaults_are_filled_in():
    config = check_config(TINY)
    assert config["dataset"] == {"name": "digits", "data_dir": None, "subset": None}
    assert config["search"]["preset"] == "digits"  # the teacher's family
    assert config["distill"]["stages"] == [{"method": "kd", "options": {"temperature": 2}}]
    assert config["distill"]["settings"] == {"epochs": 1} and config["distill"]["init"] == "fresh"
    # the comparison trains like the distillation unless told otherwise
    assert config["compare"] == {"first_seed": 0, "preset": "digits", "search_steps": 3,
                                 "method": "kd", "epochs": 1, "against": ["digits_resnet8"],
                                 "seeds": 1}
    json.dumps(config)


def test_the_checked_config_is_typed_sections():
    config = parse_config(TINY)
    assert config.teacher.model == "digits_resnet14" and config.teacher.train == {"epochs": 1}
    assert config.search.settings == {"steps": 3} and config.search.budgets == ["0.5x"]
    assert [stage.method for stage in config.distill.stages] == ["kd"]
    assert config.distill.stages[0].options == {"temperature": 2}
    assert config.to_dict() == check_config(TINY)  # what config.json holds


@pytest.mark.parametrize(("path", "value", "message"), [
    ("epochs", 3, "config: unknown key 'epochs'"),
    ("search.stepz", 3, "config: search: unknown key 'stepz'"),
    ("search.steps", "many", "config: search.steps: expected int, got 'many'"),
    ("search.budgets", ["half"], "config: search.budgets[0]: budget 'half' is not understood"),
    ("search.budgets", ["like:resnet9000"], "search.budgets[0]: unknown model 'resnet9000'"),
    ("search.constraints", {"min_channel": 2}, "search.constraints: unknown key 'min_channel'"),
    ("teacher.model", "resnet9000", "config: teacher.model: unknown model"),
    ("teacher.train", {"epochs": 0}, "teacher.train: epochs must be at least 1"),
    ("teacher.weights", "missing.pt", "missing.pt: no such file"),
    ("distill.method", "kdd", "config: distill: unknown distillation method 'kdd'"),
    ("distill.options", {"temp": 4}, "distill: method 'kd': unknown option 'temp'"),
    ("distill.stages", [{"method": "kd"}], "'stages' sets the methods and options"),
    ("distill.init", "teacher", "distill.init: expected one of fresh, search"),
    ("compare.seed", 2, "config: compare: unknown key 'seed'"),
    ("compare.seeds", "two", "compare.seeds: expected int, got 'two'"),
    ("show", "yes", "config: show: expected bool, got 'yes'"),
    ("dataset", {"name": "digits", "subsett": 10}, "dataset: unknown key 'subsett'"),
])
def test_bad_configs_name_the_key(path, value, message):
    with pytest.raises(KdsearchError) as err:
        check_config(changed(path, value))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_stages_inline_or_from_a_file_beside_the_config(tmp_path):
    stages = [{"method": "kd", "epochs": 2}, {"method": "reviewkd", "lr": 0.01}]
    (tmp_path / "stages.yaml").write_text(yaml.safe_dump(stages))
    distill = {"stages": "stages.yaml", "epochs": 1, "init": "search"}
    from_file = check_config(changed("distill", distill), base_dir=tmp_path)["distill"]
    inline = check_config(changed("distill", {**distill, "stages": stages}))["distill"]
    assert from_file == inline
    assert [s["method"] for s in inline["stages"]] == ["kd", "reviewkd"]
    assert inline["stages"][1] == {"method": "reviewkd", "options": {}, "lr": 0.01}
    with pytest.raises(KdsearchError, match=r"stages\[1\]: unknown key 'epoch'"):
        check_config(changed("distill", {"stages": [{"method": "kd"},
                                                    {"method": "kd", "epoch": 2}]}))


def test_cli_reports_a_bad_config_in_one_line(tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(changed("search.stepz", 3)))
    assert main(["run", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"kdsearch: error: {path}: search: unknown key 'stepz' (allowed: ")
    assert err.endswith("; did you mean 'steps'?") and "\n" not in err
    import dataclasses

    from kdsearch.search.config import SearchConfig

    listed = err.split("(allowed: ")[1].split(")")[0].split(", ")
    assert set(listed) == {f.name for f in dataclasses.fields(SearchConfig)} | {
        "budgets", "preset", "constraints"}


# -- a run ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_pipeline_runs_end_to_end_and_a_rerun_skips_everything(tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({**TINY, "out": str(tmp_path / "run")}))
    assert main(["run", "--config", str(path), "--quiet"]) == 0
    table = capsys.readouterr().out
    assert "| teacher |" in table and "| searched @ 0.5x |" in table
    assert "| digits_resnet8 [compare] |" in table
    run = tmp_path / "run"
    results = json.loads((run / "results.json").read_text())
    assert set(results["steps"].values()) == {"ran"}
    assert list(results["steps"]) == ["teacher", "search 0.5x", "distill 0.5x", "compare", "show"]
    student = results["students"][0]
    assert student["macs"] <= 0.5 * student["teacher_macs"]
    for name in ("teacher/teacher.pt", "search/0.5x/student.json", "distill/0.5x/student.pt",
                 "distill/0.5x/stage1_kd/metrics.jsonl", "compare/comparison.csv",
                 "compare/comparison.md", "results.md", "config.json"):
        assert (run / name).is_file(), name
    assert results["figures"] and all((run / f).is_file() for f in results["figures"])
    assert {row["kind"] for row in results["comparison"]} == {"hand-designed", "searched"}

    again = run_pipeline(str(path), quiet=True)
    assert set(again["steps"].values()) == {"skipped"}
    assert again["students"] == results["students"]

    # a finished step made with other settings is not silently reused
    with pytest.raises(KdsearchError, match=r"distill/0.5x holds a run made with other "
                                            r"settings \(distill.settings.epochs: 1 -> 2\)"):
        run_pipeline(changed("distill.epochs", 2), run, quiet=True)

    # given weights, the teacher is loaded and evaluated instead of trained
    loaded = changed("teacher.weights", str(run / "teacher" / "teacher.pt"))
    train_teacher(loaded, tmp_path / "loaded", quiet=True)
    evaluation = json.loads((tmp_path / "loaded/teacher/evaluation.json").read_text())
    assert evaluation["last_test_acc"] == results["teacher"]["last_acc"]


@pytest.mark.slow
def test_an_interrupted_run_exits_130_and_the_same_command_continues(tmp_path, capsys,
                                                                      monkeypatch):
    import os
    import signal

    from kdsearch.distill import get_method

    kd = get_method("kd")
    original, sent = kd.forward_train, []

    def sigterm_once_in_epoch_2(self, images, labels, epoch):
        if epoch == 2 and not sent:
            sent.append(epoch)
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, images, labels, epoch)

    monkeypatch.setattr(kd, "forward_train", sigterm_once_in_epoch_2)
    config = {**TINY, "distill": {**TINY["distill"], "epochs": 3}, "compare": None,
              "show": False, "out": str(tmp_path / "run")}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in config.items() if v is not None}))
    assert main(["run", "--config", str(path), "--quiet"]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(
        "kdsearch: interrupted: SIGTERM during epoch 2")
    distill = tmp_path / "run" / "distill" / "0.5x" / "stage1_kd"
    assert (distill / "checkpoint.pt").exists() and not (distill / "summary.json").exists()
    assert main(["run", "--config", str(path), "--quiet"]) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["steps"] == {"teacher": "skipped", "search 0.5x": "skipped",
                                "distill 0.5x": "ran"}
    epochs = [json.loads(line)["epoch"] for line in (distill / "metrics.jsonl").open()]
    assert epochs == [1, 2, 3]


def test_the_results_table_gives_the_teacher_the_accuracy_of_the_weights_used():
    from kdsearch.pipeline import results_table

    table = results_table({"teacher": {"model": "teacher", "best_acc": None, "last_acc": 97.5},
                           "students": [], "comparison": None})
    assert "| teacher | - | - | - | 97.50 |" in table
    assert "The teacher has only the accuracy of the weights every step uses" in table


def test_the_headline_puts_each_searched_student_against_the_hand_designed_one(tmp_path):
    from kdsearch.pipeline.report import headline, read_comparison

    (tmp_path / "c.csv").write_text(
        "kind,student,budget,macs,seeds,best_acc_mean,best_diff,best_p\n"
        "hand-designed,r8,like:r8,431328,2,98.5,,\n"
        "searched,t searched @ like:r8,like:r8,430322,2,99.25,0.75,0.0312\n"
        "random,t random @ like:r8,like:r8,430000,2,97.0,-1.5,0.2\n")
    line = headline({"comparison": read_comparison(tmp_path / "c.csv")})
    assert line == ("searched at like:r8 (0.430M MACs) vs r8 (0.431M): best test accuracy "
                    "99.25% vs 98.50%, difference +0.75 points (Welch p 0.0312; 2 seeds)")
    assert headline({"comparison": None}) == ""
