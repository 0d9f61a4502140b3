"""tf.data input pipelines: preprocessing runs here, on the CPU, overlapped with training."""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from tfkit.data.streams import text_array

AUTOTUNE = tf.data.AUTOTUNE
# a streamed split whose token ids take at most this much is kept in memory after one read
IDS_IN_MEMORY_BYTES = 64 * 2**20


def bucket_boundaries(max_len: int) -> list[int]:
    """The upper length limits of the length buckets below ``max_len``.

    Multiples of 8 growing by at least 1.25x, so a batch padded to its bucket's edge
    carries at most ~25% padding (plus 8 tokens): 8, 16, 24, 32, 40, 48, 64, 80, 96 for
    ``max_len=100`` (62 LSTM steps per fine-food review against 69 for powers of two and 100
    for fixed padding), 15 edges for 400, 19 for 1,000.

    Examples:
        >>> bucket_boundaries(100)
        [8, 16, 24, 32, 40, 48, 64, 80, 96]
    """
    bounds, edge = [], 8.0
    while edge < max_len:
        bound = 8 * math.ceil(edge / 8)
        if bound < max_len and (not bounds or bound > bounds[-1]):
            bounds.append(bound)
        edge *= 1.25
    return bounds


def array_dataset(x, y, preprocessor, batch_size: int, *, shuffle: bool = False, seed: int = 0,
                  drop_remainder: bool = False) -> tf.data.Dataset:
    """Arrays (or a dict of columns) and label ids -> batches of ``(model input, label ids)``.

    The raw arrays are cached, shuffled per epoch, batched, then converted/resized by
    the preprocessor in a parallel map, and prefetched.
    """
    ds = tf.data.Dataset.from_tensor_slices((x if isinstance(x, dict) else np.asarray(x),
                                             y)).cache()
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = ds.map(lambda a, b: (preprocessor(a), b), num_parallel_calls=AUTOTUNE)
    return ds.prefetch(AUTOTUNE)


def token_dataset(texts, labels, preprocessor, batch_size: int, *, shuffle: bool = False,
                  bucket: bool = False, seed: int = 0, drop_remainder: bool = False,
                  full_batches: bool = False) -> tf.data.Dataset:
    """Raw texts and label ids -> batches of ``(token ids, label ids)``.

    Texts are tokenised in parallel batches by the preprocessor, cached as ragged ids
    (so tokenisation runs once, not every epoch), shuffled per epoch, then batched
    right-padded: either to ``max_len`` or, with ``bucket=True``, by length buckets
    padded only to their longest member (much less padding for short texts).
    Documents from a :class:`tfkit.HierarchicalTextPreprocessor` (``[sentences, words]``)
    are padded to the longest document and sentence of their batch, bucketed by
    sentence count with ``bucket=True``.

    Args:
        texts: strings ``[n]``.
        labels: label ids ``[n]`` (any structure ``from_tensor_slices`` takes).
        preprocessor: a :class:`tfkit.TextPreprocessor` (or one with ``tokenize``).
        batch_size: examples per batch (the global batch under a strategy).
        shuffle: reshuffle every epoch with ``seed``.
        bucket: batch by length buckets instead of padding to ``max_len``.
        seed: shuffle seed.
        drop_remainder: drop the last partial batch.
        full_batches: fill every partial batch up to ``batch_size`` (see :func:`fill_batch`)
            and yield ``(token ids, label ids, sample weights)`` with a static batch size.
            For training: compile with a loss reduced by ``"mean_with_sample_weight"`` and
            ``weighted_metrics``, as :func:`tfkit.compiling.compile_model` does.

    Returns:
        A prefetching ``tf.data.Dataset``.
    """
    texts = tf.constant(text_array(texts), tf.string)
    return token_batches(tf.data.Dataset.from_tensor_slices((texts, labels)), preprocessor,
                         batch_size, size=len(texts), shuffle=shuffle, bucket=bucket, seed=seed,
                         drop_remainder=drop_remainder, full_batches=full_batches)


def token_batches(examples: tf.data.Dataset, preprocessor, batch_size: int, *,
                  size: int | None = None, streamed: bool = False, cache: str | None = None,
                  shuffle_buffer: int = 10000, shuffle: bool = False, bucket: bool = False,
                  seed: int = 0, drop_remainder: bool = False, full_batches: bool = False
                  ) -> tf.data.Dataset:
    """:func:`token_dataset` on a dataset of ``(text, label ids)`` examples.

    In memory (``streamed=False``): the ids are cached in memory, shuffled over all ``size``
    examples and the number of batches is known. Streamed: ids cached in the file ``cache``
    (or not at all), shuffled ``shuffle_buffer`` examples at a time, and the number of
    batches left unknown (under a multi-worker strategy each worker reads its own files).
    A streamed split of ``size`` examples whose ids take at most
    :data:`IDS_IN_MEMORY_BYTES` (at ``max_len`` tokens each) and that has no ``cache`` file
    is read once here and its ids kept in memory, as data in memory is: a stream forced on
    small data trains as fast as the in-memory path.
    """
    ds = examples

    def tokenize(batch_texts, batch_labels):
        ids = preprocessor.tokenize(batch_texts)
        return ids.to_tensor(), example_shape(ids), batch_labels

    ds = ds.batch(512).map(tokenize, num_parallel_calls=AUTOTUNE).unbatch()
    # tf.data batches only dense elements: cut each padded example back to its own shape
    ds = ds.map(lambda ids, shape, y: (tf.slice(ids, tf.zeros_like(shape), shape), y),
                num_parallel_calls=AUTOTUNE)
    small = streamed and not cache and ids_bytes(preprocessor, size) <= IDS_IN_MEMORY_BYTES
    if not streamed or small:
        ds = ds.cache()
    elif cache:
        ds = ds.cache(cache)
    cached = ds
    if small:  # a small stream: read and tokenised once, here, as data in memory is
        cached.reduce(np.int64(0), lambda count, *_: count + 1)
    if shuffle:
        ds = ds.shuffle(min(shuffle_buffer, max(size, 1)) if streamed else size, seed=seed,
                        reshuffle_each_iteration=True)
    label_shapes = tf.nest.map_structure(lambda spec: spec.shape, ds.element_spec[1])
    if ds.element_spec[0].shape.rank == 2:
        # documents [sentences, words]: pad each batch to its longest document and sentence;
        # buckets group documents with similar sentence counts
        padded, boundaries, pad_to_edge = ([None, None], label_shapes), [2, 4, 8, 16], False
    else:
        # tokens: pad each batch to its bucket's upper edge: a bounded set of shapes (one
        # XLA program each with jit_compile) instead of one per length
        max_len = preprocessor.max_len
        padded, pad_to_edge = ([max_len], label_shapes), True
        boundaries = [edge + 1 for edge in bucket_boundaries(max_len) + [max_len]]
        bucket = bucket and len(boundaries) > 1

    def batch(examples):
        if bucket:
            return examples.bucket_by_sequence_length(
                lambda ids, _: tf.shape(ids)[0], bucket_boundaries=boundaries,
                bucket_batch_sizes=[batch_size] * (len(boundaries) + 1),
                pad_to_bucket_boundary=pad_to_edge, drop_remainder=drop_remainder)
        return examples.padded_batch(batch_size, padded_shapes=padded,
                                     drop_remainder=drop_remainder)

    if streamed:
        return fill_and_prefetch(batch(ds), batch_size, full_batches)
    if bucket:
        # one pass over the (unshuffled) buckets counts the batches, whose number depends on
        # how many texts fall in each bucket; it also fills the cache the epochs read
        batches = int(batch(cached).reduce(np.int64(0), lambda count, _: count + 1))
    else:
        batches = size // batch_size if drop_remainder else math.ceil(size / batch_size)
    # a known number of batches: Keras shows progress (and ETA) from the first epoch, and a
    # learning-rate schedule can end on the last step
    ds = batch(ds).apply(tf.data.experimental.assert_cardinality(batches))
    return fill_and_prefetch(ds, batch_size, full_batches)


def ids_bytes(preprocessor, size: int | None) -> float:
    """An upper bound of the memory ``size`` examples' token ids take (int64, ``max_len``
    tokens, or ``max_sentences`` x ``max_words`` for documents); unknown size: infinite."""
    if not size:
        return float("inf")
    return size * getattr(preprocessor, "max_sentences", 1) * preprocessor.max_len * 8


def fill_and_prefetch(ds: tf.data.Dataset, batch_size: int, full_batches: bool
                      ) -> tf.data.Dataset:
    """Fills partial batches when asked (:func:`fill_batch`), then prefetches."""
    if full_batches:
        ds = ds.map(lambda ids, labels: fill_batch(ids, labels, batch_size),
                    num_parallel_calls=AUTOTUNE)
    return ds.prefetch(AUTOTUNE)


def fill_batch(ids, labels, batch_size: int):
    """Fills a batch of right-padded ids (``[batch, length]`` or documents ``[batch,
    sentences, words]``) up to ``batch_size`` rows; returns ``(ids, labels, weights)`` with
    the batch dimension static.

    Keras's ``fit`` traces one training step for the dataset's element spec. With the batch
    size unknown there, TensorFlow cannot simplify the gradient of the masking inside a
    recurrent layer's time loop (broadcast checks and reductions at every step): the same
    ``text_lstm`` step traced for a known batch size trains ~1.2x faster
    (``benchmarks/step.py``). The filler rows hold one out-of-vocabulary token (id 1; an
    all-padding row would keep an LSTM off the cuDNN kernel), label 0 and weight 0.
    """
    missing = batch_size - tf.shape(ids)[0]
    rest = ids.shape[1:]
    filler = tf.pad(tf.ones([missing] + [1] * len(rest), ids.dtype),
                    [[0, 0]] + [[0, tf.shape(ids)[i + 1] - 1] for i in range(len(rest))])
    ids = tf.ensure_shape(tf.concat([ids, filler], 0), [batch_size] + rest)

    def fill(label):
        zeros = tf.zeros(tf.concat([[missing], tf.shape(label)[1:]], 0), label.dtype)
        return tf.ensure_shape(tf.concat([label, zeros], 0), [batch_size] + label.shape[1:])

    weights = tf.concat([tf.ones([batch_size - missing]), tf.zeros([missing])], 0)
    return ids, tf.nest.map_structure(fill, labels), tf.ensure_shape(weights, [batch_size])


def example_shape(ids: tf.RaggedTensor) -> tf.Tensor:
    """The dense shape of each example of ragged ids: ``[batch, 1]`` lengths for token
    sequences, ``[batch, 2]`` (sentences, longest sentence) for documents."""
    lengths = ids.row_lengths()
    if ids.ragged_rank == 1:
        return lengths[:, None]
    longest = tf.reduce_max(ids.row_lengths(axis=2), axis=1)
    return tf.stack([lengths, tf.maximum(longest, 0)], axis=1)
