"""The table of input kinds: what a model builder's ``inputs`` names -> the preprocessor that
feeds it. Plain data (no TensorFlow, no other tfkit module), so the config checks, the model
registry and the data package all read it without importing one another."""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class InputKind:
    """One input kind: the preprocessor class that feeds it (``"module:Class"``, imported by
    :meth:`load`) and whether it reads raw text (a text source feeds it)."""

    preprocessor: str
    text: bool

    def load(self) -> type:
        module, name = self.preprocessor.split(":")
        return getattr(importlib.import_module(module), name)


# One table of input kinds: what a model builder's ``inputs`` names -> the preprocessor that
# feeds it. A preprocessor class is the whole input kind (the protocol, see TextPreprocessor):
# ``for_data(config, x)`` and ``adapt(x)`` on the training split, ``dataset(...)`` per split,
# ``serving_endpoints()`` and ``client_inputs(x)`` for the export, ``tensorboard_extras``,
# ``get_config()`` / ``from_config()`` / ``save()`` as plain JSON. Adding an input kind is
# one such class and one line here; the registry's input names and the types below derive
# from this table.
INPUT_KINDS = {
    "tokens": InputKind("tfkit.data.text:TextPreprocessor", text=True),
    "documents": InputKind("tfkit.data.text:HierarchicalTextPreprocessor", text=True),
    "image": InputKind("tfkit.data.arrays:ImagePreprocessor", text=False),
    "sequence": InputKind("tfkit.data.arrays:SequencePreprocessor", text=False),
    "text_table": InputKind("tfkit.data.table:TextTablePreprocessor", text=True),
    "hub_text": InputKind("tfkit.data.hub:HubTextPreprocessor", text=True),
    "tfidf": InputKind("tfkit.data.tfidf:TfidfPreprocessor", text=True),
}
TEXT_INPUTS = tuple(name for name, kind in INPUT_KINDS.items() if kind.text)
