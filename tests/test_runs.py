"""A run killed at the end of training resumes without training again: the trained model is
saved, then marked trained, and only then is the backup removed."""

import json

import keras
import pytest
from conftest import tiny_overrides

import tfkit


class KilledAtTheEndOfTraining(keras.callbacks.Callback):
    """What a kill right after the last epoch leaves (tfkit's own callbacks have run)."""

    def on_train_end(self, logs=None):
        raise KeyboardInterrupt


def progress(run_dir):
    return json.loads((run_dir / "progress.json").read_text())


def test_killed_after_the_last_epoch_resumes_with_nothing_to_train(tiny_csv, workdir):
    sets = tiny_overrides(tiny_csv, model="text_fasttext", extra=[
        "train.epochs=2", "train.backup_seconds=1000", "train.run_name=killed",
        "export.enabled=false", "train.baseline=false"])
    with pytest.raises(KeyboardInterrupt):
        tfkit.train(None, sets, callbacks=[KilledAtTheEndOfTraining()])
    run_dir = workdir / "runs" / "fine_foods_fasttext" / "killed"
    assert progress(run_dir)["trained"] is False and progress(run_dir)["epochs"] == 2
    assert (run_dir / "backup").is_dir()  # the last epoch backed up although 1000 s had not passed
    assert not (run_dir / "model.keras").exists()
    result = tfkit.train(resume=run_dir)
    assert all(len(values) == 0 for values in result.history.values())  # no epoch again
    assert result.metrics["epochs"] == 2 and result.metrics["resumes"] == 1
    assert result.metrics["best_epoch"] in (1, 2)
    assert not (run_dir / "backup").exists() and (run_dir / "model.keras").is_file()


def test_killed_while_scoring_the_test_split_goes_straight_to_scoring(tiny_csv, workdir,
                                                                      monkeypatch):
    import tfkit.training as training

    sets = tiny_overrides(tiny_csv, extra=["train.epochs=2", "train.run_name=scoring",
                                           "export.enabled=false", "train.baseline=false"])

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    real = training.score_test_split
    monkeypatch.setattr(training, "score_test_split", killed)
    with pytest.raises(KeyboardInterrupt):
        tfkit.train(None, sets)
    run_dir = workdir / "runs" / "fine_foods_fasttext" / "scoring"
    assert progress(run_dir)["trained"] is True and (run_dir / "model.keras").is_file()
    assert not (run_dir / "backup").exists()
    monkeypatch.setattr(training, "score_test_split", real)
    result = tfkit.train(resume=run_dir)
    assert result.history == {} and result.metrics["epochs"] == 2
    assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"


def test_one_live_process_per_run_folder_and_no_setting_dropped_on_resume(
        tiny_csv, workdir, capsys):
    import subprocess

    from conftest import run_cli, sets

    from tfkit.config import ConfigError
    from tfkit.owners import OWNER_FILE, process_start, this_process

    overrides = tiny_overrides(tiny_csv, extra=["train.epochs=2", "train.run_name=shared",
                                                "export.enabled=false", "train.baseline=false"])
    with pytest.raises(KeyboardInterrupt):
        tfkit.train(None, overrides, callbacks=[KilledAtTheEndOfTraining()])
    run_dir = workdir / "runs" / "fine_foods_fasttext" / "shared"
    assert not (run_dir / OWNER_FILE).exists()  # released when the process let go
    other = subprocess.Popen(["sleep", "60"])
    try:
        owner = {**this_process(), "pid": other.pid, "process_start": process_start(other.pid)}
        (run_dir / OWNER_FILE).write_text(json.dumps(owner))
        code, out, err = run_cli(capsys, "train", *sets(overrides))
        assert code == 2 and f"is in use by process {other.pid}" in err
        code, out, err = run_cli(capsys, "train", "--resume", str(run_dir))
        assert code == 2 and f"is in use by process {other.pid}" in err
        # the same id, started at another time: a reused id, not the owner
        (run_dir / OWNER_FILE).write_text(json.dumps({**owner, "process_start": "1"}))
        code, out, err = run_cli(capsys, "train", *sets(overrides + ["data.limit=30"]))
        assert code == 2 and "interrupted run with other settings (data.limit: 30 here, None " \
            "in the run folder)" in err
        code, out, err = run_cli(capsys, "train", "--resume", str(run_dir), "--set",
                                 "train.epochs=5")
        assert code == 2 and "--resume continues a run as it was set up" in err
        with pytest.raises(ConfigError, match="give no CONFIG or --set"):
            tfkit.train("fine_foods_fasttext", resume=run_dir)
    finally:
        other.kill()
        other.wait()
    result = tfkit.train(None, overrides)  # the same command: resumes, the owner is gone
    assert result.metrics["resumes"] == 1 and not (run_dir / OWNER_FILE).exists()


# Runs `tfkit train` as the command line does, and kills its own process with SIGKILL (no
# Python clean-up, no `finally`, the run folder's owner file left behind) at one point.
KILL_AT = '''
import os, signal, sys
import keras
import tfkit.export, tfkit.training

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

class MidEpoch(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
    def on_train_batch_end(self, batch, logs=None):
        if self.epoch == 1 and batch == 1:
            die()

point = sys.argv.pop(1)
if point == "mid-epoch":
    callbacks = tfkit.training.make_callbacks
    tfkit.training.make_callbacks = lambda *a, **k: callbacks(*a, **k) + [MidEpoch()]
elif point == "before-model-keras":
    tfkit.training.save_trained_model = die
elif point == "test-scoring":
    tfkit.training.score_test_split = die
elif point == "export":  # the export written and checked in its staging folder, not renamed
    check = tfkit.export._check_export
    tfkit.export._check_export = lambda *a, **k: (check(*a, **k), die())
from tfkit.cli import main
sys.exit(main())
'''


@pytest.mark.slow
def test_a_kill_9_at_any_point_resumes_without_training_again(tiny_csv, workdir):
    """A real ``kill -9`` of ``tfkit train`` in the middle of an epoch, between the last
    epoch and ``model.keras``, while scoring the test split and while exporting; each run
    then resumed. Only a killed process shows that its owner file never locks the folder
    and that nothing written in a ``finally`` is relied on. (The four killed processes run
    side by side: ~30 s.)"""
    import subprocess
    import sys

    from conftest import sets

    from tfkit.owners import OWNER_FILE

    points = ("mid-epoch", "before-model-keras", "test-scoring", "export")
    killed = {}
    for point in points:
        overrides = tiny_overrides(tiny_csv, model="text_fasttext", extra=[
            "train.epochs=2", "train.backup_seconds=0", f"train.run_name={point}",
            f"export.name={point}", "export.blessing=false", "train.baseline=false",
            f"export.enabled={point == 'export'}"])
        killed[point] = subprocess.Popen(
            [sys.executable, "-c", KILL_AT, point, "train", *sets(overrides)], cwd=workdir,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for point, process in killed.items():
        out, err = process.communicate(timeout=300)
        assert process.returncode == -9, f"{point}: {err[-2000:]}"  # reaped: its id is gone
    runs = workdir / "runs" / "fine_foods_fasttext"
    for point in points:
        run_dir = runs / point
        assert (run_dir / OWNER_FILE).is_file(), point  # left behind by the killed process
        before = progress(run_dir)
        result = tfkit.train(resume=run_dir)
        metrics = result.metrics
        assert metrics["epochs"] == 2 and metrics["resumes"] == 1, point
        assert (run_dir / "model.keras").is_file() and not (run_dir / "backup").exists()
        assert not (run_dir / OWNER_FILE).exists(), point
        if point == "mid-epoch":  # killed in epoch 2: epoch 1's backup, epoch 2 again
            assert before["trained"] is False and before["epochs"] == 1
            assert len(result.history["loss"]) == 1
        elif point == "before-model-keras":  # the last epoch's backup: nothing to train
            assert before["trained"] is False and before["epochs"] == 2
            assert all(len(values) == 0 for values in result.history.values())
        else:  # the trained model saved: loaded, not trained again
            assert before["trained"] is True and result.history == {}
        if point == "export":
            model_dir = workdir / "saved_models" / "export"
            assert result.export_path == model_dir / "1"
            assert [p.name for p in model_dir.iterdir()] == ["1"]  # the staging folder gone
        else:
            assert result.export_path is None
