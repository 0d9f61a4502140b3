"""tfkit sweep: one ordinary run per grid combination, ranked on the validation split, the
best one exported (and only it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import tiny_overrides
from test_cli import finished_runs, run_cli, sets

import tfkit


def grid_lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.strip().splitlines()]


def test_sweep_ranks_on_validation_and_exports_only_the_best(tiny_csv, capsys):
    code, out, err = run_cli(capsys, "sweep", *sets(tiny_overrides(tiny_csv) + [
        "train.epochs=2", "name=reviews", "export.enabled=true"]),
        "--grid", "train.learning_rate=[0.0001, 0.03]")
    assert code == 0, err
    lines = grid_lines(out)
    assert [line["rank"] for line in lines] == [1, 2]
    assert lines[0]["value"] <= lines[1]["value"] and lines[0]["monitor"] == "val_loss"
    assert sorted(tuple(line["overrides"]) for line in lines) == [
        ("train.learning_rate=0.0001",), ("train.learning_rate=0.03",)]
    # ordinary finished runs, named after the sweep, each holding its own grid value
    runs = sorted(finished_runs())
    assert [p.name.rsplit("-", 1)[1] for p in runs] == ["1", "2"]
    assert all(p.name.startswith("sweep-") for p in runs)
    for line in lines:
        saved = yaml.safe_load((Path(line["run_dir"]) / "config.yaml").read_text())
        assert f"train.learning_rate={saved['train']['learning_rate']}" == line["overrides"][0]
        assert line["test_accuracy"] == json.loads(
            (Path(line["run_dir"]) / "metrics.json").read_text())["test_accuracy"]
    # one SavedModel version, the winner's; the loser was never exported
    assert lines[0]["export_path"].endswith("saved_models/reviews/1")
    assert "export_path" not in lines[1]
    assert [p.name for p in Path("saved_models/reviews").iterdir() if p.is_dir()] == ["1"]
    facts = json.loads(Path(lines[0]["export_path"], "assets.extra", "tfkit.json").read_text())
    assert facts["run_dir"] == lines[0]["run_dir"]
    assert "sweep: best" in err
    # the ranking stays beside the trials, as printed
    summary = json.loads(Path("runs/reviews", runs[0].name.rsplit("-", 1)[0] + ".json").read_text())
    assert [Path(t["run_dir"]).name for t in summary["ranked"]] == [
        Path(line["run_dir"]).name for line in lines]
    assert summary["grid"] == {"train.learning_rate": [0.0001, 0.03]}
    assert summary["export_path"] == lines[0]["export_path"] and summary["monitor"] == "val_loss"


def test_accuracy_monitors_rank_highest_first(tiny_csv):
    # a rate that cannot learn in 2 epochs against one that can: no tie to hide the order
    result = tfkit.sweep(None, {"train.learning_rate": [1e-7, 0.03]}, tiny_overrides(tiny_csv) + [
        "train.epochs=2", "train.monitor=val_accuracy", "export.enabled=false"])
    values = [trial["value"] for trial in result.ranked]
    assert values[0] > values[1]
    assert result.ranked[0]["overrides"] == ["train.learning_rate=0.03"]
    best = result.best
    assert result.ranked[0]["run_dir"] == best.run_dir and result.export_path is None
    assert result.ranked[0]["value"] == best.history["val_accuracy"][best.metrics["best_epoch"] - 1]
    assert [trial["overrides"] for trial in result.trials] == [
        ["train.learning_rate=1.0e-07"], ["train.learning_rate=0.03"]]


@pytest.mark.parametrize("grid, extra, message", [
    (["train.learning_rate=0.01"], [], "the values must be a YAML list, e.g. train.learning_rate=[1, 2]"),
    (["train.epocs=[1, 2]"], [], "Did you mean 'epochs'"),
    (["train.batch_size=[8, 0]"], [], "train.batch_size must be >= 1, got 0"),
    (["train.monitor=[val_loss, val_accuracy]"], [], "ranked by one train.monitor"),
    (["train.epochs=[1]"], ["data.validation_fraction=0"], "data.validation_fraction must be > 0"),
    ([], [], "a sweep needs at least one --grid"),
    (["train.epochs=[1]", "train.epochs=[2]"], [], "'train.epochs' is already in the grid"),
    (["train.epochs=[1, 2, 1]"], [], "--grid train.epochs: a value is listed twice in [1, 2, 1]"),
])
def test_bad_sweeps_exit_2_before_any_run(tiny_csv, capsys, grid, extra, message):
    args = [arg for value in grid for arg in ("--grid", value)]
    code, out, err = run_cli(capsys, "sweep", *sets(tiny_overrides(tiny_csv) + extra), *args)
    assert code == 2 and out == ""
    assert message in err.strip().splitlines()[-1]
    assert not Path("runs").exists() and not Path("saved_models").exists()


def grid_oracle(grid, dimensions):
    import keras_tuner

    hp = keras_tuner.HyperParameters()
    for dimension in dimensions:
        dimension.register(hp, dimension.key)
    return keras_tuner.oracles.GridSearchOracle(
        objective=keras_tuner.Objective("val_loss", "min"), hyperparameters=hp)


def test_the_grid_is_keras_tuners_grid_search_in_the_grids_order(tmp_path):
    """A sweep is the grid case of tfkit tune's search loop: KerasTuner's GridSearchOracle
    proposes every combination once, in the order of the grid (the last key fastest), with
    lists, mixed values and booleans as --set values; a trial's bad setting stops the search
    as a ConfigError, any other error as it came. No training: the trial is a function."""
    from tfkit.config import ConfigError
    from tfkit.sweeps import trial_overrides
    from tfkit.tuning import Dimension, as_yaml, search

    grid = {"model.params.units": [[64, 64], [32]], "train.learning_rate": [0.01, "auto"],
            "data.lower": [True, False]}
    dimensions = [Dimension(key, values=values, default=values[0]) for key, values in grid.items()]
    seen = []

    def trial(hp, trial_id):
        seen.append((int(trial_id), [f"{d.key}={as_yaml(d.register(hp, d.key))}"
                                     for d in dimensions]))
        return 1.0 / len(seen)

    tuner = search(grid_oracle(grid, dimensions), tmp_path / "grid", trial)
    assert [sets for _, sets in seen] == trial_overrides(grid)
    assert seen[0][1] == ["model.params.units=[64, 64]", "train.learning_rate=0.01",
                          "data.lower=true"]
    assert [number for number, _ in seen] == list(range(8))
    assert tuner.oracle.get_best_trials(1)[0].score == 1.0 / 8  # val_loss: lowest first

    def bad_setting(hp, trial_id):
        raise ValueError("data.path: file 'x.csv' does not exist")

    def broken(hp, trial_id):
        raise RuntimeError("disk full")

    with pytest.raises(ConfigError, match="file 'x.csv' does not exist"):
        search(grid_oracle(grid, dimensions), tmp_path / "bad", bad_setting)
    with pytest.raises(RuntimeError, match="disk full"):
        search(grid_oracle(grid, dimensions), tmp_path / "broken", broken)
