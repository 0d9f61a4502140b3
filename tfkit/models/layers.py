"""Small reusable Keras layers used by the builders (all serializable, safe_mode loadable)."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="tfkit")
class PaddingMask(keras.layers.Layer):
    """Returns ``1.0`` where a token id is not padding (0), shaped ``[..., 1]``.

    Lets layers that do not take Keras masks (``Conv1D``) ignore right padding, so
    an output does not depend on how far a batch was padded.

    Examples:
        >>> PaddingMask()(np.array([[5, 0]])).shape
        TensorShape([1, 2, 1])
    """

    def call(self, ids):
        return ops.expand_dims(ops.cast(ops.not_equal(ids, 0), self.compute_dtype), -1)


@keras.saving.register_keras_serializable(package="tfkit")
class KeyMask(keras.layers.Layer):
    """Token ids ``[batch, steps]`` -> ``bool [batch, 1, steps]``: which keys attention may
    look at (not padding), for ``MultiHeadAttention(attention_mask=...)``.

    Examples:
        >>> KeyMask()(np.array([[5, 7, 0]])).numpy().tolist()
        [[[True, True, False]]]
    """

    def call(self, ids):
        return ops.expand_dims(ops.not_equal(ids, 0), 1)

    def compute_output_spec(self, ids):
        return keras.KerasTensor((ids.shape[0], 1, ids.shape[1]), dtype="bool")


@keras.saving.register_keras_serializable(package="tfkit")
class SinePositions(keras.layers.Layer):
    """Adds the sinusoidal position encoding of Vaswani et al. (2017) to ``[batch, steps,
    dim]``: ``sin(p / 10000^(2i/dim))`` on even features, ``cos`` on odd ones. No weights and
    no longest length: any number of steps works, in training buckets and in serving alike.
    The Keras mask passes through.

    Examples:
        >>> encoded = SinePositions()(np.zeros((1, 3, 4), "float32")).numpy()
        >>> [round(float(v), 2) for v in encoded[0, 1]]  # position 1: sin 1, cos 1, sin .01, cos .01
        [0.84, 0.54, 0.01, 1.0]
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs):
        dim = inputs.shape[-1]
        positions = ops.expand_dims(ops.cast(ops.arange(ops.shape(inputs)[1]), "float32"), 1)
        features = ops.arange(dim)
        rates = ops.power(10000.0, -2.0 * ops.cast(features // 2, "float32") / dim)
        angles = positions * ops.expand_dims(rates, 0)  # [steps, dim]
        encoding = ops.where(features % 2 == 0, ops.sin(angles), ops.cos(angles))
        return inputs + ops.cast(ops.expand_dims(encoding, 0), inputs.dtype)


@keras.saving.register_keras_serializable(package="tfkit")
class AttentionPooling(keras.layers.Layer):
    """Additive attention pooling (Yang et al. 2016): ``[batch, steps, dim] -> [batch, dim]``.

    ``u_t = tanh(W h_t + b)``, ``a_t = softmax_t(u_t . u_w)`` over unmasked steps,
    output ``sum_t a_t h_t``. With ``return_attention=True`` the layer returns
    ``(pooled, weights)``; the weights sum to 1 over unmasked steps and are exactly 0 on
    masked ones (a fully masked row gives all-zero weights and a zero vector, not NaN).

    Args:
        units: size of the attention projection ``W``.
        return_attention: also return the ``[batch, steps]`` weights.

    Examples:
        >>> pooled = AttentionPooling(8)(np.ones((2, 5, 4), "float32"))
        >>> pooled.shape
        TensorShape([2, 4])
    """

    def __init__(self, units=64, return_attention=False, **kwargs):
        super().__init__(**kwargs)
        if units < 1:
            raise ValueError(f"AttentionPooling units must be >= 1. Received: units={units}")
        self.units = units
        self.return_attention = return_attention
        self.supports_masking = True

    def build(self, input_shape):
        self.projection = keras.layers.Dense(self.units, activation="tanh", name="projection")
        self.projection.build(input_shape)
        self.context = self.add_weight(name="context", shape=(self.units,),
                                       initializer="glorot_uniform")

    def call(self, inputs, mask=None):
        scores = ops.tensordot(self.projection(inputs), self.context, axes=[[2], [0]])
        if mask is not None:
            valid = ops.cast(mask, scores.dtype)
            # -3e4, not -1e9: it must stay finite in float16 under mixed precision
            scores = ops.where(ops.cast(mask, "bool"), scores, ops.full_like(scores, -3e4))
        else:
            valid = ops.ones_like(scores)
        scores = scores - ops.max(scores, axis=-1, keepdims=True)
        weights = ops.exp(scores) * valid
        weights = weights / ops.maximum(ops.sum(weights, axis=-1, keepdims=True), 1e-9)
        pooled = ops.sum(inputs * ops.expand_dims(weights, -1), axis=1)
        if self.return_attention:
            return pooled, weights
        return pooled

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        pooled = (input_shape[0], input_shape[-1])
        if self.return_attention:
            return pooled, (input_shape[0], input_shape[1])
        return pooled

    def get_config(self):
        return {**super().get_config(), "units": self.units,
                "return_attention": self.return_attention}


@keras.saving.register_keras_serializable(package="tfkit")
class FoldSentences(keras.layers.Layer):
    """Document ids ``[batch, sentences, words]`` -> sentence ids ``[batch * sentences, words]``.

    Padding sentences (all zeros) get one OOV token (id 1) in front, so the word-level
    RNN never sees a fully masked row: cuDNN refuses those (tensorflow#43103, Keras'
    ``_assert_valid_mask``). Their vectors are discarded again by the sentence mask
    that :class:`UnfoldSentences` attaches. Real sentences are left untouched.

    Examples:
        >>> FoldSentences()(np.array([[[4, 5], [0, 0]]])).numpy().tolist()
        [[4, 5], [1, 0]]
    """

    def call(self, ids):
        flat = ops.reshape(ids, (-1, ops.shape(ids)[-1]))
        first = ops.where(ops.equal(flat[:, 0], 0), ops.ones_like(flat[:, 0]), flat[:, 0])
        return ops.concatenate([ops.expand_dims(first, -1), flat[:, 1:]], axis=1)

    def compute_output_shape(self, input_shape):
        return (None, input_shape[-1])


@keras.saving.register_keras_serializable(package="tfkit")
class UnfoldSentences(keras.layers.Layer):
    """Sentence vectors ``[batch * sentences, ...]`` -> ``[batch, sentences, ...]`` with a mask.

    Called as ``UnfoldSentences()([vectors, ids])`` with the document ids
    ``[batch, sentences, words]``; the output carries the Keras mask "sentence has a
    first word", which is right-padded and has at least one True per document when the
    ids come from :class:`tfkit.HierarchicalTextPreprocessor`.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs):
        vectors, ids = inputs
        shape = ops.shape(ids)
        return ops.reshape(vectors, (shape[0], shape[1]) + tuple(vectors.shape[1:]))

    def compute_mask(self, inputs, mask=None):
        return ops.not_equal(inputs[1][:, :, 0], 0)

    def compute_output_shape(self, input_shape):
        vectors, ids = input_shape
        return (ids[0], ids[1]) + tuple(vectors[1:])


@keras.saving.register_keras_serializable(package="tfkit")
class HashedNgrams(keras.layers.Layer):
    """Token ids ``[batch, length]`` -> the same ids followed by hashed n-gram ids.

    fastText's trick (Joulin et al. 2017): every run of ``2..ngrams`` consecutive
    tokens is hashed into one of ``buckets`` extra ids, numbered after the vocabulary
    (``vocab_size .. vocab_size + buckets - 1``), so one ``Embedding`` of size
    ``vocab_size + buckets`` holds words and n-grams. An n-gram touching padding gets
    id 0, so the output stays right-padded with the same meaning and a mean over the
    mask does not depend on how far a batch was padded. Pure integer arithmetic: runs
    in the training step, in the SavedModel and under any strategy.

    Args:
        vocab_size: number of word ids (the n-gram ids start here).
        buckets: number of hash buckets shared by all n-grams.
        ngrams: longest n-gram (2 = words and bigrams, 3 = also trigrams).

    Examples:
        >>> HashedNgrams(vocab_size=10, buckets=100)(np.array([[4, 5, 0]])).shape
        TensorShape([1, 5])
    """

    PRIME = 1_000_003

    def __init__(self, vocab_size, buckets=65536, ngrams=2, **kwargs):
        super().__init__(**kwargs)
        if ngrams < 2 or buckets < 1:
            raise ValueError(f"HashedNgrams needs ngrams >= 2 and buckets >= 1. "
                             f"Received: ngrams={ngrams}, buckets={buckets}")
        self.vocab_size, self.buckets, self.ngrams = vocab_size, buckets, ngrams

    def call(self, ids):
        ids = ops.cast(ids, "int64")
        length = ops.shape(ids)[1]
        pieces = [ids]
        for n in range(2, self.ngrams + 1):
            window = [ids[:, k:length - n + 1 + k] for k in range(n)]
            code, valid = window[0], ops.greater(window[0], 0)
            for token in window[1:]:
                code = (code * self.PRIME + token) % self.buckets  # stays far below 2**63
                valid = ops.logical_and(valid, ops.greater(token, 0))
            pieces.append(ops.where(valid, code + self.vocab_size, ops.zeros_like(code)))
        return ops.concatenate(pieces, axis=1)

    def compute_output_shape(self, input_shape):
        length = input_shape[1]
        if length is None:
            return (input_shape[0], None)
        return (input_shape[0], sum(max(length - n + 1, 0) for n in range(1, self.ngrams + 1)))

    def get_config(self):
        return {**super().get_config(), "vocab_size": self.vocab_size,
                "buckets": self.buckets, "ngrams": self.ngrams}
