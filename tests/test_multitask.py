"""Multi-task: several label columns, one shared encoder, one head and one serving output
per task, per-head metrics in TensorBoard."""

import csv
import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_overrides, tiny_texts
from test_models import TINY_PARAMS

import tfkit
from tfkit.config import ConfigError, DataConfig
from tfkit.data import load_data
from tfkit.data.sources import medium_family
from tfkit.export import export_for_serving
from tfkit.models import build_model
from tfkit.served import load_serving


@pytest.fixture
def multi_csv(workdir):
    """Reviews with a sentiment class and a numeric score that follows it."""
    texts, labels = tiny_texts(80)
    rng = np.random.default_rng(1)
    path = workdir / "multi.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["review", "sentiment", "stars"])
        for text, label in zip(texts, labels):
            stars = (4.5 if label == "good" else 1.5) + rng.normal(0, 0.3)
            writer.writerow([text, label, f"{stars:.2f}"])
    return path


HEADS = ["data.heads={sentiment: classification, stars: regression}"]


def multi_overrides(path, *extra):
    return tiny_overrides(path, model="multitask", extra=[
        *HEADS, "model.params={encoder: text_gru, encoder_params: {units: 4, embedding_dim: 8}}",
        *extra])


def test_csv_with_several_label_columns(multi_csv):
    config = tfkit.load_config(None, multi_overrides(multi_csv))
    data = load_data(config.data)
    assert data.heads == {"sentiment": "classification", "stars": "regression"}
    assert data.label_names == {"sentiment": ["bad", "good"], "stars": []}
    assert data.train.y["sentiment"].dtype == np.int32
    assert data.train.y["stars"].dtype == np.float32
    assert len(data.train) == len(data.train.y["stars"]) == len(data.train.x)


def test_multitask_train_export_predict(multi_csv, workdir):
    result = tfkit.train(None, multi_overrides(multi_csv, "train.epochs=3",  # the export is what
                                               "train.loss_weights={stars: 0.5}",  # this checks,
                                               "export.blessing=false",  # not the tiny model
                                               "export.enabled=true"))
    metrics = result.metrics
    for key in ("test_sentiment_accuracy", "test_stars_mae", "test_loss"):
        assert np.isfinite(metrics[key]), key
    assert metrics["heads"]["sentiment"] == {"num_classes": 2}
    assert metrics["heads"]["stars"]["mean"] == pytest.approx(3.0, abs=0.5)

    # per-head curves in TensorBoard
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(result.run_dir / "logs" / "validation")).Reload()
    tags = set(events.Tags()["tensors"]) | set(events.Tags()["scalars"])
    assert {"epoch_sentiment_accuracy", "epoch_stars_mae"} <= tags
    # the validation confusion matrix of the classification head, every epoch
    assert {"sentiment/confusion_matrix", "sentiment/classification_report"} <= (
        tags | set(events.Tags()["images"]))
    assert len(events.Tensors("sentiment/confusion_matrix")) == 3  # TF2 images are tensors
    assert len(result.history["val_sentiment_macro_f1"]) == 3
    # per-class scores of the classification head on the test split, agreeing with Keras
    matrix = np.array(metrics["test_confusion_matrix"]["sentiment"])
    assert matrix.sum() == metrics["test_examples"] and list(metrics["test_confusion_matrix"]) == ["sentiment"]
    assert np.trace(matrix) / matrix.sum() == pytest.approx(metrics["test_sentiment_accuracy"], abs=1e-6)
    assert set(metrics["test_per_class"]["sentiment"]) == set(result.label_names["sentiment"])
    assert 0 <= metrics["test_sentiment_macro_f1"] <= 1
    saved = json.loads((result.run_dir / "metrics.json").read_text())
    assert saved["test_confusion_matrix"] == metrics["test_confusion_matrix"]
    test_events = EventAccumulator(str(result.run_dir / "logs" / "test")).Reload()
    test_tags = set(test_events.Tags()["tensors"]) | set(test_events.Tags()["images"])
    assert {"sentiment/confusion_matrix", "sentiment/classification_report",
            "epoch_sentiment_macro_f1", "sentiment/good/pr_curves"} <= test_tags, test_tags
    assert not any(tag.startswith("stars/") for tag in test_tags)  # regression: no classes

    # the SavedModel returns every head, from raw text, the way TF Serving calls it
    _, signature, _ = load_serving(result.export_path)
    out = signature(text=tf.constant(["great taste, will buy again", "awful taste", ""]))
    assert set(out) == {"sentiment_probabilities", "sentiment_class_id", "sentiment_label",
                        "stars"}
    assert out["sentiment_probabilities"].shape == (3, 2) and out["stars"].shape == (3,)
    assert out["stars"].dtype == tf.float32
    predictions = tfkit.predict(result.export_path, ["great taste, will buy again"])
    assert set(predictions[0]) == {"sentiment", "stars"}
    assert predictions[0]["sentiment"]["label"] in ("bad", "good")
    assert isinstance(predictions[0]["stars"], float)
    # the regression head predicts in the target's units, not standardised ones
    assert 0.0 < predictions[0]["stars"] < 6.0
    with pytest.raises(ValueError, match=r"is a multi-task model: name the head to explain "
                                         r"\(--head\), one of sentiment; got None"):
        tfkit.explain_predictions(result.export_path, ["great taste"])
    explained = tfkit.explain_predictions(result.export_path, ["great taste, will buy again"],
                                          head="sentiment")[0]
    assert explained["label"] == predictions[0]["sentiment"]["label"]
    assert explained["probability"] == pytest.approx(
        predictions[0]["sentiment"]["probabilities"][explained["label"]], abs=1e-5)
    assert [w for w, _ in explained["words"]] == ["great", "taste,", "will", "buy", "again"]
    # the served model scored per head: its classification head agrees with the run's test
    # scores, the regression head's MAE with Keras's
    served = tfkit.evaluate(result.export_path)
    assert served["test_sentiment_accuracy"] == pytest.approx(metrics["test_sentiment_accuracy"], abs=1e-6)
    assert served["test_confusion_matrix"] == metrics["test_confusion_matrix"]
    assert served["test_stars_mae"] == pytest.approx(metrics["test_stars_mae"], rel=1e-4)
    # the finished run exported again as int8, each classification head checked
    from tfkit.publishing import export_run

    path = export_run(result.run_dir, name="int8", quantize="int8")
    facts = json.loads((path / "assets.extra" / "tfkit.json").read_text())
    quantized = facts["metrics"]["quantization"]
    assert quantized["mode"] == "int8" and 0 <= quantized["sentiment_label_agreement"] <= 1
    assert set(tfkit.predict(path, ["great taste"])[0]) == {"sentiment", "stars"}


def test_multitask_round_trip_every_head(workdir):
    """The registry round trip for the wrapper: fit step, .keras with safe_mode, export."""
    texts, labels = tiny_texts(32)
    pre = tfkit.TextPreprocessor(max_tokens=100, max_len=12)
    pre.adapt(texts)
    y = {"topic": np.array([0 if label == "good" else 1 for label in labels], np.int32),
         "score": np.linspace(1.0, 5.0, 32).astype(np.float32)}
    heads = {"topic": {"num_classes": 2}, "score": {"mean": 3.0, "std": 1.2}}
    model = build_model("multitask", vocab_size=pre.vocab_size, heads=heads,
                        **TINY_PARAMS["multitask"])
    model.compile("adam", {"topic": "sparse_categorical_crossentropy", "score": "mse"})
    ds = tfkit.token_dataset(texts, y, pre, 8, shuffle=True, bucket=True)
    assert np.isfinite(model.fit(ds, epochs=1, steps_per_epoch=2, verbose=0).history["loss"][0])
    model.save(workdir / "m.keras")
    restored = keras.models.load_model(workdir / "m.keras", safe_mode=True)
    ids = pre(tf.constant(texts[:4] + [""]))
    for head in heads:
        np.testing.assert_allclose(restored(ids)[head].numpy(), model(ids)[head].numpy(),
                                   atol=1e-5)
    path = export_for_serving(restored, pre, {"topic": ["good", "bad"], "score": []},
                              workdir / "sm", samples=texts[:4] + [""])
    facts = json.loads((path / "assets.extra" / "tfkit.json").read_text())
    assert facts["label_names"] == {"topic": ["good", "bad"], "score": []}
    _, signature, _ = load_serving(path)
    served = signature(text=tf.constant(texts[:4] + [""]))
    np.testing.assert_allclose(served["score"].numpy(), model(ids)["score"].numpy()[:, 0],
                               rtol=1e-5)


def test_tfds_several_label_columns_with_mock_data():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=24):
        data = load_data(DataConfig(source="tfds", name="civil_comments",
                                    heads={"toxicity": "regression", "insult": "regression"}))
    assert set(data.train.y) == {"toxicity", "insult"}
    assert data.train.y["toxicity"].dtype == np.float32 and len(data.test) == 24


def test_tate_source_gives_medium_family_and_year():
    data = load_data(DataConfig(source="tate", heads={"medium_family": "classification",
                                                      "year": "regression"}))
    assert data.label_names["medium_family"] == sorted(
        ["drawing", "media", "other", "painting", "photograph", "print"])
    assert 1990 <= data.train.y["year"].min() and data.train.y["year"].max() <= 2012
    assert len(data.train) + len(data.validation) + len(data.test) == 4284
    assert medium_family("Photograph, gelatin silver print on paper") == "photograph"
    assert medium_family("Etching and aquatint on paper") == "print"
    assert medium_family("Oil paint on canvas") == "painting"
    assert medium_family("Bronze") == "other"


def test_multitask_config_errors(multi_csv):
    with pytest.raises(ConfigError, match="model 'multitask' needs data.heads"):
        tfkit.load_config(None, ["model.name=multitask", "model.params={}"])
    with pytest.raises(ConfigError, match="data.heads is set, but model 'text_fasttext'"):
        tfkit.load_config(None, HEADS)
    with pytest.raises(ConfigError, match="data.heads.stars must be one of classification"):
        tfkit.load_config(None, multi_overrides(multi_csv, "data.heads={stars: ranking}"))
    with pytest.raises(ConfigError, match="train.loss_weights.starz: no such head"):
        tfkit.load_config(None, multi_overrides(multi_csv, "train.loss_weights={starz: 1}"))
    with pytest.raises(ConfigError, match="encoder_params.unitz"):
        tfkit.load_config(None, multi_overrides(
            multi_csv, "model.params={encoder: text_gru, encoder_params: {unitz: 4}}"))


def test_regression_column_with_text_is_a_clear_error(workdir):
    path = workdir / "bad.csv"
    path.write_text("review,sentiment,stars\ngood,good,4\nbad,bad,lots\ngood,good,5\n"
                    "bad,bad,1\ngood,good,4\n", encoding="utf-8")
    config = tfkit.load_config(None, multi_overrides(path))
    with pytest.raises(tfkit.DataError, match=r"row \d+: column 'stars' is 'lots', not a finite"):
        load_data(config.data)
