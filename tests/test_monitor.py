"""The validation confusion matrix: counts right over length buckets, traced not eager;
the word vectors for the Projector: one per vocabulary word, wherever the embedding sits."""

import numpy as np
import pytest
import tensorflow as tf
from conftest import summaries

import tfkit
from tfkit.monitor import EMBEDDING_TENSOR, ConfusionMatrix, log_misclassified


def test_confusion_matrix_counts_every_validation_example(tmp_path):
    rng = np.random.default_rng(0)
    words = ["good", "bad", "tasty", "stale", "fine", "awful", "great"]
    texts = [" ".join(rng.choice(words, size=rng.integers(1, 30))) for _ in range(90)]
    labels = rng.integers(0, 3, size=90)
    pre = tfkit.TextPreprocessor(max_tokens=50, max_len=30)
    pre.adapt(texts)
    ds = tfkit.token_dataset(texts, labels, pre, 8, bucket=True)
    shapes = {tuple(batch.shape) for batch, _ in ds}
    assert len(shapes) >= 5  # several bucket lengths, full and partial batches
    model = tfkit.build_model("text_lstm", vocab_size=pre.vocab_size, num_classes=3,
                              embedding_dim=4, units=4)
    callback = ConfusionMatrix(tmp_path / "logs", ds, ["neg", "neu", "pos"])
    callback.set_model(model)

    expected = np.zeros((3, 3), np.int64)
    for x, y in ds:
        for true, predicted in zip(y.numpy(), np.argmax(model.predict(x, verbose=0), -1)):
            expected[true, predicted] += 1
    callback.on_epoch_end(0)
    callback.on_epoch_end(1)
    np.testing.assert_array_equal(callback.matrix(), expected)
    assert expected.sum() == 90
    # traced with relaxed shapes: at most once for the first shape, once with the length
    # relaxed, once with the batch size relaxed; not once per shape, and not eager
    assert callback.predict.experimental_get_tracing_count() <= 3 < len(shapes)
    callback.on_train_end()

    tables = [tf.make_ndarray(value.tensor).item().decode() for _, value in summaries(
        tmp_path / "logs" / "validation")["confusion_matrix_table"]]
    assert len(tables) == 2
    rows = [line for line in tables[0].splitlines() if line.startswith("| **")]
    counts = [[int(v) for v in row.split("|")[2:-1]] for row in rows]
    np.testing.assert_array_equal(counts, expected)


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
    texts = ["good tasty snack", "stale | bad crackers", "good value", "awful", "tasty " * 80,
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
    assert "| stale \\| bad crackers |" in table  # a | in a text is escaped, not a new column
    assert "tasty " * 49 + "tasty …" in table  # long texts cut at 300 characters
