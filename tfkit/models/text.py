"""End-to-end and stacked text classifiers over right-padded token ids ``[batch, length]``.

Every builder takes the ids produced by :class:`tfkit.TextPreprocessor` (0 = padding,
1 = out-of-vocabulary) and returns class probabilities ``[batch, num_classes]``.
Embeddings use ``mask_zero=True`` and the preprocessor pads on the right and never
emits an all-padding row, so recurrent layers may take the cuDNN kernel on a GPU.
"""

from __future__ import annotations

import keras
from keras import layers

from tfkit.models.layers import (
    AttentionPooling,
    HashedNgrams,
    KeyMask,
    PaddingMask,
    SinePositions,
)

RNN_CELLS = {"lstm": layers.LSTM, "gru": layers.GRU}
POOLINGS = ("last", "mean", "attention")


def recurrent_layer(cell: str, units: int, *, return_sequences=False, bidirectional=False,
                    dropout=0.0, name=None) -> layers.Layer:
    """Returns an LSTM or GRU layer, optionally wrapped in ``Bidirectional``.

    ``recurrent_dropout`` is never set: it disables the cuDNN kernel.

    Raises:
        ValueError: for an unknown ``cell``.
    """
    if cell not in RNN_CELLS:
        raise ValueError(f"Unknown cell={cell!r}; expected one of {sorted(RNN_CELLS)}.")
    rnn = RNN_CELLS[cell](units, return_sequences=return_sequences, dropout=dropout,
                          name=None if bidirectional else name)
    return layers.Bidirectional(rnn, name=name) if bidirectional else rnn


def classifier_head(x, num_classes: int, dropout: float = 0.0, hidden_units: int = 0):
    """Optional dropout and hidden layer, then ``Dense(num_classes, softmax)``."""
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2. Received: num_classes={num_classes}")
    if dropout:
        x = layers.Dropout(dropout, name="head_dropout")(x)
    if hidden_units:
        x = layers.Dense(hidden_units, activation="relu", name="head_hidden")(x)
    # float32 output keeps probabilities exact under mixed precision policies
    return layers.Dense(num_classes, activation="softmax", dtype="float32", name="probabilities")(x)


def _token_inputs(vocab_size: int, embedding_dim: int, mask_zero: bool = True):
    if vocab_size < 3:
        raise ValueError(f"vocab_size must be >= 3 (padding, OOV, one word). Received: {vocab_size}")
    ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
    x = layers.Embedding(vocab_size, embedding_dim, mask_zero=mask_zero, name="embedding")(ids)
    return ids, x


def build_stacked_lstm(*, vocab_size: int, num_classes: int, embedding_dim: int = 128,
                       units=(64, 64), cell: str = "lstm", bidirectional: bool = False,
                       pooling: str = "last", embedding_dropout: float = 0.0,
                       dropout: float = 0.0, head_dropout: float = 0.0,
                       name: str = "stacked_lstm") -> keras.Model:
    """The hierarchical article's stacked model: stacked recurrent layers, then Dense.

    ``len(units)`` LSTM (or GRU) layers; all but the last return sequences, so each
    level reads the full sequence of the level below. The default ``units=(64, 64)``
    is the article's two-layer model.

    Args:
        vocab_size: number of token ids, including padding (0) and OOV (1).
        num_classes: number of labels (>= 2).
        embedding_dim: size of the word vectors.
        units: one entry per recurrent layer, bottom first.
        cell: ``"lstm"`` or ``"gru"``.
        bidirectional: wrap every recurrent layer in ``Bidirectional``.
        pooling: how the top layer's sequence becomes one vector: ``"last"`` (its final
            state, as in the article), ``"mean"`` (masked average) or ``"attention"``
            (:class:`AttentionPooling` over the unmasked steps).
        embedding_dropout: drops whole word vectors (``SpatialDropout1D``).
        dropout: input dropout of every recurrent layer.
        head_dropout: dropout before the softmax.
        name: model name.

    Returns:
        A functional ``keras.Model`` from ``int32 [batch, length]`` to ``[batch, num_classes]``.

    Examples:
        >>> model = build_stacked_lstm(vocab_size=100, num_classes=3, units=(8, 8))
        >>> model(np.array([[4, 5, 0]])).shape
        TensorShape([1, 3])
    """
    units = [units] if isinstance(units, int) else list(units)
    if not units or min(units) < 1:
        raise ValueError(f"units must be a non-empty list of positive ints. Received: units={units}")
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}. Received: pooling={pooling!r}")
    ids, x = _token_inputs(vocab_size, embedding_dim)
    if embedding_dropout:
        x = layers.SpatialDropout1D(embedding_dropout, name="embedding_dropout")(x)
    for depth, size in enumerate(units):
        last = depth == len(units) - 1 and pooling == "last"
        x = recurrent_layer(cell, size, return_sequences=not last, bidirectional=bidirectional,
                            dropout=dropout, name=f"{cell}_{depth + 1}")(x)
    if pooling == "mean":
        x = layers.GlobalAveragePooling1D(name="mean_pool")(x)
    elif pooling == "attention":
        x = AttentionPooling(name="attention_pool")(x)
    return keras.Model(ids, classifier_head(x, num_classes, head_dropout), name=name)


def build_text_lstm(*, vocab_size: int, num_classes: int, embedding_dim: int = 128,
                    units: int = 64, pooling: str = "last",
                    embedding_dropout: float = 0.0, dropout: float = 0.0, head_dropout: float = 0.0) -> keras.Model:
    """The article's end-to-end classifier: Embedding -> LSTM -> Dense.

    Same layers as the article, but with right padding and a mask,
    so the LSTM reads each review up to its last real word and can use cuDNN.

    Args:
        vocab_size: number of token ids, including padding (0) and OOV (1).
        num_classes: number of labels (>= 2).
        embedding_dim: size of the word vectors (seed: 128).
        units: LSTM size (seed: 64).
        pooling: ``"last"`` (seed), ``"mean"`` or ``"attention"``; see :func:`build_stacked_lstm`.
        embedding_dropout: drops whole word vectors.
        dropout: LSTM input dropout.
        head_dropout: dropout before the softmax.

    Returns:
        A ``keras.Model`` from ``int32 [batch, length]`` to ``[batch, num_classes]``.

    Examples:
        >>> model = build_text_lstm(vocab_size=100, num_classes=2, units=8)
        >>> model(np.array([[4, 5, 0]])).shape
        TensorShape([1, 2])
    """
    return build_stacked_lstm(vocab_size=vocab_size, num_classes=num_classes,
                             embedding_dim=embedding_dim, units=[units], cell="lstm",
                             pooling=pooling, embedding_dropout=embedding_dropout, dropout=dropout,
                              head_dropout=head_dropout, name="text_lstm")


def build_text_bilstm(*, vocab_size: int, num_classes: int, embedding_dim: int = 128,
                      units: int = 64, pooling: str = "last",
                      embedding_dropout: float = 0.0, dropout: float = 0.0,
                      head_dropout: float = 0.0) -> keras.Model:
    """Embedding -> Bidirectional(LSTM) -> Dense.

    Examples:
        >>> build_text_bilstm(vocab_size=100, num_classes=2, units=8).count_params() > 0
        True
    """
    return build_stacked_lstm(vocab_size=vocab_size, num_classes=num_classes,
                             embedding_dim=embedding_dim, units=[units], cell="lstm",
                             bidirectional=True, pooling=pooling, embedding_dropout=embedding_dropout,
                              dropout=dropout, head_dropout=head_dropout, name="text_bilstm")


def build_text_gru(*, vocab_size: int, num_classes: int, embedding_dim: int = 128,
                   units: int = 64, pooling: str = "last",
                   embedding_dropout: float = 0.0, dropout: float = 0.0, head_dropout: float = 0.0) -> keras.Model:
    """Embedding -> GRU -> Dense.

    Examples:
        >>> build_text_gru(vocab_size=100, num_classes=2, units=8).count_params() > 0
        True
    """
    return build_stacked_lstm(vocab_size=vocab_size, num_classes=num_classes,
                             embedding_dim=embedding_dim, units=[units], cell="gru",
                             pooling=pooling, embedding_dropout=embedding_dropout, dropout=dropout,
                              head_dropout=head_dropout, name="text_gru")


def build_text_cnn(*, vocab_size: int, num_classes: int, embedding_dim: int = 128,
                   filters: int = 100, kernel_sizes=(3, 4, 5), dropout: float = 0.5) -> keras.Model:
    """Kim (2014) CNN: parallel Conv1D of several widths, max-over-time pooling, Dense.

    Padding positions are zeroed before and after the convolutions, so the output is
    the same however far a batch is padded (training buckets, serving pads to max_len).

    Args:
        vocab_size: number of token ids, including padding (0) and OOV (1).
        num_classes: number of labels (>= 2).
        embedding_dim: size of the word vectors.
        filters: feature maps per kernel size.
        kernel_sizes: the n-gram widths.
        dropout: dropout on the pooled features (Kim: 0.5).

    Returns:
        A functional ``keras.Model`` from ``int32 [batch, length]`` to ``[batch, num_classes]``.

    Examples:
        >>> build_text_cnn(vocab_size=100, num_classes=2, filters=4)(np.array([[4, 0]])).shape
        TensorShape([1, 2])
    """
    ids, x = _token_inputs(vocab_size, embedding_dim, mask_zero=False)
    mask = PaddingMask(name="padding_mask")(ids)
    x = layers.Multiply(name="mask_embeddings")([x, mask])
    pooled = []
    for width in kernel_sizes:
        conv = layers.Conv1D(filters, width, padding="same", activation="relu",
                             name=f"conv_{width}")(x)
        # ReLU outputs are >= 0, so zeroing padded steps leaves the max over real steps
        conv = layers.Multiply(name=f"mask_conv_{width}")([conv, mask])
        pooled.append(layers.GlobalMaxPooling1D(name=f"max_pool_{width}")(conv))
    x = pooled[0] if len(pooled) == 1 else layers.Concatenate(name="features")(pooled)
    return keras.Model(ids, classifier_head(x, num_classes, dropout), name="text_cnn")


def build_text_transformer(*, vocab_size: int, num_classes: int, embedding_dim: int = 64,
                           num_heads: int = 4, ff_dim: int = 128, num_layers: int = 2,
                           dropout: float = 0.1, attention_dropout: float = 0.0,
                           head_dropout: float = 0.0) -> keras.Model:
    """Transformer encoder (Vaswani et al. 2017) over the tokens, then a masked mean and Dense.

    Token embeddings plus sinusoidal positions (:class:`SinePositions`, any length), then
    ``num_layers`` blocks of multi-head self-attention and a ReLU feed-forward layer, each
    added back to its input and layer-normalised. Attention never looks at padding
    (:class:`KeyMask`) and the mean runs over real tokens only, so the output is the same
    however far a batch is padded. No recurrence: every step of a review is computed at once.

    Args:
        vocab_size: number of token ids, including padding (0) and OOV (1).
        num_classes: number of labels (>= 2).
        embedding_dim: model width (a multiple of ``num_heads``).
        num_heads: attention heads per block, each ``embedding_dim / num_heads`` wide.
        ff_dim: width of the feed-forward layer.
        num_layers: encoder blocks.
        dropout: on each block's two outputs (attention and feed-forward).
        attention_dropout: on the attention weights (0: none; on 2 CPU cores dropping
            weights of every head's ``length x length`` matrix costs 14 % of a training step
            at width 64, see docs/benchmarks.md).
        head_dropout: dropout before the softmax.

    Returns:
        A functional ``keras.Model`` from ``int32 [batch, length]`` to ``[batch, num_classes]``.

    Examples:
        >>> model = build_text_transformer(vocab_size=100, num_classes=2, embedding_dim=8, num_heads=2)
        >>> model(np.array([[4, 5, 0]])).shape
        TensorShape([1, 2])
    """
    if num_heads < 1 or embedding_dim % num_heads:
        raise ValueError(f"embedding_dim must be a multiple of num_heads. Received: "
                         f"embedding_dim={embedding_dim}, num_heads={num_heads}")
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1. Received: num_layers={num_layers}")
    ids, x = _token_inputs(vocab_size, embedding_dim)
    x = SinePositions(name="positions")(x)
    keys = KeyMask(name="key_mask")(ids)
    for block in range(1, num_layers + 1):
        attended = layers.MultiHeadAttention(num_heads, embedding_dim // num_heads,
                                             dropout=attention_dropout,
                                             name=f"attention_{block}")(x, x, attention_mask=keys)
        attended = layers.Dropout(dropout, name=f"attention_dropout_{block}")(attended)
        x = layers.LayerNormalization(name=f"attention_norm_{block}")(
            layers.Add(name=f"attention_residual_{block}")([x, attended]))
        forward = layers.Dense(ff_dim, activation="relu", name=f"feed_forward_{block}")(x)
        forward = layers.Dense(embedding_dim, name=f"feed_forward_out_{block}")(forward)
        forward = layers.Dropout(dropout, name=f"feed_forward_dropout_{block}")(forward)
        x = layers.LayerNormalization(name=f"feed_forward_norm_{block}")(
            layers.Add(name=f"feed_forward_residual_{block}")([x, forward]))
    x = layers.GlobalAveragePooling1D(name="mean_pool")(x)
    return keras.Model(ids, classifier_head(x, num_classes, head_dropout), name="text_transformer")


def build_text_fasttext(*, vocab_size: int, num_classes: int, embedding_dim: int = 64,
                        ngrams: int = 2, buckets: int = 65536, embedding_dropout: float = 0.0,
                        head_dropout: float = 0.3) -> keras.Model:
    """fastText (Joulin et al. 2017): the mean of word and hashed n-gram vectors -> Dense.

    A bag of n-grams with learned embeddings: no recurrence, so an epoch on the 3,600
    fine-food reviews takes about 1 s on two CPU cores with ``lazy_adam`` (3-4 s with Keras
    ``adam``, which updates the whole table every step), and on a few thousand reviews it beats
    the LSTM (word order enters only through the n-grams). The n-grams are hashed
    inside the model (:class:`HashedNgrams`), so the SavedModel still takes raw text.

    Args:
        vocab_size: number of token ids, including padding (0) and OOV (1).
        num_classes: number of labels (>= 2).
        embedding_dim: size of the word and n-gram vectors.
        ngrams: longest n-gram (1 = words only, 2 = words and bigrams, 3 = also trigrams).
        buckets: hash buckets for the n-grams (ignored when ``ngrams=1``).
        embedding_dropout: drops whole word/n-gram vectors before averaging.
        head_dropout: dropout on the averaged vector, before the softmax.

    Returns:
        A functional ``keras.Model`` from ``int32 [batch, length]`` to ``[batch, num_classes]``.

    Examples:
        >>> build_text_fasttext(vocab_size=100, num_classes=2, buckets=64)(np.array([[4, 5, 0]])).shape
        TensorShape([1, 2])
    """
    if ngrams < 1:
        raise ValueError(f"ngrams must be >= 1. Received: ngrams={ngrams}")
    if vocab_size < 3:
        raise ValueError(f"vocab_size must be >= 3 (padding, OOV, one word). Received: {vocab_size}")
    ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
    x, size = ids, vocab_size
    if ngrams > 1:
        x = HashedNgrams(vocab_size, buckets, ngrams, name="ngrams")(ids)
        size += buckets
    x = layers.Embedding(size, embedding_dim, mask_zero=True, name="embedding")(x)
    if embedding_dropout:
        x = layers.SpatialDropout1D(embedding_dropout, name="embedding_dropout")(x)
    x = layers.GlobalAveragePooling1D(name="mean_pool")(x)
    return keras.Model(ids, classifier_head(x, num_classes, head_dropout), name="text_fasttext")
