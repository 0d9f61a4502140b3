"""train()'s steps one by one (prepare -> build -> fit -> finish) and the run folder's state."""

import json
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import tiny_overrides

import tfkit
from tfkit.data import LabeledData, Split, TextPreprocessor
from tfkit.datasets import warn_small_splits
from tfkit.preparing import build, prepare
from tfkit.runs import RunProgress, create_run_dir, read_status, run_summary
from tfkit.training import finish, fit, open_run_dir


def test_prepare_and_build_write_nothing(tiny_csv, workdir):
    before = sorted(p.name for p in workdir.iterdir())
    run = prepare(None, tiny_overrides(tiny_csv))
    assert isinstance(run.preprocessor, TextPreprocessor) and run.preprocessor.vocab_size > 2
    assert run.batch_size == 8 and run.monitor == "val_loss" and run.resume_dir is None
    assert int(run.train_ds.cardinality()) >= 1 and run.val_ds is not None
    with run.strategy.scope():
        model, vectors = build(run)
    assert model.optimizer is not None and vectors is None
    assert model.output_shape == (None, 2)
    assert sorted(p.name for p in workdir.iterdir()) == before  # no runs/, no saved_models/


def test_the_steps_make_a_finished_run(tiny_csv):
    run = prepare(None, tiny_overrides(tiny_csv, extra=["export.enabled=false"]))
    with run.strategy.scope():
        model, vectors = build(run)
    run_dir, out_dir = open_run_dir(run)
    assert out_dir == run_dir and read_status(run_dir)["state"] == "running"
    assert (run_dir / "config.yaml").is_file() and (run_dir / "preprocessor.json").is_file()
    trained = fit(model, run, run_dir, out_dir)
    assert len(trained.history["loss"]) == 1 and trained.best_epoch == 1
    test = model.evaluate(run.test_ds, return_dict=True, verbose=0)
    result = finish(model, run, run_dir, trained, test, vectors)
    assert read_status(run_dir)["state"] == "finished"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test_loss"] == pytest.approx(test["loss"]) and metrics["epochs"] == 1
    assert result.export_path is None and "blessing" not in metrics


def test_run_progress_counts_attempts_and_epochs_across_processes(tmp_path):
    first = RunProgress(tmp_path)
    first.on_train_begin()
    first.on_epoch_end(0)
    first.on_epoch_end(1)
    second = RunProgress(tmp_path)  # a resumed attempt reads the file
    assert second.state["attempts"] == 2 and second.state["epochs"] == 2
    assert second.state["trained"] is False and second.state["train_seconds"] > 0
    second.finish_training()
    saved = json.loads((tmp_path / "progress.json").read_text())
    assert saved["trained"] is True and saved["attempts"] == 2
    assert not list(tmp_path.glob(".*partial"))


def test_run_folders_are_never_reused(workdir):
    config = tfkit.load_config()
    first, second = create_run_dir(config), create_run_dir(config)
    assert first != second and first.parent == second.parent == (workdir / "runs" /
                                                                  config.name).resolve()
    config.train.run_name = "mine"
    create_run_dir(config)
    with pytest.raises(tfkit.ConfigError, match="already exists; choose another train.run_name"):
        create_run_dir(config)


def test_run_summary_names_what_happened():
    metrics = {"test_accuracy": 0.8, "test_loss": 0.4, "epochs": 3, "best_epoch": 2,
               "train_seconds": 1.5, "export_path": "saved_models/m/1"}
    line = run_summary(metrics, Path("runs/m/r"))
    assert line == ("test accuracy 0.8, loss 0.4; best epoch 2 of 3; 1.5 s of training; "
                    "SavedModel saved_models/m/1; tensorboard --logdir runs/m/r")
    del metrics["export_path"]
    metrics["blessing"] = {"reasons": ["test_loss is nan"]}
    assert "; NOT published for serving (test_loss is nan); " in run_summary(metrics, Path("r"))


def test_small_splits_are_named_per_class():
    split = Split(np.array(["a"] * 12, object), np.array([0] * 10 + [1] * 2))
    data = LabeledData(split, split.take(slice(0, 0)), split, ["good", "bad"], "tiny")
    (warning,) = warn_small_splits(data)  # the empty validation split says nothing
    assert warning == ("the test split has fewer than 5 examples of 1 class(es) ('bad' 2): "
                       "its scores are noisy")


def test_a_model_built_without_an_input_is_built_before_any_folder(tiny_csv, workdir):
    from tfkit.models import MODELS, Entry

    def build_sequential(*, vocab_size, num_classes, units=4):
        return keras.Sequential([keras.layers.Embedding(vocab_size, 4),
                                 keras.layers.GlobalAveragePooling1D(),
                                 keras.layers.Dense(num_classes, activation="softmax")])

    MODELS["test_sequential"] = Entry(build_sequential, "tokens")
    try:
        run = prepare(None, tiny_overrides(tiny_csv, model="test_sequential"))
        with run.strategy.scope():
            model, _ = build(run)
        assert model.built and not (workdir / "runs").exists()
    finally:
        del MODELS["test_sequential"]
