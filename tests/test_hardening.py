"""What a user (or someone probing on purpose) sends never crashes tfkit, never writes outside
its folders, and never silently replaces a good served model with a worse one."""

import errno
import io
import json
import os
import stat
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import run_cli, sets, tiny_overrides, write_tiny_csv
from PIL import Image

import tfkit
import tfkit.export
from tfkit.config import config_from_dict
from tfkit.data import ImagePreprocessor
from tfkit.export import (
    MODEL_CONFIG,
    WARMUP_FILE,
    WARMUP_MAX_BYTES,
    WARMUP_TEXT_CHARS,
    ExportError,
    export_for_serving,
)
from tfkit.publishing import bless


def everything_under(root):
    return sorted(str(p.relative_to(root)) for p in Path(root).rglob("*"))


GOOD = ["model.name=text_fasttext", "model.params={}", "train.epochs=6",
        "train.learning_rate=0.05"]  # learns the tiny reviews perfectly


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    """A tiny run that learned its data (test accuracy 1.0) and was published as version 1."""
    root = tmp_path_factory.mktemp("hardening")
    old = os.getcwd()
    os.chdir(root)
    try:
        result = tfkit.train(None, tiny_overrides(write_tiny_csv(root / "reviews.csv"),
                                                  extra=GOOD + ["export.enabled=true"]))
    finally:
        os.chdir(old)
    assert result.metrics["test_accuracy"] == 1.0 and result.export_path.name == "1"
    return result


# --- 1. names are one folder ------------------------------------------------------------

@pytest.mark.parametrize("override", ["name=../../somewhere/else", "train.run_name=../x",
                                      "export.name=/elsewhere", "name=..", "train.run_name=a/b"])
def test_a_name_that_climbs_out_is_refused_before_anything_is_written(workdir, capsys, override):
    before = everything_under(workdir)
    code, _, err = run_cli(capsys, "train", "--set", override)
    key = override.split("=")[0]
    assert code == 2 and f"tfkit: error: --set {override}: {key} must be one folder name: " \
                          "letters, digits, '.', '_' and '-', not '.' or '..'" in err, err
    assert everything_under(workdir) == before
    assert not (workdir.parent / "somewhere").exists() and not Path("/elsewhere").exists()


def test_export_name_may_not_climb_out_of_the_base_dir(good_run, tmp_path, capsys):
    base = tmp_path / "served"
    for name in ("../y", "/elsewhere", ".."):
        code, _, err = run_cli(capsys, "export", str(good_run.run_dir), "--base-dir", str(base),
                               "--name", name)
        assert code == 2 and "export --name must be one folder name" in err, err
    assert not base.exists() and not (tmp_path / "y").exists()
    # any base folder the user names is fine, and the name inside it
    code, out, err = run_cli(capsys, "export", str(good_run.run_dir), "--base-dir", str(base),
                             "--name", "reviews-v2.1")
    assert code == 0, err
    assert Path(json.loads(out)["export_path"]) == base / "reviews-v2.1" / "1"


# --- 2. clear errors where tracebacks were ----------------------------------------------

@pytest.mark.parametrize("override, message", [
    ("data.source=bogus", "Unknown data.source 'bogus'; expected one of fine_foods"),
    ("data.source=csv", "data.path must name the CSV file when data.source is 'csv'"),
    ("train.learning_rate=-1", "train.learning_rate must be a finite number > 0 or auto, got -1.0"),
    ("train.learning_rate=.nan", "train.learning_rate must be a finite number > 0 or auto, got nan"),
    ("train.batch_size=0", "train.batch_size must be >= 1, got 0"),
    ("train.epochs=0", "train.epochs must be >= 1, got 0"),
    ("data.test_fraction=0", "data.test_fraction must be in (0, 1), got 0.0"),
    ("data.validation_fraction=0.9", "must be below 1: no training examples would be left"),
    ("export.max_regression=-0.1", "export.max_regression must be in [0, 1]"),
    ("data.source=digits", "model 'text_fasttext' takes text inputs, but data.source "
                           "'digits' gives arrays"),
])
def test_tfkit_config_runs_every_check_that_needs_no_data(workdir, capsys, override, message):
    code, out, err = run_cli(capsys, "config", "--set", override)
    assert code == 2 and message in err and out == "", err
    code, _, err = run_cli(capsys, "train", "--set", override)
    assert code == 2 and message in err
    assert not Path("runs").exists()


def test_a_monitor_without_a_validation_split_is_refused_by_the_config():
    with pytest.raises(tfkit.ConfigError, match="train.monitor 'val_accuracy' needs a "
                                                "validation split"):
        config_from_dict({"data": {"validation_fraction": 0}, "train": {"monitor": "val_accuracy"}})


def test_export_into_a_folder_that_cannot_be_written(good_run, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code, _, err = run_cli(capsys, "export", str(good_run.run_dir), "--base-dir", str(blocker))
    assert code == 2 and f"tfkit: error: cannot write a SavedModel into '{blocker}" in err, err
    assert "nothing was published" in err and "Traceback" not in err
    assert blocker.read_text() == "not a folder"


def disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_during_export_leaves_no_version_and_no_staging(good_run, tmp_path,
                                                                    monkeypatch):
    monkeypatch.setattr(tfkit.export, "write_warmup_requests", disk_full)
    with pytest.raises(ExportError, match=r"exporting the SavedModel into .* failed: No space "
                                          r"left on device; nothing was published"):
        export_for_serving(good_run.model, good_run.preprocessor, good_run.label_names,
                           tmp_path / "m", samples=["tasty"])
    assert not (tmp_path / "m").exists()  # no version, no .export-* folder, no empty folder


def test_a_failed_models_config_says_which_version_is_live(good_run, tmp_path, monkeypatch):
    monkeypatch.setattr(tfkit.export, "write_model_config", disk_full)
    with pytest.raises(ExportError, match=r"version 1 is published and live at '.*m/1'.* "
                                          r"writing '.*models.config' failed: No space left"):
        export_for_serving(good_run.model, good_run.preprocessor, good_run.label_names,
                           tmp_path / "m", samples=["tasty"])
    assert (tmp_path / "m" / "1" / "saved_model.pb").is_file()


def test_a_saved_model_without_serving_default(workdir, capsys):
    class Other(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def other(self, text):
            return {"length": tf.strings.length(text)}

    module = Other()
    tf.saved_model.save(module, "odd/1", signatures={"other": module.other})
    for command in ("predict", "explain"):
        code, _, err = run_cli(capsys, command, "odd", "tasty")
        assert code == 2 and "has no 'serving_default' signature (it has: other)" in err, err
    code, _, err = run_cli(capsys, "evaluate", "odd")
    assert code == 2 and "has no assets.extra/tfkit.json (not a tfkit export?)" in err, err


def finished_copy(run, tmp_path):
    """A copy of a finished run folder whose model.keras the test may spoil."""
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run.run_dir, copy)
    return copy


def test_a_model_keras_that_is_not_a_keras_model(good_run, tmp_path, capsys):
    run = finished_copy(good_run, tmp_path)
    (run / "model.keras").write_bytes(b"PK but not really a zip")
    code, _, err = run_cli(capsys, "export", str(run), "--base-dir", str(tmp_path / "s"))
    assert code == 2 and f"'{run / 'model.keras'}' is not a Keras model file" in err, err
    # a zip whose config names a class that is no Keras object
    with zipfile.ZipFile(run / "model.keras", "w") as archive:
        archive.writestr("config.json", json.dumps({
            "module": "os", "class_name": "system", "config": {}, "registered_name": None}))
        archive.writestr("metadata.json", json.dumps({"keras_version": keras.__version__}))
    code, _, err = run_cli(capsys, "export", str(run), "--base-dir", str(tmp_path / "s"))
    assert code == 2 and "cannot be loaded as a Keras model" in err and "Traceback" not in err
    assert not (tmp_path / "s").exists()


def test_invalid_utf8_on_the_command_line_and_standard_input(good_run, tmp_path):
    command = [sys.executable, "-m", "tfkit.cli", "predict", str(good_run.export_path)]
    done = subprocess.run(command + [b"tasty", b"caf\xe9 ok"], capture_output=True, timeout=120)
    err = done.stderr.decode()
    assert done.returncode == 2, err
    assert "tfkit: error: input 2 is not valid UTF-8 text: byte 0xe9 at character 4" in err
    assert "Traceback" not in err
    done = subprocess.run(command + ["--input", "-"], input=b"tasty\nbad \xff\xfe\n",
                          capture_output=True, timeout=120)
    err = done.stderr.decode()
    assert done.returncode == 2
    assert "tfkit: error: standard input line 2 is not UTF-8 (byte 0xff)" in err, err


def test_lone_surrogates_in_python_inputs_are_refused_by_predict(good_run):
    with pytest.raises(ValueError, match="input 1 is not valid UTF-8 text: byte 0xff"):
        tfkit.predict(good_run.export_path, ["\udcff"])
    assert tfkit.predict(good_run.export_path, ["caf\u00e9"])[0]["label"] in ("good", "bad")


# --- 3. images ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def image_export(tmp_path_factory):
    """An untrained 8x8 grey image model that decodes at most 10,000 pixels."""
    pre = ImagePreprocessor(8, 8, 1, max_pixels=10_000)
    model = tfkit.build_model("image_cnn", num_classes=3, input_shape=pre.input_shape,
                              filters=[4])
    path = tmp_path_factory.mktemp("images") / "digits"
    samples = pre.export_samples(np.zeros((2, 8, 8, 1), np.uint8))
    return export_for_serving(model, pre, ["a", "b", "c"], path, samples=samples)


def encoded(fmt, shape, mode="RGB"):
    pixels = (np.random.default_rng(0).random(shape) * 255).astype("uint8")
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode).save(buffer, fmt)
    return buffer.getvalue()


def test_gif_and_bmp_reach_a_one_channel_model(image_export):
    signature = tf.saved_model.load(str(image_export)).signatures["serving_default"]
    images = [encoded("GIF", (20, 30, 3)), encoded("BMP", (20, 30, 3)),
              encoded("BMP", (20, 30), "L"), encoded("PNG", (20, 30, 4), "RGBA"),
              encoded("JPEG", (20, 30, 3))]
    out = signature(image_bytes=tf.constant(images))
    assert out["probabilities"].shape == (5, 3)
    np.testing.assert_allclose(out["probabilities"].numpy().sum(axis=1), 1.0, atol=1e-5)


def test_an_image_over_the_pixel_limit_is_refused_before_decoding(image_export):
    signature = tf.saved_model.load(str(image_export)).signatures["serving_default"]
    assert signature(image_bytes=tf.constant([encoded("PNG", (100, 100), "L")]))[
        "label"].shape == (1,)  # 10,000 pixels: the limit itself
    for fmt in ("PNG", "JPEG", "GIF", "BMP"):
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match=r"holds an image of\] \[150\] \[x\] \[120\] \[pixels; the "
                                 r"model takes at most\] \[10000\]"):
            signature(image_bytes=tf.constant([encoded(fmt, (120, 150, 3))]))
    facts = json.loads((image_export / "assets.extra" / "tfkit.json").read_text())
    assert facts["preprocessor"]["max_pixels"] == 10_000


def test_bytes_that_are_not_an_image_give_a_printable_error(image_export):
    signature = tf.saved_model.load(str(image_export)).signatures["serving_default"]
    with pytest.raises(tf.errors.InvalidArgumentError) as caught:
        signature(image_bytes=tf.constant([b"\xff\xfe\x80\x81\\ oops"]))
    message = caught.value.message  # a str: before, Python could not decode it
    assert r"first bytes:] [\\xff\\xfe\\x80\\x81\\x5c oo]" in message, message


def test_truncated_and_corrupt_images_keep_the_decoders_reason(image_export, workdir, capsys):
    png, jpeg = encoded("PNG", (20, 30, 3)), encoded("JPEG", (20, 30, 3))
    Path("cut.png").write_bytes(png[:100])
    spoiled = bytearray(jpeg[:500])
    spoiled[300:320] = bytes(20)
    Path("bad.jpg").write_bytes(bytes(spoiled))
    code, _, err = run_cli(capsys, "predict", str(image_export), "cut.png")
    assert code == 2 and "the model rejected the input: Invalid PNG data, size 100" in err, err
    code, _, err = run_cli(capsys, "predict", str(image_export), "bad.jpg")
    assert code == 2 and "the model rejected the input: Invalid JPEG data" in err, err
    assert "Detected at node" not in err and "{{" not in err


# --- 4. resume and export leftovers --------------------------------------------------------

class Crash(keras.callbacks.Callback):
    def __init__(self, at):
        super().__init__()
        self.at = at

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.at:
            raise KeyboardInterrupt("simulated crash")


class CountEpochs(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs += 1


def test_a_resumed_run_reports_the_whole_run(tiny_csv):
    overrides = tiny_overrides(tiny_csv, extra=GOOD[:2] + ["train.epochs=4", "export.enabled=false",
                                                          "train.backup_seconds=0"])
    with pytest.raises(KeyboardInterrupt):
        tfkit.train(None, overrides, callbacks=[Crash(at=1)])
    run_dir = next(Path("runs").glob("*/*")).resolve()
    first = json.loads((run_dir / "progress.json").read_text())
    assert first["epochs"] == 2 and first["attempts"] == 1 and first["train_seconds"] > 0
    result = tfkit.train(resume=run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs"] == 4 and metrics["resumes"] == 1
    assert 1 <= metrics["best_epoch"] <= 4
    assert metrics["train_seconds"] > first["train_seconds"]
    assert metrics["train_examples_per_second"] == pytest.approx(
        metrics["train_examples"] * 4 / metrics["train_seconds"], rel=0.01)
    assert len(result.history["loss"]) == 2  # this attempt trained epochs 3 and 4


def test_a_run_killed_during_its_export_resumes_into_the_export(tiny_csv, monkeypatch):
    import tfkit.training

    real = tfkit.training.export_for_serving

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed while exporting")

    monkeypatch.setattr(tfkit.training, "export_for_serving", killed)
    overrides = tiny_overrides(tiny_csv, extra=GOOD[:2] + ["train.epochs=3",
                                                          "export.blessing=false",
                                                          "export.enabled=true"])
    with pytest.raises(KeyboardInterrupt):
        tfkit.train(None, overrides)
    run_dir = next(Path("runs").glob("*/*")).resolve()
    assert json.loads((run_dir / "status.json").read_text())["state"] == "failed"
    trained = keras.models.load_model(run_dir / "model.keras", safe_mode=True)
    monkeypatch.setattr(tfkit.training, "export_for_serving", real)
    counter = CountEpochs()
    result = tfkit.train(resume=run_dir, callbacks=[counter])
    assert counter.epochs == 0  # nothing trained again
    assert result.export_path is not None and result.export_path.name == "1"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs"] == 3 and metrics["resumes"] == 1
    for mine, saved in zip(result.model.get_weights(), trained.get_weights()):
        np.testing.assert_array_equal(mine, saved)


def test_the_next_export_removes_stale_staging_folders(good_run, tmp_path, caplog):
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()

    def staging(name, owner=None, age=0.0):
        folder = model_dir / name
        (folder / "model").mkdir(parents=True)
        if owner is not None:
            (folder / "owner.json").write_text(json.dumps(owner))
        then = time.time() - age
        os.utime(folder, (then, then))
        return folder

    import socket

    host = socket.gethostname()
    dead = staging(".export-dead", {"pid": gone.pid, "host": host})
    live = staging(".export-live", {"pid": os.getpid(), "host": host})
    old = staging(".export-old", age=7 * 3600)
    fresh = staging(".export-fresh")
    with caplog.at_level("INFO", logger="tfkit"):
        export_for_serving(good_run.model, good_run.preprocessor, good_run.label_names,
                           model_dir, samples=["tasty"])
    assert not dead.exists() and not old.exists()
    assert live.exists() and fresh.exists()
    assert sorted(p.name for p in model_dir.iterdir()) == [".export-fresh", ".export-live", "1"]
    assert f"removed '{dead}', left by an export that did not finish" in caplog.text


# --- 5. a worse model never silently becomes the served version ----------------------------

class Spoil(keras.callbacks.Callback):
    """Before each validation, makes the model answer its first label always (or NaN
    everywhere): every epoch's validation, and so the best epoch, sees the spoiled model."""

    def __init__(self, nan=False):
        super().__init__()
        self.nan = nan

    def on_test_begin(self, logs=None):
        dense = self.model.get_layer("probabilities")
        kernel, bias = dense.get_weights()
        bias = np.where(np.arange(len(bias)) == 0, 100.0, -100.0).astype(bias.dtype)
        dense.set_weights([np.full_like(kernel, np.nan if self.nan else 0.0), bias])


def test_a_model_no_better_than_the_majority_label_is_not_published(workdir, capsys):
    write_tiny_csv("reviews.csv")
    overrides = tiny_overrides("reviews.csv", extra=GOOD + ["export.enabled=true"])
    result = tfkit.train(None, overrides, callbacks=[Spoil()])
    assert result.export_path is None and not Path("saved_models/fine_foods_fasttext").exists()
    status = json.loads((result.run_dir / "status.json").read_text())
    assert status["state"] == "finished" and status["published"] is False
    (reason,) = status["not_published"]
    assert reason.startswith("test_accuracy ") and "is not above" in reason
    assert "what always answering" in reason
    blessing = json.loads((result.run_dir / "metrics.json").read_text())["blessing"]
    assert blessing["blessed"] is False and blessing["reasons"] == [reason]
    # tfkit export refuses it too, and --force publishes it anyway
    code, _, err = run_cli(capsys, "export", str(result.run_dir))
    assert code == 2 and "is not published: test_accuracy" in err and "--force" in err, err
    code, out, err = run_cli(capsys, "export", str(result.run_dir), "--force")
    assert code == 0, err
    assert Path(json.loads(out)["export_path"]).name == "1"


def test_a_diverged_model_is_not_published_and_the_closing_line_says_so(workdir, capsys):
    write_tiny_csv("reviews.csv")
    from tfkit.runs import run_summary

    result = tfkit.train(None, tiny_overrides("reviews.csv", extra=GOOD + ["export.enabled=true"]),
                         callbacks=[Spoil(nan=True)])
    assert result.export_path is None
    reasons = result.metrics["blessing"]["reasons"]
    assert any(r.startswith("test_loss is nan (training diverged") for r in reasons), reasons
    assert "NOT published for serving (test_loss is nan" in run_summary(result.metrics,
                                                                         result.run_dir)


def test_a_model_worse_than_the_served_version_is_not_published(good_run):
    data = tfkit.load_data(tfkit.load_config(good_run.run_dir / "config.yaml").data)
    model_dir = good_run.export_path.parent
    worse = {"test_loss": 0.4, "test_accuracy": 0.75}
    verdict = bless(worse, data, model_dir, max_regression=0.02)
    assert verdict["blessed"] is False and verdict["served_version"] == str(good_run.export_path)
    assert verdict["served_accuracy"] == {"test_accuracy": 1.0}  # scored through the signature
    (reason,) = verdict["reasons"]
    assert reason == ("test_accuracy 0.7500 is 0.2500 below the served version 1's 1.0000 on "
                      "this run's test split (export.max_regression: 0.02)")
    assert bless(worse, data, model_dir, max_regression=0.3)["blessed"] is True
    assert bless({"test_loss": 0.1, "test_accuracy": 0.99}, data, model_dir, 0.02)["blessed"]


def test_small_data_gets_a_warning(workdir, caplog):
    write_tiny_csv("small.csv", 12)
    with caplog.at_level("WARNING", logger="tfkit"):
        tfkit.train(None, tiny_overrides("small.csv", extra=["export.enabled=false"]))
    assert "small data: the validation split has fewer than 5 examples of" in caplog.text
    assert "small data: the test split has fewer than 5 examples of" in caplog.text


# --- 6. files other processes read ---------------------------------------------------------

def test_published_files_are_readable_by_tf_serving_running_as_another_user(good_run, tmp_path):
    old = os.umask(0o022)
    try:
        path = export_for_serving(good_run.model, good_run.preprocessor, good_run.label_names,
                                  tmp_path / "m", samples=["tasty"])
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / MODEL_CONFIG).stat().st_mode) == 0o644
    for item in [path, *path.rglob("*")]:
        assert stat.S_IMODE(item.stat().st_mode) == (0o755 if item.is_dir() else 0o644), item


def test_the_warmup_file_stays_small_with_huge_texts(good_run, tmp_path):
    from tensorflow_serving.apis import prediction_log_pb2

    huge = "delicious " * 500_000  # a 5 MB review
    path = export_for_serving(good_run.model, good_run.preprocessor, good_run.label_names,
                              tmp_path / "m", samples=[huge] * 4 + ["tasty"])
    warmup = path / "assets.extra" / WARMUP_FILE
    assert warmup.stat().st_size <= WARMUP_MAX_BYTES
    records = [prediction_log_pb2.PredictionLog.FromString(r.numpy())
               for r in tf.data.TFRecordDataset(str(warmup))]
    requests = [r.predict_log.request for r in records if r.HasField("predict_log")]
    assert requests  # still warms the model up
    texts = []
    for request in requests:
        for name, proto in request.inputs.items():
            values = tf.make_ndarray(proto).ravel()
            if name == "examples":  # serving_examples: the text inside tf.train.Example protos
                values = [tf.train.Example.FromString(v).features.feature["text"].bytes_list
                          .value[0] for v in values]
            texts += [v.decode() for v in values]
    for record in records:  # the Classify API's requests hold Examples
        if record.HasField("classify_log"):
            texts += [e.features.feature["text"].bytes_list.value[0].decode()
                      for e in record.classify_log.request.input.example_list.examples]
    assert {request.model_spec.signature_name for request in requests} == {
        "serving_default", "serving_examples"}
    assert texts and max(len(t) for t in texts) == WARMUP_TEXT_CHARS


def test_large_images_still_warm_the_model_up(tmp_path):
    pre = ImagePreprocessor(8, 8, 1)
    model = tfkit.build_model("image_cnn", num_classes=2, input_shape=pre.input_shape,
                              filters=[4])
    big = encoded("PNG", (400, 400, 3))  # noise: ~480 KB, over the per-image warmup limit
    assert len(big) > 256 * 1024
    path = export_for_serving(model, pre, ["a", "b"], tmp_path / "m", samples=[big])
    warmup = path / "assets.extra" / WARMUP_FILE
    signatures = [prediction_log(r).model_spec.signature_name
                  for r in tf.data.TFRecordDataset(str(warmup))]  # Predict requests only
    assert "serving_default" in signatures and warmup.stat().st_size <= WARMUP_MAX_BYTES


def prediction_log(record):
    from tensorflow_serving.apis import prediction_log_pb2

    return prediction_log_pb2.PredictionLog.FromString(record.numpy()).predict_log.request


def test_error_messages_quote_only_a_short_excerpt_of_a_file(workdir, capsys):
    Path("system-like.txt").write_text("root:" + "z" * 5000 + "\n")
    code, _, err = run_cli(capsys, "train", *sets(tiny_overrides(extra=[
        "model.word_vectors=system-like.txt"])))
    assert code == 2 and "expected a word and its numbers separated by spaces" in err, err
    assert len(err.splitlines()[-1]) < 300 and "zzzzz" in err


# --- 7. what tfkit tells users to run works ----------------------------------------------

def hparams_seen_by_tensorboard(logdir):
    """The HParams tab's experiment and session groups, as a real TensorBoard server on
    ``logdir`` serves them to the browser."""
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir),
                             "--port", str(port), "--host", "127.0.0.1", "--load_fast=false"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def post(route, body):
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/data/plugin/hparams/{route}", data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"})
        return json.loads(urllib.request.urlopen(request, timeout=10).read())

    try:
        deadline, experiment = time.time() + 90, {}
        while time.time() < deadline:
            try:
                experiment = post("experiment", {"experimentName": ""})
                if experiment.get("hparamInfos") and experiment.get("metricInfos"):
                    break
            except OSError:
                pass
            time.sleep(1)
        groups = post("session_groups", {
            "experimentName": "", "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS"],
            "colParams": [], "startIndex": 0, "sliceSize": 10}) if experiment else {}
        return experiment, groups
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.slow
def test_hparams_metrics_show_with_the_printed_command_and_a_whole_runs_folder(good_run):
    from tfkit.runs import run_summary

    printed = run_summary(good_run.metrics, good_run.run_dir).split("tensorboard --logdir ")[-1]
    for logdir in (printed, good_run.run_dir.parent.parent):
        experiment, groups = hparams_seen_by_tensorboard(logdir)
        names = {h["name"] for h in experiment["hparamInfos"]}
        assert {"model.name", "train.learning_rate"} <= names, logdir
        metrics = {(m["name"].get("group", ""), m["name"]["tag"]) for m in experiment["metricInfos"]}
        assert {("validation", "epoch_loss"), ("validation", "epoch_accuracy"),
                ("train", "epoch_loss"), ("test", "epoch_accuracy")} <= metrics, (logdir, metrics)
        (group,) = groups["sessionGroups"]
        values = {(v["name"].get("group", ""), v["name"]["tag"]): v["value"]
                  for v in group["metricValues"]}
        assert values[("test", "epoch_accuracy")] == pytest.approx(1.0), values
        assert values[("validation", "epoch_loss")] == pytest.approx(
            good_run.history["val_loss"][-1], rel=1e-4)
