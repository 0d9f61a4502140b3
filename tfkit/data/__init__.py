"""Data sources, preprocessors and tf.data pipelines.

Importing this package does not import TensorFlow: the table of input kinds (tfkit.data.kinds) is plain
data, and the other names load their module on first use (PEP 562), so the config checks,
``tfkit config`` and ``tfkit models`` answer without waiting for TensorFlow.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tfkit.data.kinds import INPUT_KINDS, TEXT_INPUTS, InputKind  # noqa: F401
from tfkit.lazy import lazy_getattr

# the other names: module -> the names it gives, imported on first use
_LAZY = {
    "tfkit.data.arrays": ["ImagePreprocessor", "SequencePreprocessor"],
    "tfkit.data.pipeline": ["array_dataset", "bucket_boundaries", "token_dataset"],
    "tfkit.data.sources": ["SOURCES", "DataError", "LabeledData", "Split", "carve",
                           "encode_labels", "load_data"],
    "tfkit.data.hub": ["HubTextPreprocessor"],
    "tfkit.data.table": ["TextTablePreprocessor", "table_inputs"],
    "tfkit.data.tfidf": ["TfidfPreprocessor"],
    "tfkit.data.text": ["HierarchicalTextPreprocessor", "TextPreprocessor", "split_sentences",
                        "standardize_text"],
    "tfkit.data.vectors": ["add_vector_words", "load_word_vectors", "read_word_vectors",
                           "save_word_vectors", "word_embedding"],
}
_MODULE_OF = {name: module for module, names in _LAZY.items() for name in names}


__getattr__ = lazy_getattr("tfkit.data", _MODULE_OF, globals())


def load_preprocessor(directory: str | os.PathLike):
    """Restores the preprocessor saved in ``directory/preprocessor.json`` (plain JSON, no pickle).

    Raises:
        DataError: if the file is missing or names an unknown preprocessor type.
    """
    from tfkit.data.sources import DataError

    file = Path(directory, "preprocessor.json")
    if not file.is_file():
        raise DataError(f"'{file}' does not exist: is '{directory}' a finished tfkit run?")
    return preprocessor_from_config(json.loads(file.read_text(encoding="utf-8")), str(file))


def preprocessor_from_config(config: dict, where: str = "preprocessor"):
    """The preprocessor a ``get_config()`` dict describes (its ``type``: the ``config_type``
    of one of :data:`INPUT_KINDS`' classes).

    Raises:
        DataError: for an unknown type.
    """
    from tfkit.data.sources import DataError

    classes = {cls.config_type: cls for cls in (kind.load() for kind in INPUT_KINDS.values())}
    kind = config.get("type")
    if kind not in classes:
        raise DataError(f"'{where}': unknown preprocessor type {kind!r}; "
                        f"expected one of {sorted(classes)}.")
    return classes[kind].from_config(config)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = ["INPUT_KINDS", "TEXT_INPUTS", "InputKind", "load_preprocessor",
           "preprocessor_from_config", *_MODULE_OF]
