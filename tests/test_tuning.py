"""tfkit tune: the search space checked before anything trains, KerasTuner's trials as tfkit
runs, the best exported, and a search interrupted mid-trial resumed without repeating one."""

import json

import keras_tuner
import pytest
from conftest import run_cli, sets, write_tiny_csv

import tfkit
from tfkit.config import ConfigError, load_config
from tfkit.tuning import Dimension, SearchSpace, search_space


def csv_config(path, extra=()):
    return load_config(None, ["name=tiny", "data.source=csv", f"data.path={path}",
                              "data.text_column=review", "data.label_column=sentiment",
                              "model.name=text_linear", "model.params={}", "train.verbose=0",
                              *extra])


def test_the_default_space_fits_the_data_and_refuses_what_does_not(tmp_path):
    config = csv_config(tmp_path / "r.csv")
    space = search_space(config, "text")
    assert list(space.families) == ["text_linear", "text_fasttext", "text_cnn", "text_bilstm",
                                    "text_transformer"]
    assert "han" in search_space(config, "text", documents=True).families
    keys = {d.key for d in space.families["text_cnn"]}
    assert {"model.params.filters", "data.max_len", "train.learning_rate"} <= keys
    assert "model.params.filters" not in {d.key for d in space.families["text_linear"]}
    with pytest.raises(ConfigError, match="tune.models: model 'han' takes text inputs"):
        search_space(load_config("digits_cnn", ["tune.models=[han]"]), "image")
    bad = csv_config(tmp_path / "r.csv", ["tune.models=[text_cnn]",
                                          "tune.space={model.params.colour: [1, 2]}"])
    with pytest.raises(ConfigError, match="none of the searched models .* takes 'colour'"):
        search_space(bad, "text")
    bad = csv_config(tmp_path / "r.csv", ["tune.space={train.batch_size: [0, 8]}"])
    with pytest.raises(ConfigError, match="tune.space.train.batch_size = 0 .*must be >= 1"):
        search_space(bad, "text")
    # a model that wraps a text encoder: searched over the encoder and its own layers, the
    # first trial being the config's; a configured encoder_params keeps its encoder
    table = load_config("tate_table", ["model.params={encoder: text_cnn, table_units: 64}"])
    (dimensions,) = search_space(table, "text").families.values()
    first = {d.key: d.default for d in dimensions}
    assert first["model.params.encoder"] == "text_cnn" and first["model.params.table_units"] == 64
    assert {"text_fasttext", "text_bilstm"} <= set(next(
        d.values for d in dimensions if d.key == "model.params.encoder"))
    fixed = load_config("tate_table", ["model.params={encoder_params: {embedding_dim: 8}}"])
    keys = {d.key for d in search_space(fixed, "text").families["text_table"]}
    assert "model.params.encoder" not in keys and "model.params.table_units" in keys
    tasks = search_space(load_config("tate_multitask", ["model.params={encoder: text_cnn}"]),
                         "text").families["multitask"]
    assert "model.params.encoder" in {d.key for d in tasks}


def test_tune_settings_are_refused_before_anything_runs(tiny_csv, capsys):
    base = ["--set", "data.source=csv", "--set", f"data.path={tiny_csv}", "--set",
            "data.text_column=review", "--set", "data.label_column=sentiment"]
    for args, message in (
            (["--budget", "0"], "tune.budget must be above 0"),
            (["--budget=-5m"], "tune.budget must be a duration"),
            (["--budget", "soon"], "tune.budget must be a duration"),
            (["--set", "tune.algorithm=hyperband"], "tune.algorithm must be one of bayesian, random"),
            (["--set", "tune.space={train.learning_rate: {min: 0, max: 1, sampling: log}}"],
             "min > 0 for sampling: log"),
            (["--set", "tune.models=[image_cnn]"], "tune.models: model 'image_cnn' takes image")):
        code, out, err = run_cli(capsys, "tune", *base, *args)
        assert code == 2 and out == "", args
        assert err.strip().splitlines()[-1].startswith("tfkit: error:") and message in err, err
    assert not (tiny_csv.parent / "runs").exists()


def test_a_dimension_registers_with_keras_tuner_and_becomes_set_values():
    hp = keras_tuner.HyperParameters()
    space = SearchSpace({
        "text_linear": [Dimension.parse("model.params.l2", {"min": 1e-8, "max": 1e-5,
                                                            "sampling": "log"})],
        "text_cnn": [Dimension.parse("data.max_len", ["auto", 512]),
                     Dimension.parse("model.params.filters", {"min": 8, "max": 64})]})
    first = space.overrides(hp)
    assert first[0] == "model.name=text_linear" and first[1].startswith("model.params.l2=")
    assert 1e-8 <= float(first[1].split("=")[1]) <= 1e-5
    hp = keras_tuner.HyperParameters()  # what the oracle proposes for the next trial
    hp.values["model.name"] = "text_cnn"
    second = space.overrides(hp)
    assert second == ["model.name=text_cnn", "data.max_len=auto", "model.params.filters=8"]
    assert load_config(None, second[1:2]).data.max_len == "auto"


def test_tune_trains_trials_as_runs_exports_the_best_and_resumes_after_a_kill(
        workdir, monkeypatch):
    path = write_tiny_csv(workdir / "reviews.csv", n=80)
    overrides = ["name=tiny", "data.source=csv", f"data.path={path}",
                 "data.text_column=review", "data.label_column=sentiment", "train.epochs=3",
                 "train.batch_size=8", "train.verbose=0", "train.run_name=search",
                 "tune.models=[text_linear, text_fasttext]", "tune.max_trials=3",
                 "tune.algorithm=random", "tune.space={train.learning_rate: [0.05]}",
                 "model.name=text_linear", "model.params={}"]
    import tfkit.tuning as tuning

    real, calls = tuning.run_trial, []

    def killed_in_the_second_trial(*args, **kwargs):
        calls.append(args[2])
        if len(calls) == 2:
            raise KeyboardInterrupt  # what a kill leaves: the trial is running in the oracle
        return real(*args, **kwargs)

    monkeypatch.setattr(tuning, "run_trial", killed_in_the_second_trial)
    with pytest.raises(KeyboardInterrupt):
        tfkit.tune(None, overrides, budget="10m")
    tune_dir = workdir / "runs" / "tiny" / "search"
    first = tune_dir.parent / "search-0"
    assert json.loads((first / "status.json").read_text())["state"] == "finished"
    first_metrics = (first / "metrics.json").read_text()
    assert not (workdir / "saved_models").exists()  # nothing published before the search ends

    monkeypatch.setattr(tuning, "run_trial", real)
    result = tfkit.tune(None, overrides, budget="10m")  # the same command continues
    assert (first / "metrics.json").read_text() == first_metrics  # not trained again
    assert json.loads((first / "progress.json").read_text())["attempts"] == 1
    assert sorted(t["trial"] for t in result.trials) == ["0", "1", "2"]
    assert [r["value"] for r in result.ranked] == sorted(
        (r["value"] for r in result.ranked), reverse=True)
    best = result.ranked[0]
    assert result.best == best and best["model"] in ("text_linear", "text_fasttext")
    assert result.export_path == workdir / "saved_models" / "tiny" / "1"
    exported = json.loads((result.export_path / "assets.extra" / "tfkit.json").read_text())
    assert exported["run_dir"] == best["run_dir"]
    summary = json.loads(result.summary.read_text())
    assert summary["objective"] == "val_accuracy" and summary["baseline"]["test_accuracy"] > 0.5
    for trial in result.trials:  # each trial a run, its hyperparameters in TensorBoard
        run = json.loads((workdir / trial["run_dir"] / "metrics.json").read_text())
        assert run["best_monitor"]["name"] == "val_accuracy" and run["baseline"] is None
        assert list((workdir / trial["run_dir"] / "logs").glob("events.out.tfevents.*"))
    assert (tune_dir / "oracle.json").is_file()  # KerasTuner's own state

    from tfkit.cli import main

    code = main(["tune", "--resume", str(tune_dir), *sets(["name=x"])])
    assert code == 2  # --resume takes no --set: the search continues as it was set up
