"""The validation confusion matrix: counts right over length buckets, traced not eager; the
per-class scores derived from it (checked against scikit-learn);
the word vectors for the Projector: one per vocabulary word, wherever the embedding sits."""

import numpy as np
import pytest
import tensorflow as tf
from conftest import summaries

import tfkit
from tfkit.monitor import (
    EMBEDDING_TENSOR,
    ClassCounts,
    ConfusionMatrix,
    classification_report,
    confusion_counts,
    head_counts,
    log_misclassified,
)


def test_confusion_matrix_counts_every_validation_example(tmp_path):
    """From Keras's own validation pass (the compiled ClassCounts metric), over length
    buckets and full batches whose filler rows weigh 0: the confusion matrix, the PR-curve
    counts and val_macro_f1 are those of the validation examples, predicted one by one."""
    import keras

    rng = np.random.default_rng(0)
    words = ["good", "bad", "tasty", "stale", "fine", "awful", "great"]
    texts = [" ".join(rng.choice(words, size=rng.integers(1, 30))) for _ in range(90)]
    labels = rng.integers(0, 3, size=90)
    pre = tfkit.TextPreprocessor(max_tokens=50, max_len=30)
    pre.adapt(texts)
    ds = tfkit.token_dataset(texts, labels, pre, 8, bucket=True, full_batches=True)
    shapes = {tuple(batch.shape) for batch, _, _ in ds}
    assert len(shapes) >= 3  # several bucket lengths, filled partial batches
    model = tfkit.build_model("text_lstm", vocab_size=pre.vocab_size, num_classes=3,
                              embedding_dim=4, units=4)
    model.compile("adam", "sparse_categorical_crossentropy",
                  weighted_metrics=["accuracy", ClassCounts(3)])
    callback = ConfusionMatrix(tmp_path / "logs", ["neg", "neu", "pos"])
    callback.set_model(model)

    expected = np.zeros((3, 3), np.int64)
    probabilities = model.predict(pre(np.array(texts)), verbose=0)
    for true, predicted in zip(labels, np.argmax(probabilities, -1)):
        expected[true, predicted] += 1
    for epoch in range(2):
        logs = model.evaluate(ds, verbose=0, return_dict=True)
        callback.on_epoch_end(epoch, {f"val_{k}": v for k, v in logs.items()})
    (counts,) = [m for m in head_counts(model).values()]
    np.testing.assert_array_equal(counts.counts()[0], expected)
    assert expected.sum() == 90
    assert abs(logs["macro_f1"] - classification_report(expected, ["a", "b", "c"])["macro_f1"]) < 1e-6
    assert isinstance(keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(counts)), ClassCounts)
    callback.on_train_end()

    tables = [tf.make_ndarray(value.tensor).item().decode() for _, value in summaries(
        tmp_path / "logs" / "validation")["confusion_matrix_table"]]
    assert len(tables) == 2
    rows = [line for line in tables[0].splitlines() if line.startswith("| **")]
    counts = [[int(v) for v in row.split("|")[2:-1]] for row in rows]
    np.testing.assert_array_equal(counts, expected)
    # per-class scores and the macro F1 of the same matrix, per epoch
    logged = summaries(tmp_path / "logs" / "validation")
    report = tf.make_ndarray(logged["classification_report"][-1][1].tensor).item().decode()
    assert [line.split("|")[1].strip() for line in report.splitlines()[2:]] == [
        "neg", "neu", "pos", "**macro average**"]
    assert "epoch_macro_f1" not in logged  # Keras's TensorBoard callback logs val_macro_f1
    # one precision-recall curve per class against the others: counts at 201 thresholds
    for i, name in enumerate(["neg", "neu", "pos"]):
        curve = tf.make_ndarray(logged[f"{name}/pr_curves"][-1][1].tensor)
        assert curve.shape == (6, 201)
        tp, fp = curve[0], curve[1]
        buckets = np.floor(probabilities[:, i] * 200)  # the threshold each example clears
        for k in (0, 60, 100, 170):
            assert tp[k] == np.sum((labels == i) & (buckets >= k)), (name, k)
            assert fp[k] == np.sum((labels != i) & (buckets >= k)), (name, k)
        assert tp[0] == expected[i].sum() and tp[0] + fp[0] == 90


def test_classification_report_matches_scikit_learn():
    """Against an independent implementation, with a class the model never predicts (its
    precision is 0) and a class absent from the labels (its recall is 0)."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    rng = np.random.default_rng(1)
    true = rng.choice([0, 1, 2], size=200, p=[0.6, 0.4, 0.0])
    predicted = rng.choice([0, 1, 3], size=200)
    matrix = confusion_matrix(true, predicted, labels=[0, 1, 2, 3])
    report = classification_report(matrix, ["a", "b", "c", "d"])
    precision, recall, f1, support = precision_recall_fscore_support(
        true, predicted, labels=[0, 1, 2, 3], zero_division=0)
    rows = report["per_class"]
    np.testing.assert_allclose([rows[n]["precision"] for n in "abcd"], precision)
    np.testing.assert_allclose([rows[n]["recall"] for n in "abcd"], recall)
    np.testing.assert_allclose([rows[n]["f1"] for n in "abcd"], f1)
    assert [rows[n]["support"] for n in "abcd"] == support.tolist()
    assert rows["c"]["precision"] == 0 and rows["c"]["recall"] == 0  # never seen, never said
    assert rows["d"]["precision"] == 0 and rows["d"]["support"] == 0
    assert abs(report["macro_f1"] - f1.mean()) < 1e-12
    assert report["confusion_matrix"] == matrix.tolist()


@pytest.mark.parametrize("name", ["text_fasttext", "han", "multitask"])
def test_log_embeddings_writes_one_labelled_vector_per_word(tmp_path, name):
    """fastText's table holds hashed bigram rows past the vocabulary (left out); the
    multi-task model's embedding sits inside its shared encoder."""
    pre = tfkit.TextPreprocessor(max_tokens=50, max_len=8)
    pre.adapt(["good tasty snack", "stale bad crackers", "good value"])
    extra = ({"heads": {"stars": {"mean": 3.0, "std": 1.0}, "sentiment": {"num_classes": 2}}}
             if name == "multitask" else {"num_classes": 2})
    model = tfkit.build_model(name, vocab_size=pre.vocab_size, **extra)
    path = tfkit.log_embeddings(tmp_path, model, pre.vocabulary())
    table = next(w for w in model.weights if w.path.endswith("embeddings")).numpy()
    assert table.shape[0] >= pre.vocab_size and (name != "text_fasttext" or
                                                 table.shape[0] > pre.vocab_size)
    np.testing.assert_array_equal(tf.train.load_checkpoint(str(path)).get_tensor(
        EMBEDDING_TENSOR), table[: pre.vocab_size])
    assert tf.train.latest_checkpoint(str(tmp_path / "train")) == str(path)
    words = (tmp_path / "train" / "metadata.tsv").read_text(encoding="utf-8").splitlines()
    assert words == ["<pad>", "[UNK]"] + pre.vocabulary()[2:]


def test_log_embeddings_skips_models_without_a_word_embedding(tmp_path):
    model = tfkit.build_model("image_cnn", input_shape=(8, 8, 1), num_classes=3)
    assert tfkit.log_embeddings(tmp_path, model, ["", "[UNK]", "a"]) is None
    assert not (tmp_path / "train").exists()


def test_log_misclassified_lists_the_most_confident_errors(tmp_path):
    texts = ["good tasty snack", "stale | crackers", "good value", "awful", "tasty " * 80,
             "bad bad", "good"]
    pre = tfkit.TextPreprocessor(max_tokens=50, max_len=16)
    pre.adapt(texts)
    model = tfkit.build_model("text_lstm", vocab_size=pre.vocab_size, num_classes=2,
                              embedding_dim=4, units=4)
    probabilities = model(pre(tf.constant(texts))).numpy()
    labels = 1 - probabilities.argmax(axis=1)  # every text wrong but the first
    labels[0] = probabilities[0].argmax()
    expected = sorted(range(1, 7), key=lambda i: -probabilities[i].max())
    rows = log_misclassified(tmp_path, model, pre, texts, labels, ["neg", "pos"], step=4,
                             count=3)
    assert [r["text"] for r in rows] == [texts[i] for i in expected[:3]]
    for row, i in zip(rows, expected):
        assert row["label"] == ["neg", "pos"][labels[i]] != row["predicted"]
        assert row["probability"] == pytest.approx(probabilities[i].max(), abs=1e-6)
    assert list(summaries(tmp_path / "validation")) == ["misclassified"]
    ((step, value),) = summaries(tmp_path / "validation")["misclassified"]
    assert step == 4
    table = tf.make_ndarray(value.tensor).item().decode()
    assert table.startswith("6 of 7 validation examples misclassified")
    assert len([line for line in table.splitlines() if line.startswith("| ")]) == 1 + 3
    rows = log_misclassified(tmp_path / "all", model, pre, texts, labels, ["neg", "pos"], step=0)
    assert len(rows) == 6 and texts[0] not in [r["text"] for r in rows]
    ((_, value),) = summaries(tmp_path / "all" / "validation")["misclassified"]
    table = tf.make_ndarray(value.tensor).item().decode()
    assert "| stale \\| crackers |" in table  # a | in a text is escaped, not a new column
    # the words that misled it: each row's 3 most important words, from its own text
    for row in rows:
        assert len(row["words"]) == min(3, len(row["text"].split()))
        assert {w for w, _ in row["words"]} <= set(row["text"].split())
        assert [v for _, v in row["words"]] == sorted((v for _, v in row["words"]), reverse=True)
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    assert lines[0].endswith("| words that misled it |")
    assert all(line.count(" | ") == 4 for line in lines)  # 5 cells: "|" in a word escaped
    assert "\\| (" in table  # the lone "|" of "stale | crackers", as a word
    assert "tasty " * 49 + "tasty …" in table  # long texts cut at 300 characters


def test_monitor_val_macro_f1_keeps_the_epoch_with_the_best_validation_f1(workdir):
    """ConfusionMatrix puts val_macro_f1 into the epoch's logs before the checkpoint sees
    them: the history has it every epoch, and the model tfkit.train returns (the best
    checkpoint's weights) scores the history's maximum on the validation split. The labels
    are noisy, so the F1 moves from epoch to epoch."""
    import csv

    from conftest import tiny_overrides

    from tfkit.datasets import make_dataset
    from tfkit.monitor import predictions, traced_call

    rng = np.random.default_rng(3)
    words = ["good", "tasty", "fresh", "bad", "stale", "awful", "box", "snack", "price"]
    rows = []
    for _ in range(240):
        text = rng.choice(words, size=rng.integers(3, 12))
        score = sum(w in ("good", "tasty", "fresh") for w in text) - sum(
            w in ("bad", "stale", "awful") for w in text)
        label = "good" if (score > 0) != (rng.random() < 0.3) else "bad"  # 30% flipped
        rows.append((" ".join(text), label))
    with open("noisy.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([("review", "sentiment"), *rows])
    result = tfkit.train(None, tiny_overrides("noisy.csv", extra=[
        "train.monitor=val_macro_f1", "train.epochs=4", "data.validation_fraction=0.3",
        "export.enabled=false"]))
    f1s = result.history["val_macro_f1"]
    assert len(f1s) == 4 and max(f1s) > f1s[-1], f1s  # the best epoch is not the last one
    config = tfkit.load_config(result.run_dir / "config.yaml")
    data = tfkit.load_data(config.data)
    val_ds = make_dataset(data.validation, result.preprocessor, config, 8, training=False)
    labels, probabilities = predictions(traced_call(result.model), val_ds)
    report = classification_report(confusion_counts(labels, probabilities), result.label_names)
    assert abs(report["macro_f1"] - max(f1s)) < 1e-6, f1s


def test_best_weights_keeps_the_best_epoch_without_optimizer_state(tmp_path):
    """Kept (in memory) only when the monitor improves (NaN never does), written when asked
    (with each backup) as weights without Adam's moments, no partial file left, the model's
    current weights untouched by the write; restore brings that epoch's weights back."""
    import h5py
    import keras

    from tfkit.callbacks import BestWeights, best_epoch, restore_best_weights

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2000),
                              keras.layers.Dense(2, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    x, y = np.random.default_rng(0).random((16, 3)), np.arange(16) % 2
    model.fit(x, y, verbose=0)  # the optimizer now holds two moments per weight
    path = tmp_path / "checkpoints" / "best.weights.h5"
    best = BestWeights(path, "val_loss", "min")
    best.set_model(model)
    assert restore_best_weights(model, path) is None
    best.on_epoch_end(0, {"val_loss": float("nan")})
    best.write()
    assert not path.exists()
    best.on_epoch_end(1, {"val_loss": 0.5})
    kept = [w.copy() for w in model.get_weights()]
    model.fit(x, y, verbose=0)
    best.on_epoch_end(2, {"val_loss": 0.6})  # worse: epoch 1 stays the best
    best.on_epoch_end(3, {"val_loss": float("nan")})
    assert not path.exists()  # nothing written until asked
    current = [w.copy() for w in model.get_weights()]
    best.write()
    for now, before in zip(model.get_weights(), current):
        np.testing.assert_array_equal(now, before)
    assert sorted(p.name for p in path.parent.iterdir()) == ["best.weights.h5"]
    with h5py.File(path) as saved:
        assert "optimizer" not in saved and "layers" in saved
    model.save_weights(tmp_path / "with_moments.weights.h5")  # Keras's own: the moments too
    assert path.stat().st_size < 0.5 * (tmp_path / "with_moments.weights.h5").stat().st_size
    iterations = int(model.optimizer.iterations.numpy())
    assert restore_best_weights(model, path) == 2  # epochs counted from 1, as Keras prints them
    for restored, expected in zip(model.get_weights(), kept):
        np.testing.assert_array_equal(restored, expected)
    assert int(model.optimizer.iterations.numpy()) == iterations  # the optimizer is left alone
    model.set_weights(current)
    assert best.restore() == 2  # from memory, the same weights
    for restored, expected in zip(model.get_weights(), kept):
        np.testing.assert_array_equal(restored, expected)
    # a resumed run (a new callback, the same file) keeps the best from before the crash
    resumed = BestWeights(path, "val_loss", "min")
    resumed.set_model(model)
    resumed.on_train_begin()
    resumed.on_epoch_end(4, {"val_loss": 0.55})
    resumed.write()
    assert best_epoch(path) == {"monitor": "val_loss", "value": 0.5, "epoch": 2}
    assert resumed.restore() == 2  # nothing better in this attempt: the file's epoch
    resumed.on_epoch_end(5, {"val_loss": 0.4})
    resumed.write()
    assert best_epoch(path) == {"monitor": "val_loss", "value": 0.4, "epoch": 6}


def test_log_attention_shows_what_the_han_read(tmp_path):
    """The most confidently wrong and right documents, a row per sentence read with its
    attention weight, its 3 most weighed tokens in bold; tfkit train writes it for han runs."""
    import keras
    from conftest import tiny_overrides

    from tfkit.monitor import log_attention

    docs = ["Great taste. Awful and stale, really stale!", "good", "Bad value. Good snack.",
            "tasty tasty tasty", "stale"]
    pre = tfkit.HierarchicalTextPreprocessor(max_tokens=50, max_sentences=4, max_words=6)
    pre.adapt(docs)
    keras.utils.set_random_seed(0)
    model = tfkit.build_model("han", vocab_size=pre.vocab_size, num_classes=2, embedding_dim=4,
                              word_units=3, sentence_units=3, attention_units=3)
    expected = tfkit.attention_weights(model, pre, docs)
    predicted = np.array([np.argmax(d["probabilities"]) for d in expected])
    labels = predicted.copy()
    labels[0] = 1 - labels[0]  # document 0 alone is predicted wrong
    rows = log_attention(tmp_path, model, pre, docs, labels, ["neg", "pos"], step=3, count=1)
    confidence = [max(d["probabilities"]) for d in expected]
    assert [r["row"] for r in rows] == [0, max(range(1, 5), key=lambda i: confidence[i])]
    assert rows[0]["label"] != rows[0]["predicted"] and rows[1]["label"] == rows[1]["predicted"]
    ((step, value),) = summaries(tmp_path / "validation")["attention"]
    table = tf.make_ndarray(value.tensor).item().decode()
    assert step == 3 and "**validation row 0**: true " in table
    second = expected[0]["sentences"][1]  # "Awful and stale, really stale!": 5 tokens
    top = sorted(second["words"], key=lambda pair: -pair[1])[:3]
    line = next(line for line in table.splitlines() if "really" in line)
    assert line.startswith(f"| {second['weight']:.2f} | ")
    assert line.count("**") == 6 and all(f"**{w}** ({x:.2f})" in line for w, x in top)

    # and in a real run
    import csv

    from conftest import tiny_texts

    texts, labels = tiny_texts(40)
    with open(tmp_path / "docs.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([("review", "sentiment"), *zip(texts, labels)])
    result = tfkit.train(None, tiny_overrides(tmp_path / "docs.csv", model="han", extra=[
        "export.enabled=false", f"train.runs_dir={tmp_path / 'runs'}"]))
    ((_, value),) = summaries(result.run_dir / "logs" / "validation")["attention"]
    assert "| sentence weight | tokens |" in tf.make_ndarray(value.tensor).item().decode()


def test_traced_call_is_one_function_per_model_and_does_not_keep_it_alive():
    import gc
    import weakref

    from tfkit.monitor import _TRACED, traced_call

    model = tfkit.build_model("text_lstm", vocab_size=20, num_classes=2, units=4, embedding_dim=4)
    predict = traced_call(model)
    assert traced_call(model) is predict  # confusion matrix, misclassified, test scores share it
    ids = np.array([[3, 4, 0], [5, 0, 0]])
    np.testing.assert_allclose(predict(ids).numpy(), model(ids, training=False).numpy(), atol=1e-6)
    assert model in _TRACED
    alive = weakref.ref(model)
    del model, predict
    gc.collect()
    assert alive() is None  # the cache let it go
