"""Text preprocessing: one object used in tf.data for training and inside the SavedModel.

:class:`TextPreprocessor` wraps ``keras.layers.TextVectorization``. It is adapted on
the training split only, then maps raw strings to right-padded token ids. The same
instance (its lookup table) is tracked by the export, so serving tokenises exactly as
training did.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tfkit.data.pipeline import array_dataset, token_batches, token_dataset
from tfkit.data.streams import Progress

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


@keras.saving.register_keras_serializable(package="tfkit")
def split_characters(texts):
    """Strings ``[batch]`` -> ragged characters ``[batch, (chars)]``, white space dropped.

    ``TextVectorization(split="character")`` keeps the spaces (and with them the spaces
    :func:`standardize_text` leaves where punctuation was) as a token; this keeps letters,
    digits and apostrophes only. For languages written without spaces between words
    (Chinese, Japanese, Thai), where whitespace splitting makes a whole sentence one token.

    Examples:
        >>> chars = split_characters(standardize_text(tf.constant(["美味しい！", "Ok, ok"])))
        >>> [[c.decode() for c in row] for row in chars.to_list()]
        [['美', '味', 'し', 'い'], ['o', 'k', 'o', 'k']]
    """
    chars = tf.strings.unicode_split(texts, "UTF-8")
    return tf.ragged.boolean_mask(chars, tf.strings.regex_full_match(chars, r"\S"))


SPLITS = {"whitespace": "whitespace", "character": split_characters}


def write_preprocessor_json(directory: str | os.PathLike, payload: dict) -> None:
    """Writes a preprocessor's settings as ``directory/preprocessor.json`` (plain JSON, no pickle)."""
    Path(directory, "preprocessor.json").write_text(json.dumps(payload), encoding="utf-8")


def adapt_vectorization(layer, texts, limit: int | None, what: str) -> int:
    """What ``TextVectorization.adapt`` does, with progress on long data: ``layer``'s
    vocabulary (and document frequencies) from training texts (a list, array or string
    dataset), or their first ``limit``, in one pass; then the layer built (an export before
    any call needs it). Returns how many texts it read.

    Raises:
        ValueError: when the texts hold no word.
    """
    if not isinstance(texts, tf.data.Dataset):
        texts = list(texts)[:limit] if limit else list(texts)
        texts = tf.data.Dataset.from_tensor_slices(tf.constant(texts, tf.string))
    elif limit:
        texts = texts.take(limit)
    progress = Progress(f"adapting {what}", "texts")
    layer.reset_state()
    for batch in texts.batch(1024).prefetch(2):
        layer.update_state(batch)
        progress.add(int(batch.shape[0]))
    if int(layer._lookup_layer.token_counts.size()) == 0:  # Keras's tf_idf fails on it
        raise ValueError("The training texts contain no words: the vocabulary is empty.")
    layer.finalize_state()
    if progress.count >= 100_000:
        progress.done()
    layer(tf.constant([""]))
    return progress.count


class RawText:
    """The serving side of a preprocessor of raw strings (:class:`TextPreprocessor`,
    :class:`tfkit.data.HubTextPreprocessor`): the ``text`` signature input, what clients send,
    the samples an export is checked with."""

    def client_inputs(self, x) -> list[str]:
        """What a client of the served model sends for inputs ``x``: the raw strings."""
        return [str(t) for t in x]

    def serving_endpoints(self) -> dict:
        """``{signature name: (fn, input_signature)}`` for the export."""
        return {"serving_default": (self.__call__, [tf.TensorSpec([None], tf.string, name="text")])}

    def export_samples(self, x) -> list[str]:
        """Inputs to check an export with: some texts plus empty, very long and non-ASCII ones."""
        return self.client_inputs(x[:16]) + ["", "great " * 5000, "Très bon café, 美味しい!"]

    def dataset(self, split, batch_size: int, *, training: bool, data) -> tf.data.Dataset:
        """Texts and labels -> batches of ``(self(texts), labels)``, shuffled each epoch when
        ``training``; a streamed split is read from its files on every pass."""
        if not split.streamed:
            return array_dataset(np.array([str(t) for t in split.x]), split.y, self, batch_size,
                                 shuffle=training, seed=data.seed)
        ds = split.examples(shuffle_files=training, seed=data.seed, name_files=training)
        if training:
            ds = ds.shuffle(data.shuffle_buffer, seed=data.seed, reshuffle_each_iteration=True)
        ds = ds.batch(batch_size).map(lambda x, y: (self(x), y),
                                      num_parallel_calls=tf.data.AUTOTUNE)
        return ds.prefetch(tf.data.AUTOTUNE)


class TextPreprocessor(RawText):
    """Raw strings -> right-padded token ids ``int64 [batch, max_len]``.

    Id 0 is padding and id 1 out-of-vocabulary. A text with no known word (including
    the empty string) becomes ``[1, 0, 0, ...]``, never an all-padding row, so a
    masked RNN always sees at least one step (cuDNN refuses fully masked rows).
    Longer texts are cut after ``max_len`` tokens.

    Args:
        max_tokens: vocabulary size including padding and OOV.
        max_len: longest sequence kept.
        vocabulary: a vocabulary from :meth:`vocabulary` to restore an adapted one.
        split: ``"whitespace"`` (tokens are words) or ``"character"`` (tokens are
            characters, white space dropped: :func:`split_characters`), as in
            ``TextVectorization``.

    Examples:
        >>> pre = TextPreprocessor(max_tokens=100, max_len=4)
        >>> pre.adapt(["good food", "bad food"])
        >>> pre(tf.constant(["good food", ""])).numpy().tolist()
        [[3, 2, 0, 0], [1, 0, 0, 0]]
        >>> chars = TextPreprocessor(max_tokens=100, max_len=6, split="character")
        >>> chars.adapt(["美味しい", "まずい"])
        >>> ids = chars(tf.constant(["美味しい!", "不味い"])).numpy()
        >>> ["".join(chars.vocabulary()[i] for i in row if i) for row in ids]
        ['美味しい', '[UNK]味い']
    """

    def __init__(self, max_tokens: int = 20000, max_len: int = 200, vocabulary=None,
                 split: str = "whitespace", adapt_examples: int | None = None):
        if max_len < 1:
            raise ValueError(f"max_len must be >= 1. Received: max_len={max_len}")
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}. Received: split={split!r}")
        self.max_tokens = max_tokens
        self.max_len = max_len
        self.split = split
        self.adapt_examples = adapt_examples  # training texts the vocabulary was built from
        self.layer = keras.layers.TextVectorization(
            max_tokens=max_tokens, standardize=standardize_text, split=SPLITS[split],
            output_mode="int", ragged=True, vocabulary=vocabulary, name="text_vectorization")

    @property
    def vocab_size(self) -> int:
        """Number of ids the embedding must hold (padding and OOV included)."""
        return self.layer.vocabulary_size()

    def vocabulary(self) -> list[str]:
        # str(): a vocabulary restored from a list comes back as numpy strings
        return [str(word) for word in self.layer.get_vocabulary()]

    def tokens(self, texts) -> tf.RaggedTensor:
        """Strings ``[n]`` -> their tokens as strings ``[n, (tokens)]``, standardised and split
        as the vocabulary sees them (words, or characters with ``split="character"``)."""
        texts = standardize_text(tf.convert_to_tensor(texts, tf.string))
        return tf.strings.split(texts) if self.split == "whitespace" else split_characters(texts)

    def adapt(self, texts, limit: int | None = None) -> None:
        """Builds the vocabulary from training texts (a list, array or string dataset) in one
        pass, or from the first ``limit`` of them; logs progress on long data and keeps how many
        it read as ``adapt_examples`` (in ``preprocessor.json`` and the export's facts)."""
        self.adapt_examples = adapt_vectorization(self.layer, texts, limit, "the vocabulary")

    def tokenize(self, texts) -> tf.RaggedTensor:
        """Strings ``[batch]`` -> ragged ids ``[batch, (1..max_len)]`` (what tf.data caches)."""
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

    # the preprocessor protocol (see tfkit.data.INPUT_KINDS): its preprocessor.json type,
    # the serving input's name, and the TensorBoard views of a trained
    # model that apply (word vectors in the Projector, validation examples misclassified)
    config_type = "text"
    serving_input = "text"
    tensorboard_extras = ("embeddings", "misclassified")

    @classmethod
    def for_data(cls, config, x) -> TextPreprocessor:
        """An unadapted preprocessor as ``config`` (a :class:`tfkit.Config`) sets it up for
        training inputs ``x``."""
        return cls(max_tokens=config.data.max_tokens, max_len=config.data.max_len,
                   split=config.data.split)

    def dataset(self, split, batch_size: int, *, training: bool, data) -> tf.data.Dataset:
        """The tf.data pipeline of one split (:func:`tfkit.data.token_dataset`): shuffled,
        length-bucketed (``data.bucket_by_length``) and in full batches when ``training``.
        A streamed split (:class:`tfkit.data.streams.StreamSplit`) is read from its files,
        in a new file order each epoch when ``training``, its ids cached under
        ``data.cache_dir`` when set."""
        if not split.streamed:
            return token_dataset(split.x, split.y, self, batch_size, shuffle=training,
                                 bucket=data.bucket_by_length, seed=data.seed,
                                 full_batches=training)
        examples = split.examples(shuffle_files=training, seed=data.seed, name_files=training)
        return token_batches(examples, self, batch_size, size=len(split), streamed=True,
                             cache=split.cache_file(data.cache_dir, self.fingerprint()),
                             shuffle_buffer=data.shuffle_buffer, shuffle=training,
                             bucket=data.bucket_by_length, seed=data.seed, full_batches=training)

    def fingerprint(self) -> str:
        """A digest of the settings and vocabulary: ids cached for another differ."""
        text = json.dumps(self.get_config()) + "\n".join(self.vocabulary())
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    def get_config(self) -> dict:
        return {"type": self.config_type, "max_tokens": self.max_tokens,
                "max_len": self.max_len, "split": self.split,
                "adapt_examples": self.adapt_examples}

    def save(self, directory: str | os.PathLike) -> None:
        """Writes ``preprocessor.json`` (settings and vocabulary) into ``directory``."""
        write_preprocessor_json(directory, {**self.get_config(), "vocabulary": self.vocabulary()})

    @classmethod
    def from_config(cls, config: dict) -> TextPreprocessor:
        settings = {k: v for k, v in config.items() if k != "type"}
        pre = cls(**settings)
        if settings.get("vocabulary") is not None:  # settings alone (an export's facts) have none
            pre.layer(tf.constant([""]))  # builds the layer, as ExportArchive requires
        return pre


# a run of . ! ? followed by white space, or a run of CJK full stops / marks, ends a sentence
SENTENCE_END = r"([.!?]+)\s+|([。！？]+)"


def split_sentences(texts) -> tf.RaggedTensor:
    """Strings ``[batch]`` -> ragged sentences ``[batch, (sentences)]``, in the graph.

    A sentence ends after ``.``, ``!`` or ``?`` (or a run of them) followed by white
    space, after the CJK marks ``。！？``, at a line break or an HTML ``<br>``. The
    terminator stays with its sentence. No Python runs per example, so this works in
    ``tf.data`` and inside an exported SavedModel. Pieces without words (``"!!!"``)
    are dropped later, by :class:`HierarchicalTextPreprocessor`.

    Examples:
        >>> split_sentences(tf.constant(["Good. Really good!", "no stop"])).to_list()
        [[b'Good.', b'Really good!'], [b'no stop']]
    """
    texts = tf.strings.regex_replace(texts, r"<br\s*/?>", "\n")
    texts = tf.strings.regex_replace(texts, SENTENCE_END, "\\1\\2\n")
    sentences = tf.ragged.map_flat_values(tf.strings.strip, tf.strings.split(texts, sep="\n"))
    # drop the empty pieces a trailing terminator or blank line leaves behind
    return tf.ragged.boolean_mask(sentences, tf.strings.length(sentences) > 0)


class HierarchicalTextPreprocessor(TextPreprocessor):
    """Raw documents -> ids ``int64 [batch, sentences, words]`` for word -> sentence models.

    Each document is split into sentences by :func:`split_sentences` and every sentence
    is vectorised with the same ``TextVectorization`` vocabulary as the flat models
    (adapted on whole training documents). Sentences without a single word are dropped;
    the first ``max_sentences`` sentences and the first ``max_words`` words of each are
    kept. Both levels are right-padded with 0, real sentences first, and a document
    with no words at all (``""``) becomes one sentence ``[OOV]``. So every document has
    at least one sentence and every real sentence at least one word: the masks a model
    derives are right-padded and never all padding at the document level.

    The batch is padded to its longest document and sentence, not to the limits.

    Args:
        max_tokens: vocabulary size including padding and OOV.
        max_sentences: sentences kept per document.
        max_words: words kept per sentence (characters with ``split="character"``).
        vocabulary: a vocabulary from :meth:`vocabulary` to restore an adapted one.
        split: ``"whitespace"`` or ``"character"``, see :class:`TextPreprocessor`.

    Examples:
        >>> pre = HierarchicalTextPreprocessor(max_tokens=100, max_sentences=3, max_words=4)
        >>> pre.adapt(["good food", "bad food"])
        >>> pre(tf.constant(["Good food. Bad!", ""])).numpy().tolist()
        [[[3, 2], [4, 0]], [[1, 0], [0, 0]]]
    """

    config_type = "hierarchical_text"

    @classmethod
    def for_data(cls, config, x) -> HierarchicalTextPreprocessor:
        return cls(max_tokens=config.data.max_tokens, max_sentences=config.data.max_sentences,
                   max_words=config.data.max_words, split=config.data.split)

    def __init__(self, max_tokens: int = 20000, max_sentences: int = 16, max_words: int = 40,
                 vocabulary=None, split: str = "whitespace", adapt_examples: int | None = None):
        if max_sentences < 1 or max_words < 1:
            raise ValueError("max_sentences and max_words must be >= 1. Received: "
                             f"max_sentences={max_sentences}, max_words={max_words}")
        super().__init__(max_tokens=max_tokens, max_len=max_words, vocabulary=vocabulary,
                         split=split, adapt_examples=adapt_examples)
        self.max_sentences = max_sentences
        self.max_words = max_words

    def _vectorize(self, texts):
        """(sentences ``[batch, (s)]``, ids ``[batch, (s), (w)]``, has-words ``[batch, (s)]``)."""
        sentences = split_sentences(texts)
        ids = self.layer(sentences.flat_values)  # [all sentences, (words)]
        rows = sentences.row_lengths()
        return (sentences, tf.RaggedTensor.from_row_lengths(ids, rows),
                tf.RaggedTensor.from_row_lengths(ids.row_lengths() > 0, rows))

    def sentences(self, texts) -> tf.RaggedTensor:
        """The kept sentences as strings ``[batch, (sentences)]``, aligned with :meth:`tokenize`."""
        sentences, _, has_words = self._vectorize(texts)
        return tf.ragged.boolean_mask(sentences, has_words)[:, : self.max_sentences]

    def tokenize(self, texts) -> tf.RaggedTensor:
        """Strings ``[batch]`` -> ragged ids ``[batch, (1..max_sentences), (1..max_words)]``."""
        _, docs, has_words = self._vectorize(texts)
        # one extra sentence [OOV] per document, kept only where nothing else is
        empty = tf.equal(tf.reduce_sum(tf.cast(has_words, tf.int32), axis=1), 0)
        ones = tf.ones_like(empty, tf.int64)
        filler = tf.RaggedTensor.from_row_lengths(
            tf.RaggedTensor.from_row_lengths(ones * OOV_ID, ones), ones)
        docs = tf.concat([docs, filler], axis=1)
        keep = tf.concat([has_words, tf.RaggedTensor.from_tensor(empty[:, None])], axis=1)
        docs = tf.ragged.boolean_mask(docs, keep)
        return docs[:, : self.max_sentences, : self.max_words]

    def __call__(self, texts) -> tf.Tensor:
        """Strings ``[batch]`` -> ids ``[batch, sentences, words]``, right-padded with 0."""
        return self.tokenize(texts).to_tensor(default_value=PAD_ID)

    def export_samples(self, x) -> list[str]:
        many = " ".join(f"Sentence number {i}." for i in range(200))
        return super().export_samples(x) + ["...!!!", "no punctuation at all", many]

    def get_config(self) -> dict:
        return {"type": self.config_type, "max_tokens": self.max_tokens,
                "max_sentences": self.max_sentences, "max_words": self.max_words,
                "split": self.split, "adapt_examples": self.adapt_examples}
