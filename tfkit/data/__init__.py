"""Data sources, preprocessors and tf.data pipelines."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tfkit.data.arrays import ImagePreprocessor, SequencePreprocessor, array_dataset
from tfkit.data.pipeline import bucket_boundaries, token_dataset
from tfkit.data.sources import (
    SOURCES,
    DataError,
    LabeledData,
    Split,
    carve,
    encode_labels,
    load_data,
)
from tfkit.data.text import (
    HierarchicalTextPreprocessor,
    TextPreprocessor,
    split_sentences,
    standardize_text,
)
from tfkit.data.vectors import (
    add_vector_words,
    load_word_vectors,
    read_word_vectors,
    save_word_vectors,
    word_embedding,
)

PREPROCESSORS = {"text": TextPreprocessor, "hierarchical_text": HierarchicalTextPreprocessor,
                 "image": ImagePreprocessor, "sequence": SequencePreprocessor}


def load_preprocessor(directory: str | os.PathLike):
    """Restores the preprocessor saved in ``directory/preprocessor.json`` (plain JSON, no pickle).

    Raises:
        DataError: if the file is missing or names an unknown preprocessor type.
    """
    file = Path(directory, "preprocessor.json")
    if not file.is_file():
        raise DataError(f"'{file}' does not exist: is '{directory}' a finished tfkit run?")
    config = json.loads(file.read_text(encoding="utf-8"))
    kind = config.get("type")
    if kind not in PREPROCESSORS:
        raise DataError(f"'{file}': unknown preprocessor type {kind!r}; "
                        f"expected one of {sorted(PREPROCESSORS)}.")
    return PREPROCESSORS[kind].from_config(config)


__all__ = ["SOURCES", "PREPROCESSORS", "DataError", "LabeledData", "Split", "TextPreprocessor",
           "HierarchicalTextPreprocessor", "split_sentences",
           "ImagePreprocessor", "SequencePreprocessor", "array_dataset",
           "bucket_boundaries", "carve", "encode_labels", "load_data", "load_preprocessor",
           "add_vector_words", "load_word_vectors", "read_word_vectors", "save_word_vectors",
           "standardize_text", "token_dataset", "word_embedding"]
