"""The SavedModel contract: raw strings in, TF Serving layout, validate-then-publish."""

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_overrides, write_tiny_csv

import tfkit
from tfkit.export import ExportError, export_for_serving, make_examples, next_version


@pytest.fixture(scope="module")
def trained(tmp_path_factory, request):
    """One tiny finished run (CSV data), shared by the tests below."""
    root = tmp_path_factory.mktemp("export")
    old = os.getcwd()
    os.chdir(root)
    try:
        write_tiny_csv("reviews.csv")
        result = tfkit.train(None, tiny_overrides("reviews.csv", extra=[
            "train.epochs=2", "train.histogram_freq=1", "export.enabled=true"]))
    finally:
        os.chdir(old)
    return result


def test_layout_and_signature(trained):
    path = trained.export_path
    assert path.name == "1" and (path / "saved_model.pb").is_file()
    assert (path / "variables").is_dir()
    assert [p.name for p in path.parent.iterdir() if not p.name.startswith(".")] == ["1"]
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".export-")]
    loaded = tf.saved_model.load(str(path))
    signature = loaded.signatures["serving_default"]
    inputs = signature.structured_input_signature[1]
    assert list(inputs) == ["text"]
    assert inputs["text"].dtype == tf.string and inputs["text"].shape.as_list() == [None]
    assert set(signature.structured_outputs) == {"probabilities", "class_id", "label"}
    assert [n.decode() for n in loaded.label_names[0].numpy()] == ["bad", "good"]
    facts = json.loads((path / "assets.extra" / "tfkit.json").read_text())
    assert facts["label_names"] == ["bad", "good"]


def test_each_weight_is_stored_once(trained):
    """keras-team/keras#23553: ExportArchive.track(model) writes every weight twice."""
    reader = tf.train.load_checkpoint(str(trained.export_path / "variables" / "variables"))
    stored = sum(int(np.prod(shape)) for key, shape in reader.get_variable_to_shape_map().items()
                 if key.endswith("VARIABLE_VALUE"))
    assert stored == trained.model.count_params() + len(trained.label_names)  # + label_names


def test_raw_strings_including_empty_and_very_long(trained):
    _, signature, _ = tfkit.load_serving(trained.export_path)
    texts = ["delicious and fresh", "", "stale and bland " * 3000, "Très bon 美味しい", "!!!"]
    out = signature(text=tf.constant(texts))
    probs = out["probabilities"].numpy()
    assert probs.shape == (5, 2)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    expected = trained.model(trained.preprocessor(tf.constant(texts))).numpy()
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    assert out["class_id"].numpy().tolist() == expected.argmax(axis=1).tolist()
    assert {s.decode() for s in out["label"].numpy()} <= {"bad", "good"}


def test_loads_like_tf_serving(trained):
    """TF Serving loads the 'serve' tag in a session and feeds tensors by signature name."""
    path = str(trained.export_path)
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], path)
        sig = meta.signature_def["serving_default"]
        feed = {sig.inputs["text"].name: ["love it, my kids love it", ""]}
        probs, labels = sess.run([sig.outputs["probabilities"].name,
                                  sig.outputs["label"].name], feed_dict=feed)
    assert probs.shape == (2, 2) and len(labels) == 2
    direct = tfkit.predict(trained.export_path, ["love it, my kids love it", ""])
    np.testing.assert_allclose(probs[:, 0], [d["probabilities"]["bad"] for d in direct], atol=1e-5)


def test_tf_examples_signature_like_tf_serving(trained):
    """serving_examples takes serialized tf.train.Example protos with a bytes feature 'text'
    (fed in a TF1 session by signature, as TF Serving does), answers as serving_default does,
    and refuses an Example without the feature, naming it."""
    texts = ["love it, my kids love it", "", "stale and bland " * 3000, "Très bon 美味しい"]
    by_hand = [tf.train.Example(features=tf.train.Features(feature={"text": tf.train.Feature(
        bytes_list=tf.train.BytesList(value=[t.encode()]))})).SerializeToString() for t in texts]
    assert by_hand == make_examples(texts, "text")
    path = str(trained.export_path)
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], path)
        sig = meta.signature_def["serving_examples"]
        assert list(sig.inputs) == ["examples"] and sig.inputs["examples"].dtype == tf.string
        probs, labels = sess.run([sig.outputs["probabilities"].name, sig.outputs["label"].name],
                                 feed_dict={sig.inputs["examples"].name: by_hand})
        wrong = tf.train.Example(features=tf.train.Features(feature={"review": tf.train.Feature(
            bytes_list=tf.train.BytesList(value=[b"tasty"]))})).SerializeToString()
        with pytest.raises(tf.errors.InvalidArgumentError, match="Feature: text .* is required"):
            sess.run(sig.outputs["label"].name, feed_dict={sig.inputs["examples"].name: [wrong]})
    direct = tfkit.predict(trained.export_path, texts)
    np.testing.assert_allclose(probs[:, 1], [d["probabilities"]["good"] for d in direct], atol=1e-5)
    assert [label.decode() for label in labels] == [d["label"] for d in direct]


def test_warmup_requests_replay_like_tf_serving(trained):
    """assets.extra/tf_serving_warmup_requests: PredictionLog records (parsed with the real
    tensorflow-serving-api protos) that TF Serving replays in its session when it loads the
    version: the first sample alone, then all of them."""
    from tensorflow_serving.apis import prediction_log_pb2

    path = trained.export_path
    records = [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in
               tf.data.TFRecordDataset(str(path / "assets.extra" / "tf_serving_warmup_requests"))]
    requests = [record.predict_log.request for record in records
                if record.HasField("predict_log")]
    assert [r.model_spec.signature_name for r in requests] == \
        ["serving_default"] * 2 + ["serving_examples"] * 2
    # TF Serving's Classify API too: ClassificationRequests with the same Examples
    classify = [record.classify_log.request for record in records
                if record.HasField("classify_log")]
    assert [r.model_spec.signature_name for r in classify] == ["classification"] * 2
    assert len(records) == 6 and list(classify[1].input.example_list.examples) == [
        tf.train.Example.FromString(e) for e in tf.make_ndarray(requests[3].inputs["examples"])]
    assert {r.model_spec.name for r in requests} == {path.parent.name}
    examples = [tf.train.Example.FromString(e) for e in tf.make_ndarray(requests[3].inputs["examples"])]
    requests = requests[:2]
    texts = [[t.decode() for t in tf.make_ndarray(r.inputs["text"])] for r in requests]
    assert [e.features.feature["text"].bytes_list.value[0].decode() for e in examples] == texts[1]
    assert len(texts[0]) == 1 and texts[0] == texts[1][:1] and len(texts[1]) > 3
    assert "" in texts[1]  # the edge cases the export was checked with
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], str(path))
        sig = meta.signature_def["serving_default"]
        probs = sess.run(sig.outputs["probabilities"].name, feed_dict={
            sig.inputs["text"].name: tf.make_ndarray(requests[1].inputs["text"])})
    direct = tfkit.predict(path, texts[1])
    np.testing.assert_allclose(probs[:, 1], [d["probabilities"]["good"] for d in direct],
                               atol=1e-5)


def test_a_failing_warmup_request_publishes_nothing(trained, tmp_path, monkeypatch):
    """TF Serving refuses a version whose warmup fails: the export check replays them."""
    import tfkit.export

    write = tfkit.export.write_warmup_requests

    def wrong_input_name(path, model_name, inputs):
        return write(path, model_name, {e: {"txt": next(iter(feeds.values()))}
                                        for e, feeds in inputs.items()})

    monkeypatch.setattr(tfkit.export, "write_warmup_requests", wrong_input_name)
    base = tmp_path / "m"
    with pytest.raises(ExportError, match=r"warmup request 1 \(serving_default, inputs \['txt'\]\)"):
        export_for_serving(trained.model, trained.preprocessor, trained.label_names, base,
                           samples=["x", ""])
    assert not base.exists()  # no version, no staging folder, no empty model folder


def test_versions_increment_and_failed_check_publishes_nothing(trained, tmp_path):
    base = tmp_path / "m"
    first = export_for_serving(trained.model, trained.preprocessor, trained.label_names, base,
                               samples=["x"])
    second = export_for_serving(trained.model, trained.preprocessor, trained.label_names, base,
                                samples=["x"])
    assert (first.name, second.name) == ("1", "2") and next_version(base) == 3
    with pytest.raises(ExportError, match="differs from the Keras model"):
        export_for_serving(trained.model, trained.preprocessor, trained.label_names, base,
                           samples=["x"], atol=-1.0)
    assert sorted(p.name for p in base.iterdir()) == ["1", "2"]  # no 3, no staging left


def test_a_version_with_other_labels_or_input_is_refused(trained, tmp_path):
    """TF Serving switches a model's clients to its newest version: one with other labels
    (another dataset trained under the same name) or another input is refused, unwritten."""
    base = tmp_path / "m"
    export_for_serving(trained.model, trained.preprocessor, trained.label_names, base,
                       samples=["x"])
    with pytest.raises(ExportError, match=r"serves labels \['bad', 'good'\] \(input 'text'\).*"
                                          r"labels \['good', 'bad'\] \(input 'text'\).*version 2"):
        export_for_serving(trained.model, trained.preprocessor, ["good", "bad"], base,
                           samples=["x"])
    facts_file = base / "1" / "assets.extra" / "tfkit.json"
    facts = json.loads(facts_file.read_text())
    assert facts["serving_input"] == "text"
    facts_file.write_text(json.dumps({**facts, "serving_input": "image_bytes"}))
    with pytest.raises(ExportError, match=r"\(input 'image_bytes'\)"):
        export_for_serving(trained.model, trained.preprocessor, trained.label_names, base,
                           samples=["x"])
    assert [p.name for p in base.iterdir()] == ["1"]  # no version 2, no staging folder
    facts_file.unlink()  # a version tfkit did not describe is not compared
    assert export_for_serving(trained.model, trained.preprocessor, ["good", "bad"], base,
                              samples=["x"]).name == "2"


def test_models_config_names_every_model_for_tf_serving(trained, tmp_path):
    """<base>/models.config, parsed with TF Serving's own ModelServerConfig proto: one entry per
    model folder holding a version, base paths where the server sees them; rewritten whole."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    def entries(base):
        config = text_format.Parse((base / "models.config").read_text(),
                                   model_server_config_pb2.ModelServerConfig())
        return [(c.name, c.base_path, c.model_platform) for c in config.model_config_list.config]

    base = tmp_path / "served"
    (base / "empty_model").mkdir(parents=True)  # no version: not served
    export_for_serving(trained.model, trained.preprocessor, trained.label_names, base / "reviews",
                       samples=["x"])
    assert entries(base) == [("reviews", "/models/reviews", "tensorflow")]
    export_for_serving(trained.model, trained.preprocessor, trained.label_names, base / "alpha",
                       samples=["x"], serving_root="gs://bucket/models/")
    assert entries(base) == [("alpha", "gs://bucket/models/alpha", "tensorflow"),
                             ("reviews", "gs://bucket/models/reviews", "tensorflow")]
    assert sorted(p.name for p in base.iterdir()) == [
        "alpha", "batching_parameters.txt", "empty_model", "models.config",
        "reviews"]  # no temporary file left
    # the run's own export wrote one beside it, from its config's export.serving_root
    assert entries(trained.export_path.parent.parent) == [
        (trained.export_path.parent.name, f"/models/{trained.export_path.parent.name}",
         "tensorflow")]


def test_tensorboard_server_reads_the_logs(trained):
    """A real TensorBoard server lists the run's per-epoch scalars, learning rate included."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    logdir = trained.run_dir.parent.parent
    proc = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir),
                             "--port", str(port), "--host", "127.0.0.1", "--load_fast=false"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        tags = {}
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                url = f"http://127.0.0.1:{port}/data/plugin/scalars/tags"
                tags = json.loads(urllib.request.urlopen(url, timeout=5).read())
                if any(run.endswith("train") for run in tags):
                    break
            except OSError:
                pass
            time.sleep(1)
        train_run = next(run for run in tags if run.endswith("train"))
        assert {"epoch_loss", "epoch_accuracy", "epoch_learning_rate"} <= set(tags[train_run])
        val_run = next(run for run in tags if run.endswith("validation"))
        assert "epoch_loss" in tags[val_run]
        test_run = next(run for run in tags if run.endswith("test"))
        assert {"epoch_accuracy", "epoch_macro_f1"} <= set(tags[test_run])
        assert "epoch_macro_f1" in tags[val_run]
        url = (f"http://127.0.0.1:{port}/data/plugin/scalars/scalars?"
               f"run={urllib.request.quote(train_run)}&tag=epoch_loss")
        points = json.loads(urllib.request.urlopen(url, timeout=5).read())
        assert len(points) == 2  # two epochs
        # the validation confusion matrix, as an image and as a text table, per epoch
        images = json.loads(urllib.request.urlopen(
            f"http://127.0.0.1:{port}/data/plugin/images/tags", timeout=5).read())
        assert "confusion_matrix" in images[val_run]
        url = (f"http://127.0.0.1:{port}/data/plugin/images/images?"
               f"run={urllib.request.quote(val_run)}&tag=confusion_matrix")
        assert len(json.loads(urllib.request.urlopen(url, timeout=5).read())) == 2
        text = json.loads(urllib.request.urlopen(
            f"http://127.0.0.1:{port}/data/plugin/text/tags", timeout=5).read())
        assert {"confusion_matrix_table", "classification_report"} <= set(text.get(val_run, []))
        assert "misclassified" in text[val_run]
        assert {"confusion_matrix_table", "classification_report"} <= set(text[test_run])
        assert "confusion_matrix" in images[test_run]
        url = (f"http://127.0.0.1:{port}/data/plugin/text/text?"
               f"run={urllib.request.quote(test_run)}&tag=classification_report")
        (report,) = json.loads(urllib.request.urlopen(url, timeout=5).read())
        for name in trained.label_names:  # rendered as an HTML table, one row per class
            assert f"<td>{name}</td>" in report["text"], report["text"]
        # a precision-recall curve per class, validation per epoch and test at the end
        curves = json.loads(urllib.request.urlopen(
            f"http://127.0.0.1:{port}/data/plugin/pr_curves/tags", timeout=5).read())
        expected_tags = {f"{name}/pr_curves" for name in trained.label_names}
        assert set(curves[val_run]) == expected_tags == set(curves[test_run]), curves
        url = (f"http://127.0.0.1:{port}/data/plugin/pr_curves/pr_curves?"
               f"run={urllib.request.quote(val_run)}&tag={trained.label_names[0]}/pr_curves")
        served = json.loads(urllib.request.urlopen(url, timeout=5).read())
        assert len(served[val_run]) == 2  # two epochs
        assert {"precision", "recall", "thresholds"} <= set(served[val_run][-1])
        # weight histograms of every layer's weights, per epoch, in the train run
        histograms = json.loads(urllib.request.urlopen(
            f"http://127.0.0.1:{port}/data/plugin/histograms/tags", timeout=5).read())
        weights = {w.path.replace(":", "_") + "/histogram" for layer in trained.model.layers
                   for w in layer.weights}
        assert weights and weights <= set(histograms[train_run]), histograms
        url = (f"http://127.0.0.1:{port}/data/plugin/histograms/histograms?"
               f"run={urllib.request.quote(train_run)}&tag={urllib.request.quote(min(weights))}")
        assert len(json.loads(urllib.request.urlopen(url, timeout=5).read())) == 2  # 2 epochs
        # the op graph of what TF Serving runs (raw text in: lowercase, split, vocabulary
        # lookup, the LSTM's while loop, argmax to the label), next to Keras's conceptual graph
        graphs = json.loads(urllib.request.urlopen(
            f"http://127.0.0.1:{port}/data/plugin/graphs/info", timeout=5).read())
        assert graphs[train_run]["run_graph"] and "keras" in graphs[train_run]["tags"]
        url = (f"http://127.0.0.1:{port}/data/plugin/graphs/graph?"
               f"run={urllib.parse.quote(train_run, safe='')}&conceptual=false")
        ops = set(re.findall(r'op: "(\w+)"', urllib.request.urlopen(url, timeout=30).read().decode()))
        assert {"StringLower", "StringSplitV2", "LookupTableFindV2", "While", "ArgMax"} <= ops, ops
        # the config as hyperparameters of the run
        hparams = json.loads(urllib.request.urlopen(urllib.request.Request(
            f"http://127.0.0.1:{port}/data/plugin/hparams/experiment",
            data=json.dumps({"experimentName": ""}).encode(),
            headers={"Content-Type": "application/json"}), timeout=5).read())
        names = {h["name"] for h in hparams["hparamInfos"]}
        assert {"model.name", "train.learning_rate", "data.max_tokens"} <= names
        # the trained word vectors in the Projector tab, one per vocabulary word, labelled
        def projector(route, **query):
            url = f"http://127.0.0.1:{port}/data/plugin/projector/{route}"
            return urllib.request.urlopen(f"{url}?{urllib.parse.urlencode(query)}",
                                          timeout=30).read()

        assert json.loads(projector("runs")) == [train_run]
        info = json.loads(projector("info", run=train_run))
        vocabulary = trained.preprocessor.vocabulary()
        (embedding,) = info["embeddings"]
        name = embedding["tensorName"]
        weights = trained.model.get_layer("embedding").embeddings.numpy()
        assert [int(n) for n in embedding["tensorShape"]] == [len(vocabulary), weights.shape[1]]
        vectors = np.frombuffer(projector("tensor", run=train_run, name=name), np.float32)
        np.testing.assert_array_equal(vectors.reshape(len(vocabulary), -1),
                                      weights[: len(vocabulary)])
        words = projector("metadata", run=train_run, name=name).decode().splitlines()
        assert words == ["<pad>"] + vocabulary[1:] and words[1] == "[UNK]"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


class Scramble(keras.callbacks.Callback):
    """From epoch ``start`` on, each epoch begins from random weights and ends far worse."""

    def __init__(self, start=0):
        super().__init__()
        self.start = start

    def on_epoch_begin(self, epoch, logs=None):
        if epoch >= self.start:
            rng = np.random.default_rng(epoch)
            self.model.set_weights([5 * rng.standard_normal(w.shape) for w in self.model.get_weights()])


def validation_loss(result):
    from tfkit.datasets import make_dataset

    config = tfkit.load_config(result.run_dir / "config.yaml")
    data = tfkit.load_data(config.data)
    val_ds = make_dataset(data.validation, result.preprocessor, config, 8, training=False)
    return result.model.evaluate(val_ds, verbose=0, return_dict=True)["loss"]


def test_early_stopping_stops_and_restores_the_best_epoch(tiny_csv):
    overrides = tiny_overrides(tiny_csv, extra=[
        "train.epochs=6", "train.early_stopping_patience=1", "export.enabled=false",
        "data.validation_fraction=0.25"])
    result = tfkit.train(None, overrides, callbacks=[Scramble(start=1)])
    losses = result.history["val_loss"]
    assert len(losses) == 2 and losses[1] > losses[0], losses  # stopped after one worse epoch
    assert json.loads((result.run_dir / "metrics.json").read_text())["best_epoch"] == 1
    np.testing.assert_allclose(validation_loss(result), losses[0], rtol=1e-5)


def test_resume_after_a_crash_continues_from_the_backup(tiny_csv):
    """And keeps the best epoch from before the crash: the final model is the best of all
    four epochs, which the resumed process alone never saw."""
    before = []

    class Crash(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            before.append(logs["val_loss"])
            if epoch == 1:
                raise KeyboardInterrupt("simulated crash")

    overrides = tiny_overrides(tiny_csv, extra=["train.epochs=4", "export.enabled=false",
                                                "data.validation_fraction=0.25",
                                                "train.backup_seconds=0"])
    with pytest.raises(KeyboardInterrupt):
        tfkit.train(None, overrides, callbacks=[Crash()])
    run_dir = next(Path("runs").glob("*/*")).resolve()
    assert json.loads((run_dir / "status.json").read_text())["state"] == "failed"
    assert not (run_dir / "metrics.json").exists()
    result = tfkit.train(resume=run_dir, callbacks=[Scramble()])  # the resumed epochs end worse
    assert result.run_dir == run_dir
    assert len(result.history["loss"]) == 2  # epochs 3 and 4 only
    losses = before + result.history["val_loss"]
    best = json.loads((run_dir / "metrics.json").read_text())["best_epoch"]
    assert best == 1 + int(np.argmin(losses)) <= 2, losses
    np.testing.assert_allclose(validation_loss(result), min(losses), rtol=1e-5)
    assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"
    with pytest.raises(tfkit.ConfigError, match="state is 'finished'"):
        tfkit.train(resume=run_dir)


def test_backups_are_written_at_most_every_backup_seconds(tiny_csv):
    """With train.backup_seconds longer than the run, no backup (nor best-weights file) is
    written while training: a crash after epoch 2 resumes from the start, all 4 epochs."""
    class Crash(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                run_dir = next(Path("runs").glob("*/slow"))
                assert not (run_dir / "backup").exists() and not (run_dir / "checkpoints").exists()
                raise KeyboardInterrupt("simulated crash")

    overrides = tiny_overrides(tiny_csv, extra=["train.epochs=4", "export.enabled=false",
                                                "train.backup_seconds=3600", "train.run_name=slow"])
    with pytest.raises(KeyboardInterrupt):
        tfkit.train(None, overrides, callbacks=[Crash()])
    result = tfkit.train(resume=next(Path("runs").glob("*/slow")))
    assert len(result.history["loss"]) == 4 and result.metrics["epochs"] == 4
    assert 1 <= result.metrics["best_epoch"] <= 4


def test_evaluating_the_saved_model_scores_what_is_served(trained, monkeypatch, capsys):
    """tfkit evaluate saved_models/<name>: the served signature on raw strings gives the run's
    own test scores (same probabilities: same loss to 1e-4), and labels are matched by name."""
    from test_cli import run_cli

    monkeypatch.chdir(trained.run_dir.parents[2])  # the run's data path is relative to it
    code, out, err = run_cli(capsys, "evaluate", str(trained.export_path.parent))
    assert code == 0, err
    served = json.loads(out)
    expected = json.loads((trained.run_dir / "metrics.json").read_text())
    assert served["saved_model"] == str(trained.export_path)
    assert served["test_examples"] == expected["test_examples"]
    assert served["test_accuracy"] == pytest.approx(expected["test_accuracy"], abs=1e-6)
    assert served["test_loss"] == pytest.approx(expected["test_loss"], abs=1e-4)
    assert served["test_confusion_matrix"] == expected["test_confusion_matrix"]
    assert served["test_per_class"] == expected["test_per_class"]
    # newly labelled data, labels in another order of appearance: matched by name
    Path("new.csv").write_text("review,sentiment\nawful taste,bad\ngreat taste,good\n"
                               "stale and bland,bad\nlove it,good\n")
    new = tfkit.evaluate(trained.export_path, ["data.test_path=new.csv"])
    predicted = [p["label"] for p in tfkit.predict(trained.export_path, [
        "awful taste", "great taste", "stale and bland", "love it"])]
    truth = ["bad", "good", "bad", "good"]
    assert new["test_examples"] == 4
    assert new["test_accuracy"] == pytest.approx(np.mean([p == t for p, t in zip(predicted, truth)]))
    Path("other.csv").write_text("review,sentiment\n" + "".join(
        f"meh {i},so-so\nfine {i},good\n" for i in range(5)))
    code, _, err = run_cli(capsys, "evaluate", str(trained.export_path), "--set",
                           "data.path=other.csv", "--set", "data.test_path=other.csv")
    assert code == 2 and "the data's label 'so-so' is not one the SavedModel" in err


def test_endpoints_that_disagree_on_the_model_input_are_refused():
    """Every endpoint calls one traced model: preprocessing that gives it integers in one
    endpoint and floats in another cannot share it, and the export says so."""
    from tfkit.export import ExportError, shared_model_function

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    spec = [tf.TensorSpec([None, 2], tf.float32)]
    endpoints = {"as_floats": (lambda x: x, spec),
                 "as_integers": (lambda x: tf.cast(x, tf.int64), spec)}
    with pytest.raises(ExportError, match="give the model inputs of different types"):
        shared_model_function(model, endpoints)
    call = shared_model_function(model, {"as_floats": endpoints["as_floats"]})
    np.testing.assert_allclose(call(tf.ones((3, 2))).numpy(), model(tf.ones((3, 2))).numpy())
