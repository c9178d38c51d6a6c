"""``kdsearch tune``: the space file, the study (resume, stale trials), and life without optuna."""

from __future__ import annotations

import importlib
import json
import sqlite3
import sys

import pytest

import kdsearch.cli.tune  # noqa: F401  (registers the command)
from kdsearch.cli import main
from kdsearch.errors import KdsearchError
from kdsearch.tune import check_space, load_space

BASE = {"dataset": "digits", "teacher": {"model": "digits_resnet14", "train": {"epochs": 1}},
        "search": {"budgets": ["0.5x"], "steps": 3}, "distill": {"method": "kd", "epochs": 1},
        "device": "cpu"}
PARAMS = {"search.options.decay": {"type": "float", "low": 0.5, "high": 0.95},
          "distill.options.temperature": {"type": "float", "low": 1, "high": 8},
          "budget": {"type": "categorical", "choices": ["0.3x", "0.5x"]}}


def write_space(tmp_path, **changes) -> str:
    space = {"base": BASE, "params": PARAMS, "objectives": ["accuracy", "macs"],
             "sampler_seed": 0, "out": str(tmp_path / "out"), **changes}
    path = tmp_path / "space.yaml"
    path.write_text(json.dumps(space))  # JSON is YAML
    return str(path)


# -- the space file ---------------------------------------------------------------------------
def test_space_is_read_with_its_defaults(tmp_path):
    space = load_space(write_space(tmp_path))
    assert [p.name for p in space.params] == list(PARAMS)
    assert space.directions == ["maximize", "minimize"] and space.study == "space"
    config = space.trial_config({"budget": "0.3x", "distill.options.temperature": 2.0})
    assert config["search"]["budgets"] == ["0.3x"]
    assert config["distill"]["options"] == {"temperature": 2.0}
    assert config["compare"] is None and config["show"] is False
    assert BASE["search"]["budgets"] == ["0.5x"]  # the base is not changed


def test_the_shipped_digits_space_is_valid():
    from kdsearch.presets import search_spaces_dir

    space = load_space(search_spaces_dir() / "tune_digits.yaml")
    assert space.objectives == ["accuracy", "macs"] and "budget" in [p.name for p in space.params]


@pytest.mark.parametrize(("changes", "message"), [
    ({"trials": 3}, "unknown key 'trials'"),
    ({"objectives": ["macs"]}, "objectives: expected [accuracy]"),
    ({"base": {**BASE, "distil": {}}}, "base: unknown key 'distil'"),
    ({"params": {"search.options.decay": {"type": "float", "low": 1, "high": 0.5}}},
     "params.search.options.decay: need low < high"),
    ({"params": {"search.options.decay": {"type": "float", "low": 0.1, "high": 1, "lg": True}}},
     "unknown key 'lg' for a float parameter"),
    ({"params": {"search.lamda": {"type": "float", "low": 0.1, "high": 1}}},
     "params.search.lamda = 0.1: config: search: unknown key 'lamda'"),
    ({"params": {"distill.method": {"type": "categorical", "choices": ["kd", "kdd"]}}},
     "params.distill.method = 'kdd'"),
    ({"params": {"search.steps": {"type": "int", "low": 1, "high": 2.5}}},
     "params.search.steps.high: expected an integer"),
    ({"params": {"distill.epochs": {"type": "int", "low": 1, "high": 2}},
      "base": {**BASE, "search": {"budgets": ["0.3x", "0.5x"]}}},
     "a trial distils one student"),
])
def test_bad_spaces_are_one_line_errors(tmp_path, changes, message):
    with pytest.raises(KdsearchError) as err:
        load_space(write_space(tmp_path, **changes))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_named_choices_carry_structured_values(tmp_path):
    stages = {"kd": [{"method": "kd", "epochs": 1}],
              "kd_twice": [{"method": "kd", "epochs": 1}, {"method": "kd", "epochs": 1}]}
    base = {**BASE, "distill": {"epochs": 1}}
    space = check_space({"base": base, "params": {"distill.stages": {
        "type": "categorical", "choices": stages}}}, tmp_path)
    assert space.params[0].choices == stages
    assert space.trial_config({"distill.stages": stages["kd_twice"]})["distill"]["stages"] == \
        stages["kd_twice"]


# -- the study --------------------------------------------------------------------------------
@pytest.mark.slow
def test_tune_runs_and_a_second_invocation_continues_the_study(tmp_path, capsys):
    import optuna

    space = write_space(tmp_path)
    assert main(["tune", "--config", space, "--trials", "2", "--quiet"]) == 0
    assert "Pareto front" in capsys.readouterr().out
    assert main(["tune", "--config", space, "--trials", "1", "--quiet"]) == 0
    out = tmp_path / "out"
    study = optuna.load_study(study_name="space", storage=f"sqlite:///{out / 'study.db'}")
    assert [t.number for t in study.trials] == [0, 1, 2]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 3  # no replays
    assert sorted(p.name for p in (out / "trials").iterdir()) == [
        "trial_0000", "trial_0001", "trial_0002"]
    assert (out / "teacher" / "teacher.pt").exists()  # trained once, shared by the trials
    pareto = json.loads((out / "pareto.json").read_text())
    assert pareto["objectives"] == {"accuracy": "maximize", "macs": "minimize"}
    assert pareto["front"] and all(row["state"] == "COMPLETE" for row in pareto["front"])
    assert len((out / "trials.csv").read_text().splitlines()) == 4
    assert (out / "pareto.csv").read_text().startswith("number,state,accuracy,macs")


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # the crashed worker asks
def test_a_stale_running_trial_is_failed_and_retried_in_its_folder(tmp_path, monkeypatch):
    import optuna

    from kdsearch.tune import open_storage, open_study, run_tune
    from kdsearch.tune import run as tune_run

    weights = tmp_path / "teacher.pt"
    weights.write_bytes(b"")  # never read: the trial itself is a stand-in
    base = {**BASE, "teacher": {"model": "digits_resnet14", "weights": str(weights)}}
    space = load_space(write_space(tmp_path, base=base))
    url = f"sqlite:///{tmp_path / 'out' / 'study.db'}"
    (tmp_path / "out").mkdir()
    storage = open_storage(url, heartbeat_interval=1, grace_period=1)
    crashed = open_study(space, storage, "space").ask()  # a worker that died in its trial
    storage.record_heartbeat(crashed._trial_id)
    with sqlite3.connect(tmp_path / "out" / "study.db") as db:
        db.execute("UPDATE trial_heartbeats SET heartbeat = '2000-01-01 00:00:00.000000'")

    seen = []

    def stand_in(config, folder, base_dir, quiet):
        seen.append(folder.name)
        return {"macs": 1000, "params": 10, "best_acc": 50.0, "last_acc": 40.0, "budget": "0.5x"}

    monkeypatch.setattr(tune_run, "run_trial", stand_in)
    result = run_tune(space, trials=1, quiet=True, heartbeat_interval=1, grace_period=1)
    states = {row["number"]: row["state"] for row in result["trials"]}
    assert states == {0: "FAIL", 1: "COMPLETE"}
    assert seen == ["trial_0000"]  # the retry continues in the crashed trial's folder
    study = optuna.load_study(study_name="space", storage=url)
    assert study.trials[1].system_attrs["failed_trial"] == 0


# -- without optuna ---------------------------------------------------------------------------
def test_kdsearch_works_without_optuna(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna -> ImportError
    for name in [m for m in sys.modules if m == "kdsearch.tune" or m.startswith("kdsearch.tune.")]:
        monkeypatch.delitem(sys.modules, name)
    importlib.import_module("kdsearch.tune")  # importing the package needs no optuna
    assert main(["flops", "digits_resnet8", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model"] == "digits_resnet8"
    assert main(["tune", "--config", "missing.yaml", "--trials", "1"]) == 2
    assert "kdsearch tune needs optuna" in capsys.readouterr().err


def test_a_trial_that_fails_does_not_stop_the_study(tmp_path, monkeypatch):
    from kdsearch.tune import run as tune_run
    from kdsearch.tune import run_tune

    weights = tmp_path / "teacher.pt"
    weights.write_bytes(b"")
    base = {**BASE, "teacher": {"model": "digits_resnet14", "weights": str(weights)}}
    calls = []

    def stand_in(config, folder, base_dir, quiet):
        calls.append(folder)
        if len(calls) == 1:
            raise KdsearchError("budget '0.01x' is below the smallest student")
        return {"macs": 1000, "params": 10, "best_acc": 50.0, "last_acc": 40.0, "budget": "0.5x"}

    monkeypatch.setattr(tune_run, "run_trial", stand_in)
    result = run_tune(write_space(tmp_path, base=base, objectives=["accuracy"]), trials=2,
                      quiet=True)
    assert [row["state"] for row in result["trials"]] == ["FAIL", "COMPLETE"]
    assert [row["number"] for row in result["front"]] == [1]  # one objective: the best trial
    assert result["front"][0]["accuracy"] == 40.0  # accuracy: last


def test_a_bad_storage_is_one_line_without_the_password(tmp_path, capsys):
    url = "postgresql+nodriver://bob:secret@localhost/db"
    assert main(["tune", "--config", write_space(tmp_path), "--trials", "1", "--storage", url]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kdsearch: error: storage 'postgresql+nodriver://bob:***@localhost/db'")
    assert "secret" not in err and len(err.strip().splitlines()) == 1
