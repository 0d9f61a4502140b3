"""Text preprocessing: one object used in tf.data for training and inside the SavedModel.

:class:`TextPreprocessor` wraps ``keras.layers.TextVectorization``. It is adapted on
the training split only, then maps raw strings to right-padded token ids. The same
instance (its lookup table) is tracked by the export, so serving tokenises exactly as
training did.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import keras
import tensorflow as tf

PAD_ID, OOV_ID = 0, 1


@keras.saving.register_keras_serializable(package="tfkit")
def standardize_text(texts):
    """Lower-cases, drops HTML line breaks and turns punctuation into spaces (in-graph).

    Unlike Keras' default, punctuation becomes a space rather than vanishing, so
    ``"great.Buy"`` gives two words; apostrophes inside words are kept (``don't``).
    Works on any Unicode text.
    """
    texts = tf.strings.lower(texts, encoding="utf-8")
    texts = tf.strings.regex_replace(texts, r"<br\s*/?>", " ")
    texts = tf.strings.regex_replace(texts, r"[^\pL\pN']+", " ")
    return tf.strings.regex_replace(texts, r"(^|\s)'+|'+(\s|$)", " ")


def write_preprocessor_json(directory: str | os.PathLike, payload: dict) -> None:
    """Writes a preprocessor's settings as ``directory/preprocessor.json`` (plain JSON, no pickle)."""
    Path(directory, "preprocessor.json").write_text(json.dumps(payload), encoding="utf-8")


class TextPreprocessor:
    """Raw strings -> right-padded token ids ``int64 [batch, max_len]``.

    Id 0 is padding and id 1 out-of-vocabulary. A text with no known word (including
    the empty string) becomes ``[1, 0, 0, ...]``, never an all-padding row, so a
    masked RNN always sees at least one step (cuDNN refuses fully masked rows).
    Longer texts are cut after ``max_len`` tokens.

    Args:
        max_tokens: vocabulary size including padding and OOV.
        max_len: longest sequence kept.
        vocabulary: a vocabulary from :meth:`vocabulary` to restore an adapted one.

    Examples:
        >>> pre = TextPreprocessor(max_tokens=100, max_len=4)
        >>> pre.adapt(["good food", "bad food"])
        >>> pre(tf.constant(["good food", ""])).numpy().tolist()
        [[3, 2, 0, 0], [1, 0, 0, 0]]
    """

    def __init__(self, max_tokens: int = 20000, max_len: int = 200, vocabulary=None):
        if max_len < 1:
            raise ValueError(f"max_len must be >= 1. Received: max_len={max_len}")
        self.max_tokens = max_tokens
        self.max_len = max_len
        self.layer = keras.layers.TextVectorization(
            max_tokens=max_tokens, standardize=standardize_text, output_mode="int",
            ragged=True, vocabulary=vocabulary, name="text_vectorization")

    @property
    def vocab_size(self) -> int:
        """Number of ids the embedding must hold (padding and OOV included)."""
        return self.layer.vocabulary_size()

    def vocabulary(self) -> list[str]:
        return self.layer.get_vocabulary()

    def adapt(self, texts) -> None:
        """Builds the vocabulary from training texts (a list, array or string dataset)."""
        if not isinstance(texts, tf.data.Dataset):
            texts = tf.data.Dataset.from_tensor_slices(tf.constant(list(texts), tf.string))
        self.layer.adapt(texts.batch(1024))
        if self.vocab_size <= 2:
            raise ValueError("The training texts contain no words: the vocabulary is empty.")

    def tokenize(self, texts) -> tf.RaggedTensor:
        """Strings ``[batch]`` -> ragged ids ``[batch, (1..max_len)]``."""
        ids = self.layer(texts)[:, : self.max_len]
        lengths = ids.row_lengths()
        dense = ids.to_tensor(default_value=PAD_ID, shape=[None, self.max_len])
        empty = tf.equal(lengths, 0)
        first = tf.where(empty, tf.constant(OOV_ID, dense.dtype), dense[:, 0])
        dense = tf.concat([first[:, None], dense[:, 1:]], axis=1)
        return tf.RaggedTensor.from_tensor(dense, lengths=tf.maximum(lengths, 1))

    def __call__(self, texts) -> tf.Tensor:
        """Strings ``[batch]`` -> ids ``[batch, max_len]``, right-padded with 0."""
        return self.tokenize(texts).to_tensor(default_value=PAD_ID, shape=[None, self.max_len])

    serving_input = "text"

    def serving_endpoints(self) -> dict:
        """``{signature name: (fn, input_signature)}`` for the export."""
        return {"serving_default": (self.__call__, [tf.TensorSpec([None], tf.string, name="text")])}

    def export_samples(self, x) -> list[str]:
        """Inputs to check an export with: some texts plus empty, very long and non-ASCII ones."""
        return [str(t) for t in x[:16]] + ["", "great " * 5000, "Très bon café, 美味しい!"]

    def get_config(self) -> dict:
        return {"type": "text", "max_tokens": self.max_tokens, "max_len": self.max_len}

    def save(self, directory: str | os.PathLike) -> None:
        """Writes ``preprocessor.json`` (settings and vocabulary) into ``directory``."""
        write_preprocessor_json(directory, {**self.get_config(), "vocabulary": self.vocabulary()})

    @classmethod
    def from_config(cls, config: dict) -> "TextPreprocessor":
        pre = cls(max_tokens=config["max_tokens"], max_len=config["max_len"],
                  vocabulary=config["vocabulary"])
        pre.layer(tf.constant([""]))  # builds the layer, as ExportArchive requires
        return pre
