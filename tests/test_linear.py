"""text_linear's TF-IDF preprocessor and the linear baseline beside every run, as units."""

import json

import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_texts

from tfkit.baseline import baseline_unavailable, compare, linear_baseline
from tfkit.data import LabeledData, Split, load_preprocessor
from tfkit.data.tfidf import TfidfPreprocessor


def test_tfidf_weights_are_keras_counts_times_idf_and_survive_a_save(tmp_path):
    texts = ["good food", "bad food", "good tea", "good good food"]
    pre = TfidfPreprocessor(max_tokens=20, ngrams=2)
    pre.adapt(texts)
    vocabulary, idf = pre.vocabulary(), np.array(pre.idf_weights())
    assert "good food" in vocabulary and len(idf) == len(vocabulary) == pre.vocab_size
    # idf = log(1 + documents / (1 + documents with the term)): 'good' is in 3 of 4
    assert idf[vocabulary.index("good")] == pytest.approx(np.log(1 + 4 / 4), rel=1e-5)
    weights = pre(tf.constant(["good good food", "never seen words"])).numpy()
    assert weights[0, vocabulary.index("good")] == pytest.approx(2 * idf[vocabulary.index("good")])
    assert weights[0, vocabulary.index("good food")] > 0
    assert weights[1, 0] > 0 and weights[1, 1:].sum() == 0  # out-of-vocabulary only
    pre.save(tmp_path)
    saved = json.loads((tmp_path / "preprocessor.json").read_text())
    assert saved["type"] == "tfidf" and saved["ngrams"] == 2
    restored = load_preprocessor(tmp_path)
    assert isinstance(restored, TfidfPreprocessor) and restored.vocabulary() == vocabulary
    np.testing.assert_allclose(restored(tf.constant(["good good food", "never seen words"])),
                               weights, rtol=1e-6)


def test_tfidf_preprocessor_refuses_bad_settings():
    with pytest.raises(ValueError, match="ngrams must be 1, 2 or 3"):
        TfidfPreprocessor(ngrams=4)
    with pytest.raises(ValueError, match="no words"):
        TfidfPreprocessor().adapt(["!!!", "..."])



def test_baseline_learns_words_and_reports_on_the_test_split():
    texts, labels = tiny_texts(60)
    y = [0 if label == "good" else 1 for label in labels]
    half = 30
    train = Split(np.array(texts[:half], object), np.array(y[:half]))
    test = Split(np.array(texts[half:], object), np.array(y[half:]))
    report = linear_baseline(LabeledData(train, train, test, ["good", "bad"], "t"))
    assert report["model"] == "tfidf_logistic_regression"
    assert report["test_accuracy"] == 1.0 and report["C"] in (1.0, 4.0, 16.0, 64.0)
    assert report["train_examples"] == half and report["seconds"] >= 0
    # labels the words do not predict: the baseline is as good as chance, not better
    shuffled = np.random.default_rng(0).permutation(y[half:])
    noise = linear_baseline(LabeledData(train, train, Split(test.x, shuffled), ["good", "bad"], "t"))
    assert noise["test_accuracy"] < 0.8


def test_baseline_for_arrays_and_label_sets():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 4, 4)).astype(np.float32)
    y = (x[:, 0, 0] > 0).astype(np.int64)
    split = Split(x, y)
    report = linear_baseline(LabeledData(split, split, split, ["neg", "pos"], "t"))
    assert report["model"] == "logistic_regression" and report["test_accuracy"] > 0.95
    texts = ["oil paint", "etching paper", "oil etching", "video", "paper video"] * 8
    tags = ["oil", "etching", "paper", "video"]
    multi_hot = np.array([[float(t in text) for t in tags] for text in texts], np.float32)
    data = LabeledData(Split(np.array(texts, object), multi_hot),
                       Split(np.array(texts, object), multi_hot),
                       Split(np.array(texts, object), multi_hot), tags, "t", multi_label=True)
    report = linear_baseline(data)
    assert report["test_micro_f1"] == 1.0 and report["test_macro_f1"] == 1.0
    assert "test_accuracy" not in report


def test_no_baseline_for_multitask_images_or_without_validation():
    split = Split(np.array(["a b", "c d"], object), {"kind": np.array([0, 1])})
    assert baseline_unavailable(LabeledData(split, split, split, {"kind": ["x", "y"]}, "t")) \
        == "multi-task targets"
    images = Split(np.array([b"\x89PNG", b"\xff\xd8"], object), np.array([0, 1]))
    assert baseline_unavailable(LabeledData(images, images, images, ["x", "y"], "t")) == "encoded images"
    texts = Split(np.array(["a b", "c d"], object), np.array([0, 1]))
    empty = texts.take(slice(0, 0))
    assert "validation" in baseline_unavailable(LabeledData(texts, empty, texts, ["x", "y"], "t"))
    assert linear_baseline(LabeledData(texts, empty, texts, ["x", "y"], "t")) is None


def test_the_closing_words_compare_with_the_baseline():
    assert compare({"test_accuracy": 0.867}, {"test_accuracy": 0.973}).endswith(
        "(10.6 points better): try tfkit tune")
    assert "within 0.3 points" in compare({"test_accuracy": 0.970}, {"test_accuracy": 0.973})
    assert "this model 1.0 points better" in compare({"test_micro_f1": 0.62},
                                                      {"test_micro_f1": 0.61})
    assert compare({"test_accuracy": 0.9}, None) is None
