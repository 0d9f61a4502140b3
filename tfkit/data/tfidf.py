"""TF-IDF features for linear text models: one ``TextVectorization(output_mode="tf_idf")``
used in tf.data for training and inside the SavedModel (which takes raw strings).

:class:`TfidfPreprocessor` is adapted on the training split only: its vocabulary holds the
``max_tokens - 1`` most frequent words and n-grams (plus the out-of-vocabulary entry) and
their inverse document frequencies, ``log(1 + documents / (1 + documents with the term))``.
"""

from __future__ import annotations

import os

import keras
import numpy as np
import tensorflow as tf

from tfkit.data.text import (
    SPLITS,
    RawText,
    adapt_vectorization,
    standardize_text,
    write_preprocessor_json,
)


class TfidfPreprocessor(RawText):
    """Raw strings -> TF-IDF weights ``float32 [batch, vocab_size]`` of their words and
    n-grams (term count times inverse document frequency; column 0 is every word the
    vocabulary lacks).

    Args:
        max_tokens: vocabulary size (words and n-grams, the out-of-vocabulary entry included).
        ngrams: longest n-gram (1: words only, 2: words and word pairs).
        vocabulary: the vocabulary from :meth:`vocabulary` (with ``idf_weights``) to restore
            an adapted one.
        idf_weights: one inverse document frequency per vocabulary entry.
        split: ``"whitespace"`` or ``"character"``, as in :class:`tfkit.TextPreprocessor`.

    Examples:
        >>> pre = TfidfPreprocessor(max_tokens=10, ngrams=2)
        >>> pre.adapt(["good food", "bad food", "good tea"])
        >>> pre.vocabulary()[:3]
        ['[UNK]', 'good', 'food']
        >>> weights = pre(tf.constant(["good food", ""])).numpy()
        >>> weights.shape, bool(weights[0, 1] > 0), float(weights[1].sum())
        ((2, 8), True, 0.0)
    """

    config_type = "tfidf"
    serving_input = "text"
    tensorboard_extras = ("misclassified",)

    def __init__(self, max_tokens: int = 20000, ngrams: int = 2, vocabulary=None,
                 idf_weights=None, split: str = "whitespace", adapt_examples: int | None = None):
        if ngrams not in (1, 2, 3):
            raise ValueError(f"ngrams must be 1, 2 or 3. Received: ngrams={ngrams!r}")
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}. Received: split={split!r}")
        if (vocabulary is None) != (idf_weights is None):
            raise ValueError("vocabulary and idf_weights go together: give both or neither.")
        self.max_tokens, self.ngrams, self.split = max_tokens, ngrams, split
        self.adapt_examples = adapt_examples
        restored = {} if vocabulary is None else {  # without the OOV entry, as Keras takes it
            "vocabulary": list(vocabulary)[1:], "idf_weights": np.asarray(idf_weights[1:], "float32")}
        self.layer = keras.layers.TextVectorization(
            max_tokens=max_tokens, standardize=standardize_text, split=SPLITS[split],
            ngrams=ngrams if ngrams > 1 else None, output_mode="tf_idf",
            name="tfidf_vectorization", **restored)
        if vocabulary is not None:
            self.layer(tf.constant([""]))  # builds the layer, as ExportArchive requires

    @property
    def vocab_size(self) -> int:
        """Columns of the TF-IDF vector (the out-of-vocabulary one included)."""
        return self.layer.vocabulary_size()

    def vocabulary(self) -> list[str]:
        return [str(term) for term in self.layer.get_vocabulary()]

    def idf_weights(self) -> list[float]:
        """The inverse document frequency of each vocabulary entry, in vocabulary order."""
        return [float(w) for w in self.layer._lookup_layer.idf_weights.numpy()]

    @classmethod
    def for_data(cls, config, x) -> TfidfPreprocessor:
        """``data.max_tokens`` terms, ``model.params.ngrams`` (default 2) words long at most."""
        return cls(max_tokens=config.data.max_tokens,
                   ngrams=int(config.model.params.get("ngrams", 2)), split=config.data.split)

    def adapt(self, texts, limit: int | None = None) -> None:
        """Counts terms and documents over training texts (a list, array or string dataset),
        or over the first ``limit`` of them, in one pass."""
        self.adapt_examples = adapt_vectorization(self.layer, texts, limit,
                                                  "the TF-IDF vocabulary")

    def __call__(self, texts) -> tf.Tensor:
        """Strings ``[batch]`` -> TF-IDF weights ``float32 [batch, vocab_size]``."""
        return self.layer(tf.convert_to_tensor(texts, tf.string))

    def get_config(self) -> dict:
        return {"type": self.config_type, "max_tokens": self.max_tokens, "ngrams": self.ngrams,
                "split": self.split, "adapt_examples": self.adapt_examples}

    def save(self, directory: str | os.PathLike) -> None:
        """Writes ``preprocessor.json`` (settings, vocabulary, inverse document frequencies)."""
        write_preprocessor_json(directory, {**self.get_config(), "vocabulary": self.vocabulary(),
                                            "idf_weights": self.idf_weights()})

    @classmethod
    def from_config(cls, config: dict) -> TfidfPreprocessor:
        return cls(**{k: v for k, v in config.items() if k != "type"})
