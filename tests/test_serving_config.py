"""The TF Serving contract: the Classify and Regress APIs run from tensorflow-serving-api's
requests in a TF1 session, and models.config's version labels (canary, rollback) read back with
TF Serving's own proto (what the server parses)."""

import json
import shutil

import numpy as np
import pytest
import tensorflow as tf
from conftest import run_cli, tiny_overrides
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

import tfkit
from tfkit.serving_config import LABELS_FILE, MODEL_CONFIG, LabelError, set_version_label


def served_config(base):
    """``{name: (base_path, [policy versions], {label: version})}`` as TF Serving reads it."""
    config = text_format.Parse((base / MODEL_CONFIG).read_text(),
                               model_server_config_pb2.ModelServerConfig())
    return {c.name: (c.base_path, list(c.model_version_policy.specific.versions),
                     dict(c.version_labels)) for c in config.model_config_list.config}


@pytest.fixture(scope="module")
def exported_three_times(tmp_path_factory):
    """``saved_models/`` holding ``reviews`` versions 1, 2 and 3 of a tiny untrained model,
    exported once for the module (each test changes a copy)."""
    pre = tfkit.TextPreprocessor(max_tokens=50, max_len=4)
    pre.adapt(["tasty", "stale"])
    model = tfkit.build_model("text_fasttext", vocab_size=pre.vocab_size, num_classes=2,
                              buckets=16)
    base = tmp_path_factory.mktemp("three_versions") / "saved_models"
    for _ in range(3):
        tfkit.export_for_serving(model, pre, ["good", "bad"], base / "reviews", samples=["tasty"])
    return base


@pytest.fixture
def three_versions(exported_three_times, tmp_path):
    """This test's own copy of ``saved_models/reviews`` with versions 1, 2 and 3."""
    shutil.copytree(exported_three_times, tmp_path / "saved_models")
    return tmp_path / "saved_models" / "reviews"


def test_canary_then_rollback_keeps_every_version(three_versions, capsys):
    base = three_versions.parent
    assert served_config(base) == {"reviews": ("/models/reviews", [], {})}  # newest only
    code, out, err = run_cli(capsys, "label", str(three_versions), "2", "stable")
    assert code == 0, err
    assert json.loads(out)["version_labels"] == {"stable": 2}
    code, _, err = run_cli(capsys, "label", str(three_versions), "3", "canary")
    assert code == 0, err
    assert served_config(base) == {"reviews": ("/models/reviews", [2, 3],
                                               {"stable": 2, "canary": 3})}
    # version 3 misbehaves: stable back to 1, canary off; nothing is deleted
    assert run_cli(capsys, "label", str(three_versions), "1", "stable")[0] == 0
    assert run_cli(capsys, "label", str(three_versions), "--remove", "canary")[0] == 0
    assert served_config(base) == {"reviews": ("/models/reviews", [1, 3], {"stable": 1})}
    assert sorted(p.name for p in three_versions.iterdir()) == ["1", "2", "3", LABELS_FILE]


def test_a_new_version_keeps_the_labels_and_is_served_beside_them(three_versions, tmp_path):
    set_version_label(three_versions, "stable", 1)
    pre = tfkit.TextPreprocessor(max_tokens=50, max_len=4)
    pre.adapt(["tasty", "stale"])
    model = tfkit.build_model("text_fasttext", vocab_size=pre.vocab_size, num_classes=2,
                              buckets=16)
    tfkit.export_for_serving(model, pre, ["good", "bad"], three_versions, samples=["tasty"])
    assert served_config(three_versions.parent)["reviews"][1:] == ([1, 4], {"stable": 1})


@pytest.mark.parametrize("argv, message", [
    (["9", "stable"], "has no version 9 to label 'stable'; its versions: 1, 2, 3"),
    (["2", "not a label"], "version label 'not a label' must be a letter followed by"),
    (["2", "1st"], "version label '1st' must be a letter followed by"),
    (["--remove", "stable"], "has no version label 'stable'"),
    (["2"], "give VERSION LABEL to point a label at a version, or --remove LABEL"),
])
def test_bad_labels_leave_the_config_as_it_was(three_versions, capsys, argv, message):
    before = (three_versions.parent / MODEL_CONFIG).read_bytes()
    code, _, err = run_cli(capsys, "label", str(three_versions), *argv)
    assert code == 2 and "tfkit: error: " in err and message in err, err
    assert (three_versions.parent / MODEL_CONFIG).read_bytes() == before
    assert not (three_versions / LABELS_FILE).exists()


def test_a_spoilt_labels_file_is_named(three_versions):
    (three_versions / LABELS_FILE).write_text("[1, 2]")
    with pytest.raises(LabelError, match=r"version_labels.json' is not a \{label: version\}"):
        set_version_label(three_versions, "stable", 1)


def test_export_with_a_label_and_another_serving_root(tiny_csv, capsys):
    result = tfkit.train(None, tiny_overrides(tiny_csv, extra=[
        "export.enabled=false", "export.serving_root=gs://bucket/models"]))
    code, out, err = run_cli(capsys, "export", str(result.run_dir), "--label", "canary",
                             "--force")
    assert code == 0, err
    version = json.loads(out)["export_path"]
    name = result.run_dir.parent.name
    assert served_config(tiny_csv.parent / "saved_models") == {
        name: (f"gs://bucket/models/{name}", [1], {"canary": 1})}
    assert version.endswith(f"{name}/1")
    code, _, err = run_cli(capsys, "export", str(result.run_dir), "--label", "two words",
                           "--force")
    assert code == 2 and "export --label 'two words' must be a letter" in err
    assert not (tiny_csv.parent / "saved_models" / name / "2").exists()


def run_request(path, request):
    """A ClassificationRequest / RegressionRequest as TF Serving runs it: the signature it
    names, loaded with the ``serve`` tag in a TF1 session, fed its Examples serialized.
    Returns the signature's method name and outputs."""
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        meta = tf.compat.v1.saved_model.loader.load(session, ["serve"], str(path))
        signature = meta.signature_def[request.model_spec.signature_name]
        examples = [e.SerializeToString() for e in request.input.example_list.examples]
        outputs = session.run({k: v.name for k, v in signature.outputs.items()},
                              {signature.inputs["inputs"].name: examples})
    return signature.method_name, outputs


def example_input(texts):
    from tensorflow_serving.apis import input_pb2

    from tfkit.export import make_examples

    return input_pb2.Input(example_list=input_pb2.ExampleList(
        examples=[tf.train.Example.FromString(e) for e in make_examples(texts, "text")]))


def test_the_classify_api_answers_what_predict_does(three_versions):
    from tensorflow_serving.apis import classification_pb2, model_pb2

    texts = ["tasty", "stale and bland", ""]
    request = classification_pb2.ClassificationRequest(
        model_spec=model_pb2.ModelSpec(name="reviews", signature_name="classification"),
        input=example_input(texts))
    method, out = run_request(three_versions / "3", request)
    assert method == "tensorflow/serving/classify"
    assert out["classes"].tolist() == [[b"good", b"bad"]] * 3
    predicted = tfkit.predict(three_versions / "3", texts)
    np.testing.assert_allclose(out["scores"], [[p["probabilities"]["good"],
                                                p["probabilities"]["bad"]] for p in predicted],
                               atol=1e-5)


def test_a_multitask_export_offers_classify_and_regress_per_head(tmp_path):
    from tensorflow_serving.apis import classification_pb2, model_pb2, regression_pb2

    pre = tfkit.TextPreprocessor(max_tokens=50, max_len=4)
    pre.adapt(["tasty", "stale"])
    model = tfkit.build_model("multitask", vocab_size=pre.vocab_size, encoder="text_gru",
                              heads={"sentiment": {"num_classes": 2},
                                     "stars": {"mean": 3.0, "std": 1.0}})
    path = tfkit.export_for_serving(model, pre, {"sentiment": ["good", "bad"], "stars": []},
                                    tmp_path / "multi", samples=["tasty", ""])
    texts = ["tasty", "stale"]
    predicted = tfkit.predict(path, texts)
    spec = model_pb2.ModelSpec(name="multi", signature_name="regression_stars")
    method, out = run_request(path, regression_pb2.RegressionRequest(
        model_spec=spec, input=example_input(texts)))
    assert method == "tensorflow/serving/regress" and set(out) == {"outputs"}
    np.testing.assert_allclose(out["outputs"], [p["stars"] for p in predicted], atol=1e-4)
    spec = model_pb2.ModelSpec(name="multi", signature_name="classification_sentiment")
    method, out = run_request(path, classification_pb2.ClassificationRequest(
        model_spec=spec, input=example_input(texts)))
    assert method == "tensorflow/serving/classify"
    np.testing.assert_allclose(out["scores"][:, 0],
                               [p["sentiment"]["probabilities"]["good"] for p in predicted],
                               atol=1e-5)
    from tensorflow_serving.apis import prediction_log_pb2

    kinds = [prediction_log_pb2.PredictionLog.FromString(r.numpy()).WhichOneof("log_type")
             for r in tf.data.TFRecordDataset(str(path / "assets.extra" /
                                                  "tf_serving_warmup_requests"))]
    assert kinds.count("classify_log") == 2 and kinds.count("regress_log") == 2


# TF Serving's BatchingParameters (tensorflow_serving/servables/tensorflow/
# session_bundle_config.proto; not in tensorflow-serving-api): its int64 wrapper fields, each
# written as `name { value: N }` in the text format
BATCHING_INT_FIELDS = {"max_batch_size", "batch_timeout_micros", "max_enqueued_batches",
                       "num_batch_threads", "max_execution_batch_size"}


def test_batching_parameters_beside_models_config(three_versions):
    import re

    from tfkit.serving_config import BATCHING, BATCHING_FILE, write_batching_parameters

    path = three_versions.parent / BATCHING_FILE
    lines = path.read_text().splitlines()
    parsed = {}
    for line in lines:
        match = re.fullmatch(r"(\w+) \{ value: (\d+) \}", line)
        assert match and match.group(1) in BATCHING_INT_FIELDS, line
        parsed[match.group(1)] = int(match.group(2))
    assert parsed == BATCHING and parsed["max_batch_size"] >= 1
    # a file someone tuned is kept by the next export
    write_batching_parameters(path, max_batch_size=128)
    set_version_label(three_versions, "stable", 1)  # rewrites models.config
    assert "max_batch_size { value: 128 }" in path.read_text()
    with pytest.raises(ValueError, match="batching parameter max_batch=4: expected one of"):
        write_batching_parameters(path, max_batch=4)


def test_readme_rest_bodies_are_what_the_exports_take(tmp_path):
    """README's curl bodies, built from exports with the presets' names, labels and heads."""
    import re
    from pathlib import Path

    from tfkit.served import ServedModel

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    pre = tfkit.TextPreprocessor(max_tokens=50, max_len=4)
    pre.adapt(["tasty", "stale"])
    single = tfkit.build_model("text_gru", vocab_size=pre.vocab_size, num_classes=2)
    multi = tfkit.build_model("multitask", vocab_size=pre.vocab_size, encoder="text_gru",
                              heads={"medium_family": {"num_classes": 2},
                                     "year": {"mean": 1900.0, "std": 50.0}})
    exports = {
        "fine_foods_fasttext": (single, ["great", "other"], "Delicious, will buy again"),
        "tate_multitask": (multi, {"medium_family": ["painting", "print"], "year": []},
                           "Portrait of a Lady")}
    shown = re.findall(r"curl -d '(.*)' \\\n +http://localhost:8501/v1/models/(\w+):(\w+)",
                       readme)
    assert len(shown) == 3, shown
    for body, name, method in shown:
        model, labels, text = exports[name]
        path = tfkit.export_for_serving(model, pre, labels, tmp_path / name, samples=["tasty"])
        bodies = ServedModel(path).rest_requests([text])
        key = method if method != "regress" else "regress_year"
        assert json.loads(body) == bodies[key], (name, method)
        assert body == json.dumps(bodies[key])


def test_tfkit_rest_prints_the_body_and_refuses_an_api_the_export_lacks(three_versions, capsys):
    from tfkit.served import ServedModel

    code, out, err = run_cli(capsys, "rest", str(three_versions), "tasty", "--api", "classify")
    assert code == 0, err
    assert json.loads(out) == ServedModel(three_versions).rest_requests(["tasty"])["classify"]
    assert "POST http://localhost:8501/v1/models/reviews:classify" in err
    code, out, err = run_cli(capsys, "rest", str(three_versions), "tasty", "--api", "regress_year")
    assert code == 2 and out == ""
    assert "has no 'regress_year' API; it takes predict, classify requests" in err
