"""Linear text classifiers over TF-IDF features (:class:`tfkit.data.TfidfPreprocessor`)."""

from __future__ import annotations

import keras
from keras import layers


def build_text_linear(*, vocab_size: int, num_classes: int, ngrams: int = 2, l2: float = 1e-7,
                      dropout: float = 0.0) -> keras.Model:
    """TF-IDF of words and n-grams -> L2-normalised -> ``Dense`` softmax with an L2 penalty:
    logistic regression, the strong baseline of text classification, as a Keras model.

    The TF-IDF vectoriser (``keras.layers.TextVectorization(output_mode="tf_idf")``) runs in
    tf.data for training and inside the exported SavedModel, which takes raw strings. On a
    few thousand texts it often matches or beats the deep models, in seconds.

    Args:
        vocab_size: TF-IDF columns (words and n-grams, the out-of-vocabulary one included).
        num_classes: number of labels (>= 2).
        ngrams: longest n-gram the preprocessor counts (read from ``model.params`` by
            :class:`tfkit.data.TfidfPreprocessor`; the model itself only sees the columns).
        l2: the L2 penalty on the weights (larger: a simpler model).
        dropout: drops TF-IDF features during training.

    Returns:
        A functional ``keras.Model`` from ``float32 [batch, vocab_size]`` to
        ``[batch, num_classes]``.

    Examples:
        >>> build_text_linear(vocab_size=10, num_classes=3)(np.ones([2, 10])).shape
        TensorShape([2, 3])
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2. Received: num_classes={num_classes}")
    if vocab_size < 2:
        raise ValueError(f"vocab_size must be >= 2 (out-of-vocabulary, one term). Received: {vocab_size}")
    if l2 < 0 or not 0 <= dropout < 1:
        raise ValueError(f"l2 must be >= 0 and dropout in [0, 1). Received: l2={l2}, dropout={dropout}")
    if ngrams not in (1, 2, 3):
        raise ValueError(f"ngrams must be 1, 2 or 3. Received: ngrams={ngrams}")
    tfidf = keras.Input(shape=(vocab_size,), dtype="float32", name="tfidf")
    x = layers.UnitNormalization(name="l2_normalize")(tfidf)
    if dropout:
        x = layers.Dropout(dropout, name="feature_dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32",
                           kernel_regularizer=keras.regularizers.L2(l2) if l2 else None,
                           name="probabilities")(x)
    return keras.Model(tfidf, outputs, name="text_linear")
