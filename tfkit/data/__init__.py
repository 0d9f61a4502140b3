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

# One table of input kinds: what a model builder's ``inputs`` names -> the preprocessor that
# feeds it. A preprocessor class is the whole input kind (the protocol, see TextPreprocessor):
# ``for_data(config, x)`` and ``adapt(x)`` on the training split, ``dataset(...)`` per split,
# ``serving_endpoints()`` and ``client_inputs(x)`` for the export, ``tensorboard_extras``,
# ``get_config()`` / ``from_config()`` / ``save()`` as plain JSON. Adding an input kind is
# one such class and one line here; the registry's input names and the types below derive
# from this table.
INPUT_KINDS = {"tokens": TextPreprocessor, "documents": HierarchicalTextPreprocessor,
               "image": ImagePreprocessor, "sequence": SequencePreprocessor}
TEXT_INPUTS = tuple(kind for kind, cls in INPUT_KINDS.items() if cls.takes_text)
PREPROCESSORS = {cls.config_type: cls for cls in INPUT_KINDS.values()}  # preprocessor.json types


def load_preprocessor(directory: str | os.PathLike):
    """Restores the preprocessor saved in ``directory/preprocessor.json`` (plain JSON, no pickle).

    Raises:
        DataError: if the file is missing or names an unknown preprocessor type.
    """
    file = Path(directory, "preprocessor.json")
    if not file.is_file():
        raise DataError(f"'{file}' does not exist: is '{directory}' a finished tfkit run?")
    return preprocessor_from_config(json.loads(file.read_text(encoding="utf-8")), str(file))


def preprocessor_from_config(config: dict, where: str = "preprocessor"):
    """The preprocessor a ``get_config()`` dict describes (its ``type``: :data:`PREPROCESSORS`).

    Raises:
        DataError: for an unknown type.
    """
    kind = config.get("type")
    if kind not in PREPROCESSORS:
        raise DataError(f"'{where}': unknown preprocessor type {kind!r}; "
                        f"expected one of {sorted(PREPROCESSORS)}.")
    return PREPROCESSORS[kind].from_config(config)


__all__ = ["SOURCES", "INPUT_KINDS", "TEXT_INPUTS", "PREPROCESSORS", "DataError", "LabeledData", "Split", "TextPreprocessor",
           "HierarchicalTextPreprocessor", "split_sentences",
           "ImagePreprocessor", "SequencePreprocessor", "array_dataset",
           "bucket_boundaries", "carve", "encode_labels", "load_data", "load_preprocessor",
           "preprocessor_from_config",
           "add_vector_words", "load_word_vectors", "read_word_vectors", "save_word_vectors",
           "standardize_text", "token_dataset", "word_embedding"]
