"""Pretrained keras-hub text backbones: a tiny randomly initialised BERT saved as a local
preset (nothing is downloaded) goes the whole way: train, export with its tokenizer inside,
reload, raw strings in, the same outputs as Keras; safe-mode .keras; TF Serving's session;
Mirrored over two logical CPUs and mixed precision."""

import inspect
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import HUB_WORDS, NEGATIVE, POSITIVE, make_hub_preset, run_cli, sets, write_tiny_csv

import tfkit
from tfkit.config import ConfigError


def hub_overrides(csv_path, preset, *extra):
    return ["data.source=csv", f"data.path={csv_path}", "data.text_column=review",
            "data.label_column=sentiment", "model.name=hub_text",
            f"model.params={{preset: {preset}}}", "data.max_len=16", "train.epochs=3",
            "train.batch_size=8", "train.optimizer=adam", "train.learning_rate=0.003",
            "train.verbose=0", "export.blessing=false", *extra]


@pytest.fixture(scope="module")
def hub_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hub")
    preset = make_hub_preset(folder / "tiny_bert", HUB_WORDS)
    csv_path = write_tiny_csv(folder / "reviews.csv", 80)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        result = tfkit.train(None, hub_overrides(csv_path, preset))
    return result, folder, preset


def test_hub_text_export_takes_raw_strings(hub_run):
    result, _, _ = hub_run
    assert result.export_path is not None and (result.run_dir / "hub_preprocessor").is_dir()
    texts = ["love it, my kids love it", "", "stale and bland " * 2000, "Très bon 美味しい"]
    loaded = tf.saved_model.load(str(result.export_path))
    served = loaded.signatures["serving_default"](text=tf.constant(texts))
    expected = result.model(result.preprocessor(tf.constant(texts)), training=False).numpy()
    np.testing.assert_allclose(served["probabilities"].numpy(), expected, atol=1e-5)
    ids = result.preprocessor(tf.constant(texts[:1]))["token_ids"].numpy()[0]
    assert ids[0] == 2 and 3 in ids.tolist()  # [CLS] ... [SEP]: the preset's own packer
    # the run's model.keras loads in safe mode, and answers the same
    restored = keras.models.load_model(result.run_dir / "model.keras", safe_mode=True)
    np.testing.assert_allclose(restored(result.preprocessor(tf.constant(texts))).numpy(),
                               expected, atol=1e-6)


def test_hub_text_loads_like_tf_serving(hub_run):
    result = hub_run[0]
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], str(result.export_path))
        sig = meta.signature_def["serving_default"]
        probs = sess.run(sig.outputs["probabilities"].name,
                         feed_dict={sig.inputs["text"].name: ["delicious and fresh", ""]})
    direct = tfkit.predict(result.export_path, ["delicious and fresh", ""])
    np.testing.assert_allclose(probs[:, 0], [d["probabilities"]["bad"] for d in direct], atol=1e-5)


def test_a_hub_export_answers_from_the_command_line_in_a_fresh_process(hub_run):
    """A new process has not imported keras-hub: TensorFlow Text's ops (the tokenizer inside
    the export) are registered when the export needs them."""
    result = hub_run[0]
    for command in ("predict", "explain", "rest"):
        done = subprocess.run([sys.executable, "-m", "tfkit.cli", command,
                               str(result.export_path), "delicious and fresh"],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        assert "keras_hub" not in done.stderr
        assert done.stdout.strip() and json.loads(done.stdout.splitlines()[0])


def test_hub_run_exports_again_without_its_preset(hub_run, capsys, tmp_path):
    """The run keeps its tokenizer: exporting later needs no preset folder."""
    result, folder, preset = hub_run
    moved = shutil.move(preset, tmp_path / "elsewhere")
    try:
        code, out, err = run_cli(capsys, "export", str(result.run_dir), "--base-dir",
                                 str(tmp_path / "exports"), "--force")
        assert code == 0, err
        (facts_file,) = (tmp_path / "exports").rglob("tfkit.json")
        assert json.loads(facts_file.read_text())["preprocessor"]["type"] == "hub_text"
        loaded = tf.saved_model.load(str(facts_file.parent.parent))
        served = loaded.signatures["serving_default"](text=tf.constant(["delicious"]))
        first = tfkit.predict(result.export_path, ["delicious"])[0]["probabilities"]
        np.testing.assert_allclose(served["probabilities"].numpy()[0],
                                   [first[name] for name in result.label_names], atol=1e-5)
    finally:
        shutil.move(moved, preset)


def test_a_folder_that_is_not_a_preset_is_named(workdir, capsys):
    csv_path = write_tiny_csv(workdir / "reviews.csv", 30)
    (workdir / "not_a_preset").mkdir()
    with pytest.raises(ConfigError, match="not a keras-hub preset folder"):
        tfkit.train(None, hub_overrides(csv_path, workdir / "not_a_preset"))
    code, _, err = run_cli(capsys, "train", *sets(hub_overrides(csv_path, workdir / "missing")))
    assert code == 2 and "is not a keras-hub preset folder" in err and "Traceback" not in err
    assert not (workdir / "runs").exists()


MIRRORED = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from tfkit.compiling import precision_policy
    from tfkit.data import HubTextPreprocessor
    from tfkit.models import build_model
    """) + inspect.getsource(make_hub_preset) + textwrap.dedent("""
    preset = make_hub_preset("tiny_bert", sys.argv[1].split())
    texts = tf.constant(sys.argv[1].split(" , ") * 4)
    pre = HubTextPreprocessor(preset, 12)
    x = {k: v.numpy() for k, v in pre(texts).items()}
    y = (np.arange(len(texts)) % 2).astype("int32")

    def run(strategy, initial, policy="none"):
        with precision_policy(policy), strategy.scope():
            keras.utils.set_random_seed(0)
            model = build_model("hub_text", num_classes=2, preset=preset, dropout=0.0)
            if initial is not None:
                model.set_weights(initial)
            weights = model.get_weights()
            model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
        ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
        history = model.fit(ds, epochs=2, shuffle=False, verbose=0)
        return weights, history.history["loss"], model.get_weights(), model

    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    initial, loss_one, one, _ = run(tf.distribute.get_strategy(), None)
    _, loss_two, two, _ = run(mirrored, initial)
    _, loss_mixed, _, mixed = run(mirrored, initial, "mixed_bfloat16")
    print("REPORT" + json.dumps({
        "loss_one": loss_one, "loss_two": loss_two, "loss_mixed": loss_mixed,
        "diff": max(float(np.max(np.abs(a - b))) for a, b in zip(one, two)),
        "moved": max(float(np.max(np.abs(a - b))) for a, b in zip(initial, one)),
        "mixed_output": str(mixed.output.dtype),
        "mixed_compute": mixed.get_layer("head_dropout").compute_dtype}))
""")


@pytest.mark.slow
def test_hub_text_mirrored_and_mixed_precision(tmp_path):
    script = tmp_path / "mirrored.py"
    script.write_text(MIRRORED)
    root = Path(__file__).resolve().parent.parent
    sentences = " , ".join(POSITIVE + NEGATIVE)
    done = subprocess.run([sys.executable, str(script), sentences], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600,
                          env={"PYTHONPATH": str(root), "TF_CPP_MIN_LOG_LEVEL": "2",
                               "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    line = next((x for x in done.stdout.splitlines() if x.startswith("REPORT")), None)
    assert line, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(line[len("REPORT"):])
    assert report["moved"] > 1e-4
    assert report["loss_one"] == pytest.approx(report["loss_two"], abs=1e-5)
    assert report["diff"] <= 1e-5, report
    assert np.isfinite(report["loss_mixed"]).all() and report["mixed_compute"] == "bfloat16"
    assert report["mixed_output"] == "float32"  # the softmax stays float32


@pytest.fixture(scope="module")
def backbone_runs(tmp_path_factory):
    """The two stages on the embedded digits, from a local weights file of a small
    MobileNetV3 (random weights, saved as a pretrained file would be)."""
    from tfkit.models.pretrained import backbone_of

    folder = tmp_path_factory.mktemp("backbone")
    params = "{alpha: 0.75, minimalistic: true}"
    probe = tfkit.build_model("image_backbone", input_shape=(8, 8, 1), num_classes=10,
                              backbone_params={"alpha": 0.75, "minimalistic": True})
    weights = folder / "mobilenet_v3_small_no_top.weights.h5"
    backbone_of(probe).save_weights(weights)
    keras.backend.clear_session()
    overrides = ["name=digits_backbone", "model.name=image_backbone",
                 f"model.params={{backbone: MobileNetV3Small, weights: {weights}, "
                 f"backbone_params: {params}}}", "data.limit=96", "train.epochs=1",
                 "train.fine_tune_epochs=1", "train.unfreeze_layers=12", "train.verbose=0",
                 "export.blessing=false"]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        second = tfkit.train("digits_cnn", overrides)
    return second, folder, weights, overrides


def test_image_backbone_trains_in_two_stages(backbone_runs):
    second, folder, _, _ = backbone_runs
    config = tfkit.load_config(second.run_dir / "config.yaml")
    first_dir = Path(config.train.init_from)
    assert first_dir.parent == second.run_dir.parent and first_dir != second.run_dir
    first = json.loads((first_dir / "metrics.json").read_text())
    assert "export_path" not in first and first["label_names"] == second.label_names
    assert config.train.unfreeze_layers == 12 and config.train.epochs == 1
    assert config.train.learning_rate == config.train.fine_tune_learning_rate
    from tfkit.models.pretrained import backbone_of

    trainable = [layer for layer in backbone_of(second.model).layers if layer.trainable]
    assert 0 < len(trainable) <= 12  # the top layers, BatchNormalization left frozen
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in trainable)
    assert second.export_path is not None  # only the second stage is exported
    assert [p.name for p in (folder / "saved_models" / "digits_backbone").iterdir()
            if p.name.isdigit()] == ["1"]


def test_image_backbone_export_takes_image_bytes(backbone_runs):
    second = backbone_runs[0]
    from tfkit.config import DataConfig
    from tfkit.data import load_data

    images = load_data(DataConfig(source="digits")).test.x[:6]
    png = [tf.io.encode_png(image).numpy() for image in images]
    loaded = tf.saved_model.load(str(second.export_path))
    served = loaded.signatures["serving_default"](image_bytes=tf.constant(png))
    expected = second.model(tf.cast(images, tf.float32), training=False).numpy()
    np.testing.assert_allclose(served["probabilities"].numpy(), expected, atol=1e-5)
    restored = keras.models.load_model(second.run_dir / "model.keras", safe_mode=True)
    np.testing.assert_allclose(restored(tf.cast(images, tf.float32)).numpy(), expected, atol=1e-6)
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], str(second.export_path))
        sig = meta.signature_def["serving_default"]
        probs = sess.run(sig.outputs["probabilities"].name,
                         feed_dict={sig.inputs["image_bytes"].name: png})
    np.testing.assert_allclose(probs, expected, atol=1e-5)


def test_bad_backbone_settings_are_named(backbone_runs, workdir, capsys):
    _, folder, weights, overrides = backbone_runs
    missing = [o.replace(str(weights), str(workdir / "no.weights.h5")) for o in overrides]
    code, _, err = run_cli(capsys, "train", "digits_cnn", *sets(missing))
    assert code == 2 and "is not a file" in err and "Traceback" not in err
    unfinished = workdir / "runs" / "x"
    unfinished.mkdir(parents=True)
    code, _, err = run_cli(capsys, "train", "digits_cnn", *sets(
        [*overrides, "train.fine_tune_epochs=0", f"train.init_from={unfinished}"]))
    assert code == 2 and "is not a finished tfkit run" in err
    code, _, err = run_cli(capsys, "train", "digits_cnn", "--set", "train.unfreeze_layers=2",
                           "--set", "data.limit=64", "--set", "train.epochs=1")
    assert code == 2 and "no nested backbone" in err
    assert not any((workdir / "runs").glob("*/2*"))  # no run folder was made


def test_hub_text_head_first_then_unfrozen(hub_preset):
    """The same unfreezing as the second stage of fine-tuning, on a keras-hub backbone."""
    from tfkit.models.pretrained import backbone_of, unfreeze

    model = tfkit.build_model("hub_text", num_classes=2, preset=hub_preset, trainable=False)
    head_only = len(model.trainable_weights)
    assert head_only == 2 and not backbone_of(model).trainable  # the Dense kernel and bias
    assert unfreeze(model, -1) > 0
    assert len(model.trainable_weights) > head_only
