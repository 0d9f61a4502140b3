"""Hierarchical text models: words -> sentences -> document (Yang et al., NAACL 2016).

Inputs are document ids ``int32 [batch, sentences, words]`` from
:class:`tfkit.HierarchicalTextPreprocessor`: both levels right-padded with 0, every
document with at least one sentence and every real sentence with at least one word.

GPU-safe masking: the word encoder runs on ``[batch * sentences, words]``. Padding
sentences would be fully masked rows there, which the cuDNN kernels refuse
(tensorflow/tensorflow#43103), so :class:`FoldSentences` gives each of them one OOV
token; :class:`UnfoldSentences` then masks them out at the sentence level. Every mask
that reaches a recurrent layer is right-padded with at least one real step, so the
LSTM/GRU layers keep their cuDNN path on a GPU.
"""

from __future__ import annotations

import keras
from keras import layers

from tfkit.models.layers import AttentionPooling, FoldSentences, UnfoldSentences
from tfkit.models.text import classifier_head, recurrent_layer


def build_han(*, vocab_size: int, num_classes: int, embedding_dim: int = 100,
              word_units: int = 50, sentence_units: int = 50, cell: str = "gru",
              attention_units: int = 100, embedding_dropout: float = 0.0,
              dropout: float = 0.0, head_dropout: float = 0.0, name: str = "han") -> keras.Model:
    """Hierarchical Attention Network (Yang et al. 2016): words -> sentences -> document.

    A word encoder with attention per sentence, the same over the sentence vectors, then
    the classifier.

    Word level: ``Embedding -> Bidirectional(GRU) -> AttentionPooling`` turns each sentence
    into a vector. Sentence level: ``Bidirectional(GRU) -> AttentionPooling`` over the
    sentence vectors gives the document vector. Defaults follow the paper (GRU, 50 units
    per direction, attention size 100). Both attention layers are named
    (``word_attention``, ``sentence_attention``) and return their weights, which
    :func:`tfkit.attention_weights` reads.

    Args:
        vocab_size: number of token ids, including padding (0) and OOV (1).
        num_classes: number of labels (>= 2).
        embedding_dim: size of the word vectors.
        word_units: recurrent units per direction at the word level.
        sentence_units: recurrent units per direction at the sentence level.
        cell: ``"gru"`` (paper) or ``"lstm"``.
        attention_units: size of both attention projections.
        embedding_dropout: drops whole word vectors.
        dropout: input dropout of both recurrent layers.
        head_dropout: dropout before the softmax.
        name: model name.

    Returns:
        A functional ``keras.Model`` from ``int32 [batch, sentences, words]`` to
        ``[batch, num_classes]``.

    Examples:
        >>> model = build_han(vocab_size=100, num_classes=2, word_units=4, sentence_units=4)
        >>> model(np.array([[[4, 5], [6, 0], [0, 0]]])).shape
        TensorShape([1, 2])
    """
    if vocab_size < 3:
        raise ValueError(f"vocab_size must be >= 3 (padding, OOV, one word). Received: {vocab_size}")
    ids = keras.Input(shape=(None, None), dtype="int32", name="document_ids")
    words = FoldSentences(name="fold_sentences")(ids)
    x = layers.Embedding(vocab_size, embedding_dim, mask_zero=True, name="embedding")(words)
    if embedding_dropout:
        x = layers.SpatialDropout1D(embedding_dropout, name="embedding_dropout")(x)
    x = recurrent_layer(cell, word_units, return_sequences=True, bidirectional=True,
                        dropout=dropout, name="word_encoder")(x)
    sentence_vectors, _ = AttentionPooling(attention_units, return_attention=True,
                                           name="word_attention")(x)
    x = UnfoldSentences(name="unfold_sentences")([sentence_vectors, ids])
    x = recurrent_layer(cell, sentence_units, return_sequences=True, bidirectional=True,
                        dropout=dropout, name="sentence_encoder")(x)
    document, _ = AttentionPooling(attention_units, return_attention=True,
                                   name="sentence_attention")(x)
    return keras.Model(ids, classifier_head(document, num_classes, head_dropout), name=name)
