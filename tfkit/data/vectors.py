"""Pre-trained word vectors (GloVe, fastText, word2vec as text) for a text model's embedding.

On a few thousand labelled texts most words are seen a handful of times; vectors trained
on billions of words carry what the labels cannot teach (``delicious`` is near ``tasty``).
:func:`read_word_vectors` reads the vectors of the preprocessor's vocabulary from a text
file, :func:`load_word_vectors` writes them into the model's word embedding (the rows of
words the file lacks keep their random start) and can freeze it.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tfkit.data.sources import DataError
from tfkit.data.text import standardize_text
from tfkit.errors import excerpt


def read_word_vectors(path: str | os.PathLike, vocabulary: list[str]
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Reads the vectors of ``vocabulary``'s words from a word-vector text file.

    One word per line followed by its numbers, separated by spaces: GloVe's ``.txt``,
    fastText's ``.vec`` and word2vec's text format (their first line, ``<words> <dim>``,
    is skipped), optionally gzip-compressed (``.gz``). Only the vocabulary's lines are
    parsed, so a 5 GB file costs one pass of reading. A word matches exactly, or else a
    file word that lower-cases to it (fastText's files are cased, tfkit's vocabulary is
    lower-cased); an exact match wins.

    Args:
        path: the file.
        vocabulary: the preprocessor's tokens in id order (``TextPreprocessor.vocabulary()``).

    Returns:
        ``(vectors float32 [len(vocabulary), dim], found bool [len(vocabulary)])``; rows not
        found are zeros.

    Raises:
        DataError: for a missing or binary file, a line whose numbers are not ``dim``
            numbers (naming the file, the line and its word), or no vocabulary word found.

    Examples:
        >>> _ = Path("vectors.txt").write_text("tasty 0.5 1.0\\nGood 2 3\\ngood 4 5\\n")
        >>> vectors, found = read_word_vectors("vectors.txt", ["", "[UNK]", "good", "tasty", "meh"])
        >>> vectors.tolist(), found.tolist()
        ([[0.0, 0.0], [0.0, 0.0], [4.0, 5.0], [0.5, 1.0], [0.0, 0.0]], [False, False, True, True, False])
    """
    path = Path(path)
    index = {word: i for i, word in enumerate(vocabulary) if word}
    vectors, exact, dim = None, np.zeros(len(vocabulary), bool), None
    found = np.zeros(len(vocabulary), bool)
    for number, line in _lines(path):
        if number == 1 and _is_header(line):
            continue
        fields = line.rstrip("\n").rstrip(" ").split(" ")
        if dim is None:
            dim = len(fields) - 1
            if dim < 1:
                raise DataError(f"'{path}', line {number}: expected a word and its "
                                f"numbers separated by spaces, got {excerpt(line.rstrip())}.")
            vectors = np.zeros((len(vocabulary), dim), np.float32)
        # GloVe 840B has words with spaces in them: the last `dim` fields are the numbers
        word = " ".join(fields[:-dim]) if len(fields) > dim + 1 else fields[0]
        row, is_exact = index.get(word), True
        if row is None:
            row, is_exact = index.get(word.lower()), False
        if row is None or exact[row] or (found[row] and not is_exact):
            continue
        if len(fields) < dim + 1:
            raise DataError(f"'{path}', line {number} ({excerpt(word, 40)}): expected {dim} numbers "
                            f"(as on the first line), got {len(fields) - 1}.")
        try:
            vectors[row] = np.asarray(fields[-dim:], np.float32)
        except ValueError:
            raise DataError(f"'{path}', line {number} ({excerpt(word, 40)}): the values after the "
                            "word must be numbers.") from None
        found[row], exact[row] = True, is_exact
    if not found.any():
        raise DataError(f"'{path}': none of the vocabulary's {len(vocabulary)} words has a "
                        f"vector there (first words: {', '.join(vocabulary[2:7])}).")
    return vectors, found


def _is_header(line: str) -> bool:
    """fastText's and word2vec's first line: ``<words> <dim>``."""
    fields = line.split()
    return len(fields) == 2 and all(f.isdigit() for f in fields)


def _open(path: Path, mode: str):
    """A word-vector file as text, gzip-compressed when its name ends in ``.gz``."""
    return (gzip.open if path.suffix == ".gz" else open)(path, mode, encoding="utf-8")


def _lines(path: Path):
    """The file's lines (gzip-compressed when it ends in ``.gz``), numbered from 1."""
    if not path.is_file():
        raise DataError(f"word vectors file '{path}' does not exist.")
    try:
        with _open(path, "rt") as lines:
            yield from enumerate(lines, 1)
    except (UnicodeDecodeError, gzip.BadGzipFile, EOFError) as exc:
        raise DataError(f"'{path}' is not a word-vector text file ({type(exc).__name__}: {exc}); "
                        "binary word2vec (.bin) files must be converted to text first, e.g. "
                        "gensim's KeyedVectors.save_word2vec_format(..., binary=False).") from None


def add_vector_words(preprocessor, path: str | os.PathLike, count: int):
    """A copy of ``preprocessor`` whose vocabulary also holds the vectors file's first
    ``count`` words that the training texts lack.

    A vocabulary adapted on the training split maps every word training never saw to the
    out-of-vocabulary id, so its pre-trained vector is never used. GloVe and fastText list
    their words most frequent first, so the first ones are the words users are likeliest to
    write. Only words that the preprocessor's standardisation keeps as they are (lower-case
    letters, digits, apostrophes: one token) are taken.

    Args:
        preprocessor: an adapted :class:`tfkit.TextPreprocessor` (or hierarchical one),
            splitting on white space.
        path: the vectors file (see :func:`read_word_vectors`).
        count: how many words to add at most.

    Returns:
        A preprocessor of the same kind with ``max_tokens`` = its vocabulary's new size.

    Examples:
        >>> pre = tfkit.TextPreprocessor(max_tokens=100, max_len=4)
        >>> pre.adapt(["good food"])
        >>> _ = Path("vectors.txt").write_text("the 1 1\\nfood 2 2\\nTasty 3 3\\nyummy 4 4\\n")
        >>> add_vector_words(pre, "vectors.txt", 2).vocabulary()
        ['', '[UNK]', 'good', 'food', 'the', 'yummy']
    """
    if preprocessor.split != "whitespace":
        raise DataError("model.word_vectors_vocabulary adds words, and data.split is "
                        f"'{preprocessor.split}': use data.split: whitespace.")
    vocabulary = preprocessor.vocabulary()
    known, added = set(vocabulary), []
    candidates = []
    for number, line in _lines(Path(path)):
        word = line.split(" ", 1)[0].rstrip("\n")
        if number == 1 and _is_header(line):
            continue
        if word not in known:
            known.add(word)
            candidates.append(word)
        if len(candidates) == 4096:  # standardised in batches, as the preprocessor does
            added += _kept_as_is(candidates)[: count - len(added)]
            candidates = []
            if len(added) == count:
                break
    added += _kept_as_is(candidates)[: count - len(added)]
    vocabulary += added
    return type(preprocessor).from_config({**preprocessor.get_config(),
                                           "max_tokens": len(vocabulary),
                                           "vocabulary": vocabulary})


def _kept_as_is(words: list[str]) -> list[str]:
    """The words that :func:`tfkit.data.text.standardize_text` leaves unchanged."""
    if not words:
        return []
    standard = standardize_text(tf.constant(words)).numpy()
    return [w for w, s in zip(words, standard) if s.decode("utf-8", "replace") == w]


def word_embedding(model: keras.Model, vocab_size: int) -> keras.layers.Embedding | None:
    """The model's word embedding: its first ``keras.layers.Embedding`` (at any depth: nested
    models and wrappers included) with at least ``vocab_size`` rows, one per word in id order
    (fastText's table has its hashed n-gram rows after them); None if it has none."""
    return next((layer for layer in _all_layers(model)
                 if isinstance(layer, keras.layers.Embedding) and layer.input_dim >= vocab_size),
                None)


def _word_embedding_of(model: keras.Model, vocabulary: list[str], what: str):
    """:func:`word_embedding`, or a :class:`DataError` saying ``what`` needed one."""
    layer = word_embedding(model, len(vocabulary))
    if layer is None:
        raise DataError(f"{what}: model '{model.name}' has no keras.layers.Embedding with "
                        f"{len(vocabulary)} rows (one per word).")
    return layer


def _all_layers(layer):
    """The layers inside ``layer``, depth first (nested models and wrappers included)."""
    for inner in getattr(layer, "layers", []):
        yield inner
        yield from _all_layers(inner)


def load_word_vectors(model: keras.Model, vocabulary: list[str], path: str | os.PathLike,
                      freeze: bool = False) -> dict:
    """Starts the model's word embedding from pre-trained vectors (:func:`read_word_vectors`).

    The rows of the words the file has are set to its vectors; the others (padding, the
    out-of-vocabulary id, words the file lacks) keep the model's random start. Call it
    after building the model and before ``compile``/``fit`` (under the strategy's scope
    when there is one).

    Args:
        model: a built text model (tfkit's or your own with a ``keras.layers.Embedding``).
        vocabulary: ``TextPreprocessor.vocabulary()``.
        path: GloVe ``.txt``, fastText ``.vec``, word2vec text; ``.gz`` too.
        freeze: keep the embedding as the file has it (``trainable = False``).

    Returns:
        ``{"path", "words_found", "vocabulary", "coverage", "frozen"}``.

    Raises:
        DataError: for the file (see :func:`read_word_vectors`), a model without a word
            embedding, vectors of another width than the embedding's, or ``freeze`` on an
            embedding that also holds hashed n-gram rows (they would stay random).

    Examples:
        >>> pre = tfkit.TextPreprocessor(max_tokens=100, max_len=8)
        >>> pre.adapt(["tasty and fresh", "stale, do not buy"])
        >>> model = tfkit.build_model("text_lstm", vocab_size=pre.vocab_size, num_classes=2,
        ...                           embedding_dim=2, units=4)
        >>> _ = Path("vectors.txt").write_text("tasty 0.5 1.0\\nstale -1 -0.5\\n")
        >>> load_word_vectors(model, pre.vocabulary(), "vectors.txt", freeze=True)
        {'path': 'vectors.txt', 'words_found': 2, 'vocabulary': 9, 'coverage': 0.2222, 'frozen': True}
    """
    layer = _word_embedding_of(model, vocabulary, f"word vectors '{path}'")
    vectors, found = read_word_vectors(path, vocabulary)
    if vectors.shape[1] != layer.output_dim:
        raise DataError(f"word vectors '{path}' have {vectors.shape[1]} numbers per word, the "
                        f"model's embedding {layer.output_dim}: set model.params.embedding_dim="
                        f"{vectors.shape[1]} (or your builder's width).")
    if freeze and layer.input_dim > len(vocabulary):
        raise DataError(f"model.freeze_word_vectors: the embedding of model '{model.name}' "
                        f"also holds {layer.input_dim - len(vocabulary)} hashed n-gram rows, "
                        "which would stay random; leave it trainable.")
    table = keras.ops.convert_to_numpy(layer.embeddings)
    table[: len(vocabulary)][found] = vectors[found]
    layer.embeddings.assign(table)
    if freeze:
        layer.trainable = False
    return {"path": str(path), "words_found": int(found.sum()), "vocabulary": len(vocabulary),
            "coverage": round(float(found.mean()), 4), "frozen": bool(freeze)}


def save_word_vectors(model: keras.Model, vocabulary: list[str], path: str | os.PathLike) -> Path:
    """Writes the model's word vectors as a fastText ``.vec`` text file (``<words> <dim>``
    header, then one word and its numbers per line; ``.gz`` compresses), readable by
    :func:`load_word_vectors`, gensim and the fastText tools: another model can start from
    what this one learnt. Padding and the out-of-vocabulary id are left out.

    Raises:
        DataError: if the model has no word embedding (see :func:`word_embedding`).

    Examples:
        >>> pre = tfkit.TextPreprocessor(max_tokens=100, max_len=8)
        >>> pre.adapt(["tasty tea"])
        >>> model = tfkit.build_model("text_fasttext", vocab_size=pre.vocab_size, num_classes=2,
        ...                           embedding_dim=2, buckets=16)
        >>> print(save_word_vectors(model, pre.vocabulary(), "tea.vec").read_text()[:20])
        2 2
        tea ...
    """
    layer = _word_embedding_of(model, vocabulary, f"saving word vectors to '{path}'")
    table = keras.ops.convert_to_numpy(layer.embeddings)
    path = Path(path)
    partial = path.with_name(f".partial-{path.name}")  # never half a file under the name
    with _open(partial, "wt") as out:
        out.write(f"{len(vocabulary) - 2} {table.shape[1]}\n")
        for word, vector in zip(vocabulary[2:], table[2: len(vocabulary)]):
            out.write(word + " " + " ".join(f"{v:.6g}" for v in vector) + "\n")
    os.replace(partial, path)
    return path
