import keras
import numpy as np
import pytest
import tensorflow as tf

from tfkit.optimizers import LazyAdam

# Every row of the 5-row table is used, some twice in a batch (repeated tokens).
IDS = tf.constant([[0, 1, 2, 2], [3, 4, 4, 0]])


def train_embedding(optimizer, ids, densify=False, steps=3):
    keras.utils.set_random_seed(0)
    embedding = keras.layers.Embedding(5, 3)
    embedding.build()
    for _ in range(steps):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(embedding(ids) ** 2 * tf.range(1.0, 4.0))
        grads = tape.gradient(loss, embedding.trainable_variables)
        assert isinstance(grads[0], tf.IndexedSlices)
        if densify:
            grads = [tf.convert_to_tensor(g) for g in grads]
        optimizer.apply(grads, embedding.trainable_variables)
    return embedding.get_weights()[0]


def test_lazy_adam_is_adam_when_every_row_is_used():
    """Repeated rows are summed before the update, so the result is Adam on the dense
    gradient. (Keras's own Adam on the IndexedSlices is not: ``ops.square`` squares each
    repeated row separately, sum(g^2) instead of (sum g)^2.)"""
    dense = train_embedding(keras.optimizers.Adam(0.1), IDS, densify=True)
    np.testing.assert_allclose(train_embedding(LazyAdam(0.1), IDS), dense, atol=1e-6)


def test_lazy_adam_leaves_unused_rows_alone():
    """Row 0 is used in the first step only; Adam's momentum would keep moving it."""
    keras.utils.set_random_seed(0)
    embedding = keras.layers.Embedding(5, 3)
    embedding.build()
    optimizer = LazyAdam(0.1)
    snapshots = []
    for ids in ([[0, 1]], [[1, 3, 3]]):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(embedding(tf.constant(ids)) ** 2)
        snapshots.append(embedding.get_weights()[0])
        optimizer.apply(tape.gradient(loss, embedding.trainable_variables),
                        embedding.trainable_variables)
    changed = np.abs(embedding.get_weights()[0] - snapshots[1]).sum(axis=1) > 0
    assert np.flatnonzero(changed).tolist() == [1, 3]


def test_lazy_adam_dense_gradients_match_adam():
    def fit(optimizer):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        model.compile(optimizer, "mse")
        model.fit(np.ones((8, 4)), np.zeros((8, 3)), epochs=2, verbose=0)
        return model.get_weights()

    for a, b in zip(fit(LazyAdam(0.01)), fit(keras.optimizers.Adam(0.01))):
        np.testing.assert_allclose(a, b, atol=1e-7)


def test_lazy_adam_round_trips_in_a_keras_file(tmp_path):
    model = keras.Sequential([keras.Input((2,), dtype="int32"), keras.layers.Embedding(10, 4),
                              keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(2)])
    model.compile(LazyAdam(0.003), "mse")
    model.fit(np.array([[1, 2], [3, 3]]), np.zeros((2, 2)), verbose=0)
    model.save(tmp_path / "m.keras")
    restored = keras.models.load_model(tmp_path / "m.keras", safe_mode=True)
    assert isinstance(restored.optimizer, LazyAdam)
    assert restored.optimizer.learning_rate.numpy() == pytest.approx(0.003)
    for a, b in zip(restored.optimizer.variables, model.optimizer.variables):
        np.testing.assert_allclose(a.numpy(), b.numpy())


def test_lazy_adam_rejects_amsgrad():
    with pytest.raises(ValueError, match="amsgrad"):
        LazyAdam(amsgrad=True)
