"""Text plus table columns: a text encoder and the table's encoded features, joined before
the head."""

from __future__ import annotations

import keras
from keras import layers

# the fastText encoder's settings when none are given: dropout on its word vectors and fewer
# hashed bigram rows, as the tate_table preset measured them (short texts beside columns)
FASTTEXT_ENCODER = {"embedding_dropout": 0.2, "buckets": 16384}


def build_text_table(*, vocab_size: int, num_classes: int, input_shape, encoder: str = "text_fasttext",
                     encoder_params: dict | None = None, table_units: int = 32,
                     hidden_units: int = 64, dropout: float = 0.3,
                     name: str = "text_table") -> keras.Model:
    """A text encoder (any registered token model, cut below its softmax) and a ReLU layer
    over the table's features (what ``keras.utils.FeatureSpace`` makes of the other
    columns: :class:`tfkit.data.TextTablePreprocessor`), concatenated, then a hidden ReLU
    layer, dropout and the softmax.

    Args:
        vocab_size: number of token ids, including padding (0) and OOV (1).
        num_classes: number of labels (>= 2).
        input_shape: ``(features,)``: the width of the encoded table row.
        encoder: the registered text builder that reads the text (``tokens`` input).
        encoder_params: keyword arguments for that builder (none given: ``FASTTEXT_ENCODER``
            for ``text_fasttext``, the builder's own defaults for the others).
        table_units: width of the ReLU layer over the table features (0: none).
        hidden_units: width of the ReLU layer over both (0: none).
        dropout: dropout before the softmax.
        name: model name.

    Returns:
        A functional ``keras.Model`` from ``{"token_ids": int32 [batch, length], "table":
        float32 [batch, features]}`` to ``[batch, num_classes]``.

    Raises:
        ValueError: for an encoder that does not read tokens.

    Examples:
        >>> model = build_text_table(vocab_size=50, num_classes=3, input_shape=(5,),
        ...                          encoder_params={"embedding_dim": 4, "buckets": 8})
        >>> model({"token_ids": np.array([[4, 5, 0]]), "table": np.ones((1, 5))}).shape
        TensorShape([1, 3])
    """
    from tfkit.models import build_model, get_entry  # the registry imports this

    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2. Received: num_classes={num_classes}")
    if get_entry(encoder).inputs != "tokens":
        raise ValueError(f"encoder must be a registered model that reads tokens (text_fasttext, "
                         f"text_cnn, text_bilstm, ...). Received: encoder={encoder!r}")
    if encoder_params is None:
        encoder_params = FASTTEXT_ENCODER if encoder == "text_fasttext" else {}
    trunk = build_model(encoder, vocab_size=vocab_size, num_classes=2, **encoder_params)
    text = trunk.get_layer("probabilities").input  # pooled text features, below the softmax
    table = keras.Input(shape=tuple(input_shape), name="table")
    features = layers.Dense(table_units, activation="relu", name="table_features")(table) \
        if table_units else table
    x = layers.Concatenate(name="text_and_table")([text, features])
    if hidden_units:
        x = layers.Dense(hidden_units, activation="relu", name="joined")(x)
    if dropout:
        x = layers.Dropout(dropout, name="joined_dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32",
                           name="probabilities")(x)
    return keras.Model({"token_ids": trunk.input, "table": table}, outputs, name=name)
