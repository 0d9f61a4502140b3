"""The validation confusion matrix: counts right over length buckets, traced not eager."""

import numpy as np
import tensorflow as tf

import tfkit
from tfkit.monitor import ConfusionMatrix


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

    tables = []
    for path in (tmp_path / "logs" / "validation").glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.tag == "confusion_matrix_table":
                    tables.append(tf.make_ndarray(value.tensor).item().decode())
    assert len(tables) == 2
    rows = [line for line in tables[0].splitlines() if line.startswith("| **")]
    counts = [[int(v) for v in row.split("|")[2:-1]] for row in rows]
    np.testing.assert_array_equal(counts, expected)
