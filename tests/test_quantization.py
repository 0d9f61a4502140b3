"""export.quantize: int8: Keras's own quantization of the served copy, checked on the test split."""

from __future__ import annotations

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_overrides, write_tiny_csv

import tfkit
from tfkit.cli import main
from tfkit.config import ConfigError
from tfkit.publishing import bless
from tfkit.quantization import check_quantizable, quantization_reasons, quantized_copy
from tfkit.runs import load_run


def variable_bytes(version) -> int:
    return sum(f.stat().st_size for f in (version / "variables").iterdir())


def stored_dtypes(version) -> dict:
    reader = tf.train.load_checkpoint(str(version / "variables" / "variables"))
    return {key: dtype for key, dtype in reader.get_variable_to_dtype_map().items()
            if key.endswith("VARIABLE_VALUE")}


@pytest.fixture(scope="module")
def quantized_run(tmp_path_factory):
    """A tiny fastText run (its default 65,536 hashed n-gram rows dominate the weights)
    exported with export.quantize: int8."""
    root = tmp_path_factory.mktemp("quantize")
    old = os.getcwd()
    os.chdir(root)
    try:
        write_tiny_csv("reviews.csv")
        result = tfkit.train(None, tiny_overrides("reviews.csv", model="text_fasttext", extra=[
            "train.epochs=3", "export.quantize=int8", "export.enabled=true"]))
    finally:
        os.chdir(old)
    return result


def test_the_export_holds_int8_weights_and_answers_as_the_quantized_model(quantized_run):
    version = quantized_run.export_path
    dtypes = stored_dtypes(version)
    facts = json.loads((version / "assets.extra" / "tfkit.json").read_text())
    quantization = facts["metrics"]["quantization"]
    assert quantization["mode"] == "int8"
    # one table for words and hashed n-grams, and the head's kernel
    assert quantization["layers"] == ["embedding", "probabilities"]
    assert list(dtypes.values()).count(tf.int8) == 2, dtypes
    assert 0.0 <= quantization["label_agreement"] <= 1.0
    assert quantization["accuracy_change"] == pytest.approx(
        quantization["accuracy"] - quantization["float_accuracy"], abs=1e-5)
    # the run's own scores and model stay the float model's
    assert quantized_run.metrics["test_accuracy"] == pytest.approx(
        quantization["float_accuracy"], abs=1e-6)
    _, model, preprocessor, _ = load_run(quantized_run.run_dir)
    assert all(w.dtype == "float32" for w in model.weights)
    texts = ["delicious and fresh", "", "stale and bland " * 500, "Très bon"]
    expected = quantized_copy(model, "int8")[0](preprocessor(tf.constant(texts))).numpy()
    float_answers = model(preprocessor(tf.constant(texts))).numpy()
    assert not np.array_equal(expected, float_answers)  # quantizing changed something
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:  # as TF Serving loads it
        meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], str(version))
        signature = meta.signature_def["serving_default"]
        served = sess.run(signature.outputs["probabilities"].name,
                          {signature.inputs["text"].name: texts})
    np.testing.assert_allclose(served, expected, atol=1e-5)


def test_tfkit_export_quantizes_a_float_run_and_sizes_differ(quantized_run, tmp_path, capsys,
                                                            monkeypatch):
    monkeypatch.chdir(quantized_run.run_dir.parents[2])  # where its data.path is
    run_dir = str(quantized_run.run_dir)
    assert main(["export", run_dir, "--base-dir", str(tmp_path), "--name", "m",
                 "--quantize", "none"]) == 0
    assert main(["export", run_dir, "--base-dir", str(tmp_path), "--name", "m",
                 "--quantize", "int8"]) == 0
    float_version, int8_version = tmp_path / "m" / "1", tmp_path / "m" / "2"
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["export_path"] == str(
        int8_version)
    assert tf.int8 not in stored_dtypes(float_version).values()
    assert tf.int8 in stored_dtypes(int8_version).values()
    assert variable_bytes(int8_version) < 0.4 * variable_bytes(float_version)
    facts = json.loads((int8_version / "assets.extra" / "tfkit.json").read_text())
    assert facts["metrics"]["quantization"]["mode"] == "int8"
    assert "quantization" not in json.loads(
        (float_version / "assets.extra" / "tfkit.json").read_text())["metrics"]


def test_unknown_mode_and_nothing_to_quantize_are_refused(tiny_csv):
    with pytest.raises(ConfigError, match="export.quantize must be one of none, int8; got 'int4'"):
        tfkit.load_config(None, tiny_overrides(tiny_csv, extra=["export.quantize=int4"]))
    inputs = keras.Input((8, 3))
    convolution = keras.Model(inputs, keras.layers.GlobalAveragePooling1D()(
        keras.layers.Conv1D(2, 3, activation="softmax")(inputs)))
    with pytest.raises(ConfigError, match="no layer Keras can quantize.*Conv1D"):
        check_quantizable(convolution, "int8", "conv")
    check_quantizable(convolution, "none", "conv")  # nothing asked: nothing refused


def test_a_quantized_model_that_loses_too_much_is_not_published(tiny_csv, monkeypatch):
    """The checks before serving judge the quantized model: here one whose accuracy fell
    by 0.3 against the float model is refused, and nothing is published."""
    import tfkit.publishing

    real = tfkit.publishing.quantize_for_serving

    def worse(model, mode, test_ds, predicted):
        quantized, facts = real(model, mode, test_ds, predicted)
        facts["accuracy"] = facts["float_accuracy"] - 0.3
        facts["accuracy_change"] = -0.3
        return quantized, facts

    monkeypatch.setattr(tfkit.publishing, "quantize_for_serving", worse)
    result = tfkit.train(None, tiny_overrides(tiny_csv, model="text_fasttext", extra=[
        "train.epochs=2", "export.quantize=int8", "export.enabled=true"]))
    assert result.export_path is None and not (tiny_csv.parent / "saved_models").exists()
    status = json.loads((result.run_dir / "status.json").read_text())
    assert status["state"] == "finished" and status["published"] is False
    assert "quantized (int8) test accuracy" in status["not_published"][0]


def test_quantization_reasons_name_the_head_and_the_limit(tiny_csv):
    facts = {"mode": "int8", "sentiment_accuracy": 0.70, "sentiment_float_accuracy": 0.80,
             "sentiment_accuracy_change": -0.10, "topic_accuracy": 0.79,
             "topic_float_accuracy": 0.80, "topic_accuracy_change": -0.01}
    reasons = quantization_reasons(facts, 0.02)
    assert len(reasons) == 1 and "sentiment_accuracy 0.7000 is 0.1000 below" in reasons[0]
    assert "export.max_regression: 0.02" in reasons[0]
    data = tfkit.load_data(tfkit.load_config(None, tiny_overrides(tiny_csv)).data)
    blessing = bless({"test_accuracy": 0.99, "test_loss": 0.1}, data, tiny_csv.parent / "none",
                     0.02, reasons)
    assert blessing["blessed"] is False and blessing["reasons"] == reasons


def test_a_multi_task_model_is_scored_head_by_head():
    """Each classification head's quantized accuracy, agreement and change, and the scores
    the checks before serving judge (test_<head>_accuracy) taken from the quantized model."""
    from tfkit.monitor import predictions, traced_call
    from tfkit.quantization import quantize_for_serving, served_metrics

    rng = np.random.default_rng(0)
    inputs = keras.Input((6,))
    trunk = keras.layers.Dense(16, activation="relu", name="trunk")(inputs)
    model = keras.Model(inputs, {"a": keras.layers.Dense(3, activation="softmax", name="a")(trunk),
                                 "b": keras.layers.Dense(2, activation="softmax", name="b")(trunk)})
    x = rng.normal(size=(40, 6)).astype("float32")
    y = {"a": rng.integers(0, 3, 40), "b": rng.integers(0, 2, 40)}
    test = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    labels, probabilities = predictions(traced_call(model), test)
    predicted = {head: (labels[head], probabilities[head]) for head in ("a", "b")}
    quantized, facts = quantize_for_serving(model, "int8", test, predicted)
    assert sorted(facts["layers"]) == ["a", "b", "trunk"]
    for head in ("a", "b"):
        expected = np.mean(probabilities[head].argmax(1) == labels[head])
        assert facts[f"{head}_float_accuracy"] == pytest.approx(expected, abs=1e-6)
        assert 0.9 <= facts[f"{head}_label_agreement"] <= 1.0
    judged = served_metrics({"test_a_accuracy": 0.0, "test_b_accuracy": 0.0, "other": 1}, facts)
    assert judged["test_a_accuracy"] == facts["a_accuracy"] and judged["other"] == 1
    assert judged["test_b_loss"] == facts["b_loss"]
