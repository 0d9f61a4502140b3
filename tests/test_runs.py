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
