"""LazyAdam: Adam whose embedding updates touch only the rows a batch used.

Keras's ``Adam`` turns an embedding's sparse gradient (``tf.IndexedSlices``) into a dense
one and updates both moment tensors and the weights over the whole table every step. For
the fastText default (a 78k x 64 table) that dense update is ~85% of an epoch on two CPU
cores. ``LazyAdam`` (as in TensorFlow Addons, now unmaintained) applies the Adam rule to
the gathered rows only: rows that a batch did not use keep their moments and weights
instead of decaying towards zero. For dense gradients it *is* Keras ``Adam``.
"""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="tfkit")
class LazyAdam(keras.optimizers.Adam):
    """``keras.optimizers.Adam`` with sparse (row-wise) updates for ``tf.IndexedSlices``.

    Same arguments as ``keras.optimizers.Adam`` except ``amsgrad``, which it does not
    support.

    Examples:
        >>> model = keras.Sequential([keras.Input((4,), dtype="int32"),
        ...                           keras.layers.Embedding(1000, 8),
        ...                           keras.layers.GlobalAveragePooling1D(),
        ...                           keras.layers.Dense(2, activation="softmax")])
        >>> model.compile(LazyAdam(learning_rate=0.003), "sparse_categorical_crossentropy")
        >>> table = model.layers[0].embeddings.numpy()
        >>> loss = model.train_on_batch(np.array([[1, 2, 3, 4]]), np.array([1]))
        >>> changed = (model.layers[0].embeddings.numpy() != table).any(axis=1)
        >>> changed.nonzero()[0].tolist()  # only the rows the batch used were updated
        [1, 2, 3, 4]
    """

    def __init__(self, learning_rate=0.001, *args, amsgrad=False, **kwargs):
        if amsgrad:
            raise ValueError("LazyAdam does not support amsgrad=True; use keras.optimizers.Adam.")
        super().__init__(learning_rate, *args, amsgrad=False, **kwargs)

    def update_step(self, gradient, variable, learning_rate):
        if not isinstance(gradient, tf.IndexedSlices):
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        # An embedding's gradient lists one row per token: sum repeated rows first.
        rows, position = tf.unique(gradient.indices)
        grad = tf.math.unsorted_segment_sum(tf.cast(gradient.values, dtype), position,
                                            tf.shape(rows)[0])
        step = tf.cast(self.iterations + 1, dtype)
        alpha = (tf.cast(learning_rate, dtype) * tf.sqrt(1 - tf.pow(tf.cast(self.beta_2, dtype), step))
                 / (1 - tf.pow(tf.cast(self.beta_1, dtype), step)))
        index = self._get_variable_index(variable)
        m, v = self._momentums[index], self._velocities[index]
        m_rows = self.beta_1 * tf.gather(m.value, rows) + (1 - self.beta_1) * grad
        v_rows = self.beta_2 * tf.gather(v.value, rows) + (1 - self.beta_2) * tf.square(grad)
        self.assign(m, tf.IndexedSlices(m_rows, rows))
        self.assign(v, tf.IndexedSlices(v_rows, rows))
        self.assign_sub(variable, tf.IndexedSlices(
            alpha * m_rows / (tf.sqrt(v_rows) + self.epsilon), rows))


@keras.saving.register_keras_serializable(package="tfkit")
class WarmUp(keras.optimizers.schedules.LearningRateSchedule):
    """A linear warm-up: over the first ``steps`` steps the rate rises in equal steps to
    ``after``'s first rate (step ``i`` trains at ``(i + 1) / steps`` of it), then follows
    ``after`` (a number, or a schedule started where the warm-up ends).

    Examples:
        >>> decay = keras.optimizers.schedules.CosineDecay(0.1, decay_steps=100)
        >>> warm = WarmUp(decay, steps=10)
        >>> [round(float(warm(s)), 4) for s in (0, 5, 10, 60, 110)]
        [0.01, 0.06, 0.1, 0.05, 0.0]
    """

    def __init__(self, after, steps: int):
        self.after, self.steps = after, int(steps)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        later = self.after(tf.maximum(step - self.steps, 0.0)) if callable(self.after) \
            else tf.constant(self.after, tf.float32)
        rising = tf.cast(later, tf.float32) * (step + 1.0) / max(self.steps, 1)
        return tf.where(step < self.steps, rising, tf.cast(later, tf.float32))

    def get_config(self):
        after = self.after if not callable(self.after) else keras.saving.serialize_keras_object(
            self.after)
        return {"after": after, "steps": self.steps}

    @classmethod
    def from_config(cls, config):
        after = config["after"]
        if isinstance(after, dict):
            after = keras.saving.deserialize_keras_object(after)
        return cls(after, config["steps"])
