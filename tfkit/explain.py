"""Looking inside hierarchical models: which sentences and words decided a prediction."""

from __future__ import annotations

import html

import keras
import numpy as np
import tensorflow as tf

from tfkit.data.text import HierarchicalTextPreprocessor


def has_attention(model: keras.Model) -> bool:
    """Whether ``model`` has the ``word_attention`` and ``sentence_attention`` layers of a
    ``han`` model (:func:`attention_weights` reads them)."""
    return {"word_attention", "sentence_attention"} <= {layer.name for layer in model.layers}


def attention_weights(model: keras.Model, preprocessor: HierarchicalTextPreprocessor,
                      texts) -> list[dict]:
    """Word- and sentence-level attention of a ``han`` model for raw documents.

    Args:
        model: a model from :func:`tfkit.models.build_han` (its layers ``word_attention``
            and ``sentence_attention`` return their weights).
        preprocessor: the adapted :class:`tfkit.HierarchicalTextPreprocessor` it was trained with.
        texts: raw documents.

    Returns:
        One dict per document: ``probabilities`` (list of floats) and ``sentences``, a list
        of ``{"text", "weight", "words": [(word, weight), ...]}`` for the sentences the
        model read (after truncation). Sentence weights sum to 1 over a document's
        sentences, word weights to 1 within a sentence.

    Raises:
        ValueError: if ``model`` has no ``word_attention``/``sentence_attention`` layer.

    Examples:
        >>> pre = tfkit.HierarchicalTextPreprocessor(max_tokens=100, max_sentences=4, max_words=8)
        >>> pre.adapt(["Great taste. Arrived broken.", "Tasty snack."])
        >>> model = tfkit.build_model("han", vocab_size=pre.vocab_size, num_classes=2,
        ...                           word_units=4, sentence_units=4)
        >>> doc = attention_weights(model, pre, ["Great taste. Arrived broken."])[0]
        >>> [sentence["text"] for sentence in doc["sentences"]]
        ['Great taste.', 'Arrived broken.']
        >>> [(word, round(weight, 1)) for word, weight in doc["sentences"][1]["words"]]
        [('arrived', 0.5), ('broken', 0.5)]
        >>> round(sum(sentence["weight"] for sentence in doc["sentences"]), 3)
        1.0
    """
    if not has_attention(model):
        raise ValueError(f"model '{model.name}' has no word_attention/sentence_attention layers; "
                         "attention weights need a 'han' model.")
    probe = keras.Model(model.inputs, [model.output,
                                       model.get_layer("word_attention").output[1],
                                       model.get_layer("sentence_attention").output[1]])
    texts = tf.constant([str(t) for t in texts])
    ids = preprocessor(texts)
    probabilities, word_weights, sentence_weights = (np.asarray(t) for t in
                                                     probe(ids, training=False))
    batch, max_sentences, max_words = ids.shape
    word_weights = word_weights.reshape(batch, max_sentences, max_words)
    kept = preprocessor.sentences(texts)
    sentences = kept.to_list()
    words = tf.RaggedTensor.from_row_lengths(preprocessor.tokens(kept.flat_values),
                                             kept.row_lengths()).to_list()
    out = []
    for doc in range(batch):
        kept = []
        for s, sentence in enumerate(sentences[doc]):
            tokens = [w.decode("utf-8") for w in words[doc][s][:max_words]]
            kept.append({"text": sentence.decode("utf-8"),
                         "weight": float(sentence_weights[doc, s]),
                         "words": [(w, float(word_weights[doc, s, i]))
                                   for i, w in enumerate(tokens)]})
        out.append({"probabilities": probabilities[doc].tolist(), "sentences": kept})
    return out


def attention_html(document: dict) -> str:
    """One :func:`attention_weights` entry as HTML: sentence weight as a red bar on the left,
    word weight as a blue background (display with ``IPython.display.HTML``)."""
    rows = []
    for sentence in document["sentences"]:
        top = max((w for _, w in sentence["words"]), default=1.0) or 1.0
        words = " ".join(
            f'<span style="background: rgba(30,100,255,{w / top * 0.6:.2f})">{html.escape(t)}</span>'
            for t, w in sentence["words"])
        rows.append(f'<div style="border-left: 6px solid rgba(220,30,30,{sentence["weight"]:.2f});'
                    f' padding-left: 6px; margin: 2px">{sentence["weight"]:.2f} &nbsp; {words}</div>')
    return "\n".join(rows)
